"""Benchmark: secured vs plain call setup across two domains (one process, loopback), then secured throughput.

The two-domain topology of ``sipsec demo`` (:class:`sipsec_cli.topology.TwoDomainTopology`:
PKG, location, proxy and UA gateway per domain, in-memory stores, in-process crypto), with
call tracing and proxy taps off. sip:alice@atlanta.com calls sip:bob@biloxi.com, who
auto-answers; every message of a secured call is signed (signing policy ``every-message``).

1. Latency: ``--calls`` (default 200) sequential secured calls, then as many plain ones; the
   setup latency of a call is from placing it (the INVITE is built, sealed and sent) until the
   2xx is opened and the ACK sent; each call is then hung up (BYE/200, not timed). Bytes per
   call: everything Alice's gateway sent and received for the call (INVITE … BYE/200), as the
   thesis counted them (Tables 5, 6). The gateways' crypto engines count signatures made and
   verified per secured call (with ``every-message``: each of INVITE, 180, 200, ACK, BYE, 200),
   and the time those operations take; the CPU time of the process per call is reported too.
2. Throughput: secured calls (setup and BYE) started at a fixed rate for ``--trial-s`` seconds
   with at most ``--max-in-flight`` calls in flight (a call that cannot start counts as
   failed); a rate passes when >= 99.5 % of its calls are answered within ``--timeout-s``
   and the system kept up (answered calls / time until the last one ended >= 90 % of the rate).
   The search doubles the rate until one fails, then bisects; a search stops after
   ``--budget-s`` seconds. ``secured_cps`` is the best passing rate with each call hung up at
   once (setup + BYE, as sipp's uac); ``secured_setup_only_cps`` the same search with the calls
   held until the trial ends (setups alone; ``--no-setup-only`` skips it).

    .venv/bin/python bench/call_setup.py            # tables
    .venv/bin/python bench/call_setup.py --json     # secured_p50_ms, ..., secured_cps
    .venv/bin/python bench/call_setup.py --profile  # + cProfile of the secured calls (top functions)

DESIGN §8 bars: secured p50 <= 25 ms with every message signed, overhead <= 20 ms,
>= 100 secured setups/s on the 2-core dev box.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import json
import logging
import pstats
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sipsec.engine import CryptoEngine  # noqa: E402
from sipsec.ibc import DomainParams, Identity, PrivateKey  # noqa: E402
from sipsec_cli.topology import TwoDomainTopology  # noqa: E402
from sipsec_gateway.calls import CallState  # noqa: E402
from sipsec_gateway.gateway import Gateway, GatewayError  # noqa: E402

ALICE = "sip:alice@atlanta.com"
BOB = "sip:bob@biloxi.com"
PASS_RATIO = 0.995
KEEP_UP = 0.9
BARS = {"secured_p50_ms": 25.0, "overhead_ms": 20.0, "secured_cps": 100.0}


def percentile(samples: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty sample."""
    ordered = sorted(samples)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


class CountingEngine:
    """The in-process engine, counting and timing its operations (signatures made and verified
    per call are the evidence that every message is signed)."""

    def __init__(self, inner: CryptoEngine) -> None:
        self.inner = inner
        self.count: dict[str, int] = {}
        self.seconds: dict[str, float] = {}

    def _done(self, op: str, t0: float) -> None:
        self.count[op] = self.count.get(op, 0) + 1
        self.seconds[op] = self.seconds.get(op, 0.0) + time.perf_counter() - t0

    async def encapsulate(self, params: DomainParams, identity: Identity) -> tuple[bytes, bytes]:
        t0 = time.perf_counter()
        key, ciphertext = await self.inner.encapsulate(params, identity)
        self._done("encapsulate", t0)
        return bytes(key), bytes(ciphertext)

    async def decapsulate(self, key: PrivateKey, ciphertext: bytes) -> bytes:
        t0 = time.perf_counter()
        result = bytes(await self.inner.decapsulate(key, ciphertext))
        self._done("decapsulate", t0)
        return result

    async def sign(self, key: PrivateKey, message: bytes) -> bytes:
        t0 = time.perf_counter()
        result = bytes(await self.inner.sign(key, message))
        self._done("sign", t0)
        return result

    async def verify(self, params: DomainParams, identity: Identity, message: bytes, signature: bytes) -> None:
        t0 = time.perf_counter()
        await self.inner.verify(params, identity, message, signature)
        self._done("verify", t0)

    async def close(self) -> None:
        await self.inner.close()


def _totals(engines: list[CountingEngine]) -> tuple[dict[str, int], dict[str, float]]:
    count: dict[str, int] = {}
    seconds: dict[str, float] = {}
    for e in engines:
        for op, n in e.count.items():
            count[op] = count.get(op, 0) + n
        for op, v in e.seconds.items():
            seconds[op] = seconds.get(op, 0.0) + v
    return count, seconds


