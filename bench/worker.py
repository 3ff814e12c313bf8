"""Crypto-worker throughput and latency: in-process engine vs a real worker with 1..N pool processes.

    .venv/bin/python bench/worker.py [--json] [--op verify|sign|encapsulate|decapsulate]
                                     [--processes 1,2] [--concurrency 16] [--requests 400] [--max-seconds 10]

Each worker is a real ``sipsec-worker`` child process on a free loopback port (plaintext);
the load comes from this process through ``sipsec.engine.RemoteEngine`` with ``--concurrency``
operations in flight. Every scenario is bounded by ``--requests`` and ``--max-seconds``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable

from sipsec import ibc
from sipsec.aio.ports import spare_port
from sipsec.engine import CryptoEngine, EngineMetrics, InProcessEngine, RemoteEngine

MSG = b"INVITE sip:bob@biloxi.com SIP/2.0"


def _op(engine: CryptoEngine, name: str) -> Callable[[], Awaitable[object]]:
    master, params = ibc.setup("atlanta.com")
    enc = params.identity("sip:alice@atlanta.com", ibc.Purpose.ENC, 692)
    sig = params.identity("sip:alice@atlanta.com", ibc.Purpose.SIG, 692)
    enc_key, sig_key = ibc.extract(master, params, enc), ibc.extract(master, params, sig)
    _, ciphertext = ibc.encapsulate(params, enc)
    signature = ibc.sign(sig_key, MSG)
    return {
        "encapsulate": lambda: engine.encapsulate(params, enc),
        "decapsulate": lambda: engine.decapsulate(enc_key, ciphertext),
        "sign": lambda: engine.sign(sig_key, MSG),
        "verify": lambda: engine.verify(params, sig, MSG, signature),
    }[name]


async def _load(call: Callable[[], Awaitable[object]], concurrency: int, requests: int, max_s: float) -> dict[str, float]:
    latencies: list[float] = []
    issued = 0
    stop_at = time.perf_counter() + max_s

    async def runner() -> None:
        nonlocal issued
        while issued < requests and time.perf_counter() < stop_at:
            issued += 1
            t = time.perf_counter()
            await call()
            latencies.append(time.perf_counter() - t)

    start = time.perf_counter()
    await asyncio.gather(*(runner() for _ in range(concurrency)))
    wall = time.perf_counter() - start
    latencies.sort()
    return {
        "ops": len(latencies), "ops_per_s": round(len(latencies) / wall, 1),
        "p50_ms": round(statistics.median(latencies) * 1e3, 2),
        "p99_ms": round(latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1e3, 2),
    }


def start_worker(processes: int, pythonpath: str = "") -> tuple[subprocess.Popen[str], int]:
    """``sipsec-worker serve`` with ``processes`` pool processes on a planned loopback port
    (plaintext, no metrics); ``pythonpath`` puts another copy of the worker first on the
    path (``bench/worker_offload.py --worker-pythonpath``). Returns the process and its port."""
    port = spare_port("127.0.0.1", tcp=True)
    env = {**os.environ, "SIPSEC_WORKER_PLAINTEXT": "true", "SIPSEC_LOG_LEVEL": "WARNING"}
    if pythonpath:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (pythonpath, env.get("PYTHONPATH", "")) if p)
    proc = subprocess.Popen(
        [sys.executable, "-m", "sipsec_worker", "serve", "--listen", f"127.0.0.1:{port}",
         "--processes", str(processes), "--metrics-port", "-1", "--queue", "256"],
        stdout=subprocess.PIPE, text=True, env=env,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("sipsec-worker listening on port"):
        proc.kill()
        raise RuntimeError(f"worker did not start: {line!r}")
    return proc, int(line.split()[4])


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--op", default="verify", choices=["encapsulate", "decapsulate", "sign", "verify"])
    parser.add_argument("--processes", default="1,2", help="comma-separated pool sizes to try")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--max-seconds", type=float, default=10.0)
    args = parser.parse_args()

    results: dict[str, object] = {"op": args.op, "cpus": os.cpu_count(), "python": platform.python_version(),
                                  "concurrency": args.concurrency}
    inline = InProcessEngine()
    results["in_process"] = await _load(_op(inline, args.op), 1, args.requests, args.max_seconds)
    for n in (int(x) for x in args.processes.split(",") if x.strip()):
        proc, port = start_worker(n)
        metrics = EngineMetrics()
        engine = RemoteEngine([f"127.0.0.1:{port}"], plaintext=True, allow_fallback=False,
                              metrics=metrics, timeout_s=30)
        try:
            call = _op(engine, args.op)
            await _load(call, 2, 20, 5)  # warm the channel and the params caches
            results[f"worker_{n}_processes"] = await _load(call, args.concurrency, args.requests, args.max_seconds)
        finally:
            await engine.close()
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
    if args.json:
        print(json.dumps(results))
    else:
        for key, value in results.items():
            print(f"{key:>22}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
