"""Domain setup, extraction and the stable encodings of parameters and keys."""

from __future__ import annotations

import hmac
import pickle

import pytest
from sipsec import ibc
from sipsec.ibc.hazmat import backend as bk

from ._helpers import PERIOD, domain


def test_setup_and_extract() -> None:
    master, params = ibc.setup("Atlanta.COM")
    assert params.domain == "atlanta.com" and params.suite_id == ibc.SUITE_ID
    assert params.version == 1 and params.threshold == 1 and params.public_shares == ()
    assert bk.g2_generator_mul(int.from_bytes(master.to_bytes(), "big")) == params.p_pub_point()
    ident = params.identity("sip:alice@atlanta.com", ibc.Purpose.ENC, PERIOD)
    sk = ibc.extract(master, params, ident)
    q = ibc.identity_point(ident)
    assert bk.pairing_check([sk._point(), -q], [bk.g2_generator(), params.p_pub_point()])
    with pytest.raises(ibc.InvalidIdentity):
        ibc.extract(master, params, params.identity("sip:bob@biloxi.com", ibc.Purpose.ENC, 1))
    with pytest.raises(ibc.InvalidIdentity):
        ibc.setup("not a domain")


def test_params_round_trip_and_layout() -> None:
    _, params = ibc.setup("biloxi.com", ibc.PeriodPolicy(length_s=86400, max_ahead=2), version=7)
    data = params.to_bytes()
    assert data[:4] == b"SSP\x01"
    assert data[4] == len(ibc.SUITE_ID) and data[5 : 5 + len(ibc.SUITE_ID)] == ibc.SUITE_ID
    assert len(data) == 4 + 1 + len(ibc.SUITE_ID) + 1 + len("biloxi.com") + 4 + 8 + 2 + 96 + 2 + 2
    again = ibc.DomainParams.from_bytes(data)
    assert again == params and again.policy == ibc.PeriodPolicy(86400, 2) and again.version == 7


def test_params_reject_garbage() -> None:
    _, params = domain("atlanta.com")
    data = params.to_bytes()
    for cut in range(len(data)):
        with pytest.raises(ibc.InvalidEncoding):
            ibc.DomainParams.from_bytes(data[:cut])
    with pytest.raises(ibc.InvalidEncoding):
        ibc.DomainParams("atlanta.com", b"other-suite", params.p_pub, params.policy, 1)
    with pytest.raises(ibc.InvalidEncoding):
        ibc.DomainParams("Atlanta.com", ibc.SUITE_ID, params.p_pub, params.policy, 1)
    with pytest.raises(ibc.InvalidEncoding):
        ibc.DomainParams("atlanta.com", ibc.SUITE_ID, params.p_pub, params.policy, 1, threshold=2)


def test_secret_encodings_round_trip() -> None:
    master, params = domain("atlanta.com")
    assert ibc.MasterSecret.from_bytes(master.to_bytes()) == master
    assert len(master.to_bytes()) == 32
    ident = params.identity("sip:alice@atlanta.com", ibc.Purpose.SIG, PERIOD)
    sk = ibc.extract(master, params, ident)
    assert len(sk.to_bytes()) == 48
    assert ibc.PrivateKey.from_bytes(ident, sk.to_bytes()) == sk
    for bad in (b"", bytes(32), bk.R.to_bytes(32, "big"), b"\x01" * 31):
        with pytest.raises(ibc.InvalidEncoding):
            ibc.MasterSecret.from_bytes(bad)
    with pytest.raises(ibc.InvalidEncoding):
        ibc.PrivateKey.from_bytes(ident, sk.to_bytes()[:-1])


def test_secrets_are_not_picklable_or_hashable() -> None:
    master, params = domain("atlanta.com")
    sk = ibc.extract(master, params, params.identity("sip:a@atlanta.com", ibc.Purpose.ENC, 1))
    for obj in (master, sk):
        with pytest.raises(TypeError):
            pickle.dumps(obj)
        with pytest.raises(TypeError):
            hash(obj)


def test_secret_comparison_is_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append(1)
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    master, params = domain("atlanta.com")
    sk = ibc.extract(master, params, params.identity("sip:a@atlanta.com", ibc.Purpose.ENC, 1))
    assert master == ibc.MasterSecret.from_bytes(master.to_bytes())
    assert sk == ibc.PrivateKey.from_bytes(sk.identity, sk.to_bytes())
    assert len(calls) == 2