@dataclass
class Latency:
    setup_ms: list[float] = field(default_factory=list)
    bytes_per_call: list[int] = field(default_factory=list)
    failed: int = 0


async def _call(alice: Gateway, secure: bool, timeout_s: float,
                held: list[str] | None = None) -> tuple[float, int] | None:
    """One call: placed, set up, hung up (or, with ``held``, kept up and its id appended there).
    (setup ms, bytes) or None when it was not answered."""
    t0 = time.perf_counter()
    try:
        call = await alice.place_call(ALICE, BOB, secure=secure, timeout=timeout_s)
    except GatewayError:
        return None
    setup_ms = (time.perf_counter() - t0) * 1e3
    if call.state is not CallState.ESTABLISHED or call.secure is not secure:
        return None
    if held is not None:
        held.append(call.id)
        return setup_ms, call.bytes_sent + call.bytes_received
    try:
        status = await asyncio.wait_for(alice.hangup(call.id), timeout_s)
    except (TimeoutError, GatewayError):
        return None
    if status != 200:
        return None
    return setup_ms, call.bytes_sent + call.bytes_received


async def latency(alice: Gateway, secure: bool, calls: int, timeout_s: float) -> Latency:
    result = Latency()
    for _ in range(calls):
        outcome = await _call(alice, secure, timeout_s)
        if outcome is None:
            result.failed += 1
            continue
        result.setup_ms.append(outcome[0])
        result.bytes_per_call.append(outcome[1])
    return result


@dataclass
class Trial:
    rate: float
    attempted: int
    answered: int
    elapsed_s: float
    p50_ms: float | None

    @property
    def passed(self) -> bool:
        """>= 99.5 % answered, and kept up: the calls were done at >= 90 % of the offered rate."""
        return (self.attempted > 0 and self.answered >= PASS_RATIO * self.attempted
                and self.achieved_cps >= KEEP_UP * self.rate)

    @property
    def achieved_cps(self) -> float:
        return self.answered / self.elapsed_s if self.elapsed_s > 0 else 0.0


async def _hang_up_all(alice: Gateway, call_ids: list[str], timeout_s: float) -> None:
    """End held calls, 20 at a time (untimed: between trials)."""
    for i in range(0, len(call_ids), 20):
        await asyncio.gather(*(asyncio.wait_for(alice.hangup(cid), timeout_s) for cid in call_ids[i:i + 20]),
                             return_exceptions=True)


async def trial(alice: Gateway, rate: float, duration_s: float, max_in_flight: int, timeout_s: float,
                bye: bool = True) -> Trial:
    """Start secured calls at ``rate``/s for ``duration_s`` seconds, at most ``max_in_flight`` at once;
    each call is hung up at once (``bye``) or held until the trial is over."""
    loop = asyncio.get_running_loop()
    total = max(1, int(rate * duration_s))
    in_flight = 0
    answered = 0
    setups: list[float] = []
    tasks: set[asyncio.Task[None]] = set()
    held: list[str] | None = None if bye else []
    last_done = loop.time()

    async def one() -> None:
        nonlocal in_flight, answered, last_done
        try:
            outcome = await _call(alice, True, timeout_s, held)
        finally:
            in_flight -= 1
        if outcome is not None:
            answered += 1
            setups.append(outcome[0])
            last_done = loop.time()

    start = loop.time()
    for i in range(total):
        delay = start + i / rate - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        if in_flight >= max_in_flight:
            continue  # bounded in flight: this call could not start, it counts as failed
        in_flight += 1
        task = loop.create_task(one())
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    if tasks:
        await asyncio.wait(set(tasks), timeout=timeout_s * 2 + 5)
    elapsed = max(last_done, start + (total - 1) / rate) - start + 1 / rate
    for task in list(tasks):
        task.cancel()
    if held:
        await _hang_up_all(alice, held, timeout_s)
    return Trial(rate, total, answered, elapsed, statistics.median(setups) if setups else None)


async def throughput(alice: Gateway, args: argparse.Namespace, bye: bool = True) -> list[Trial]:
    """Double the rate until a trial fails, then bisect; within ``budget_s`` seconds."""
    deadline = time.monotonic() + args.budget_s
    trials: list[Trial] = []
    low, high = 0.0, None
    rate = float(args.start_rate)
    while time.monotonic() + args.trial_s < deadline:
        t = await trial(alice, rate, args.trial_s, args.max_in_flight, args.timeout_s, bye)
        trials.append(t)
        await asyncio.sleep(0.5)  # let the last BYEs and retransmissions settle
        if t.passed:
            low = rate
        else:
            high = rate
        if high is None:
            if rate >= args.max_rate:
                break
            rate = min(rate * 2, float(args.max_rate))
        else:
            if high - low <= max(2.0, 0.1 * high):
                break
            rate = (low + high) / 2 if low > 0 else high / 2
    return trials


