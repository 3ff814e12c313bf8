"""Where a secured call's CPU goes in `sipsec up` as shipped: CPU per call of every process.

Drives a running `sipsec up` (``--up-json``: the object ``sipsec up --json`` printed) at one
constant rate with ``bench/load.py`` (1,000 users per domain by default, random pairs, the
population of ``--population`` reused or provisioned), and reads the CPU time (user + system,
``psutil``) of every service, its children (the crypto-worker's pool processes) and the load
generator over a window in the middle of the trial. Prints, per process, the cores it kept busy
and its milliseconds of CPU per completed call, and the sum.

    .venv/bin/python bench/up_cpu.py --up-json up.json --population pop.json [--rate 15]
                                     [--trial-s 40] [--window 20] [--json] [--profile DIR]

With ``--profile DIR`` it also samples every Python process (each service, the worker's pool
processes, the load generator; not Redis) with ``py-spy record --nonblocking`` over the same
window, keeps each raw profile in DIR, and prints, per process, where its samples were by the
library of the innermost frame (crypto, the SIP stack, gRPC, Redis, the event loop, ...) and its
hottest functions. py-spy is not a dependency: ``.venv/bin/pip install py-spy``. Its samplers
share the two cores with what they sample, so CPU figures from a profiled run are a little high:
read the CPU table from a run without ``--profile``.

The population must exist already (provision it once with ``bench/load.py --population FILE``):
the window starts ``--skip`` seconds after the generator starts, once its phones have
registered, so that neither provisioning nor registration is counted. On a 2-core machine the figure
to read is ``all``: two cores divided by it bound the calls per second the machine can carry.
"""

from __future__ import annotations

import argparse
import collections
import json
import shutil
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


#: The library a sample's innermost frame is in, first match wins (substrings of the frame's file,
#: or of its name for native frames, which py-spy reports without a Python file).
AREAS: tuple[tuple[str, tuple[str, ...]], ...] = (
    # with uvloop the loop's own C code (socket reads and writes, epoll, the callbacks' dispatch)
    # has no Python frame: its samples end in the frame that started the loop
    ("event loop in C (uvloop: sockets, epoll)", ("Runner.run (asyncio/runners.py",)),
    ("threads in C (gRPC core's poller, executors)", ("Thread.run (threading.py",)),
    ("pairing / group arithmetic", ("sipsec/ibc/", "py_arkworks", "arkworks")),
    ("AES / hashes", ("Crypto/", "cryptography/", "hashlib", "hmac.py")),
    ("envelope (CMS build/parse)", ("sipsec/envelope/", "asn1crypto/")),
    ("SIP stack (parse, transactions, sockets)", ("sipsec/sip/", "sipsec/aio/")),
    ("gRPC / protobuf", ("grpc/", "cygrpc", "protobuf", "_pb2")),
    ("Redis client and stores", ("redis/", "sipsec/stores/")),
    # asyncio's own loop (the load generator's) waits here: sampled as busy now and then
    ("waiting in select/epoll", ("selectors.py",)),
    ("event loop", ("asyncio/", "uvloop")),
    ("metrics and logging", ("prometheus_client/", "logging/", "sipsec/telemetry/")),
    ("multiprocessing pipes", ("multiprocessing/", "pickle")),
    ("other sipsec code", ("sipsec",)),
)


def _area(frame: str) -> str:
    for name, needles in AREAS:
        if any(n in frame for n in needles):
            return name
    return "other (stdlib, interpreter)"


#: sipsec frames every stack of a service passes through on its way to the event loop: not news.
_WRAPPERS = ("<module>", "sipsec/cli.py", "sipsec/lifecycle.py", "/__main__.py")


