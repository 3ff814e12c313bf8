"""Benchmark of sipsec.ibc suite v1: medians per operation, against the bars of docs/architecture.md#performance-bars.

``python bench/ibc.py`` prints a table; ``--json`` prints one JSON object whose ``*_ms`` keys are
medians in milliseconds (setup, extract, encapsulate, decapsulate, sign, verify, and
threshold_combine for t=3, n=5, which verifies each of the t partials). ``encapsulate`` and
``sign`` repeat one recipient / one key, as a gateway does, so they run on the fixed-base
tables, built once the key or recipient was used often enough (7 signatures, 5 encapsulations);
``encapsulate_uncached`` (a new recipient each time) and ``sign_first`` (a new key object each
time) are the first-use costs.
``verify_batch_N_per_signature_ms`` is ``ibc.verify_batch`` over N valid signatures, divided by N.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable

from rich.console import Console
from rich.table import Table
from sipsec import ibc
from sipsec.ibc.hazmat import backend as bk

BARS_MS = {"encapsulate_ms": 3.0, "decapsulate_ms": 2.0, "sign_ms": 1.0, "verify_ms": 3.5}
PERIOD = 684


def samples_ns(fn: Callable[[], object], count: int) -> list[int]:
    """Wall times of ``count`` runs of ``fn`` in ns."""
    out = []
    for _ in range(count):
        t0 = time.perf_counter_ns()
        fn()
        out.append(time.perf_counter_ns() - t0)
    return out


def pooled_medians_ms(
    ops: dict[str, Callable[[], object]], repeat: int, rounds: int = 5
) -> dict[str, float]:
    """Median (ms) per op of ``repeat`` runs taken in ``rounds`` interleaved rounds.

    Interleaving spreads any background load on a shared machine evenly over the operations
    instead of letting one burst land on whichever operation was running.
    """
    for fn in ops.values():
        fn()  # warm-up (fixed-base table, caches)
    pooled: dict[str, list[int]] = {name: [] for name in ops}
    per_round = max(1, repeat // rounds)
    for _ in range(rounds):
        for name, fn in ops.items():
            pooled[name] += samples_ns(fn, per_round)
    return {name: statistics.median(v) / 1e6 for name, v in pooled.items()}


def run(repeat: int) -> dict[str, float | int | str]:
    master, params = ibc.setup("biloxi.com")
    enc = params.identity("sip:bob@biloxi.com", ibc.Purpose.ENC, PERIOD)
    sig = params.identity("sip:bob@biloxi.com", ibc.Purpose.SIG, PERIOD)
    enc_key = ibc.extract(master, params, enc)
    sig_key = ibc.extract(master, params, sig)
    _, ct = ibc.encapsulate(params, enc)
    message = b"INVITE sip:alice@atlanta.com SIP/2.0\r\n" + b"x" * 900
    signature = ibc.sign(sig_key, message)
    shares, tparams = ibc.split_master(master, params, 3, 5)
    partials = [ibc.partial_extract(s, enc) for s in shares[:3]]
    counter = iter(range(10**9))

    def cold_encapsulate() -> object:  # a new identity each time: Q_ID not cached
        ident = params.identity(f"sip:u{next(counter)}@biloxi.com", ibc.Purpose.ENC, PERIOD)
        return ibc.encapsulate(params, ident)

    def first_signature() -> object:  # a new key object each time: no signing tables yet
        return ibc.sign(ibc.PrivateKey.from_bytes(sig, sig_key.to_bytes()), message)

    batches = {n: [(params, sig, b"%d " % i + message, ibc.sign(sig_key, b"%d " % i + message)) for i in range(n)]
               for n in (2, 4, 8, 32)}

    p1, p2 = bk.g1_generator(), bk.g2_generator()
    k = bk.random_scalar()
    ops: dict[str, Callable[[], object]] = {
        "setup_ms": lambda: ibc.setup("atlanta.com"),
        "extract_ms": lambda: ibc.extract(master, params, enc),
        "encapsulate_ms": lambda: ibc.encapsulate(params, enc),
        "decapsulate_ms": lambda: ibc.decapsulate(enc_key, ct),
        "sign_ms": lambda: ibc.sign(sig_key, message),
        "verify_ms": lambda: ibc.verify(params, sig, message, signature),
        "threshold_combine_ms": lambda: ibc.combine(tparams, enc, partials),
        "encapsulate_uncached_ms": cold_encapsulate,
        "sign_first_ms": first_signature,
        **{f"verify_batch_{n}_ms": (lambda items=items: ibc.verify_batch(items)) for n, items in batches.items()},
        "pairing_ms": lambda: bk.pairing(p1, p2),
        "pairing_check_2_ms": lambda: bk.pairing_check([p1, -p1], [p2, p2]),
        "g2_mul_ms": lambda: bk.g2_mul(p2, k),
        "g2_fixed_base_mul_ms": lambda: bk.g2_generator_mul(k),
        "g1_mul_ms": lambda: bk.g1_mul(p1, k),
        "hash_to_g1_ms": lambda: bk.G1Point.hash_to_curve(b"sip:x@y", b"DST"),
    }
    results: dict[str, float | int | str] = dict(pooled_medians_ms(ops, repeat))
    for n in batches:  # per signature
        results[f"verify_batch_{n}_per_signature_ms"] = float(results.pop(f"verify_batch_{n}_ms")) / n
    results["repeat"] = repeat
    results["loadavg_1m"] = os.getloadavg()[0]
    results["cpus"] = os.cpu_count() or 0
    results["python"] = platform.python_version()
    return results


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="sipsec.ibc benchmark")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--repeat", type=int, default=200, help="timed runs per operation")
    args = ap.parse_args(argv)
    results = run(max(1, args.repeat))
    failed = [k for k, bar in BARS_MS.items() if float(results[k]) > bar]
    if args.json:
        print(
            json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in results.items()})
        )
    else:
        table = Table(
            title=f"sipsec.ibc suite v1 — medians of {args.repeat} runs "
            f"(load average {results['loadavg_1m']:.2f} on {results['cpus']} CPUs)"
        )
        table.add_column("operation")
        table.add_column("median", justify="right")
        table.add_column("bar", justify="right")
        table.add_column("")
        for key, value in results.items():
            if not key.endswith("_ms") or not isinstance(value, float):
                continue
            bar = BARS_MS.get(key)
            verdict = (
                "" if bar is None else ("[green]ok[/]" if float(value) <= bar else "[red]MISSED[/]")
            )
            table.add_row(key[:-3], f"{float(value):.3f} ms", f"≤ {bar} ms" if bar else "", verdict)
        Console().print(table)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
