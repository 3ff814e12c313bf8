"""Signing, pinning and verifying a domain's public parameters (PKG federation, docs/architecture.md#the-pkg-and-federation).

A domain signs ``DomainParams.to_bytes()`` with its long-term Ed25519 federation key; peers
pin ``sha256:<hex>`` of the raw public key. Verification raises, never returns False.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature as _CryptoInvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from sipsec.ibc import DomainParams, IbcError

__all__ = [
    "PARAMS_SIGNATURE_CONTEXT",
    "ParamsVerificationError",
    "PinMismatch",
    "SignedParams",
    "fingerprint",
    "normalize_fingerprint",
    "sign_params",
    "verify_signed_params",
]

PARAMS_SIGNATURE_CONTEXT = b"sipsec-pkg-domain-params-v1\x00"


class ParamsVerificationError(Exception):
    """Signed parameters failed verification; ``reason`` is a short fixed label."""

    def __init__(self, reason: str, message: str) -> None:
        self.reason = reason
        super().__init__(message)


class PinMismatch(ParamsVerificationError):
    """The signer's key is not the pinned one."""

    def __init__(self, domain: str) -> None:
        super().__init__("pin_mismatch", f"federation key of {domain} does not match the pinned fingerprint")


@dataclass(frozen=True)
class SignedParams:
    """``params`` (DomainParams bytes) with its Ed25519 signature and the signer's raw public key."""

    domain: str
    params: bytes
    signature: bytes
    signer_public_key: bytes
    version: int

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.signer_public_key)


def fingerprint(public_key: bytes) -> str:
    """``sha256:<hex>`` of a raw 32-byte Ed25519 public key."""
    return "sha256:" + hashlib.sha256(public_key).hexdigest()


def normalize_fingerprint(text: str) -> str:
    """Accepts ``sha256:<hex>`` or bare hex (colons allowed); raises ValueError otherwise."""
    value = text.strip().lower()
    if value.startswith("sha256:"):
        value = value[len("sha256:"):]
    value = value.replace(":", "")
    if len(value) != 64 or any(c not in "0123456789abcdef" for c in value):
        raise ValueError("a fingerprint is sha256:<64 hex digits>")
    return "sha256:" + value


def sign_params(params: DomainParams, key: Ed25519PrivateKey) -> SignedParams:
    """Signs ``params`` with the domain's federation key."""
    blob = params.to_bytes()
    public = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return SignedParams(
        domain=params.domain,
        params=blob,
        signature=key.sign(PARAMS_SIGNATURE_CONTEXT + blob),
        signer_public_key=public,
        version=params.version,
    )


def verify_signed_params(
    signed: SignedParams, *, expected_domain: str, pinned_fingerprint: str | None
) -> DomainParams:
    """Checks pin (when given), signature, decoding and domain; returns the parameters.

    Raises PinMismatch or ParamsVerificationError (reason ``bad_signature``, ``bad_params``,
    ``wrong_domain``).
    """
    if pinned_fingerprint is not None:
        want = normalize_fingerprint(pinned_fingerprint).encode()
        if not hmac.compare_digest(fingerprint(signed.signer_public_key).encode(), want):
            raise PinMismatch(expected_domain)
    try:
        Ed25519PublicKey.from_public_bytes(signed.signer_public_key).verify(
            signed.signature, PARAMS_SIGNATURE_CONTEXT + signed.params
        )
    except (ValueError, _CryptoInvalidSignature) as exc:
        raise ParamsVerificationError(
            "bad_signature", f"parameters of {expected_domain} carry an invalid signature"
        ) from exc
    try:
        params = DomainParams.from_bytes(signed.params)
    except (IbcError, ValueError) as exc:
        raise ParamsVerificationError("bad_params", f"parameters of {expected_domain} do not decode") from exc
    if params.domain != expected_domain.lower() or params.domain != signed.domain.lower():
        raise ParamsVerificationError("wrong_domain", f"signed parameters are not for {expected_domain}")
    if params.version != signed.version:
        raise ParamsVerificationError("bad_params", f"parameters of {expected_domain} have an inconsistent version")
    return params
