"""Session records the PKG can trust although the store holding them is shared (sans-IO).

Each record is MACed (HMAC-SHA256) under a key only PKG nodes hold — derived from the KEK that
seals the domain's secrets (:func:`sipsec_pkg.material.derive_session_key`), never read from the
store. The MAC covers the domain, the record's token id (the store key: a record cannot be moved
to another token) and every field, including the user's credential epoch, so a record written by
anyone who can write the store (Redis) is rejected, and a password change (which renews the
epoch) revokes every earlier session. Comparison is constant-time (``hmac.compare_digest``).

Lifetimes follow NIST SP 800-63B §4.2.3 / §7.2 in spirit: an idle timeout, and an absolute
lifetime after which the user authenticates again whatever the activity.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import replace
from enum import Enum

from sipsec.stores.pkg import SessionRecord, UserRecord

__all__ = ["SESSION_KEY_BYTES", "SessionCheck", "SessionSealer", "check_session"]

SESSION_KEY_BYTES = 32
_LABEL = b"sipsec-pkg-session-v1\x00"


class SessionSealer:
    """Computes and checks the MAC of session records for one domain."""

    def __init__(self, key: bytes, domain: str) -> None:
        if len(key) < SESSION_KEY_BYTES:
            raise ValueError(f"the session MAC key must be at least {SESSION_KEY_BYTES} bytes")
        self._key = bytes(key)
        self._domain = domain

    def __repr__(self) -> str:
        return f"SessionSealer(domain={self._domain!r})"

    def _mac(self, token_id: str, record: SessionRecord) -> bytes:
        body = json.dumps(
            [self._domain, token_id, record.aor, repr(float(record.created_at)), repr(float(record.last_seen)),
             record.epoch],
            separators=(",", ":"),
        ).encode()
        return hmac.new(self._key, _LABEL + body, hashlib.sha256).digest()

    def seal(self, token_id: str, record: SessionRecord) -> SessionRecord:
        """``record`` with its MAC set (bound to ``token_id``)."""
        return replace(record, mac=self._mac(token_id, record))

    def verify(self, token_id: str, record: SessionRecord) -> bool:
        """True when ``record`` carries this PKG's MAC for ``token_id`` (constant-time comparison)."""
        return hmac.compare_digest(self._mac(token_id, record), record.mac)


class SessionCheck(Enum):
    """The outcome of checking a stored session (the value is the metric label)."""

    VALID = "valid"
    FORGED = "forged"
    LIFETIME = "lifetime"
    IDLE = "expired"
    REVOKED = "revoked"


def check_session(
    sealer: SessionSealer, token_id: str, record: SessionRecord, user: UserRecord | None, now: float,
    *, idle_timeout_s: float, max_lifetime_s: float,
) -> SessionCheck:
    """Decides whether ``record`` (stored under ``token_id``) is a live session of ``user`` at ``now``.

    The MAC is checked first: nothing else in a record is believed before it verifies.
    """
    if not sealer.verify(token_id, record):
        return SessionCheck.FORGED
    if now - record.created_at > max_lifetime_s:
        return SessionCheck.LIFETIME
    if now - record.last_seen > idle_timeout_s:
        return SessionCheck.IDLE
    if user is None or user.aor != record.aor or not hmac.compare_digest(user.epoch.encode(), record.epoch.encode()):
        return SessionCheck.REVOKED
    return SessionCheck.VALID
