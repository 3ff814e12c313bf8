"""Boneh–Franklin FullIdent KEM: round trips, tampering, misuse."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sipsec import ibc
from sipsec.ibc.hazmat.suite import KEM_CIPHERTEXT_LEN, SUITE_ID

from ._helpers import PERIOD, domain, key

BOB = "sip:bob@biloxi.com"


def test_round_trip_and_sizes() -> None:
    params, sk = key(BOB, ibc.Purpose.ENC)
    k, ct = ibc.encapsulate(params, sk.identity)
    assert len(k) == 32 and len(ct) == KEM_CIPHERTEXT_LEN == ibc.KEM_CIPHERTEXT_LEN
    assert ct[1 : 1 + len(SUITE_ID)] == SUITE_ID  # every ciphertext carries the suite id
    assert ibc.decapsulate(sk, ct) == k
    k2, ct2 = ibc.encapsulate(params, sk.identity)
    assert k2 != k and ct2 != ct  # randomised


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    user=st.from_regex(r"[a-z][a-z0-9._-]{0,20}", fullmatch=True),
    period=st.integers(min_value=0, max_value=2**40),
)
def test_decapsulate_inverts_encapsulate(user: str, period: int) -> None:
    master, params = domain("biloxi.com")
    ident = params.identity(f"sip:{user}@biloxi.com", ibc.Purpose.ENC, period)
    sk = ibc.extract(master, params, ident)
    k, ct = ibc.encapsulate(params, ident)
    assert ibc.decapsulate(sk, ct) == k


@settings(max_examples=40, deadline=None)
@given(pos=st.integers(min_value=0, max_value=KEM_CIPHERTEXT_LEN - 1), bit=st.integers(0, 7))
def test_any_bit_flip_is_rejected(pos: int, bit: int) -> None:
    params, sk = key(BOB, ibc.Purpose.ENC)
    _, ct = ibc.encapsulate(params, sk.identity)
    bad = bytearray(ct)
    bad[pos] ^= 1 << bit
    with pytest.raises(ibc.InvalidCiphertext):
        ibc.decapsulate(sk, bytes(bad))


def test_malformed_is_also_invalid_encoding() -> None:
    params, sk = key(BOB, ibc.Purpose.ENC)
    _, ct = ibc.encapsulate(params, sk.identity)
    for bad in (ct[:-1], ct + b"\x00", b"", b"\x00" * len(ct)):
        with pytest.raises(ibc.MalformedCiphertext) as info:
            ibc.decapsulate(sk, bad)
        assert isinstance(info.value, ibc.InvalidEncoding)


def test_purpose_and_domain_are_enforced() -> None:
    params, sig_key = key(BOB, ibc.Purpose.SIG)
    with pytest.raises(ibc.InvalidIdentity):
        ibc.encapsulate(params, sig_key.identity)
    _, atlanta = domain("atlanta.com")
    enc_ident = params.identity(BOB, ibc.Purpose.ENC, PERIOD)
    with pytest.raises(ibc.InvalidIdentity):
        ibc.encapsulate(atlanta, enc_ident)  # bob's identity, atlanta's parameters
    _, ct = ibc.encapsulate(params, enc_ident)
    with pytest.raises(ibc.InvalidIdentity):
        ibc.decapsulate(sig_key, ct)
    other_policy = params.identity(BOB, ibc.Purpose.ENC, PERIOD)
    other_policy = ibc.Identity(other_policy.aor, ibc.Purpose.ENC, PERIOD, 86400)
    with pytest.raises(ibc.InvalidIdentity):
        ibc.encapsulate(params, other_policy)


def test_other_domain_master_cannot_open() -> None:
    params, sk = key(BOB, ibc.Purpose.ENC)
    rogue_master, rogue_params = ibc.setup("biloxi.com")
    rogue_key = ibc.extract(rogue_master, rogue_params, sk.identity)
    _, ct = ibc.encapsulate(params, sk.identity)
    with pytest.raises(ibc.InvalidCiphertext):
        ibc.decapsulate(rogue_key, ct)
    with pytest.raises(ibc.IbcError):
        ibc.extract(rogue_master, params, sk.identity)  # master does not match P_pub


def test_errors_and_reprs_carry_no_secrets() -> None:
    master, params = domain("biloxi.com")
    params_, sk = key(BOB, ibc.Purpose.ENC)
    k, ct = ibc.encapsulate(params_, sk.identity)
    secrets_hex = [master.to_bytes().hex(), sk.to_bytes().hex(), k.hex()]
    texts = [repr(master), str(master), repr(sk), str(sk), repr(params)]
    bad = bytearray(ct)
    bad[-1] ^= 1
    try:
        ibc.decapsulate(sk, bytes(bad))
    except ibc.InvalidCiphertext as exc:
        texts.append(str(exc))
        texts.append(repr(exc))
    for text in texts:
        for secret in secrets_hex:
            assert secret not in text
            assert str(int(secret, 16)) not in text
    assert "hidden" in repr(master)
    assert repr(sk).startswith("PrivateKey(identity=Identity(")
