"""GetPrivateKey latency (p50/p99 ms) and throughput of one PKG node: memory vs Redis store, plain vs TLS.

    .venv/bin/python bench/pkg.py [--json] [--concurrency 16] [--requests 2000] [--max-seconds 10]

The PKG runs in a child process (a real ``PkgNode`` on a loopback port) so that the load
generator does not share its event loop; the bench starts its own redis-server on a free port.
Each scenario is bounded by ``--requests`` and ``--max-seconds``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import datetime
import ipaddress
import json
import multiprocessing as mp
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
AOR_FMT = "sip:bench{}@atlanta.com"
PASSWORD = "bench-password"


def _make_tls(folder: Path) -> dict[str, str]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)

    def cert(cn: str, key: Any, issuer: Any, issuer_key: Any, ca: bool) -> Any:
        b = (x509.CertificateBuilder()
             .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
             .issuer_name(issuer or x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
             .public_key(key.public_key()).serial_number(x509.random_serial_number())
             .not_valid_before(now - datetime.timedelta(minutes=5))
             .not_valid_after(now + datetime.timedelta(hours=1))
             .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        if not ca:
            b = b.add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        return b.sign(issuer_key, hashes.SHA256())

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = cert("bench CA", ca_key, None, ca_key, True)
    key = ec.generate_private_key(ec.SECP256R1())
    srv = cert("pkg", key, ca.subject, ca_key, False)
    paths = {"ca": folder / "ca.pem", "cert": folder / "cert.pem", "key": folder / "key.pem"}
    paths["ca"].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths["cert"].write_bytes(srv.public_bytes(serialization.Encoding.PEM))
    paths["key"].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
    return {k: str(v) for k, v in paths.items()}


def _server(conn: Any, data_dir: str, kek: str, store: str, redis_url: str, tls: dict[str, str] | None,
            users: int) -> None:
    """Child process: one PKG node; sends its port, serves until told to stop."""

    async def run() -> None:
        from sipsec_pkg.config import PkgConfig
        from sipsec_pkg.node import PkgNode

        config = PkgConfig(
            data_dir=data_dir, kek=kek, listen="127.0.0.1:0", store=store, redis_url=redis_url,
            plaintext=tls is None, tls_cert=tls["cert"] if tls else "", tls_key=tls["key"] if tls else "",
            metrics_port=None, audit_log=os.path.join(data_dir, f"audit-{store}.jsonl"),
            scrypt_n=2**10,
        )
        node = PkgNode(config)
        await node.start()
        for i in range(users):
            await node.add_user(AOR_FMT.format(i), PASSWORD)
        conn.send(node.port)
        await asyncio.get_running_loop().run_in_executor(None, conn.recv)
        await node.stop(grace=1)

    asyncio.run(run())


async def _load(port: int, tls: dict[str, str] | None, concurrency: int, requests: int, max_s: float) -> dict[str, Any]:
    from sipsec.ibc import Purpose
    from sipsec.pkgclient import PkgClient

    root = Path(tls["ca"]).read_bytes() if tls else None
    clients = [PkgClient(f"127.0.0.1:{port}", plaintext=tls is None, root_certificates=root, timeout_s=10)
               for _ in range(concurrency)]
    for i, c in enumerate(clients):
        await c.login(AOR_FMT.format(i), PASSWORD)
    for c in clients:  # warm-up: channels connected, code paths hot
        for _ in range(5):
            await c.fetch_key(Purpose.ENC)
    latencies: list[float] = []
    errors = 0
    issued = 0
    deadline = time.perf_counter() + max_s

    async def worker(c: PkgClient) -> None:
        nonlocal issued, errors
        purposes = (Purpose.ENC, Purpose.SIG)
        while issued < requests and time.perf_counter() < deadline:
            issued += 1
            t0 = time.perf_counter()
            try:
                await c.fetch_key(purposes[issued % 2])
                latencies.append(time.perf_counter() - t0)
            except Exception:  # noqa: BLE001 - counted
                errors += 1

    start = time.perf_counter()
    await asyncio.gather(*(worker(c) for c in clients))
    elapsed = time.perf_counter() - start
    for c in clients:
        await c.close()
    latencies.sort()
    q = statistics.quantiles(latencies, n=100) if len(latencies) >= 2 else [0.0] * 99
    return {
        "completed": len(latencies), "errors": errors, "elapsed_s": round(elapsed, 3),
        "p50_ms": round(q[49] * 1000, 3), "p99_ms": round(q[98] * 1000, 3),
        "mean_ms": round(statistics.fmean(latencies) * 1000, 3) if latencies else 0.0,
        "requests_per_s": round(len(latencies) / elapsed, 1) if elapsed else 0.0,
    }


def main() -> int:
    sys.path.insert(0, str(ROOT))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--max-seconds", type=float, default=10.0, help="time bound per scenario")
    args = parser.parse_args()

    from sipsec_pkg.material import generate_kek, init_domain, write_domain

    from tests.conftest import RedisServer  # the same throw-away redis-server the tests use

    t_start = time.perf_counter()
    results = []
    redis = RedisServer()
    ctx = mp.get_context("spawn")
    try:
        with tempfile.TemporaryDirectory(prefix="sipsec-bench-pkg-") as tmp:
            kek = generate_kek()
            write_domain(init_domain("atlanta.com"), tmp, base64.b64decode(kek))
            tls_paths = _make_tls(Path(tmp))
            for store in ("memory", "redis"):
                for transport in ("plain", "tls"):
                    tls = tls_paths if transport == "tls" else None
                    parent, child = ctx.Pipe()
                    proc = ctx.Process(target=_server, args=(child, tmp, kek, store, redis.url, tls, args.concurrency))
                    proc.start()
                    try:
                        if not parent.poll(60):
                            raise SystemExit("PKG child did not start")
                        port = parent.recv()
                        r = asyncio.run(_load(port, tls, args.concurrency, args.requests, args.max_seconds))
                    finally:
                        parent.send("stop")
                        proc.join(15)
                        if proc.is_alive():
                            proc.kill()
                            proc.join()
                    results.append({"store": store, "transport": transport, **r})
    finally:
        redis.stop()
    report = {
        "bench": "pkg.GetPrivateKey",
        "concurrency": args.concurrency, "requests": args.requests, "max_seconds": args.max_seconds,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "results": results, "total_s": round(time.perf_counter() - t_start, 1),
    }
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        print(f"GetPrivateKey, {args.concurrency} concurrent clients, up to {args.requests} requests per scenario")
        print(f"{'store':8} {'transport':9} {'p50 ms':>8} {'p99 ms':>8} {'req/s':>8} {'ok':>6} {'err':>4}")
        for r in results:
            print(f"{r['store']:8} {r['transport']:9} {r['p50_ms']:8.2f} {r['p99_ms']:8.2f} "
                  f"{r['requests_per_s']:8.0f} {r['completed']:6d} {r['errors']:4d}")
        print(f"total {report['total_s']} s")
    return 0 if all(r["errors"] == 0 for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
