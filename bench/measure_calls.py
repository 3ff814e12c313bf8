"""Benchmark: secured vs plain call setups through the gateways' control API, two domains in one process.

    .venv/bin/python bench/measure_calls.py [calls] [every-message|dialog-establishing] [concurrency]

The two-domain topology of ``sipsec demo`` (:data:`sipsec_cli.plan.PLAN`, run in this process
by :class:`sipsec_cli.topology.TwoDomainTopology`); calls are placed and read back through
the caller's gateway control API (``POST /v1/calls``, ``GET /v1/calls/{id}``), as an
application would.

Sequential mode (concurrency 1, the default): per kind, setup latency p50/p90 (INVITE sent ->
2xx, as the caller's gateway measures it), signalling bytes per call on the caller's secured
side (INVITE..200 BYE, retransmissions excluded) and the crypto time per call.
With concurrency N > 1: secured calls placed N at a time; prints setups per second (every
service of both domains shares this one process and event loop: a pessimistic figure; see
``bench/call_setup.py`` for each domain in its own process).
"""

from __future__ import annotations

import asyncio
import logging
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
from sipsec import lifecycle  # noqa: E402
from sipsec_cli.plan import PLAN  # noqa: E402
from sipsec_cli.topology import TwoDomainTopology  # noqa: E402
from sipsec_gateway.api import ApiTokens, create_app  # noqa: E402

ALICE, BOB = PLAN.caller, PLAN.callee


def _client(topo: TwoDomainTopology, aor: str) -> httpx.AsyncClient:
    """The control API of ``aor``'s gateway, in process, with a token of every scope."""
    tokens = ApiTokens()
    token = tokens.issue("bench")
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(topo.gateway_for(aor), tokens)),
                             base_url="http://gateway", timeout=30.0, headers={"Authorization": f"Bearer {token}"})


async def _login(client: httpx.AsyncClient, aor: str, password: str, **options: Any) -> None:
    response = await client.post("/v1/users", json={"aor": aor, "password": password, **options})
    if response.status_code != 201:
        raise SystemExit(f"measure_calls: logging {aor} in failed: {response.status_code} {response.text}")


async def _one(client: httpx.AsyncClient, secure: bool) -> dict[str, Any]:
    response = await client.post("/v1/calls", json={"from": ALICE, "to": BOB, "secure": secure})
    placed = dict(response.json())
    if response.status_code != 201 or placed.get("state") != "established":
        raise SystemExit(f"measure_calls: call not established: {response.status_code} {placed}")
    await client.delete(f"/v1/calls/{placed['id']}")
    return dict((await client.get(f"/v1/calls/{placed['id']}")).json())


async def _sequential(client: httpx.AsyncClient, n: int) -> None:
    for secure in (False, True, False, True):  # warm-up and interleave
        results = [await _one(client, secure) for _ in range(n)]
        setups = sorted(r["setup_ms"] for r in results)
        size = statistics.median(r["wire"]["bytes_total"] for r in results)
        crypto = statistics.median(r["crypto_total_ms"] for r in results)
        print(f"{'secured' if secure else 'plain  '}: n={n} setup p50={setups[len(setups) // 2]:.2f} ms "
              f"p90={setups[int(len(setups) * 0.9)]:.2f} ms  bytes/call={size:.0f}  "
              f"caller crypto/call={crypto:.2f} ms")


async def _concurrent(client: httpx.AsyncClient, n: int, concurrency: int) -> None:
    gate = asyncio.Semaphore(concurrency)

    async def bounded() -> dict[str, Any]:
        async with gate:
            return await _one(client, True)

    t0 = time.perf_counter()
    results = await asyncio.gather(*(bounded() for _ in range(n)))
    elapsed = time.perf_counter() - t0
    setups = sorted(r["setup_ms"] for r in results)
    print(f"secured, {concurrency} at a time: {n} calls (setup + BYE) in {elapsed:.2f} s = "
          f"{n / elapsed:.1f} calls/s; setup p50={setups[len(setups) // 2]:.1f} ms "
          f"p90={setups[int(len(setups) * 0.9)]:.1f} ms")


async def _run(n: int, signing: str, concurrency: int) -> None:
    async with TwoDomainTopology(signing=signing, tap=False) as topo:
        print(f"signing policy: {signing}")
        async with _client(topo, ALICE) as caller, _client(topo, BOB) as callee:
            await _login(caller, ALICE, topo.password, policy="prefer-secure")
            await _login(callee, BOB, topo.password, auto_answer=True, policy="prefer-secure")
            if concurrency > 1:
                await _concurrent(caller, n, concurrency)
            else:
                await _sequential(caller, n)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING)
    args = sys.argv[1:] if argv is None else argv
    if len(args) > 3 or (len(args) > 1 and args[1] not in ("every-message", "dialog-establishing")):
        print(__doc__.split("\n\n", 2)[1], file=sys.stderr)
        return 2
    try:
        n = int(args[0]) if args else 30
        concurrency = int(args[2]) if len(args) > 2 else 1
    except ValueError:
        print(__doc__.split("\n\n", 2)[1], file=sys.stderr)
        return 2
    lifecycle.run(_run(n, args[1] if len(args) > 1 else "every-message", concurrency))
    return 0


if __name__ == "__main__":
    sys.exit(main())
