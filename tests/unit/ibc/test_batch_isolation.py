"""A failed batch is bisected: exactly the bad signatures are flagged, for log2(n) more multi-pairings."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

import pytest
from sipsec import ibc
from sipsec.ibc.hazmat import backend as bk

from ._helpers import key

Item = tuple[ibc.DomainParams, ibc.Identity, bytes, bytes]
SIGNERS = [f"sip:user{i}@atlanta.com" for i in range(6)] + [f"sip:user{i}@biloxi.com" for i in range(4)]


def _items(count: int, bad: set[int]) -> list[Item]:
    out: list[Item] = []
    for i in range(count):
        params, sk = key(SIGNERS[i % len(SIGNERS)], ibc.Purpose.SIG)
        message = b"INVITE %d" % i
        signature = ibc.sign(sk, message)
        out.append((params, sk.identity, message + (b" (forged)" if i in bad else b""), signature))
    return out


def _alone(items: Sequence[Item]) -> list[int]:
    flagged = []
    for index, item in enumerate(items):
        try:
            ibc.verify(*item)
        except ibc.InvalidSignature:
            flagged.append(index)
    return flagged


@pytest.fixture
def multi_pairings(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Multi-pairings and pairing checks run (their pair counts)."""
    calls: list[int] = []
    real_multi: Callable[[Sequence[bk.G1Point], Sequence[bk.G2Point]], bk.GT] = bk.multi_pairing
    real_check: Callable[[Sequence[bk.G1Point], Sequence[bk.G2Point]], bool] = bk.pairing_check

    def multi(g1s: Sequence[bk.G1Point], g2s: Sequence[bk.G2Point]) -> bk.GT:
        calls.append(len(g1s))
        return real_multi(g1s, g2s)

    def check(g1s: Sequence[bk.G1Point], g2s: Sequence[bk.G2Point]) -> bool:
        calls.append(len(g1s))
        return real_check(g1s, g2s)

    monkeypatch.setattr(bk, "multi_pairing", multi)
    monkeypatch.setattr(bk, "pairing_check", check)
    return calls


@pytest.mark.parametrize(("count", "bad"), [
    (2, {0}), (2, {1}), (2, {0, 1}), (3, {2}), (5, {0, 4}), (16, {7}), (16, set(range(16))),
    (32, {0}), (32, {31}), (32, {3, 17, 18}), (32, set(range(0, 32, 3))),
])
def test_exactly_the_bad_ones_are_flagged(count: int, bad: set[int]) -> None:
    items = _items(count, bad)
    results = ibc.verify_batch(items)
    flagged = [i for i, r in enumerate(results) if r is not None]
    assert flagged == sorted(bad) == _alone(items)
    assert all(type(results[i]) is ibc.InvalidSignature for i in bad)
    assert {str(results[i]) for i in bad} == {str(_error(items[i])) for i in bad}


def _error(item: Item) -> ibc.IbcError:
    with pytest.raises(ibc.IbcError) as info:
        ibc.verify(*item)
    return info.value


def test_random_batches_agree_with_single_checks() -> None:
    rng = random.Random(20)
    for _ in range(6):
        count = rng.randint(2, 20)
        bad = {i for i in range(count) if rng.random() < 0.2}
        items = _items(count, bad)
        assert [i for i, r in enumerate(ibc.verify_batch(items)) if r is not None] == _alone(items)


def test_one_forgery_in_32_costs_five_more_multi_pairings(multi_pairings: list[int]) -> None:
    items = _items(32, {21})
    multi_pairings.clear()
    results = ibc.verify_batch(items)
    assert [i for i, r in enumerate(results) if r is not None] == [21]
    # the batch (3 pairs: P2 and two domains' P_pub), then one per halving 32 -> 16 -> 8 -> 4 -> 2 -> 1,
    # each over the left half only (its pairs: P2 and the P_pubs present in it)
    assert multi_pairings[0] == 3 and len(multi_pairings) == 1 + 5
    clean = _items(32, set())
    multi_pairings.clear()
    assert ibc.verify_batch(clean) == [None] * 32 and multi_pairings == [3]  # a valid batch: one
