"""Benchmark: the deployed shape under load, measured with ``sipsec load`` (a thin wrapper over it).

By default it starts ``sipsec up`` (one process per service, a Redis per domain, the
crypto-worker pool — what compose and Kubernetes run) and stops it at the end; ``--up-json
FILE`` drives a running one instead, ``--embedded`` the in-process topology. One population of
``--users`` users per domain (default 1,000, more than any cache holds) is provisioned once
(``sipsec-pkg user import``, ``POST /v1/users/bulk``) and every call is between a random
caller and a random callee of the other domain; then, with plain-SIP phones:

1. ``secured_cps_achieved``: a ladder of constant-rate runs (``--rates``, ``--trial-s`` each,
   every call set up and torn down with BYE); a rate passes when ≥ 99.5 % of its calls
   completed and the setup p95 ≤ 250 ms; the figure is the best passing run's **achieved**
   rate (completed calls per second), never the offered one;
2. ``setup_p50_ms`` / ``setup_p95_ms`` / ``setup_p99_ms`` at 50 calls/s (``--latency-rate``,
   ``--latency-s``; ``setup_at_cps`` says the rate);
3. ``concurrent_calls_held``: hold profiles of ``--hold-steps`` calls (up to 2,000), each held
   until all are up, started at ``--hold-rate`` calls/s (default: the highest offered rate the
   ladder passed, else its lowest: a deployment that cannot set calls up at 50/s cannot build
   up held calls at 50/s either; ``hold_rate`` in the output says which); the most held at once
   with 0 failed, and ``rss_kib_per_held_call`` per process (RSS growth from before the run to
   the peak, over the calls held);
4. the same for the one-pair best case (``best_case``: every call between the same two users),
   labelled so (``--no-best-case`` skips it).

``--population FILE`` (with ``--up-json``) provisions once and reuses: the first run writes the
population it provisioned and logged in there (0600: it holds passwords), later runs against
the same running ``sipsec up`` read it and skip provisioning (2,000 users cost minutes of scrypt).

``--sipp-check`` instead drives the same deployment with SIPp (the files of ``sipsec load
--emit-sipp``) and with ``sipsec load`` at one rate, and compares completed calls and rates.

    .venv/bin/python bench/load.py --json                 # everything (tens of minutes at 1,000 users)
    .venv/bin/python bench/load.py --json --users 100 --rates 10,20 --hold-steps 100 --no-best-case
    .venv/bin/python bench/load.py --json --sipp-check --users 100 --rate 10 --trial-s 20
    .venv/bin/python bench/load.py --json --up-json up.json --population pop.json --hold-steps ''
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sipsec_cli.load import target as targets  # noqa: E402
from sipsec_cli.load.profile import Profile  # noqa: E402
from sipsec_cli.load.run import LoadOptions, Population, provision, run_load  # noqa: E402
from sipsec_cli.load.sipp import write_sipp  # noqa: E402

P95_BAR_MS = 250.0
COMPLETED_BAR = 0.995


def _brief(doc: dict[str, Any]) -> dict[str, Any]:
    keys = ("offered", "completed", "failed", "offered_cps", "achieved_cps", "completed_ratio", "setup_ms",
            "failures", "concurrent_calls_held")
    return {k: doc[k] for k in keys}


async def _ladder(target: targets.Target, base: LoadOptions, pop: Population, rates: list[float],
                  trial_s: float, log: Any) -> tuple[float, list[dict[str, Any]]]:
    best, runs = 0.0, []
    for rate in rates:
        doc = await run_load(target, replace(base, profile=Profile("constant", rate, trial_s)), population=pop)
        ok = doc["completed_ratio"] >= COMPLETED_BAR and (doc["setup_ms"]["p95"] or 1e9) <= P95_BAR_MS
        runs.append({"rate": rate, "passed": ok, **_brief(doc)})
        print(f"load: {rate:g}/s offered: {doc['achieved_cps']}/s achieved, p95 {doc['setup_ms']['p95']} ms, "
              f"{doc['failed']} failed -> {'pass' if ok else 'fail'}", file=log, flush=True)
        if not ok:
            break
        best = max(best, float(doc["achieved_cps"]))
    return best, runs


async def _held(target: targets.Target, base: LoadOptions, pop: Population, steps: list[int], rate: float,
                log: Any) -> dict[str, Any]:
    held, rss, runs = 0, {}, []
    for count in steps:
        ramp_s = count / rate
        profile = Profile("hold", rate, ramp_s + 2, concurrent=count, hold_s=ramp_s + 5)
        doc = await run_load(target, replace(base, profile=profile, timeout_s=32.0), population=pop)
        ok = doc["failed"] == 0 and doc["concurrent_calls_held"] >= count
        runs.append({"concurrent": count, "passed": ok, "rss_kib_per_held_call": doc["rss_kib_per_held_call"],
                     **_brief(doc)})
        print(f"load: hold {count}: {doc['concurrent_calls_held']} held at once, {doc['failed']} failed",
              file=log, flush=True)
        if not ok:
            break
        held, rss = doc["concurrent_calls_held"], doc["rss_kib_per_held_call"]
    return {"concurrent_calls_held": held, "rss_kib_per_held_call": rss, "hold_runs": runs}


async def _figures(target: targets.Target, args: argparse.Namespace, pop: Population, one_pair: bool) -> dict[str, Any]:
    log = sys.stderr
    base = LoadOptions(Profile(), args.users, args.procs, live=False, one_pair=one_pair)
    cps, ladder = await _ladder(target, base, pop, [float(r) for r in args.rates.split(",")], args.trial_s, log)
    at50 = await run_load(target, replace(base, profile=Profile("constant", args.latency_rate, args.latency_s)),
                          population=pop)
    out: dict[str, Any] = {
        "label": "best case: one caller/callee pair" if one_pair
                 else f"{args.users:,} users per domain, random caller/callee pairs",
        "secured_cps_achieved": cps,
        "setup_p50_ms": at50["setup_ms"]["p50"], "setup_p95_ms": at50["setup_ms"]["p95"],
        "setup_p99_ms": at50["setup_ms"]["p99"], "setup_at_cps": args.latency_rate, "latency_run": _brief(at50),
        "ladder": ladder,
    }
    if args.hold_steps:
        rates = [float(r) for r in args.rates.split(",")]
        hold_rate = args.hold_rate or max((r["rate"] for r in ladder if r["passed"]), default=min(rates))
        out["hold_rate"] = hold_rate
        out.update(await _held(target, base, pop, [int(x) for x in args.hold_steps.split(",")], hold_rate, log))
    return out


def _sipp_run(directory: Path, target: targets.Target, pop: Population, rate: float, seconds: float) -> dict[str, Any]:
    """SIPp phones: one UAS per callee domain, every callee REGISTERed to it, then the UACs; counts."""
    sipp = shutil.which("sipp")
    if sipp is None:
        raise SystemExit("load: --sipp-check needs sipp (scripts/install-system-deps.sh)")
    names = list(target.domains)
    procs: list[subprocess.Popen[bytes]] = []
    calls = int(rate * seconds)
    try:
        for i, d in enumerate(names):
            host = f"127.{110 + i}.0.1"
            uas = subprocess.Popen([sipp, "-sf", "uas.xml", "-i", host, "-p", "15060", "-nostdin",  # noqa: S603
                                    "-timeout", f"{seconds + 90:.0f}s"], cwd=directory,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            procs.append(uas)
            ph, pp = target.domains[d].phone
            subprocess.run([sipp, f"{ph}:{pp}", "-sf", "register.xml", "-inf", f"register-{d}.csv",  # noqa: S603
                            "-key", "contact_port", "15060", "-i", host, "-m", str(len(pop.users[d])), "-r", "10",
                            "-nostdin", "-timeout", "120s"], cwd=directory, check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        caller = names[0]
        ph, pp = target.domains[caller].phone
        # 4 UACs on addresses of their own (the gateway limits requests per source address)
        uacs = [subprocess.Popen([sipp, f"{ph}:{pp}", "-sf", "uac.xml", "-inf", f"calls-{caller}.csv",  # noqa: S603
                                  "-i", f"127.120.0.{k + 1}", "-r", f"{rate / 4:g}", "-m", str(calls // 4),
                                  "-d", "0", "-nostdin", "-timeout", f"{seconds + 60:.0f}s",
                                  "-trace_stat", "-fd", "1", "-stf", f"uac{k}.csv"], cwd=directory,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for k in range(4)]
        for u in uacs:
            u.wait(seconds + 120)
        ok, failed, starts, ends = 0, 0, [], []
        for k in range(4):
            done, lost, start, end = _sipp_stats(directory / f"uac{k}.csv")
            ok, failed = ok + done, failed + lost
            starts.append(start)
            ends.append(end)
        elapsed = max(ends) - min(starts)
        return {"offered": calls // 4 * 4, "completed": ok, "failed": failed, "run_s": round(elapsed, 1),
                "achieved_cps": round(ok / max(1.0, elapsed), 2)}

    finally:
        for p in procs:
            p.terminate()
            p.wait(10)


def _epoch(field: str) -> float:
    return float(field.split("\t")[-1])


def _sipp_stats(path: Path) -> tuple[int, int, float, float]:
    """(completed, failed, start, when the last call completed) from a UAC's ``-trace_stat -fd 1``
    rows (one a second: the completion time is known to the second, as ``sipsec load``'s span is)."""
    lines = path.read_text().splitlines()
    head = lines[0].split(";")
    rows = [line.split(";") for line in lines[1:] if line.strip()]
    ok_i, failed_i = head.index("SuccessfulCall(C)"), head.index("FailedCall(C)")
    start_i, now_i = head.index("StartTime"), head.index("CurrentTime")
    final = int(rows[-1][ok_i])
    done_at = next(r for r in rows if int(r[ok_i]) == final)
    return final, int(rows[-1][failed_i]), _epoch(rows[0][start_i]), _epoch(done_at[now_i])


async def _sipp_check(target: targets.Target, args: argparse.Namespace, pop: Population) -> dict[str, Any]:
    base = LoadOptions(Profile("constant", args.rate, args.trial_s), args.users, args.procs, live=False)
    ours = await run_load(target, base, population=pop)
    with tempfile.TemporaryDirectory(prefix="sipsec-sipp-") as tmp:
        directory = Path(tmp)
        write_sipp(directory, target, pop)
        theirs = await asyncio.to_thread(_sipp_run, directory, target, pop, args.rate, args.trial_s)
    agree = ours["completed"] == theirs["completed"] and abs(ours["achieved_cps"] - theirs["achieved_cps"]) <= (
        0.1 * max(ours["achieved_cps"], theirs["achieved_cps"]))
    return {"rate": args.rate, "sipsec_load": _brief(ours), "sipp": theirs, "agree": agree}


async def _population(target: targets.Target, args: argparse.Namespace) -> tuple[Population, bool]:
    """The population: read from ``--population`` when that file exists (already provisioned and
    logged in on this running deployment), else provisioned now (and written there when given);
    whether it was reused."""
    path = Path(args.population) if args.population else None
    if path is not None and path.exists():
        users = json.loads(path.read_text(encoding="utf-8"))
        if set(users) != set(target.domains) or any(len(v) < args.users for v in users.values()):
            raise SystemExit(f"load: {path} holds another population (domains {sorted(users)}, "
                             f"{min((len(v) for v in users.values()), default=0)} users); remove it to provision anew")
        return Population({d: [(str(u[0]), str(u[1]), str(u[2])) for u in v[:args.users]]
                           for d, v in users.items()}), True
    pop = await provision(target, LoadOptions(Profile(), args.users, live=False))
    if path is not None:
        path.touch(0o600)
        path.write_text(json.dumps(pop.users), encoding="utf-8")
    return pop, False


async def run(args: argparse.Namespace) -> dict[str, Any]:
    up_run = None
    if args.embedded:
        target = await targets.embedded()
    elif args.up_json:
        target = targets.from_up(json.loads(Path(args.up_json).read_text()))
    else:
        up_run = await asyncio.to_thread(targets.start_up, ["--worker-processes", str(args.worker_processes)])
        target = targets.from_up(up_run.ready)
    try:
        t0 = time.monotonic()
        pop, reused = await _population(target, args)
        result: dict[str, Any] = {"target": target.kind, "users_per_domain": args.users,
                                  "provision_s": round(time.monotonic() - t0, 1), "population_reused": reused}
        if args.sipp_check:
            result["sipp_check"] = await _sipp_check(target, args, pop)
            return result
        result["headline"] = await _figures(target, args, pop, one_pair=False)
        if args.best_case:
            result["best_case"] = await _figures(target, args, pop, one_pair=True)
        return result
    finally:
        if target.close is not None:
            await target.close()
        if up_run is not None:
            await asyncio.to_thread(targets.stop_up, up_run)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--users", type=int, default=1000, help="users per domain (default 1,000)")
    parser.add_argument("--up-json", help="drive a running `sipsec up` (the JSON its --json printed)")
    parser.add_argument("--embedded", action="store_true", help="drive the in-process topology instead")
    parser.add_argument("--population", help="with --up-json: reuse the population in this file (provisioned and "
                                             "logged in on that deployment), or provision one and write it here")
    parser.add_argument("--worker-processes", type=int, default=1, help="sipsec up's crypto-worker pool")
    parser.add_argument("--rates", default="5,10,20,35,50,75,100,125,150", help="the ladder, calls/s")
    parser.add_argument("--trial-s", type=float, default=15.0, help="seconds per ladder run")
    parser.add_argument("--latency-s", type=float, default=20.0, help="seconds of the latency run")
    parser.add_argument("--latency-rate", type=float, default=50.0,
                        help="calls/s of the latency run (default 50)")
    parser.add_argument("--hold-rate", type=float, default=0.0,
                        help="how fast hold runs start calls (default: the ladder's highest passing offered rate, "
                             "else its lowest)")
    parser.add_argument("--hold-steps", default="500,1000,2000", help="calls held at once, tried in turn ('' skips)")
    parser.add_argument("--best-case", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--procs", type=int, default=1, help="generator processes")
    parser.add_argument("--sipp-check", action="store_true", help="compare SIPp and sipsec load at --rate")
    parser.add_argument("--rate", type=float, default=10.0, help="--sipp-check's rate")
    args = parser.parse_args(argv)
    if args.population and not args.up_json:
        parser.error("--population needs --up-json (a deployment that outlives one run)")
    result = asyncio.run(run(args))
    print(json.dumps(result) if args.json else json.dumps(result, indent=1))
    if args.sipp_check:
        return 0 if result["sipp_check"]["agree"] else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
