"""Benchmark: secured vs plain call setup across two domains (one process, loopback), then secured throughput.

The two-domain topology of ``sipsec demo`` (:class:`sipsec_cli.topology.TwoDomainTopology`:
PKG, location, proxy and UA gateway per domain, in-memory stores, in-process crypto), with
call tracing and proxy taps off. sip:alice@atlanta.com calls sip:bob@biloxi.com, who
auto-answers; every message of a secured call is signed (signing policy ``every-message``).

1. Latency: ``--calls`` (default 200) sequential secured calls, then as many plain ones; the
   setup latency of a call is from placing it (the INVITE is built, sealed and sent) until the
   2xx is opened and the ACK sent; each call is then hung up (BYE/200, not timed). Bytes per
   call: everything Alice's gateway sent and received for the call (INVITE … BYE/200), as the
   thesis counted them (Tables 5, 6).
2. Throughput: secured calls (setup and BYE) started at a fixed rate for ``--trial-s`` seconds
   with at most ``--max-in-flight`` calls in flight (a call that cannot start counts as
   failed); a rate passes when >= 99.5 % of its calls are answered within ``--timeout-s``.
   The search doubles the rate until one fails, then bisects; the whole search stops after
   ``--budget-s`` seconds.

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

from sipsec_cli.topology import TwoDomainTopology  # noqa: E402
from sipsec_gateway.calls import CallState  # noqa: E402
from sipsec_gateway.gateway import Gateway, GatewayError  # noqa: E402

ALICE = "sip:alice@atlanta.com"
BOB = "sip:bob@biloxi.com"
PASS_RATIO = 0.995
BARS = {"secured_p50_ms": 25.0, "overhead_ms": 20.0, "secured_cps": 100.0}


def percentile(samples: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty sample."""
    ordered = sorted(samples)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


@dataclass
class Latency:
    setup_ms: list[float] = field(default_factory=list)
    bytes_per_call: list[int] = field(default_factory=list)
    failed: int = 0


async def _call(alice: Gateway, secure: bool, timeout_s: float) -> tuple[float, int] | None:
    """One call: placed, set up, hung up. (setup ms, bytes) or None when it was not answered."""
    t0 = time.perf_counter()
    try:
        call = await alice.place_call(ALICE, BOB, secure=secure, timeout=timeout_s)
    except GatewayError:
        return None
    setup_ms = (time.perf_counter() - t0) * 1e3
    if call.state is not CallState.ESTABLISHED or call.secure is not secure:
        return None
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
        return self.attempted > 0 and self.answered >= PASS_RATIO * self.attempted

    @property
    def achieved_cps(self) -> float:
        return self.answered / self.elapsed_s if self.elapsed_s > 0 else 0.0


async def trial(alice: Gateway, rate: float, duration_s: float, max_in_flight: int, timeout_s: float) -> Trial:
    """Start secured calls at ``rate``/s for ``duration_s`` seconds, at most ``max_in_flight`` at once."""
    loop = asyncio.get_running_loop()
    total = max(1, int(rate * duration_s))
    in_flight = 0
    answered = 0
    setups: list[float] = []
    tasks: set[asyncio.Task[None]] = set()

    async def one() -> None:
        nonlocal in_flight, answered
        try:
            outcome = await _call(alice, True, timeout_s)
        finally:
            in_flight -= 1
        if outcome is not None:
            answered += 1
            setups.append(outcome[0])

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
    elapsed = loop.time() - start
    for task in list(tasks):
        task.cancel()
    return Trial(rate, total, answered, elapsed, statistics.median(setups) if setups else None)


async def throughput(alice: Gateway, args: argparse.Namespace) -> list[Trial]:
    """Double the rate until a trial fails, then bisect; within ``budget_s`` seconds."""
    deadline = time.monotonic() + args.budget_s
    trials: list[Trial] = []
    low, high = 0.0, None
    rate = float(args.start_rate)
    while time.monotonic() + args.trial_s < deadline:
        t = await trial(alice, rate, args.trial_s, args.max_in_flight, args.timeout_s)
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


