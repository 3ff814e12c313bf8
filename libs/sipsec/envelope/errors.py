"""Typed envelope errors: each remote failure names the SIP status to answer and a fixed reason label."""

from __future__ import annotations

from typing import ClassVar

__all__ = [
    "REASONS",
    "EnvelopeError",
    "EnvelopeUsageError",
    "Forbidden",
    "MalformedEnvelope",
    "RejectedEnvelope",
    "Undecipherable",
]


class EnvelopeError(Exception):
    """Base class of every error raised by :mod:`sipsec.envelope`."""


class EnvelopeUsageError(EnvelopeError, ValueError):
    """The caller used the API wrongly (raised early, before any cryptography runs)."""


class RejectedEnvelope(EnvelopeError):
    """A received message was rejected; answer it with ``status`` and count it by ``reason``.

    ``reason`` comes from the fixed set :data:`REASONS` (a safe metric label); ``detail``
    is short free text for logs and never contains key material or message content.
    """

    status: ClassVar[int] = 400
    phrase: ClassVar[str] = "Bad Request"

    def __init__(self, reason: str, detail: str = "") -> None:
        if reason not in REASONS:
            raise EnvelopeUsageError(f"unknown rejection reason {reason!r}")
        self.reason = reason
        self.detail = detail
        super().__init__(f"{self.status} {reason}" + (f": {detail}" if detail else ""))


class MalformedEnvelope(RejectedEnvelope):
    """400 Bad Request: the body is not the CMS/SIP structure it claims to be."""

    status = 400
    phrase = "Bad Request"


class Forbidden(RejectedEnvelope):
    """403 Forbidden: a signature, a binding (outer vs inner, dialog) or freshness check failed."""

    status = 403
    phrase = "Forbidden"


class Undecipherable(RejectedEnvelope):
    """493 Undecipherable (RFC 3261 §21.4.28): no key here opens this body."""

    status = 493
    phrase = "Undecipherable"


#: Every reason label a rejection may carry, with the status it answers.
REASONS: dict[str, int] = {
    # 400
    "not-secured": 400,
    "malformed-cms": 400,
    "unsupported-algorithm": 400,
    "malformed-inner": 400,
    "malformed-outer": 400,
    # 493
    "wrong-recipient": 493,
    "key-period": 493,
    "kem-failed": 493,
    "unknown-dialog": 493,
    "unwrap-failed": 493,
    "decrypt-failed": 493,
    # 403
    "unknown-domain": 403,
    "bad-signature": 403,
    "signer-period": 403,
    "signer-mismatch": 403,
    "unsigned": 403,
    "outer-mismatch": 403,
    "recipient-mismatch": 403,
    "dialog-mismatch": 403,
    "stale": 403,
    "replay": 403,
}
