"""Benchmark: what forged INVITEs cost a receiver that batches its signature verifications.

    .venv/bin/python bench/forgery.py [--json] [--genuine 64] [--forged 0,2,16] [--rounds 5]

A forged INVITE is what anyone can make: a valid BF-IBE KEM to the callee (only public
parameters are needed) around a SignedData whose Cha–Cheon signature claims a genuine
caller but was made with a key of the forger's own PKG — so it fails verification. Each
scenario opens ``--genuine`` genuine first requests (from 16 callers) with the given number
of forged ones spread evenly among them, all concurrently (one task per message, as the
gateway opens what it receives), through ``open_message(..., engine=)`` on an
:class:`~sipsec.engine.InProcessEngine` configured as the UA gateway's (16 ms window,
busy-CPU gate 0.7, batches of at most 16). A scenario's messages arrive at once (a burst,
as a gateway behind a proxy sees under load), so batches are full whatever the lane's gate
says: its wait (when verifies come faster than the window and the process uses >= 0.7 of a
core) ends as soon as 16 are pending, and without it the batch runs on the next loop
iteration, after every open of the burst has reached its verification. Before the first
measured round 200 INVITEs arriving faster than they open warm the identity tables and
drive the lane busy; its gate state then is reported (``gate_after_warmup``).

Measured: CPU time (``time.process_time``) of opening the whole scenario, per round; the
scenarios alternate round by round and the medians are reported, with the ratio of each to
the genuine-only cost (``ratio_<n>``; the bar is ``ratio_2`` <= 1.2) and the lane's batch
statistics. Every genuine message must open and every forged one must be rejected with
403 ``bad-signature``, or the run fails. Progress goes to stderr, the JSON object to stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sipsec import ibc  # noqa: E402
from sipsec.engine import InProcessEngine  # noqa: E402
from sipsec.envelope import Forbidden, Keyring, open_message, seal  # noqa: E402
from sipsec.sip import Request, parse_message  # noqa: E402
from sipsec.stores.envelope import InMemoryDialogStore, InMemoryReplayCache  # noqa: E402

from tests.unit.envelope.rfc3665 import BOB, Pki, invite  # noqa: E402

#: How many distinct callers the genuine INVITEs come from.
CALLERS = 16
#: INVITEs opened, arriving faster than they open, before the measured rounds (drives the lane busy).
WARM_UP = 200


def _log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


class _Senders:
    """The genuine callers' keyrings and, per claimed caller, a forger's keyring (own PKG)."""

    def __init__(self, pki: Pki) -> None:
        self.pki = pki
        self.aors = [f"sip:caller{i}@atlanta.example.com" for i in range(CALLERS)]
        self.genuine = [pki.keyring(aor) for aor in self.aors]
        fake_master, fake_params = ibc.setup("atlanta.example.com")
        period = pki.atlanta.policy.current(pki.now)
        self.forgers = []
        for aor in self.aors:
            sig = ibc.extract(fake_master, fake_params, fake_params.identity(aor, ibc.Purpose.SIG, period))
            # the real domains' parameters: the KEM to the callee is valid, only the signature is not
            self.forgers.append(Keyring.create(aor, sig_keys=[sig], enc_keys=[],
                                               domains=[self.pki.atlanta, self.pki.biloxi]))

    def message(self, index: int, forged: bool, tag: str) -> Request:
        keys = (self.forgers if forged else self.genuine)[index % CALLERS]
        inner = _from(invite(f"{tag}-{index}@atlanta.example.com"), keys.aor)
        outer = seal(inner, keys, BOB, now=self.pki.now).message
        assert isinstance(outer, Request)
        return outer


def _from(message: Request, aor: str) -> Request:
    """The RFC 3665 INVITE, from ``aor`` instead of Alice."""
    changed = parse_message(message.to_bytes().replace(b"sip:alice@atlanta.example.com", aor.encode()))
    assert isinstance(changed, Request)
    return changed


def _scenario(senders: _Senders, genuine: int, forged: int, tag: str) -> list[tuple[Request, bool]]:
    """``genuine`` genuine INVITEs with ``forged`` forged ones spread evenly among them."""
    out: list[tuple[Request, bool]] = [(senders.message(i, False, tag), False) for i in range(genuine)]
    for k in range(forged):
        position = (k + 1) * (genuine + forged) // (forged + 1)
        out.insert(min(position, len(out)), (senders.message(k, True, tag + "f"), True))
    return out


async def _open_all(messages: list[tuple[Request, bool]], bob: Keyring, engine: InProcessEngine,
                    now: float) -> tuple[float, int, int]:
    """Open every message concurrently; (CPU seconds, opened, rejected as bad-signature)."""
    dialogs, replay = InMemoryDialogStore(), InMemoryReplayCache()

    async def one(outer: Request, forged: bool) -> bool:
        try:
            await open_message(outer, bob, dialogs, replay, now=now, engine=engine)
        except Forbidden as exc:
            if not forged or exc.reason != "bad-signature":
                raise
            return False
        if forged:
            raise AssertionError("a forged INVITE opened")
        return True

    gc.collect()
    gc.disable()
    try:
        start = time.process_time()
        results = await asyncio.gather(*(one(m, f) for m, f in messages))
        spent = time.process_time() - start
    finally:
        gc.enable()
    return spent, sum(results), len(results) - sum(results)


async def _warm(senders: _Senders, bob: Keyring, engine: InProcessEngine, now: float) -> None:
    """Drive the engine's verify lane busy: verifies coming faster than the window on a busy CPU."""
    messages = [senders.message(i, False, "warm") for i in range(WARM_UP)]
    dialogs, replay = InMemoryDialogStore(), InMemoryReplayCache()
    tasks = []
    for outer in messages:  # one every ~0.5 ms, faster than they open: a core stays busy (~0.4 s)
        tasks.append(asyncio.create_task(open_message(outer, bob, dialogs, replay, now=now, engine=engine)))
        await asyncio.sleep(0.0005)
    await asyncio.gather(*tasks)


