"""The exceptions of ``sipsec.ibc``; messages never carry key material."""

from __future__ import annotations

__all__ = [
    "BadShare",
    "IbcError",
    "InsufficientShares",
    "InvalidCiphertext",
    "InvalidEncoding",
    "InvalidIdentity",
    "InvalidSignature",
    "MalformedCiphertext",
    "MalformedSignature",
    "PeriodNotAllowed",
]


class IbcError(Exception):
    """Base class of every error raised by ``sipsec.ibc``."""


class InvalidIdentity(IbcError):
    """Not a SIP/SIPS AOR, a wrong purpose, or an identity that does not fit the parameters."""


class InvalidEncoding(IbcError):
    """Bad or truncated bytes, a point not on the curve or not in the prime-order subgroup."""


class InvalidCiphertext(IbcError):
    """Decapsulation failed: the ciphertext was tampered with or is not for this key."""


class InvalidSignature(IbcError):
    """Signature verification failed."""


class PeriodNotAllowed(IbcError):
    """A PKG was asked for a past or far-future key period."""


class BadShare(IbcError):
    """A threshold partial key failed its pairing check; ``node`` names the node (1..n)."""

    def __init__(self, node: int, message: str | None = None) -> None:
        self.node = node
        super().__init__(message or f"partial key from node {node} failed verification")


class InsufficientShares(IbcError):
    """Fewer partial keys than the threshold were given (and none of them was bad)."""


class MalformedCiphertext(InvalidCiphertext, InvalidEncoding):
    """A ciphertext that does not even parse (truncated, unknown suite, bad point)."""


class MalformedSignature(InvalidSignature, InvalidEncoding):
    """A signature that does not even parse (truncated, unknown suite, bad point)."""
