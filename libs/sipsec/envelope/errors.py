"""Typed envelope errors: each remote failure names the SIP status to answer and a fixed reason label."""

from __future__ import annotations

from typing import ClassVar

__all__ = [
    "BINDING_FIELDS",
    "CLOCK_SKEW_PHRASE",
    "CLOCK_SKEW_WARNING",
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

    def __init__(self, reason: str, detail: str = "", *, field: str | None = None) -> None:
        if reason not in REASONS:
            raise EnvelopeUsageError(f"unknown rejection reason {reason!r}")
        if field is not None and field not in BINDING_FIELDS:
            raise EnvelopeUsageError(f"unknown binding field class {field!r}")
        self.reason = reason
        self.detail = detail
        self.field = field
        super().__init__(f"{self.status} {reason}" + (f": {detail}" if detail else ""))

    @property
    def warning(self) -> str | None:
        """The warn-text of a binding rejection, ``"<reason>: <field class>"`` (e.g.
        ``"outer-mismatch: contact"``), for a ``Warning: 399`` header (RFC 3261 §20.43) that
        tells an interop engineer which field an intermediary changed; for ``stale``,
        :data:`CLOCK_SKEW_WARNING`; None for other rejections. Every part comes from a fixed
        set: no message content is ever echoed."""
        if self.reason == "stale":
            return CLOCK_SKEW_WARNING
        return None if self.field is None else f"{self.reason}: {self.field}"

    @property
    def reason_phrase(self) -> str:
        """The Reason-Phrase to answer with: ``Clock Skew`` for a signing time outside the
        window (the sender's clock, or ours, is off), else the status's own phrase."""
        return CLOCK_SKEW_PHRASE if self.reason == "stale" else self.phrase


#: The Reason-Phrase of a 403 for a signing time outside the freshness window: the clocks of
#: signer and receiver disagree (or the message is old), which no signature check can fix.
CLOCK_SKEW_PHRASE = "Clock Skew"
#: Its ``Warning: 399`` warn-text (RFC 3261 §20.43): fixed text, nothing from the message.
CLOCK_SKEW_WARNING = "stale: signing time outside the window, check the clocks (clock skew)"


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
    "failed-before": 403,
}

#: The field classes a binding rejection names (``RejectedEnvelope.field``): which outer
#: field disagreed with the signed inner message (RFC 3261 §23.4.1.1), or, for
#: ``dialog-mismatch`` / ``recipient-mismatch``, which inner field left the key's dialog.
BINDING_FIELDS: frozenset[str] = frozenset({
    "message-kind", "method", "request-uri", "status", "cseq", "call-id",
    "from", "from-tag", "to", "to-tag", "contact", "dialog",
})
