"""Where a secured call's CPU goes in `sipsec up` as shipped: CPU per call of every process.

Drives a running `sipsec up` (``--up-json``: the object ``sipsec up --json`` printed) at one
constant rate with ``bench/load.py`` (1,000 users per domain by default, random pairs, the
population of ``--population`` reused or provisioned), and reads the CPU time (user + system,
``psutil``) of every service, its children (the crypto-worker's pool processes) and the load
generator over a window in the middle of the trial. Prints, per process, the cores it kept busy
and its milliseconds of CPU per completed call, and the sum.

    .venv/bin/python bench/up_cpu.py --up-json up.json --population pop.json [--rate 15]
                                     [--trial-s 40] [--window 20] [--json]

The population must exist already (provision it once with ``bench/load.py --population FILE``):
the window starts ``--skip`` seconds after the generator starts, once its phones have
registered, so that neither provisioning nor registration is counted. On a 2-core machine the figure
to read is ``all``: two cores divided by it bound the calls per second the machine can carry.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))
from bench.worker_offload import _cpu  # noqa: E402


def _processes(up: dict[str, Any], generator: psutil.Process) -> dict[str, list[psutil.Process]]:
    out: dict[str, list[psutil.Process]] = {}
    for s in up["services"]:
        try:
            p = psutil.Process(int(s["pid"]))
            out[f'{s["service"]} {s["domain"]}'] = [p, *p.children(recursive=True)]
        except psutil.NoSuchProcess:
            continue
    out["load generator"] = [generator, *generator.children(recursive=True)]
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--up-json", required=True, help="what `sipsec up --json` printed")
    parser.add_argument("--population", required=True, help="bench/load.py's population file (reused or written)")
    parser.add_argument("--users", type=int, default=1000, help="users per domain")
    parser.add_argument("--rate", type=float, default=15.0, help="calls per second offered")
    parser.add_argument("--trial-s", type=float, default=40.0, help="length of the constant-rate trial")
    parser.add_argument("--skip", type=float, default=15.0,
                        help="seconds after the generator starts before the window (its phones register first)")
    parser.add_argument("--window", type=float, default=20.0, help="seconds the CPU is read over")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    if args.skip + args.window > args.trial_s:
        parser.error("--skip + --window must fit in --trial-s")
    if not Path(args.population).is_file():
        parser.error("--population must name an existing population (bench/load.py --population writes one)")
    up = json.loads(Path(args.up_json).read_text().splitlines()[0])
    cmd = [sys.executable, str(BENCH / "load.py"), "--json", "--up-json", args.up_json, "--population",
           args.population, "--users", str(args.users), "--rates", f"{args.rate:g}", "--trial-s",
           f"{args.trial_s:g}", "--latency-rate", f"{args.rate:g}", "--latency-s", "2", "--hold-steps", "",
           "--no-best-case"]
    gen = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(args.skip)  # the phones register (Digest), then the trial runs
    procs = _processes(up, psutil.Process(gen.pid))
    before = {k: _cpu(v) for k, v in procs.items()}
    t0 = time.monotonic()
    time.sleep(args.window)
    after = {k: _cpu(v) for k, v in procs.items()}
    wall = time.monotonic() - t0
    out_text, err_text = gen.communicate()
    if gen.returncode not in (0, 1):
        print(err_text[-2000:], file=sys.stderr)
        return 1
    ladder = json.loads(out_text)["headline"]["ladder"][0]
    rate = float(ladder["achieved_cps"]) or args.rate
    rows = {k: {"cores": round((after[k] - before[k]) / wall, 3),
                "ms_per_call": round((after[k] - before[k]) / wall / rate * 1e3, 2)} for k in procs}
    total = sum(after[k] - before[k] for k in procs) / wall
    result = {"rate_offered": args.rate, "achieved_cps": rate, "completed": ladder["completed"],
              "failed": ladder["failed"], "setup_ms": ladder["setup_ms"], "window_s": round(wall, 1),
              "processes": rows, "all": {"cores": round(total, 3), "ms_per_call": round(total / rate * 1e3, 2)}}
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{args.rate:g} calls/s offered, {rate:g}/s achieved, {ladder['completed']} completed, "
              f"{ladder['failed']} failed; CPU over {wall:.0f} s:")
        for k, r in sorted(rows.items(), key=lambda kv: -kv[1]["cores"]):
            print(f"  {k:24s} {r['cores']:5.2f} cores  {r['ms_per_call']:6.1f} ms/call")
        print(f"  {'all':24s} {total:5.2f} cores  {total / rate * 1e3:6.1f} ms/call")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
