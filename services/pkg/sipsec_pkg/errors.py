"""Errors of the PKG's domain logic; the gRPC adapter maps each class to one status code.

Messages are shown to callers: they never carry a password, token, key or share.
"""

from __future__ import annotations

__all__ = [
    "InvalidArgument",
    "NotFound",
    "PermissionDenied",
    "PkgError",
    "RateLimited",
    "Unauthenticated",
    "Unavailable",
]


class PkgError(Exception):
    """Base: ``reason`` is a short fixed label (metrics, ``sipsec-reason`` trailer)."""

    def __init__(self, reason: str, message: str, **details: str) -> None:
        self.reason = reason
        self.details = details
        super().__init__(message)


class Unauthenticated(PkgError):
    """Bad credentials, or an unknown, expired or logged-out session."""


class PermissionDenied(PkgError):
    """An authenticated user asked for something that is not theirs."""


class NotFound(PkgError):
    """A domain that is neither ours nor a configured peer."""


class InvalidArgument(PkgError):
    """Malformed input or a period the policy does not issue."""


class RateLimited(PkgError):
    """Too many failed logins for a user or from a source; ``retry_after_s`` in the details."""


class Unavailable(PkgError):
    """A peer PKG could not provide verifiable parameters and no valid cached copy exists."""
