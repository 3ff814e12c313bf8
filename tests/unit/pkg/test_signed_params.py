"""Signed domain parameters: pinning, signature, domain binding (sipsec.pkgclient.signed)."""

from __future__ import annotations

import dataclasses

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sipsec.ibc import setup
from sipsec.pkgclient import (
    ParamsVerificationError,
    PinMismatch,
    fingerprint,
    normalize_fingerprint,
    sign_params,
    verify_signed_params,
)


@pytest.fixture(scope="module")
def signed():
    _, params = setup("biloxi.com")
    return sign_params(params, Ed25519PrivateKey.generate())


def test_good_params_verify_with_and_without_pin(signed):
    assert verify_signed_params(signed, expected_domain="biloxi.com", pinned_fingerprint=signed.fingerprint).domain == "biloxi.com"
    colon_hex = ":".join(signed.fingerprint[7:][i:i + 2] for i in range(0, 64, 2)).upper()
    assert verify_signed_params(signed, expected_domain="biloxi.com", pinned_fingerprint=colon_hex)
    assert verify_signed_params(signed, expected_domain="biloxi.com", pinned_fingerprint=None)


def test_pin_mismatch(signed):
    with pytest.raises(PinMismatch):
        verify_signed_params(signed, expected_domain="biloxi.com", pinned_fingerprint=fingerprint(b"\x00" * 32))


@pytest.mark.parametrize("field,reason", [("signature", "bad_signature"), ("params", "bad_signature")])
def test_tampering_is_refused(signed, field, reason):
    value = bytearray(getattr(signed, field))
    value[-1] ^= 1
    with pytest.raises(ParamsVerificationError) as err:
        verify_signed_params(dataclasses.replace(signed, **{field: bytes(value)}),
                             expected_domain="biloxi.com", pinned_fingerprint=signed.fingerprint)
    assert err.value.reason == reason


def test_domain_and_version_are_bound(signed):
    with pytest.raises(ParamsVerificationError) as err:
        verify_signed_params(signed, expected_domain="atlanta.com", pinned_fingerprint=None)
    assert err.value.reason == "wrong_domain"
    with pytest.raises(ParamsVerificationError):
        verify_signed_params(dataclasses.replace(signed, version=signed.version + 1),
                             expected_domain="biloxi.com", pinned_fingerprint=None)
    with pytest.raises(ParamsVerificationError):
        verify_signed_params(dataclasses.replace(signed, signer_public_key=b"short"),
                             expected_domain="biloxi.com", pinned_fingerprint=None)


def test_fingerprint_format():
    assert normalize_fingerprint("AB" * 32) == "sha256:" + "ab" * 32
    for bad in ("sha1:abcd", "sha256:" + "zz" * 32, "ab" * 31):
        with pytest.raises(ValueError):
            normalize_fingerprint(bad)