async def run(args: argparse.Namespace) -> dict[str, Any]:
    logging.getLogger("sipsec").setLevel(logging.WARNING)
    async with TwoDomainTopology(trace_calls=0, tap=False, signing=args.signing,
                                 call_timeout_s=args.timeout_s) as topo:
        await topo.login(ALICE)
        await topo.login(BOB, auto_answer=True)
        alice = topo.gateway_for(ALICE)
        await latency(alice, True, args.warmup, args.timeout_s)
        await latency(alice, False, args.warmup, args.timeout_s)
        profile = cProfile.Profile() if args.profile else None
        if profile is not None:
            profile.enable()
        secured = await latency(alice, True, args.calls, args.timeout_s)
        if profile is not None:
            profile.disable()
        plain = await latency(alice, False, args.calls, args.timeout_s)
        trials = await throughput(alice, args) if args.budget_s > 0 else []
    if not secured.setup_ms or not plain.setup_ms:
        raise SystemExit("call_setup: no call was answered")
    s50, p50 = percentile(secured.setup_ms, 50), percentile(plain.setup_ms, 50)
    passing = [t for t in trials if t.passed]
    best = max(passing, key=lambda t: t.rate) if passing else None
    result: dict[str, Any] = {
        "calls": args.calls,
        "signing": args.signing,
        "secured_p50_ms": round(s50, 3),
        "secured_p95_ms": round(percentile(secured.setup_ms, 95), 3),
        "plain_p50_ms": round(p50, 3),
        "plain_p95_ms": round(percentile(plain.setup_ms, 95), 3),
        "ratio": round(s50 / p50, 3),
        "overhead_ms": round(s50 - p50, 3),
        "secured_bytes": int(statistics.median(secured.bytes_per_call)),
        "plain_bytes": int(statistics.median(plain.bytes_per_call)),
        "bytes_ratio": round(statistics.median(secured.bytes_per_call) / statistics.median(plain.bytes_per_call), 3),
        "secured_failed": secured.failed,
        "plain_failed": plain.failed,
        "secured_cps": best.rate if best else 0.0,
        "secured_cps_achieved": round(best.achieved_cps, 1) if best else 0.0,
        "trials": [{"rate": t.rate, "attempted": t.attempted, "answered": t.answered,
                    "achieved_cps": round(t.achieved_cps, 1), "p50_ms": t.p50_ms and round(t.p50_ms, 3),
                    "passed": t.passed} for t in trials],
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
    parser.add_argument("--timeout-s", type=float, default=5.0, help="longest wait for a call's setup")
    parser.add_argument("--start-rate", type=float, default=10.0, help="first throughput trial, calls/s")
    parser.add_argument("--max-rate", type=float, default=400.0, help="highest rate tried, calls/s")
    parser.add_argument("--trial-s", type=float, default=3.0, help="seconds per throughput trial")
    parser.add_argument("--max-in-flight", type=int, default=100, help="bound on calls in flight")
    parser.add_argument("--budget-s", type=float, default=90.0, help="time for the whole search (0 = skip)")
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
    trials = Table(title="secured throughput search (setup + BYE per call)")
    for col in ("rate/s", "attempted", "answered", "achieved/s", "p50 ms", "pass"):
        trials.add_column(col, justify="right")
    for t in result["trials"]:
        trials.add_row(f"{t['rate']:.0f}", str(t["attempted"]), str(t["answered"]), f"{t['achieved_cps']:.1f}",
                       "—" if t["p50_ms"] is None else f"{t['p50_ms']:.1f}", "✓" if t["passed"] else "✗")
    console.print(trials)
    console.print(f"secured setups/s (>= 99.5 % answered): {result['secured_cps']:.0f}")
    console.print("bars: " + ", ".join(f"{k} {'✓' if v else '✗'}" for k, v in result["bars"].items()))
    if "profile" in result:
        console.print(result["profile"], markup=False, highlight=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
