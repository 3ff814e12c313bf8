"""The crypto-worker wire vocabulary: every ibc error survives the trip as the same class."""

from __future__ import annotations

import pytest
from sipsec import ibc
from sipsec.engine import wire
from sipsec.rpc._gen.sipsec.crypto.v1 import crypto_pb2 as pb

POLICY = ibc.PeriodPolicy()


@pytest.mark.parametrize(
    "error",
    [
        ibc.InvalidCiphertext("x"),
        ibc.MalformedCiphertext("x"),
        ibc.InvalidSignature("x"),
        ibc.MalformedSignature("x"),
        ibc.InvalidIdentity("x"),
        ibc.InvalidEncoding("x"),
    ],
)
def test_reason_round_trip_gives_the_same_class(error: ibc.IbcError) -> None:
    reason = wire.reason_for(error)
    assert reason in wire.CRYPTO_REASONS
    back = wire.error_for_reason(reason, "message")
    assert type(back) is type(error)
    assert str(back) == "message"


def test_malformed_ciphertext_is_still_an_invalid_ciphertext() -> None:
    back = wire.error_for_reason(wire.reason_for(ibc.MalformedCiphertext("bad")), "bad")
    assert isinstance(back, ibc.InvalidCiphertext) and isinstance(back, ibc.InvalidEncoding)


def test_unknown_reason_and_other_errors() -> None:
    assert type(wire.error_for_reason("no-such-reason", "m")) is ibc.IbcError
    assert wire.reason_for(ibc.IbcError("m")) == wire.REASON_IBC_ERROR
    assert wire.reason_for(ValueError("m")) == wire.REASON_INVALID_ARGUMENT
    assert wire.reason_for(ibc.PeriodNotAllowed("m")) == wire.REASON_INVALID_IDENTITY


def test_item_status_of_each_reason() -> None:
    assert wire.item_status("") == pb.ITEM_STATUS_OK
    assert wire.item_status(wire.REASON_INVALID_CIPHERTEXT) == pb.ITEM_STATUS_INVALID_CIPHERTEXT
    assert wire.item_status(wire.REASON_MALFORMED_CIPHERTEXT) == pb.ITEM_STATUS_INVALID_CIPHERTEXT
    assert wire.item_status(wire.REASON_INVALID_SIGNATURE) == pb.ITEM_STATUS_INVALID_SIGNATURE
    assert wire.item_status(wire.REASON_MALFORMED_SIGNATURE) == pb.ITEM_STATUS_INVALID_SIGNATURE
    for reason in (wire.REASON_INVALID_ENCODING, wire.REASON_INVALID_IDENTITY, wire.REASON_IBC_ERROR):
        assert wire.item_status(reason) == pb.ITEM_STATUS_INVALID_ARGUMENT


def test_identity_round_trip() -> None:
    for purpose in ibc.Purpose:
        identity = ibc.Identity.for_aor("sip:Alice@Atlanta.COM:5060", purpose, 692, POLICY)
        msg = wire.identity_to_proto(identity)
        assert msg.period_length_s == POLICY.length_s
        assert wire.identity_from_proto(msg) == identity


def test_identity_period_length_from_params() -> None:
    _, params = ibc.setup("atlanta.com", ibc.PeriodPolicy(length_s=3600))
    msg = pb.Identity(aor="sip:alice@atlanta.com", purpose=pb.PURPOSE_SIG, period=7)
    identity = wire.identity_from_proto(msg, params)
    assert identity.period_length_s == 3600
    with pytest.raises(ibc.InvalidIdentity):
        wire.identity_from_proto(msg)  # no length and no params


@pytest.mark.parametrize(
    "msg",
    [
        pb.Identity(aor="sip:alice@atlanta.com", purpose=pb.PURPOSE_UNSPECIFIED, period=1, period_length_s=60),
        pb.Identity(aor="sip:Alice@ATLANTA.com", purpose=pb.PURPOSE_ENC, period=1, period_length_s=60),
        pb.Identity(aor="not a uri", purpose=pb.PURPOSE_ENC, period=1, period_length_s=60),
        pb.Identity(aor="sip:alice@atlanta.com", purpose=pb.PURPOSE_ENC, period=-1, period_length_s=60),
        pb.Identity(aor="sip:alice@atlanta.com", purpose=pb.PURPOSE_ENC, period=1, period_length_s=-5),
    ],
)
def test_bad_identities_raise_invalid_identity(msg: pb.Identity) -> None:
    with pytest.raises(ibc.InvalidIdentity):
        wire.identity_from_proto(msg)
