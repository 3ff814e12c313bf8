"""What the at-rest and store defences cost: sealing, blinding, session MACs, replay tokens, Redis ACL/TLS.

Each figure is measured here, in one run, beside the figure it adds to:

* **record sealing** (AES-256-GCM under the gateway's sealing key, the Redis key name as
  associated data, :class:`sipsec.stores.access.RecordSealer`): seal + unseal of a gateway
  dialog record the size of a first INVITE, and the HMAC that blinds an inner Call-ID in a key
  name;
* **PKG session MAC** (:class:`sipsec_pkg.sessions.SessionSealer`): seal + verify of one
  session record (done on every login and every key request);
* **replay tokens on Redis before the pairing** (:class:`sipsec.stores.envelope.RedisReplayCache`
  on a real ``redis-server``): the lookup (``seen``) and the pipelined write (``remember_all``)
  of a message's tokens, against the process-local cache;
* **Redis as a trusted store**: a command's round trip as the gateway's ACL user with its
  password and as Redis's unauthenticated default user (the AUTH is once per pooled
  connection, so per command it costs nothing), and a new connection's set-up with and
  without AUTH;

and, for scale, the CPU of opening one secured first INVITE in process (decapsulation, the
signature check and the envelope's own work; :func:`sipsec.envelope.open_message` with
in-memory stores), which the per-message defences add to.

    .venv/bin/python bench/defences.py [--json] [--n 2000]

Needs ``redis-server`` (``make install``). Prints progress on stderr, a table (or one JSON
object with ``--json``) on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "services" / "pkg"))

import redis.asyncio as aioredis  # noqa: E402
from sipsec.stores.access import RecordSealer, open_redis  # noqa: E402
from sipsec.stores.envelope import InMemoryReplayCache, RedisReplayCache  # noqa: E402
from sipsec.stores.pkg import SessionRecord  # noqa: E402
from sipsec_pkg.sessions import SessionSealer  # noqa: E402

from tests.conftest import AclRedisServer, RedisServer  # noqa: E402


def _per_op_us(fn: Callable[[], object], n: int) -> float:
    """Median over 5 rounds of the mean CPU microseconds per call of ``fn``."""
    rounds = []
    for _ in range(5):
        t0 = time.process_time()
        for _ in range(n):
            fn()
        rounds.append((time.process_time() - t0) / n * 1e6)
    return statistics.median(rounds)


async def _per_op_async_us(fn: Callable[[], Awaitable[object]], n: int) -> float:
    """Median over 5 rounds of the mean wall microseconds per awaited call of ``fn``."""
    rounds = []
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(n):
            await fn()
        rounds.append((time.perf_counter() - t0) / n * 1e6)
    return statistics.median(rounds)


def _progress(msg: str) -> None:
    print(f"[defences] {msg}", file=sys.stderr, flush=True)


def sealing(n: int) -> dict[str, float]:
    sealer = RecordSealer(os.urandom(32))
    record = os.urandom(1500)  # a dialog record holds the first INVITE (~1.5 KB with its SDP)
    name = "sipsec:envelope:dialog:" + "ab" * 16
    sealed = sealer.seal(name, record)
    return {
        "seal_unseal_1500b_us": _per_op_us(lambda: sealer.unseal(name, sealer.seal(name, record)), n),
        "unseal_1500b_us": _per_op_us(lambda: sealer.unseal(name, sealed), n),
        "blind_call_id_us": _per_op_us(lambda: sealer.blind("call-id", "a84b4c76e66710@pc33.atlanta.com"), n),
    }


def session_mac(n: int) -> dict[str, float]:
    sealer = SessionSealer(os.urandom(32), "atlanta.com")
    now = time.time()
    record = SessionRecord("sip:alice@atlanta.com", now, now, "epoch-1")
    token_id = "f" * 32
    sealed = sealer.seal(token_id, record)
    return {
        "seal_us": _per_op_us(lambda: sealer.seal(token_id, record), n),
        "verify_us": _per_op_us(lambda: sealer.verify(token_id, sealed), n),
    }


async def replay_and_redis(n: int) -> dict[str, float]:
    server = AclRedisServer()
    try:
        gateway = open_redis(server.url_for("gateway"), password_file=server.password_files["gateway"])
        redis_cache = RedisReplayCache(gateway, prefix="sipsec:envelope:")
        local = InMemoryReplayCache()
        tokens = [os.urandom(16), os.urandom(16)]  # a message's nonce and its body digest
        now = time.time()

        async def redis_message() -> None:
            fresh = [os.urandom(16), os.urandom(16)]
            assert await redis_cache.seen(fresh, now) is None
            await redis_cache.remember_all(fresh, 300.0, now)

        async def local_message() -> None:
            fresh = [os.urandom(16), os.urandom(16)]
            assert await local.seen(fresh, now) is None
            await local.remember_all(fresh, 300.0, now)

        await redis_cache.remember_all(tokens, 300.0, now)  # warm the pool's connection
        out = {
            "replay_redis_seen_us": await _per_op_async_us(lambda: redis_cache.seen(tokens, now), n),
            "replay_redis_message_us": await _per_op_async_us(redis_message, n),
            "replay_local_message_us": await _per_op_async_us(local_message, n),
        }
        _progress("replay tokens measured; Redis ACL user vs unauthenticated default user")
        # the same command as the gateway's ACL user (password) and as an unauthenticated
        # default user of a Redis without ACLs (the configuration the deployment left behind)
        out["get_as_acl_user_us"] = await _per_op_async_us(lambda: gateway.get("sipsec:gateway:x"), n)
        open_server = RedisServer()
        try:
            anonymous = aioredis.Redis(host="127.0.0.1", port=open_server.port)
            await anonymous.ping()
            out["get_unauthenticated_us"] = await _per_op_async_us(lambda: anonymous.get("x"), n)

            async def connect_anonymous() -> None:
                client = aioredis.Redis(host="127.0.0.1", port=open_server.port)
                await client.ping()
                await client.aclose()

            async def connect_acl() -> None:
                client = open_redis(server.url_for("gateway"), password_file=server.password_files["gateway"])
                await client.ping()
                await client.aclose()

            rounds = max(50, n // 20)
            out["connect_ping_unauthenticated_us"] = await _per_op_async_us(connect_anonymous, rounds)
            out["connect_ping_acl_us"] = await _per_op_async_us(connect_acl, rounds)
            await anonymous.aclose()
        finally:
            open_server.stop()
        await gateway.aclose()
        return out
    finally:
        server.stop()


async def open_first_invite(rounds: int) -> float:
    """CPU milliseconds to open one secured first INVITE in process (median of ``rounds``)."""
    from sipsec.envelope import open_message, seal
    from sipsec.stores.envelope import InMemoryDialogStore

    from tests.unit.envelope.rfc3665 import ALICE, BOB, Pki, invite

    pki = Pki.create()
    alice, bob = pki.keyring(ALICE), pki.keyring(BOB)
    samples = []
    for i in range(rounds):
        outer = seal(invite(f"defences-{i}@atlanta.example.com"), alice, BOB, now=pki.now).message
        t0 = time.process_time()
        await open_message(outer, bob, InMemoryDialogStore(), InMemoryReplayCache(), now=pki.now)
        samples.append((time.process_time() - t0) * 1000)
    return statistics.median(samples)


async def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout")
    parser.add_argument("--n", type=int, default=2000, help="operations per round (5 rounds, median)")
    args = parser.parse_args(argv)
    _progress("record sealing and blinding")
    result: dict[str, Any] = {"record_sealing": sealing(args.n)}
    _progress("PKG session MAC")
    result["pkg_session_mac"] = session_mac(args.n)
    _progress("replay tokens and Redis access on a real redis-server")
    result["redis"] = await replay_and_redis(max(200, args.n // 4))
    _progress("opening one secured first INVITE, for scale")
    result["open_first_invite_cpu_ms"] = await open_first_invite(30)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    for group, figures in result.items():
        if isinstance(figures, dict):
            for name, value in figures.items():
                print(f"{group:18} {name:36} {value:10.1f} µs")
        else:
            print(f"{group:55} {figures:10.2f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
