"""Redis round trips per secured call: the envelope's dialog store and replay cache on a real redis-server.

Drives the RFC 3665 basic call (INVITE, 100, 180, 200, ACK, BYE, 200; each message sealed by
one end and opened by the other, ``tests/unit/envelope/rfc3665.py``) ``--calls`` times through
:class:`~sipsec.stores.envelope.RedisDialogStore` and :class:`~sipsec.stores.envelope.RedisReplayCache`
(both ends' stores, clients from :func:`sipsec.stores.access.open_redis`), and counts what the
clients sent: round trips (one per command, one per pipeline) and commands, by operation.
The gateway's own call records (``sipsec_gateway.store``) come on top and are not counted here.

    .venv/bin/python bench/redis_roundtrips.py [--json] [--calls 50] [--policy every-message]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sipsec.envelope import SigningPolicy  # noqa: E402
from sipsec.stores.access import open_redis  # noqa: E402
from sipsec.stores.envelope import RedisDialogStore, RedisReplayCache  # noqa: E402

from tests.conftest import RedisServer  # noqa: E402
from tests.unit.envelope.rfc3665 import ALICE, BOB, Party, Pki, run_basic_call  # noqa: E402

ROUND_TRIPS: Counter[str] = Counter()


class CountingConnection(aioredis.Connection):
    """A connection that counts each packet of commands it sends (one round trip each)."""

    async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        ROUND_TRIPS["round_trips"] += 1
        await super().send_packed_command(command, check_health)


def _commands(info: dict[str, Any]) -> Counter[str]:
    return Counter({k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in info.items()
                    if k.startswith("cmdstat_") and k not in ("cmdstat_info", "cmdstat_config|resetstat")})


async def run(calls: int, policy: SigningPolicy) -> dict[str, Any]:
    server = RedisServer()
    admin = aioredis.Redis(host="127.0.0.1", port=server.port)
    try:
        pki = Pki.create()
        key = os.urandom(32)

        def party(aor: str, prefix: str) -> Party:
            client = open_redis(server.url, connection_class=CountingConnection)
            return Party(pki.keyring(aor), RedisDialogStore(client, prefix, sealing_key=key),
                         RedisReplayCache(client, prefix))

        alice, bob = party(ALICE, "a:"), party(BOB, "b:")
        await run_basic_call(alice, bob, policy, call_id="warm@x")  # connections opened, scripts none
        ROUND_TRIPS.clear()
        await admin.config_resetstat()
        for i in range(calls):
            await run_basic_call(alice, bob, policy, call_id=f"{i}-{os.urandom(4).hex()}@atlanta.example.com")
        commands = _commands(await admin.info("commandstats"))
        for p in (alice, bob):
            await p.dialogs.aclose()  # type: ignore[attr-defined]
        return {
            "calls": calls, "policy": policy.value, "messages_per_call": 7,
            "round_trips_per_call": round(ROUND_TRIPS["round_trips"] / calls, 2),
            "commands_per_call": round(sum(commands.values()) / calls, 2),
            "commands_by_name_per_call": {k: round(v / calls, 2) for k, v in sorted(commands.items())},
        }
    finally:
        await admin.aclose()
        server.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--calls", type=int, default=50)
    parser.add_argument("--policy", default=SigningPolicy.EVERY_MESSAGE.value,
                        choices=[p.value for p in SigningPolicy])
    args = parser.parse_args(argv)
    result = asyncio.run(run(args.calls, SigningPolicy(args.policy)))
    if args.json:
        print(json.dumps(result))
    else:
        for k, v in result.items():
            print(f"{k:>26}: {v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
