"""Batch verification of Cha–Cheon signatures: the same verdicts as ``verify``, item by item."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sipsec import ibc
from sipsec.ibc.hazmat import backend as bk
from sipsec.ibc.hazmat import cc
from sipsec.ibc.hazmat.suite import G1_LEN, SUITE_ID

from ._helpers import key

Item = tuple[ibc.DomainParams, ibc.Identity, bytes, bytes]
ALICE, BOB, CAROL = "sip:alice@atlanta.com", "sip:bob@atlanta.com", "sip:carol@biloxi.com"
_HEADER = bytes([len(SUITE_ID)]) + SUITE_ID


def _signed(aor: str, message: bytes) -> Item:
    params, sk = key(aor, ibc.Purpose.SIG)
    return params, sk.identity, message, ibc.sign(sk, message)


def _one_by_one(items: Sequence[Item]) -> list[tuple[type[BaseException], str] | None]:
    out: list[tuple[type[BaseException], str] | None] = []
    for params, identity, message, signature in items:
        try:
            ibc.verify(params, identity, message, signature)
        except ibc.IbcError as exc:
            out.append((type(exc), str(exc)))
        else:
            out.append(None)
    return out


def _check(items: Sequence[Item]) -> list[ibc.IbcError | None]:
    """verify_batch, asserted to agree with verify on every item (class and message)."""
    results = ibc.verify_batch(items)
    assert [None if r is None else (type(r), str(r)) for r in results] == _one_by_one(items)
    return results


def _flagged(results: Sequence[ibc.IbcError | None]) -> list[int]:
    return [i for i, r in enumerate(results) if r is not None]


def _points(signature: bytes) -> tuple[bk.G1Point, bk.G1Point]:
    off = len(_HEADER)
    return (
        bk.g1_from_bytes(signature[off : off + G1_LEN]),
        bk.g1_from_bytes(signature[off + G1_LEN :]),
    )


def _with_v(signature: bytes, v: bk.G1Point) -> bytes:
    return signature[: len(_HEADER) + G1_LEN] + bk.g1_to_bytes(v)


@pytest.fixture
def pairings(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Number of pairing checks and multi-pairings run (a list of pair counts), to see the batch at work."""
    calls: list[int] = []
    real: Callable[[Sequence[bk.G1Point], Sequence[bk.G2Point]], bool] = bk.pairing_check
    real_multi: Callable[[Sequence[bk.G1Point], Sequence[bk.G2Point]], bk.GT] = bk.multi_pairing

    def counting(g1s: Sequence[bk.G1Point], g2s: Sequence[bk.G2Point]) -> bool:
        calls.append(len(g1s))
        return real(g1s, g2s)

    def counting_multi(g1s: Sequence[bk.G1Point], g2s: Sequence[bk.G2Point]) -> bk.GT:
        calls.append(len(g1s))
        return real_multi(g1s, g2s)

    monkeypatch.setattr(bk, "pairing_check", counting)
    monkeypatch.setattr(bk, "multi_pairing", counting_multi)
    return calls


def test_empty_batch() -> None:
    assert ibc.verify_batch([]) == []


def test_all_valid_is_one_multi_pairing(pairings: list[int]) -> None:
    items = [_signed((ALICE, BOB)[i % 2], b"INVITE %d" % i) for i in range(8)]
    pairings.clear()
    assert ibc.verify_batch(items) == [None] * 8
    assert pairings == [2]  # e(sum rho V, P2) and one pair for the one P_pub


def test_batch_of_one_is_verify(pairings: list[int]) -> None:
    item = _signed(ALICE, b"BYE")
    pairings.clear()
    assert ibc.verify_batch([item]) == [None]
    params, identity, message, signature = item
    assert _flagged(_check([(params, identity, message + b"!", signature)])) == [0]


def test_one_forgery_among_many_is_flagged_alone(pairings: list[int]) -> None:
    items = [_signed((ALICE, BOB)[i % 2], b"ACK %d" % i) for i in range(10)]
    params, identity, message, signature = items[6]
    items[6] = (params, identity, message + b" (tampered)", signature)
    pairings.clear()
    results = _check(items)
    assert _flagged(results) == [6]
    assert type(results[6]) is ibc.InvalidSignature
    # the batch (as a GT value), then one multi-pairing per halving: [0..4] valid, [5, 6] not,
    # [5] valid, so [6] is the forgery (not 10 single checks); then _check's 10 single checks
    assert pairings[0] == 2 and len(pairings) == 1 + 3 + 10