def summarize_profile(raw: Path, top: int = 8) -> dict[str, Any]:
    """Samples of one ``py-spy record -f raw`` file by area and by innermost function, and the
    sipsec functions that were on the stack most (inclusive: a function's callees count to it)."""
    areas: collections.Counter[str] = collections.Counter()
    leaves: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = [f for f in stack.split(";") if f and not f.startswith(("process ", "thread "))]
        if not frames:
            continue
        leaf = frames[-1]
        total += n
        areas[_area(leaf)] += n
        leaves[leaf] += n
        for f in set(frames):
            if "sipsec" in f and not any(w in f for w in _WRAPPERS):
                inclusive[f] += n
    share = (lambda n: round(100.0 * n / total, 1)) if total else (lambda n: 0.0)
    return {"samples": total,
            "areas": {k: share(v) for k, v in areas.most_common()},
            "top": [[k, share(v)] for k, v in leaves.most_common(top)],
            "inclusive": [[k, share(v)] for k, v in inclusive.most_common(top)]}


def _py_spy() -> str | None:
    """py-spy on PATH or beside this interpreter (the venv's), or None."""
    beside = Path(sys.executable).with_name("py-spy")
    return shutil.which("py-spy") or (str(beside) if beside.is_file() else None)


def _start_profilers(procs: dict[str, list[psutil.Process]], spy: str, out: Path, seconds: float,
                     hz: int) -> list[tuple[str, Path, subprocess.Popen[bytes]]]:
    out.mkdir(parents=True, exist_ok=True)
    started = []
    for name, plist in procs.items():
        if name.startswith("redis"):
            continue
        for i, p in enumerate(plist):
            label = name if i == 0 else f"{name} child {i}"
            raw = out / (label.replace(" ", "_").replace("/", "_") + ".txt")
            cmd = [spy, "record", "--nonblocking", "-r", str(hz), "-d", str(max(1, round(seconds))), "-f", "raw",
                   "-o", str(raw), "-p", str(p.pid)]
            started.append((label, raw, subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)))
    return started


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
    parser.add_argument("--profile", metavar="DIR",
                        help="also sample every Python process with py-spy over the window; raw profiles go in DIR")
    parser.add_argument("--profile-hz", type=int, default=50, help="py-spy samples per second (default 50)")
    args = parser.parse_args(argv)
    if args.skip + args.window > args.trial_s:
        parser.error("--skip + --window must fit in --trial-s")
    spy = _py_spy() if args.profile else None
    if args.profile and spy is None:
        parser.error("--profile needs py-spy (not a dependency): .venv/bin/pip install py-spy")
    if args.profile_hz < 1:
        parser.error("--profile-hz must be at least 1")
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
    spies = _start_profilers(procs, spy, Path(args.profile), args.window, args.profile_hz) if spy else []
    before = {k: _cpu(v) for k, v in procs.items()}
    t0 = time.monotonic()
    time.sleep(args.window)
    after = {k: _cpu(v) for k, v in procs.items()}
    wall = time.monotonic() - t0
    profiles: dict[str, Any] = {}
    for label, raw, sampler in spies:
        _, err = sampler.communicate()
        if sampler.returncode != 0 or not raw.is_file():
            profiles[label] = {"error": err.decode(errors="replace").strip()[-300:]
                               or f"py-spy exited {sampler.returncode}"}
        else:
            profiles[label] = summarize_profile(raw)
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
    if profiles:
        result["profiles"] = profiles
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{args.rate:g} calls/s offered, {rate:g}/s achieved, {ladder['completed']} completed, "
              f"{ladder['failed']} failed; CPU over {wall:.0f} s:")
        for k, r in sorted(rows.items(), key=lambda kv: -kv[1]["cores"]):
            print(f"  {k:24s} {r['cores']:5.2f} cores  {r['ms_per_call']:6.1f} ms/call")
        print(f"  {'all':24s} {total:5.2f} cores  {total / rate * 1e3:6.1f} ms/call")
        for label, prof in profiles.items():
            if "error" in prof:
                print(f"{label}: py-spy failed: {prof['error']}")
                continue
            print(f"{label}: {prof['samples']} samples; by area: "
                  + ", ".join(f"{k} {v:g} %" for k, v in prof["areas"].items()))
            print("  innermost frames:")
            for frame, pct in prof["top"]:
                print(f"    {pct:5.1f} %  {frame}")
            print("  sipsec functions on the stack (inclusive):")
            for frame, pct in prof["inclusive"]:
                print(f"    {pct:5.1f} %  {frame}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
