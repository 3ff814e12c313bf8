"""Is the crypto-worker worth offloading to? CPU per secured call's crypto: in-process vs a real worker.

A "call" is the crypto of one secured call with every message signed, as the two gateways do
it: one encapsulation and one decapsulation (the INVITE's KEM), six signatures and six
verifications (INVITE, 180, 200, ACK, BYE, 200). Callers and callees are random pairs from
``--users`` users per domain (keys extracted once, before timing), ``--concurrency`` calls in
flight, each call's operations one after another as its messages would flow.

Modes, each over the same calls:

* ``in_process``: :class:`sipsec.engine.InProcessEngine` as the gateway runs it (inline,
  batched verification) — the CPU of this process is the whole cost;
* ``worker``: :class:`sipsec.engine.RemoteEngine` to a real ``sipsec-worker`` child (plaintext
  loopback, ``--processes`` pool processes) — CPU of this process (the gateway's share), of the
  worker's front end and of its pool processes (``psutil``: user + system time of each).
  The engine's batches travel on its one stream to the worker (the default); ``--unary-too N``
  also measures the same worker with one unary call per batch (``stream=False``) N times, each
  followed by another stream run (``worker_stream_2``...), so the two alternate in one run.
  Signatures are made in this process (``local_sign``: what a gateway does with
  ``SIPSEC_GATEWAY_WORKERS_LOCAL_SIGN=1``; its default sends them to the worker too);
  ``--remote-sign-too N`` also measures the worker making them (``worker_remote_sign_1``...),
  alternated the same way.
  ``--worker-pythonpath DIR`` also runs ``worker_before``: the worker from another copy of
  ``sipsec_worker`` (put first on its ``PYTHONPATH``), driven one unary RPC per operation
  (``coalesce=False``), to compare a before and an after in one run. To get the before of this
  change: ``mkdir -p /tmp/before/sipsec_worker && for f in $(git ls-tree --name-only HEAD
  services/crypto-worker/sipsec_worker/); do git show HEAD:$f > /tmp/before/sipsec_worker/${f##*/}; done``.

    .venv/bin/python bench/worker_offload.py [--json] [--calls 200] [--users 50] [--concurrency 16]
                                             [--unary-too N]

The issue's goal: ``gateway_share`` (this process's CPU per call with the worker / in-process
CPU per call) <= 0.25 and ``total_ratio`` (all processes with the worker / in-process) <= 1.3.
On a shared 2-core machine the figures move by 10-20 % between runs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
from sipsec import ibc
from sipsec.engine import CryptoEngine, EngineMetrics, InProcessEngine, RemoteEngine

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.worker import start_worker  # noqa: E402

PERIOD = 692
MESSAGES = 6  # INVITE, 180, 200, ACK, BYE, 200


@dataclass(frozen=True)
class User:
    aor: str
    enc: ibc.Identity
    sig: ibc.Identity
    enc_key: ibc.PrivateKey
    sig_key: ibc.PrivateKey


def population(users: int) -> tuple[dict[str, ibc.DomainParams], list[User], list[User]]:
    out: dict[str, ibc.DomainParams] = {}
    sides: list[list[User]] = []
    for domain in ("atlanta.com", "biloxi.com"):
        master, params = ibc.setup(domain)
        out[domain] = params
        side = []
        for i in range(users):
            aor = f"sip:user{i}@{domain}"
            enc = params.identity(aor, ibc.Purpose.ENC, PERIOD)
            sig = params.identity(aor, ibc.Purpose.SIG, PERIOD)
            side.append(User(aor, enc, sig, ibc.extract(master, params, enc), ibc.extract(master, params, sig)))
        sides.append(side)
    return out, sides[0], sides[1]


async def one_call(engine: CryptoEngine, params: dict[str, ibc.DomainParams], a: User, b: User) -> None:
    pa, pb = params["atlanta.com"], params["biloxi.com"]
    _, ciphertext = await engine.encapsulate(pb, b.enc)
    await engine.decapsulate(b.enc_key, ciphertext)
    for i in range(MESSAGES):
        signer, peer, sp = (a, b, pa) if i in (0, 3, 4) else (b, a, pb)
        message = f"message {i} of a call from {a.aor} to {b.aor} {random.random()}".encode()
        signature = await engine.sign(signer.sig_key, message)
        await engine.verify(sp, signer.sig, message, signature)
        del peer


def _cpu(procs: Sequence[psutil.Process]) -> float:
    total = 0.0
    for p in procs:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.NoSuchProcess:
            pass
    return total


async def drive(engine: CryptoEngine, params: dict[str, ibc.DomainParams], callers: list[User],
                callees: list[User], calls: int, concurrency: int, seed: int) -> float:
    rng = random.Random(seed)
    pairs = [(rng.choice(callers), rng.choice(callees)) for _ in range(calls)]
    queue = list(reversed(pairs))

    async def runner() -> None:
        while queue:
            a, b = queue.pop()
            await one_call(engine, params, a, b)

    start = time.perf_counter()
    await asyncio.gather(*(runner() for _ in range(concurrency)))
    return time.perf_counter() - start


def _per_call(seconds: float, calls: int) -> float:
    return round(seconds * 1e3 / calls, 2)


async def measure_in_process(args: argparse.Namespace, params: dict[str, ibc.DomainParams],
                             callers: list[User], callees: list[User]) -> dict[str, Any]:
    engine = InProcessEngine()
    me = psutil.Process()
    try:
        await drive(engine, params, callers, callees, args.warm, args.concurrency, 1)  # caches and tables warm
        c0 = _cpu([me])
        wall = await drive(engine, params, callers, callees, args.calls, args.concurrency, 2)
        client = _cpu([me]) - c0
    finally:
        await engine.close()
    return {"calls": args.calls, "calls_per_s": round(args.calls / wall, 1),
            "client_cpu_ms_per_call": _per_call(client, args.calls),
            "total_cpu_ms_per_call": _per_call(client, args.calls)}


async def measure_worker(args: argparse.Namespace, params: dict[str, ibc.DomainParams],
                         callers: list[User], callees: list[User], pythonpath: str,
                         coalesce: bool, stream: bool = True, local_sign: bool = True) -> dict[str, Any]:
    proc, port = start_worker(args.processes, pythonpath)
    metrics = EngineMetrics()
    engine = RemoteEngine([f"127.0.0.1:{port}"], plaintext=True, allow_fallback=False, metrics=metrics,
                          timeout_s=30, coalesce=coalesce, max_in_flight=args.max_in_flight, stream=stream,
                          local_sign=local_sign)
    me = psutil.Process()
    front = psutil.Process(proc.pid)
    try:
        await drive(engine, params, callers, callees, args.warm, args.concurrency, 1)  # caches and tables warm
        pool = front.children(recursive=True)
        c0, f0, p0 = _cpu([me]), _cpu([front]), _cpu(pool)
        wall = await drive(engine, params, callers, callees, args.calls, args.concurrency, 2)
        client, fr, po = _cpu([me]) - c0, _cpu([front]) - f0, _cpu(pool) - p0
    finally:
        await engine.close()
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    batches = engine.batch_sizes
    return {"calls": args.calls, "calls_per_s": round(args.calls / wall, 1), "pool_processes": len(pool),
            "coalesce": coalesce, "local_sign": local_sign, "mean_batch": round(batches.items / batches.count, 2) if batches.count else 1.0,
            "client_cpu_ms_per_call": _per_call(client, args.calls),
            "worker_front_cpu_ms_per_call": _per_call(fr, args.calls),
            "worker_pool_cpu_ms_per_call": _per_call(po, args.calls),
            "total_cpu_ms_per_call": _per_call(client + fr + po, args.calls)}


async def run(args: argparse.Namespace) -> dict[str, Any]:
    params, callers, callees = population(args.users)
    out: dict[str, Any] = {"users_per_domain": args.users, "concurrency": args.concurrency,
                           "cpus": os.cpu_count(), "note": "shared, noisy machine: one run each"}
    base = await measure_in_process(args, params, callers, callees)
    out["in_process"] = base
    # (name, worker PYTHONPATH, coalesce, stream, local_sign)
    runs = [("worker", "", True, True, True)]  # batches on the engine's stream (the default), signing here
    for i in range(args.unary_too):  # the same with one unary call per batch, alternated with the stream
        runs += [(f"worker_unary_batches_{i + 1}", "", True, False, True), (f"worker_stream_{i + 2}", "", True, True, True)]
    for i in range(args.remote_sign_too):  # signatures on the worker too, alternated with signing here
        runs += [(f"worker_remote_sign_{i + 1}", "", True, True, False), (f"worker_local_sign_{i + 2}", "", True, True, True)]
    if args.worker_pythonpath:  # the old worker, with the old client path (one unary RPC per operation)
        runs.append(("worker_before", args.worker_pythonpath, False, False, False))
    for name, path, coalesce, stream, local_sign in runs:
        r = await measure_worker(args, params, callers, callees, path, coalesce, stream, local_sign)
        r["batches_on"] = "stream" if stream and coalesce else "unary calls"
        r["gateway_share"] = round(r["client_cpu_ms_per_call"] / base["client_cpu_ms_per_call"], 3)
        r["total_ratio"] = round(r["total_cpu_ms_per_call"] / base["total_cpu_ms_per_call"], 3)
        out[name] = r
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--users", type=int, default=50, help="users per domain")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--max-in-flight", type=int, default=2,
                        help="batch RPCs of one kind in flight at once (RemoteEngine max_in_flight)")
    parser.add_argument("--warm", type=int, default=150,
                        help="calls before the measured ones (each process builds its tables)")
    parser.add_argument("--processes", type=int, default=2, help="worker pool processes")
    parser.add_argument("--unary-too", type=int, default=0, metavar="N",
                        help="also measure N times the worker with the batches as unary calls (stream=False), "
                             "each followed by another stream run: an A/B in one run")
    parser.add_argument("--remote-sign-too", type=int, default=0, metavar="N",
                        help="also measure the worker signing too (local_sign off) N times, each followed by "
                             "another run signing here (worker_local_sign_2...)")
    parser.add_argument("--worker-pythonpath", default="",
                        help="also measure a worker run from this directory's sipsec_worker, driven with one "
                             "unary RPC per operation (coalesce off): the before")
    args = parser.parse_args(argv)
    result = asyncio.run(run(args))
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:>16}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
