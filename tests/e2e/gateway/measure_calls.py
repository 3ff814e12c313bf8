"""Measure secured vs plain call setups through two in-process domains (not a test; prints figures).

    .venv/bin/python -m tests.e2e.gateway.measure_calls [calls] [every-message|dialog-establishing] [concurrency]

Sequential mode (concurrency 1, the default): per kind, setup latency p50/p90 (INVITE sent ->
2xx, as the caller's gateway measures it), signalling bytes per call on the caller's secured
side (INVITE..200 BYE, retransmissions excluded) and the crypto time per call.
With concurrency N > 1: secured calls placed N at a time; prints setups per second (every
service of both domains shares this one process and event loop: a pessimistic figure).
"""

from __future__ import annotations

import asyncio
import logging
import statistics
import sys
import time
from typing import Any

from tests.integration.gateway.harness import TwoDomains, call, login

ALICE, BOB = "sip:alice@atlanta.com", "sip:bob@biloxi.com"


async def _one(net: TwoDomains, secure: bool) -> dict[str, Any]:
    placed = await call(net.atlanta, ALICE, BOB, secure=secure)
    assert placed["state"] == "established", placed
    await net.atlanta.client.delete(f"/v1/calls/{placed['id']}")
    return dict((await net.atlanta.client.get(f"/v1/calls/{placed['id']}")).json())


async def _sequential(net: TwoDomains, n: int) -> None:
    for secure in (False, True, False, True):  # warm-up and interleave
        results = [await _one(net, secure) for _ in range(n)]
        setups = sorted(r["setup_ms"] for r in results)
        size = statistics.median(r["wire"]["bytes_total"] for r in results)
        crypto = statistics.median(r["crypto_total_ms"] for r in results)
        print(f"{'secured' if secure else 'plain  '}: n={n} setup p50={setups[len(setups) // 2]:.2f} ms "
              f"p90={setups[int(len(setups) * 0.9)]:.2f} ms  bytes/call={size:.0f}  "
              f"caller crypto/call={crypto:.2f} ms")


async def _concurrent(net: TwoDomains, n: int, concurrency: int) -> None:
    gate = asyncio.Semaphore(concurrency)

    async def bounded() -> dict[str, Any]:
        async with gate:
            return await _one(net, True)

    t0 = time.perf_counter()
    results = await asyncio.gather(*(bounded() for _ in range(n)))
    elapsed = time.perf_counter() - t0
    setups = sorted(r["setup_ms"] for r in results)
    print(f"secured, {concurrency} at a time: {n} calls (setup + BYE) in {elapsed:.2f} s = "
          f"{n / elapsed:.1f} calls/s; setup p50={setups[len(setups) // 2]:.1f} ms "
          f"p90={setups[int(len(setups) * 0.9)]:.1f} ms")


async def _run(n: int, signing: str, concurrency: int) -> None:
    both = {"signing": signing}
    async with TwoDomains(gateway_overrides={"atlanta.com": both, "biloxi.com": both}) as net:
        print(f"signing policy: {signing}")
        await login(net.atlanta, "alice", policy="prefer-secure")
        await login(net.biloxi, "bob", auto_answer=True, policy="prefer-secure")
        if concurrency > 1:
            await _concurrent(net, n, concurrency)
        else:
            await _sequential(net, n)


def main() -> None:
    logging.basicConfig(level=logging.WARNING)
    args = sys.argv[1:]
    asyncio.run(_run(int(args[0]) if args else 30, args[1] if len(args) > 1 else "every-message",
                     int(args[2]) if len(args) > 2 else 1))


if __name__ == "__main__":
    main()