def _trial_doc(t: Trial) -> dict[str, Any]:
    return {"rate": t.rate, "attempted": t.attempted, "answered": t.answered,
            "achieved_cps": round(t.achieved_cps, 1), "p50_ms": t.p50_ms and round(t.p50_ms, 3),
            "passed": t.passed}


async def run(args: argparse.Namespace) -> dict[str, Any]:
    logging.getLogger("sipsec").setLevel(logging.WARNING)
    engines: list[CountingEngine] = []

    def engine(_: str, inner: CryptoEngine) -> CountingEngine:
        engines.append(CountingEngine(inner))
        return engines[-1]

    async with TwoDomainTopology(trace_calls=0, tap=False, signing=args.signing,
                                 call_timeout_s=args.timeout_s, engine_factory=engine,
                                 threaded_crypto=args.threaded_crypto, workers=args.workers) as topo:
        await topo.login(ALICE)
        await topo.login(BOB, auto_answer=True)
        alice = topo.gateway_for(ALICE)
        await latency(alice, True, args.warmup, args.timeout_s)
        await latency(alice, False, args.warmup, args.timeout_s)
        profile = cProfile.Profile() if args.profile else None
        if profile is not None:
            profile.enable()
        count0, seconds0 = _totals(engines)
        cpu0 = time.process_time()
        secured = await latency(alice, True, args.calls, args.timeout_s)
        secured_cpu = time.process_time() - cpu0
        if profile is not None:
            profile.disable()
        count1, seconds1 = _totals(engines)
        answered = max(1, len(secured.setup_ms))
        ops = {op: (count1[op] - count0.get(op, 0)) / answered for op in count1}
        ops_ms = {op: (seconds1[op] - seconds0.get(op, 0.0)) * 1e3 / answered for op in seconds1}
        cpu0 = time.process_time()
        plain = await latency(alice, False, args.calls, args.timeout_s)
        plain_cpu = time.process_time() - cpu0
        trials = await throughput(alice, args) if args.budget_s > 0 else []
        setup_trials = await throughput(alice, args, bye=False) if args.budget_s > 0 and args.setup_only else []
    if not secured.setup_ms or not plain.setup_ms:
        raise SystemExit("call_setup: no call was answered")
    s50, p50 = percentile(secured.setup_ms, 50), percentile(plain.setup_ms, 50)
    passing = [t for t in trials if t.passed]
    best = max(passing, key=lambda t: t.rate) if passing else None
    setup_passing = [t for t in setup_trials if t.passed]
    setup_best = max(setup_passing, key=lambda t: t.rate) if setup_passing else None
    result: dict[str, Any] = {
        "calls": args.calls,
        "signing": args.signing,
        "threaded_crypto": args.threaded_crypto,
        "workers": args.workers,
        "secured_p50_ms": round(s50, 3),
        "secured_p95_ms": round(percentile(secured.setup_ms, 95), 3),
        "plain_p50_ms": round(p50, 3),
        "plain_p95_ms": round(percentile(plain.setup_ms, 95), 3),
        "ratio": round(s50 / p50, 3),
        "overhead_ms": round(s50 - p50, 3),
        "secured_bytes": int(statistics.median(secured.bytes_per_call)),
        "plain_bytes": int(statistics.median(plain.bytes_per_call)),
        "bytes_ratio": round(statistics.median(secured.bytes_per_call) / statistics.median(plain.bytes_per_call), 3),
        "signatures_per_secured_call": round(ops.get("sign", 0.0), 2),
        "verifications_per_secured_call": round(ops.get("verify", 0.0), 2),
        "cpu_ms_per_secured_call": round(secured_cpu * 1e3 / answered, 2),
        "cpu_ms_per_plain_call": round(plain_cpu * 1e3 / max(1, len(plain.setup_ms)), 2),
        "crypto_ms_per_secured_call": {op: round(v, 2) for op, v in sorted(ops_ms.items())},
        "secured_failed": secured.failed,
        "plain_failed": plain.failed,
        "secured_cps": best.rate if best else 0.0,
        "secured_cps_achieved": round(best.achieved_cps, 1) if best else 0.0,
        "secured_setup_only_cps": setup_best.rate if setup_best else None,
        "trials": [_trial_doc(t) for t in trials],
        "setup_only_trials": [_trial_doc(t) for t in setup_trials],
    }
    result["bars"] = {
        "secured_p50_ms<=25": result["secured_p50_ms"] <= BARS["secured_p50_ms"],
        "overhead_ms<=20": result["overhead_ms"] <= BARS["overhead_ms"],
        "secured_cps>=100": result["secured_cps"] >= BARS["secured_cps"],
    }
    if profile is not None:
        out = io.StringIO()
        stats = pstats.Stats(profile, stream=out)
        stats.sort_stats("tottime").print_stats(args.profile_top)
        result["profile"] = out.getvalue()
    return result


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--calls", type=int, default=200, help="sequential calls per kind (default 200)")
    parser.add_argument("--warmup", type=int, default=10, help="untimed calls per kind first (default 10)")
    parser.add_argument("--signing", default="every-message", choices=("every-message", "dialog-establishing"))
    parser.add_argument("--threaded-crypto", action="store_true",
                        help="the gateways run pairings on a thread pool (default: inline, the embedded default)")
    parser.add_argument("--workers", type=int, default=0,
                        help="run the pairings on an in-process crypto-worker with this many pool processes "
                             "(default 0: in-process crypto, the embedded default)")
    parser.add_argument("--timeout-s", type=float, default=5.0, help="longest wait for a call's setup")
    parser.add_argument("--start-rate", type=float, default=10.0, help="first throughput trial, calls/s")
    parser.add_argument("--max-rate", type=float, default=400.0, help="highest rate tried, calls/s")
    parser.add_argument("--trial-s", type=float, default=3.0, help="seconds per throughput trial")
    parser.add_argument("--max-in-flight", type=int, default=100, help="bound on calls in flight")
    parser.add_argument("--budget-s", type=float, default=75.0, help="time for each rate search (0 = skip)")
    parser.add_argument("--setup-only", action=argparse.BooleanOptionalAction, default=True,
                        help="also search the rate of setups alone (calls held, hung up after each trial)")
    parser.add_argument("--profile", action="store_true", help="cProfile the secured latency calls")
    parser.add_argument("--profile-top", type=int, default=30)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    result = asyncio.run(run(args))
    if args.json:
        print(json.dumps(result))
        return 0
    from rich.console import Console
    from rich.table import Table

    console = Console()
    table = Table(title=f"call setup, two domains on loopback, {args.calls} sequential calls per kind")
    for col in ("", "p50", "p95", "bytes/call"):
        table.add_column(col, justify="right")
    table.add_row("secured", f"{result['secured_p50_ms']:.2f} ms", f"{result['secured_p95_ms']:.2f} ms",
                  str(result["secured_bytes"]))
    table.add_row("plain", f"{result['plain_p50_ms']:.2f} ms", f"{result['plain_p95_ms']:.2f} ms",
                  str(result["plain_bytes"]))
    table.add_row("secured/plain", f"{result['ratio']:.2f}×", f"overhead {result['overhead_ms']:.2f} ms",
                  f"{result['bytes_ratio']:.2f}×")
    console.print(table)
    console.print(f"per secured call (INVITE … BYE 200): {result['signatures_per_secured_call']:g} signatures "
                  f"made, {result['verifications_per_secured_call']:g} verified ({args.signing})")
    crypto = result["crypto_ms_per_secured_call"]
    console.print(f"CPU per call (this process): secured {result['cpu_ms_per_secured_call']:.1f} ms, "
                  f"plain {result['cpu_ms_per_plain_call']:.1f} ms; of a secured call's, pairing-based "
                  f"crypto {sum(crypto.values()):.1f} ms ("
                  + ", ".join(f"{op} {v:.1f}" for op, v in crypto.items()) + ")")
    trials = Table(title="secured throughput search (setup + BYE per call)")
    for col in ("rate/s", "attempted", "answered", "achieved/s", "p50 ms", "pass"):
        trials.add_column(col, justify="right")
    for t in result["trials"]:
        trials.add_row(f"{t['rate']:.0f}", str(t["attempted"]), str(t["answered"]), f"{t['achieved_cps']:.1f}",
                       "—" if t["p50_ms"] is None else f"{t['p50_ms']:.1f}", "✓" if t["passed"] else "✗")
    console.print(trials)
    if result["setup_only_trials"]:
        held = Table(title="secured throughput search, setups only (calls held, hung up after the trial)")
        for col in ("rate/s", "attempted", "answered", "achieved/s", "p50 ms", "pass"):
            held.add_column(col, justify="right")
        for t in result["setup_only_trials"]:
            held.add_row(f"{t['rate']:.0f}", str(t["attempted"]), str(t["answered"]), f"{t['achieved_cps']:.1f}",
                         "—" if t["p50_ms"] is None else f"{t['p50_ms']:.1f}", "✓" if t["passed"] else "✗")
        console.print(held)
    console.print(f"secured setups/s (>= 99.5 % answered, kept up): {result['secured_cps']:.0f} with BYE, "
                  f"{result['secured_setup_only_cps'] or 0:.0f} setups alone")
    console.print("bars: " + ", ".join(f"{k} {'✓' if v else '✗'}" for k, v in result["bars"].items()))
    if "profile" in result:
        console.print(result["profile"], markup=False, highlight=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