def test_malformed_and_wrong_purpose_items() -> None:
    good = _signed(ALICE, b"INVITE")
    params, identity, message, signature = good
    enc_params, enc_key = key(ALICE, ibc.Purpose.ENC)
    biloxi_params, _ = key(CAROL, ibc.Purpose.SIG)
    inf = bk.g1_to_bytes(bk.G1Point.identity())
    items: list[Item] = [
        good,
        (params, identity, message, signature[:-1]),  # wrong length
        (params, identity, message, b"\x00" + signature[1:]),  # not suite v1
        (params, identity, message, _HEADER + inf + inf),  # identity points
        (params, identity, message, signature[:-G1_LEN] + b"\xff" * G1_LEN),  # not a point
        (enc_params, enc_key.identity, message, signature),  # ENC identity
        (biloxi_params, identity, message, signature),  # identity not of the domain
        good,
    ]
    results = _check(items)
    assert _flagged(results) == [1, 2, 3, 4, 5, 6]
    assert all(type(r) is ibc.MalformedSignature for r in results[1:5])
    assert type(results[5]) is ibc.InvalidIdentity and type(results[6]) is ibc.InvalidIdentity


def test_mixed_domains(pairings: list[int]) -> None:
    items = [_signed((ALICE, CAROL, BOB)[i % 3], b"200 OK %d" % i) for i in range(9)]
    assert len({p.domain for p, *_ in items}) == 2
    pairings.clear()
    assert ibc.verify_batch(items) == [None] * 9
    assert pairings == [3]  # one extra pair per distinct P_pub
    _, rogue = ibc.setup("atlanta.com")  # same domain, another master key: a third P_pub
    _, identity, message, signature = items[0]
    items.append((rogue, identity, message, signature))
    params, identity, message, signature = items[4]  # a biloxi.com signature for another message
    items[4] = (params, identity, b"200 OK 5", signature)
    assert _flagged(_check(items)) == [4, 9]


def test_duplicated_items() -> None:
    item = _signed(BOB, b"REGISTER")
    assert _check([item, item, item]) == [None, None, None]
    params, identity, message, signature = item
    forged = (params, identity, b"REGISTER x", signature)
    assert _flagged(_check([forged, item, forged])) == [0, 2]


def test_cancelling_forgeries_are_caught() -> None:
    # (U1, V1 + D) and (U2, V2 - D): invalid each, yet an unweighted sum of the two checks
    # e(V1 + V2, P2) == e(U1 + h1 Q + U2 + h2 Q, P_pub) would accept them together.
    (params, identity, m1, s1), (_, _, m2, s2) = _signed(ALICE, b"m1"), _signed(ALICE, b"m2")
    delta = bk.g1_mul(bk.g1_generator(), bk.random_scalar())
    (u1, v1), (u2, v2) = _points(s1), _points(s2)
    f1, f2 = _with_v(s1, v1 + delta), _with_v(s2, v2 - delta)
    q, p_pub = ibc.identity_point(identity), params.p_pub_point()
    lhs = u1 + bk.g1_mul(q, cc.H(m1, s1[len(_HEADER) : len(_HEADER) + G1_LEN]))
    lhs = lhs + u2 + bk.g1_mul(q, cc.H(m2, s2[len(_HEADER) : len(_HEADER) + G1_LEN]))
    assert bk.pairing_check(  # the unweighted check is fooled
        [bk.g1_from_bytes(f1[-G1_LEN:]) + bk.g1_from_bytes(f2[-G1_LEN:]), -lhs],
        [bk.g2_generator(), p_pub],
    )
    items: list[Item] = [(params, identity, m1, f1), (params, identity, m2, f2)]
    assert _flagged(_check(items)) == [0, 1]
    valid = _signed(BOB, b"m3")
    assert _flagged(_check([valid, *items, valid])) == [1, 2]


@settings(max_examples=15, deadline=None)
@given(
    n=st.integers(min_value=2, max_value=6),
    tamper=st.sets(st.integers(min_value=0, max_value=5)),
    how=st.sampled_from(["message", "u", "v"]),
)
def test_verdicts_match_verify(n: int, tamper: set[int], how: str) -> None:
    items = [_signed((ALICE, BOB, CAROL)[i % 3], b"MESSAGE %d" % i) for i in range(n)]
    for i in tamper & set(range(n)):
        params, identity, message, signature = items[i]
        u, v = _points(signature)
        if how == "message":
            message += b"."
        elif how == "u":
            off = len(_HEADER)
            signature = signature[:off] + bk.g1_to_bytes(u + u) + signature[off + G1_LEN :]
        else:
            signature = _with_v(signature, v + bk.g1_generator())
        items[i] = (params, identity, message, signature)
    assert _flagged(_check(items)) == sorted(tamper & set(range(n)))


def test_weights_are_fresh_per_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    drawn: list[int] = []
    real = secrets.randbelow

    def spy(bound: int) -> int:
        drawn.append(real(bound))
        return drawn[-1]

    monkeypatch.setattr(cc.secrets, "randbelow", spy)
    items = [_signed(ALICE, b"x"), _signed(ALICE, b"y")]
    assert ibc.verify_batch(items) == [None, None]
    assert ibc.verify_batch(items) == [None, None]
    assert len(drawn) == 4 and len(set(drawn)) == 4  # fresh per batch (2^-64 to collide)
