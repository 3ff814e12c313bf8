"""The in-process engine under forged signatures: batches are capped at 16, a forgery fails alone."""

from __future__ import annotations

import asyncio

from sipsec import ibc
from sipsec.engine import InProcessEngine


def _signed(count: int, forged: set[int]) -> list[tuple[ibc.DomainParams, ibc.Identity, bytes, bytes]]:
    master, params = ibc.setup("atlanta.example.com")
    period = params.policy.current(1_700_000_000)
    out = []
    for i in range(count):
        key = ibc.extract(master, params, params.identity(f"sip:u{i % 5}@atlanta.example.com", ibc.Purpose.SIG, period))
        message = b"INVITE %d" % i
        out.append((params, key.identity, message + (b"!" if i in forged else b""), ibc.sign(key, message)))
    return out


async def test_concurrent_verifies_with_forgeries_each_get_their_own_result() -> None:
    engine = InProcessEngine()
    assert engine.max_batch == 16  # the bound on what one forgery costs the others in its batch
    forged = {3, 17, 18, 39}
    items = _signed(40, forged)
    results = await asyncio.gather(*(engine.verify(*item) for item in items), return_exceptions=True)
    assert {i for i, r in enumerate(results) if r is not None} == forged
    assert all(type(results[i]) is ibc.InvalidSignature for i in forged)
    stats = engine.verify_batches
    assert stats.items == 40 and stats.largest == 16 and stats.count == 3  # 16 + 16 + 8
    await engine.close()
