"""Cha–Cheon identity-based signatures."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sipsec import ibc
from sipsec.ibc.hazmat import backend as bk
from sipsec.ibc.hazmat.suite import CC_SIGNATURE_LEN, SUITE_ID

from ._helpers import PERIOD, key

ALICE = "sip:alice@atlanta.com"


@settings(max_examples=30, deadline=None)
@given(message=st.binary(max_size=2000))
def test_verify_inverts_sign(message: bytes) -> None:
    params, sk = key(ALICE, ibc.Purpose.SIG)
    sig = ibc.sign(sk, message)
    assert len(sig) == CC_SIGNATURE_LEN and sig[1 : 1 + len(SUITE_ID)] == SUITE_ID
    assert ibc.verify(params, sk.identity, message, sig) is None


@settings(max_examples=30, deadline=None)
@given(pos=st.integers(min_value=0, max_value=CC_SIGNATURE_LEN - 1), bit=st.integers(0, 7))
def test_any_bit_flip_is_rejected(pos: int, bit: int) -> None:
    params, sk = key(ALICE, ibc.Purpose.SIG)
    sig = bytearray(ibc.sign(sk, b"REGISTER"))
    sig[pos] ^= 1 << bit
    with pytest.raises(ibc.InvalidSignature):
        ibc.verify(params, sk.identity, b"REGISTER", bytes(sig))


def test_wrong_message_identity_period_params() -> None:
    params, sk = key(ALICE, ibc.Purpose.SIG)
    sig = ibc.sign(sk, b"INVITE")
    with pytest.raises(ibc.InvalidSignature):
        ibc.verify(params, sk.identity, b"INVITE ", sig)
    carol = params.identity("sip:carol@atlanta.com", ibc.Purpose.SIG, PERIOD)
    with pytest.raises(ibc.InvalidSignature):
        ibc.verify(params, carol, b"INVITE", sig)
    later = params.identity(ALICE, ibc.Purpose.SIG, PERIOD + 1)
    with pytest.raises(ibc.InvalidSignature):
        ibc.verify(params, later, b"INVITE", sig)
    _, rogue = ibc.setup("atlanta.com")
    with pytest.raises(ibc.InvalidSignature):
        ibc.verify(rogue, sk.identity, b"INVITE", sig)


def test_purpose_is_enforced() -> None:
    params, enc_key = key(ALICE, ibc.Purpose.ENC)
    with pytest.raises(ibc.InvalidIdentity):
        ibc.sign(enc_key, b"x")
    _, sk = key(ALICE, ibc.Purpose.SIG)
    sig = ibc.sign(sk, b"x")
    with pytest.raises(ibc.InvalidIdentity):
        ibc.verify(params, enc_key.identity, b"x", sig)


def test_forgery_with_identity_point_is_rejected() -> None:
    # U = O, V = O would satisfy the equation for h = 0; identity points are refused outright.
    params, sk = key(ALICE, ibc.Purpose.SIG)
    inf = bk.g1_to_bytes(bk.G1Point.identity())
    forged = bytes([len(SUITE_ID)]) + SUITE_ID + inf + inf
    with pytest.raises(ibc.MalformedSignature):
        ibc.verify(params, sk.identity, b"x", forged)


def test_signatures_are_randomised() -> None:
    _, sk = key(ALICE, ibc.Purpose.SIG)
    assert ibc.sign(sk, b"same") != ibc.sign(sk, b"same")


def test_large_messages_and_hedged_nonce() -> None:
    params, sk = key(ALICE, ibc.Purpose.SIG)
    big = bytes(range(256)) * 800  # 200 KiB, beyond any 16-bit length prefix
    ibc.verify(params, sk.identity, big, ibc.sign(sk, big))
    # a stuck random source still gives distinct nonces for distinct messages
    stuck = lambda n: b"\x00" * n  # noqa: E731
    s1, s2 = ibc.sign(sk, b"one", rng=stuck), ibc.sign(sk, b"two", rng=stuck)
    assert s1[:-96] == s2[:-96] and s1[-96:-48] != s2[-96:-48]  # different U = r Q_ID
    ibc.verify(params, sk.identity, b"one", s1)