async def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="emit one JSON object on stdout")
    parser.add_argument("--genuine", type=int, default=64, help="genuine INVITEs per scenario (default 64)")
    parser.add_argument("--forged", default="0,2,16",
                        help="comma-separated forged counts, one scenario each (default 0,2,16; 0 is always run)")
    parser.add_argument("--rounds", type=int, default=5, help="measured rounds per scenario (default 5)")
    parser.add_argument("--max-batch", type=int, default=None,
                        help="the engine's max_batch (default: the engine's own default, as the gateway)")
    args = parser.parse_args(argv)
    try:
        counts = sorted({0, *(int(c) for c in args.forged.split(",") if c.strip())})
    except ValueError:
        parser.error("--forged takes comma-separated integers")
    if args.genuine < 1 or args.rounds < 1 or min(counts) < 0:
        parser.error("--genuine and --rounds must be positive, forged counts non-negative")

    _log("setting up two domains and the callers' keys ...")
    pki = Pki.create()
    senders = _Senders(pki)
    bob = pki.keyring(BOB)
    tuning = {} if args.max_batch is None else {"max_batch": args.max_batch}
    engine = InProcessEngine(batch_window_s=0.016, busy_cpu=0.7, **tuning)  # the UA gateway's defaults
    _log(f"sealing {args.rounds} rounds of {args.genuine} genuine INVITEs with {counts} forged ...")
    plans = {(r, n): _scenario(senders, args.genuine, n, f"r{r}n{n}") for r in range(args.rounds) for n in counts}
    await _warm(senders, bob, engine, pki.now)
    lane = engine._lanes.get(asyncio.get_running_loop())  # noqa: SLF001 - the gate's state, reported
    gate = {"cpu_share": round(lane.cpu_share, 2), "busy_cpu": engine.busy_cpu,
            "gap_ms": round(lane._gap_s * 1000, 2), "window_ms": engine.batch_window_s * 1000,  # noqa: SLF001
            } if lane is not None else {}
    _log(f"verify lane after the warm-up: {gate}")
    cpu: dict[int, list[float]] = {n: [] for n in counts}
    batches: dict[int, tuple[int, int, int]] = {}
    for r in range(args.rounds):
        for n in counts:
            stats = engine.verify_batches
            before = (stats.count, stats.items)
            stats.largest = 0
            spent, opened, rejected = await _open_all(plans[(r, n)], bob, engine, pki.now)
            if opened != args.genuine or rejected != n:
                raise SystemExit(f"round {r}, {n} forged: {opened} opened, {rejected} rejected")
            cpu[n].append(spent)
            batches[n] = (stats.count - before[0], stats.items - before[1], stats.largest)
            _log(f"round {r + 1}/{args.rounds}: {n:>3} forged  {spent * 1000:8.1f} ms CPU  "
                 f"({batches[n][0]} batches, largest {batches[n][2]})")
    await engine.close()
    base = statistics.median(cpu[0])
    result: dict[str, object] = {"genuine": args.genuine, "rounds": args.rounds, "callers": CALLERS,
                                 "engine": f"InProcessEngine(batch_window_s=0.016, busy_cpu=0.7, "
                                           f"max_batch={engine.max_batch})"}
    for n in counts:
        median = statistics.median(cpu[n])
        result[f"cpu_ms_{n}_forged"] = round(median * 1000, 2)
        result[f"cpu_ms_per_genuine_{n}_forged"] = round(median * 1000 / args.genuine, 3)
        result[f"ratio_{n}"] = round(median / base, 3)
        count, items, largest = batches[n]
        result[f"batches_{n}_forged"] = {"count": count, "mean": round(items / max(count, 1), 2),
                                         "largest": largest}
    result["gate_after_warmup"] = gate
    result["bar_ratio_2"] = 1.2
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:<28} {value}")
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
