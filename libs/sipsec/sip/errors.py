"""Error types of the sans-IO SIP layer: the peer's fault versus the caller's misuse (h11 style)."""

from __future__ import annotations

__all__ = ["LocalProtocolError", "RemoteProtocolError", "SipError"]


class SipError(Exception):
    """Base class of every error raised by :mod:`sipsec.sip`."""


class RemoteProtocolError(SipError):
    """The peer sent something that is not valid SIP.

    ``status_hint`` is the status a server should answer with (RFC 3261 §21.4):
    400 Bad Request, 413 Message Too Large, 416 Unsupported URI Scheme,
    420 Bad Extension, 505 Version Not Supported, 513 Message Too Large.
    ``reason`` is a short, fixed, low-cardinality reason name (usable as a metric label);
    ``detail`` is a short excerpt of the offending text for logs (at most ~80 characters,
    never the whole message).
    """

    def __init__(self, reason: str, status_hint: int = 400, detail: str = "") -> None:
        self.reason = reason
        self.status_hint = status_hint
        self.detail = detail
        self.unsupported: list[str] = []  # option-tags for a 420's Unsupported header
        super().__init__(f"{status_hint} {reason}" + (f": {detail}" if detail else ""))


class LocalProtocolError(SipError):
    """The caller used the API wrongly (e.g. built a message that cannot be serialised)."""
