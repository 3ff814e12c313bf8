"""Do the precomputation caches pay? CPU per secured call's crypto and hit ratios, by population.

A "call" is the crypto of one secured call with every message signed, as the two gateways do
it (``bench/worker_offload.py``): one encapsulation and one decapsulation (the INVITE's KEM),
six signatures and six verifications (INVITE, 180, 200, ACK, BYE, 200). Callers are drawn
from atlanta.com's users and callees from biloxi.com's, at random (one pair: ``1``), the same
draws for every policy; ``--round`` calls run side by side, one message step at a time, so
the verifications of a step are checked together (a verify batch, as under load).

For each population and each table policy (``sipsec.ibc.configure_tables``: ``off`` = no
tables, ``second-use`` = the first policy, with the worker's parsed-key cache of then (256
keys): the before; ``frequency`` = the default) it measures, in one
process and one run (the noisy shared machine moves figures between runs, not within one):

Each measurement is repeated ``--repeat`` times with the policies in rotated order, and the
median CPU per call reported (with every sample): other jobs on the machine move single figures.

* ``engine``: :class:`sipsec.engine.InProcessEngine` as a gateway runs it (inline, batched
  verification), CPU of this process over the measured calls;
* ``worker``: the crypto-worker's pool-process entry point (``sipsec_worker.ops.run_items``,
  wire requests in, as a pool process gets them: key cache, params cache, batched verification),
  called in this process; CPU over the ``run_items`` calls only (the front end's gRPC and
  pickling are not in it);

and prints CPU ms per call and, per cache, hits / misses / builds / evictions / refused
admissions and the hit ratio over the measured calls (``g1``: identity points, ``signers``:
signing keys, ``gt``: recipients; ``hash_to_g1``: the identity-point LRU; ``key_cache``: the
worker's parsed keys). Keys are extracted once, with a fresh master key (no PKG, no network).
``table_costs``: the measured build cost, saving per use, break-even uses and bytes of each
kind of table (what the FREQUENCY policy's thresholds rest on).

    .venv/bin/python bench/caches.py [--json] [--users 1,200,1000,5000] [--calls 300] [--warm 300] [--repeat 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import time
import tracemalloc
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from sipsec import ibc
from sipsec.engine import InProcessEngine
from sipsec.engine.wire import (
    KIND_DECAPSULATE,
    KIND_ENCAPSULATE,
    KIND_SIGN,
    KIND_VERIFY,
    identity_to_proto,
)
from sipsec.ibc.hazmat import backend as bk
from sipsec.ibc.hazmat import tables
from sipsec.ibc.hazmat.cc import SignerTables
from sipsec.rpc._gen.sipsec.crypto.v1 import crypto_pb2 as pb

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "services" / "crypto-worker"))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from sipsec_worker import ops  # noqa: E402

from bench.worker_offload import User, population  # noqa: E402

MESSAGES = 6  # INVITE, 180, 200, ACK, BYE, 200
CALLER_SIGNS = (0, 3, 4)  # INVITE, ACK, BYE from the caller; 180, 200, 200 from the callee


def fresh(user: User) -> User:
    """The same keys as new objects (no tables, no counts from an earlier run)."""
    return User(user.aor, user.enc, user.sig, ibc.PrivateKey(user.enc, user.enc_key._point()),
                ibc.PrivateKey(user.sig, user.sig_key._point()))


def _cpu_ms(fn: Callable[[], object], n: int) -> float:
    start = time.process_time()
    for _ in range(n):
        fn()
    return (time.process_time() - start) * 1e3 / n


def _bytes_each(build: Callable[[int], object], n: int = 6) -> int:
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        held = [build(i) for i in range(n)]
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    del held
    return (after - before) // n


def table_costs() -> dict[str, dict[str, float]]:
    """Build cost, saving per use, break-even uses and bytes of each kind of table."""
    points = [bk.hash_to_g1(b"cost %d" % i, b"SIPSEC-BENCH-CACHES") for i in range(4)]
    q, d, k = points[0], points[1], bk.R - 0x5EC12E7
    p_pub = bk.g2_generator_mul(0xC0FFEE)
    g1 = bk.G1FixedBase(q)
    gt = bk.GTFixedBase(bk.pairing(q, p_pub))
    g1_build = _cpu_ms(lambda: bk.G1FixedBase(q), 20)
    mul, table_mul = _cpu_ms(lambda: bk.g1_mul(q, k), 200), _cpu_ms(lambda: g1.mul(k), 200)
    signer_build = _cpu_ms(lambda: SignerTables(d, q), 10)
    gt_build = _cpu_ms(lambda: bk.GTFixedBase(bk.pairing(q, p_pub)), 8)
    enc_plain = _cpu_ms(lambda: bk.pairing(bk.g1_mul(q, k), p_pub), 30)
    enc_table = _cpu_ms(lambda: gt.pow(k), 60)

    def row(build: float, saving: float, size: int) -> dict[str, float]:
        return {"build_ms": round(build, 3), "saving_ms_per_use": round(saving, 3),
                "break_even_uses": round(build / saving, 1) if saving > 0 else float("inf"),
                "bytes": size}

    return {
        "g1": row(g1_build, mul - table_mul, _bytes_each(lambda i: bk.G1FixedBase(points[i % 4]))),
        "signers": row(signer_build, 2 * (mul - table_mul),
                       _bytes_each(lambda i: SignerTables(points[i % 4], points[(i + 1) % 4]))),
        "gt": row(gt_build, enc_plain - enc_table,
                  _bytes_each(lambda i: bk.GTFixedBase(bk.pairing(points[i % 4], p_pub)))),
    }


def _pairs(callers: Sequence[User], callees: Sequence[User], calls: int, seed: int) -> list[tuple[int, int]]:
    rng = random.Random(seed)
    return [(rng.randrange(len(callers)), rng.randrange(len(callees))) for _ in range(calls)]


def _message(i: int, a: User, b: User, n: int) -> bytes:
    return f"message {i} of call {n} from {a.aor} to {b.aor}".encode()


async def _engine_round(engine: InProcessEngine, params: dict[str, ibc.DomainParams],
                        calls: Sequence[tuple[User, User]], base: int) -> None:
    pa, pb_ = params["atlanta.com"], params["biloxi.com"]
    cts = await asyncio.gather(*(engine.encapsulate(pb_, b.enc) for _, b in calls))
    await asyncio.gather(*(engine.decapsulate(b.enc_key, ct) for (_, b), (_, ct) in zip(calls, cts, strict=True)))
    for i in range(MESSAGES):
        signed = []
        for n, (a, b) in enumerate(calls):
            signer, sp = (a, pa) if i in CALLER_SIGNS else (b, pb_)
            signed.append((signer, sp, _message(i, a, b, base + n)))
        sigs = await asyncio.gather(*(engine.sign(s.sig_key, m) for s, _, m in signed))
        await asyncio.gather(*(engine.verify(sp, s.sig, m, sig) for (s, sp, m), sig in zip(signed, sigs, strict=True)))


def _check(results: Sequence[ops.ItemResult]) -> list[ops.ItemResult]:
    for r in results:
        if r[0]:
            raise RuntimeError(f"worker op failed: {r[0]} {r[3]}")
    return list(results)


class _WorkerDriver:
    """Wire requests through ``ops.run_items``, timing only the pool-process work."""

    def __init__(self, params: dict[str, ibc.DomainParams]) -> None:
        self.params = params
        self.wire = {d: p.to_bytes() for d, p in params.items()}
        self.cpu = 0.0

    def _run(self, kind: str, items: list[bytes]) -> list[ops.ItemResult]:
        start = time.process_time()
        out = ops.run_items(kind, items, None)
        self.cpu += time.process_time() - start
        return _check(out)

    def round(self, calls: Sequence[tuple[User, User]], base: int) -> None:
        encs = self._run(KIND_ENCAPSULATE, [
            pb.EncapsulateRequest(domain_params=self.wire["biloxi.com"], identity=identity_to_proto(b.enc))
            .SerializeToString() for _, b in calls])
        self._run(KIND_DECAPSULATE, [
            pb.DecapsulateRequest(identity=identity_to_proto(b.enc), private_key=b.enc_key.to_bytes(),
                                  ciphertext=r[2]).SerializeToString()
            for (_, b), r in zip(calls, encs, strict=True)])
        for i in range(MESSAGES):
            signed = []
            for n, (a, b) in enumerate(calls):
                signer, domain = (a, "atlanta.com") if i in CALLER_SIGNS else (b, "biloxi.com")
                signed.append((signer, domain, _message(i, a, b, base + n)))
            sigs = self._run(KIND_SIGN, [
                pb.SignRequest(identity=identity_to_proto(s.sig), private_key=s.sig_key.to_bytes(), message=m)
                .SerializeToString() for s, _, m in signed])
            self._run(KIND_VERIFY, [
                pb.VerifyRequest(domain_params=self.wire[d], identity=identity_to_proto(s.sig), message=m,
                                 signature=r[1]).SerializeToString()
                for (s, d, m), r in zip(signed, sigs, strict=True)])


#: The worker's parsed-key cache before this change, kept for the ``second-use`` runs (the before).
BEFORE_KEY_CACHE = 256


def _reset_process_caches(policy: str) -> None:
    bk.hash_to_g1.cache_clear()
    ops.set_key_cache(BEFORE_KEY_CACHE if policy == tables.SECOND_USE else ops.DEFAULT_KEY_CACHE)
    ops.set_params_cache(ops.DEFAULT_PARAMS_CACHE)


def _stats(h0: Any, k0: tuple[int, int, int]) -> dict[str, Any]:
    out: dict[str, Any] = dict(ibc.table_stats())
    h = bk.hash_to_g1.cache_info()
    hits, misses = h.hits - h0.hits, h.misses - h0.misses
    out["hash_to_g1"] = {"hits": hits, "misses": misses,
                         "hit_ratio": round(hits / (hits + misses), 4) if hits + misses else 0.0}
    k = ops.key_cache_info()
    khits, kmisses = k[0] - k0[0], k[1] - k0[1]
    if khits + kmisses:
        out["key_cache"] = {"hits": khits, "misses": kmisses, "hit_ratio": round(khits / (khits + kmisses), 4)}
    return out


def _mark() -> dict[str, Any]:
    """Zero the table counts; the hash-to-curve LRU's and the key cache's counts as they are."""
    ibc.table_stats(reset=True)
    return {"h": bk.hash_to_g1.cache_info(), "k": ops.key_cache_info()}


def measure(path: str, policy: str, args: argparse.Namespace, params: dict[str, ibc.DomainParams],
            callers: list[User], callees: list[User]) -> dict[str, Any]:
    """One path under one policy: warm calls, then the measured ones (CPU ms per call, caches)."""
    ibc.configure_tables(args.table_mib, policy)
    _reset_process_caches(policy)
    callers = [fresh(u) for u in callers]
    callees = [fresh(u) for u in callees]
    r = args.round

    def rounds(seed: int, calls: int) -> list[list[tuple[User, User]]]:
        pairs = [(callers[a], callees[b]) for a, b in _pairs(callers, callees, calls, seed)]
        return [pairs[i : i + r] for i in range(0, len(pairs), r)]

    warm, measured = rounds(1, args.warm), rounds(2, args.calls)
    if path == "engine":
        async def drive() -> tuple[float, dict[str, Any]]:
            engine = InProcessEngine()
            try:
                for n, batch in enumerate(warm):
                    await _engine_round(engine, params, batch, n * r)
                marks = _mark()
                start = time.process_time()
                for n, batch in enumerate(measured):
                    await _engine_round(engine, params, batch, n * r)
                return time.process_time() - start, marks
            finally:
                await engine.close()

        cpu, marks = asyncio.run(drive())
    else:
        driver = _WorkerDriver(params)
        for n, batch in enumerate(warm):
            driver.round(batch, n * r)
        marks = _mark()
        driver.cpu = 0.0
        for n, batch in enumerate(measured):
            driver.round(batch, n * r)
        cpu = driver.cpu
    return {"cpu_ms_per_call": round(cpu * 1e3 / args.calls, 3), "caches": _stats(marks["h"], marks["k"])}


def run(args: argparse.Namespace) -> dict[str, Any]:
    sizes = [int(u) for u in args.users.split(",") if u]
    policies = [p for p in args.policies.split(",") if p]
    paths = [p for p in args.paths.split(",") if p]
    out: dict[str, Any] = {
        "calls": args.calls, "warm": args.warm, "round": args.round, "repeat": args.repeat, "table_mib": args.table_mib,
        "capacities": ibc.configure_tables(args.table_mib),
        "note": "one process, one run: compare within a population; CPU is process time",
        "table_costs": table_costs(),
        "populations": {},
    }
    params, callers, callees = population(max(sizes))
    for users in sizes:
        label = "one_pair" if users == 1 else f"{users}_per_domain"
        rows: dict[str, Any] = {}
        for path in paths:
            samples: dict[str, list[float]] = {p: [] for p in policies}
            for rep in range(args.repeat):
                for policy in policies[rep % len(policies):] + policies[: rep % len(policies)]:  # rotated
                    result = measure(path, policy, args, params, callers[:users], callees[:users])
                    samples[policy].append(result["cpu_ms_per_call"])
                    rows.setdefault(path, {})[policy] = result
                    if args.progress:
                        print(f"{label} {path} {policy}: {result['cpu_ms_per_call']} ms/call",
                              file=sys.stderr, flush=True)
            for policy, values in samples.items():
                rows[path][policy]["cpu_ms_samples"] = values
                rows[path][policy]["cpu_ms_per_call"] = round(statistics.median(values), 3)
        out["populations"][label] = rows
    ibc.configure_tables()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--users", default="1,200,1000,5000",
                        help="users per domain, comma-separated (1 = one caller/callee pair)")
    parser.add_argument("--calls", type=int, default=300, help="measured calls per population and policy")
    parser.add_argument("--warm", type=int, default=300, help="calls before the measured ones")
    parser.add_argument("--repeat", type=int, default=3,
                        help="measurements per policy, the policies' order rotated each time; the median is reported")
    parser.add_argument("--round", type=int, default=16, help="calls side by side (a verify batch per step)")
    parser.add_argument("--policies", default=",".join((tables.OFF, tables.SECOND_USE, tables.FREQUENCY)))
    parser.add_argument("--paths", default="engine,worker", help="engine, worker or both")
    parser.add_argument("--table-mib", type=float, default=tables.DEFAULT_TABLE_MIB,
                        help="memory for tables (sipsec.ibc.configure_tables)")
    parser.add_argument("--progress", action="store_true", help="a line on stderr per measurement")
    args = parser.parse_args(argv)
    result = run(args)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for label, rows in result["populations"].items():
            for path, by_policy in rows.items():
                figures = ", ".join(f"{p} {r['cpu_ms_per_call']} ms" for p, r in by_policy.items())
                print(f"{label:>18} {path:>6}: {figures}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
