"""Benchmark of the secured SIP envelope: seal/open medians and the bytes of the RFC 3665 call flow, secured vs plain.

    .venv/bin/python bench/envelope.py [--json] [--rounds N] [--dump DIR]

Prints (and with ``--json`` emits one JSON object): ``seal_first_ms`` / ``open_first_ms``
(a dialog's first request: BF-IBE KEM + Cha–Cheon signature), ``seal_dialog_ms`` /
``open_dialog_ms`` (a later message under the dialog key, signed: the default
every-message policy), medians over ``--rounds``; and for the RFC 3665 basic call flow
(INVITE, 100, 180, 200, ACK, BYE, 200) ``plain_bytes``, ``secured_bytes`` and
``bytes_ratio`` under the default policy (with ``outer_header_bytes`` / ``cms_bytes``,
where those bytes go), plus the same under the dialog-establishing policy. ``--dump DIR`` writes the secured outer messages of that flow, one file each.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sipsec.envelope import SigningPolicy, open_message, seal  # noqa: E402
from sipsec.stores.envelope import InMemoryDialogStore, InMemoryReplayCache  # noqa: E402

from tests.unit.envelope.rfc3665 import (  # noqa: E402
    ALICE,
    BOB,
    CallRun,
    Party,
    Pki,
    ack,
    invite,
    run_basic_call,
)


def _median_ms(samples: list[float]) -> float:
    return round(statistics.median(samples) * 1000, 3)


async def _timings(pki: Pki, rounds: int) -> dict[str, float]:
    alice, bob = Party(pki.keyring(ALICE)), Party(pki.keyring(BOB))
    seal_first, open_first, seal_dialog, open_dialog = [], [], [], []
    for i in range(rounds):
        call_id = f"bench-{i}@atlanta.example.com"
        now = time.time()
        t0 = time.perf_counter()
        first = seal(invite(call_id), alice.keys, BOB, now=now)
        t1 = time.perf_counter()
        opened = await open_message(first.message, bob.keys, bob.dialogs, bob.replay, now=now)
        t2 = time.perf_counter()
        later = seal(ack(call_id), alice.keys, first.dialog, now=now)
        t3 = time.perf_counter()
        await open_message(later.message, bob.keys, bob.dialogs, bob.replay, now=now)
        t4 = time.perf_counter()
        assert opened.first
        seal_first.append(t1 - t0)
        open_first.append(t2 - t1)
        seal_dialog.append(t3 - t2)
        open_dialog.append(t4 - t3)
    return {
        "seal_first_ms": _median_ms(seal_first),
        "open_first_ms": _median_ms(open_first),
        "seal_dialog_ms": _median_ms(seal_dialog),
        "open_dialog_ms": _median_ms(open_dialog),
    }


async def _call(pki: Pki, policy: SigningPolicy) -> CallRun:
    alice = Party(pki.keyring(ALICE), InMemoryDialogStore(), InMemoryReplayCache())
    bob = Party(pki.keyring(BOB), InMemoryDialogStore(), InMemoryReplayCache())
    return await run_basic_call(alice, bob, policy)


async def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="emit one JSON object")
    parser.add_argument("--rounds", type=int, default=50, help="timed rounds (default 50)")
    parser.add_argument("--dump", type=Path, help="write the secured outer messages here")
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error("--rounds must be positive")

    pki = Pki.create()
    result: dict[str, float | int | str] = {}
    result.update(await _timings(pki, args.rounds))
    default = await _call(pki, SigningPolicy.EVERY_MESSAGE)
    establishing = await _call(pki, SigningPolicy.DIALOG_ESTABLISHING)
    result.update(
        {
            "plain_bytes": default.plain_bytes,
            "secured_bytes": default.secured_bytes,
            "bytes_ratio": round(default.secured_bytes / default.plain_bytes, 3),
            # where the secured bytes go: outer header sections vs CMS bodies (default policy)
            "outer_header_bytes": sum(
                len(st.sealed.message.to_bytes()) - len(st.sealed.message.body) for st in default.steps
            ),
            "cms_bytes": sum(len(st.sealed.message.body) for st in default.steps),
            "secured_bytes_dialog_establishing": establishing.secured_bytes,
            "bytes_ratio_dialog_establishing": round(
                establishing.secured_bytes / establishing.plain_bytes, 3
            ),
            "rounds": args.rounds,
        }
    )
    if args.dump is not None:
        args.dump.mkdir(parents=True, exist_ok=True)
        for index, step in enumerate(default.steps, start=1):
            path = args.dump / f"{index:02d}-{step.name}.sip"
            path.write_bytes(step.sealed.message.to_bytes())
        result["dump"] = str(args.dump)
    if args.json:
        print(json.dumps(result))
    else:
        width = max(len(k) for k in result)
        for key, value in result.items():
            print(f"{key:<{width}}  {value}")
        print("per message (default policy): name plain secured")
        for step in default.steps:
            print(f"  {step.name:<8} {len(step.inner.to_bytes()):>5} {len(step.sealed.message.to_bytes()):>6}")
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
