"""Opaque Contact user parts for the secured side: unlinkable across dialogs, readable by every replica.

The outer message names no user (RFC 3323 anonymity; the envelope README), but its Contact
must still bring in-dialog requests back to the right local user, on whichever gateway
replica they reach. In the spirit of RFC 5627 temporary GRUUs (§3.2: a temporary GRUU is
unlinkable to the AOR and to other temporary GRUUs of it), each Contact user part is a
*sealed token*: the user's name encrypted and authenticated under keys derived from the
contact secret (``SIPSEC_GATEWAY_CONTACT_SECRET``), so any replica holding that secret
recovers the AOR with no shared state, and nobody else learns anything from it.

* The **registered** Contact (the binding the proxy's location holds, RFC 3261 §10.2.1)
  is one token per AOR, stable across refreshes (its nonce is a keyed hash of the AOR).
* Each **dialog** gets its own token (nonce: a keyed hash of the AOR and the dialog's inner
  Call-ID, which is random per call): fresh for every call, the same for every message of
  the dialog and on every replica, and unlinkable to the registered one and to the tokens
  of the user's other calls without the secret.

Token: ``"u"`` + base32 (lower case, no padding) of ``nonce (8) || ciphertext || tag (8)``;
the plaintext is a length byte and the user part (or ``user@domain`` for a foreign domain),
zero-padded to a multiple of 8 bytes so that only the length class shows. The cipher is an
HMAC-SHA256 keystream; the tag an HMAC-SHA256 over nonce and ciphertext, checked in
constant time. A token that does not verify is no token (None): the caller falls back to
reading the user part as a plain user name.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac

__all__ = ["ContactTokens"]

_NONCE = 8
_TAG = 8
_BLOCK = 8
_PREFIX = "u"


def _kdf(key: bytes, label: bytes) -> bytes:
    return hmac.new(key, b"sipsec contact token v1 " + label, hashlib.sha256).digest()


class ContactTokens:
    """Seal an AOR into a Contact user part and back (see the module docstring); no I/O, no clock."""

    def __init__(self, secret: bytes, domain: str) -> None:
        if not secret:
            raise ValueError("the contact secret is empty")
        self.domain = domain.lower()
        self._k_nonce = _kdf(secret, b"nonce")
        self._k_enc = _kdf(secret, b"enc")
        self._k_mac = _kdf(secret, b"mac")
        self._registered: dict[str, str] = {}

    def registered(self, aor: str) -> str:
        """The user part of ``aor``'s registered Contact (stable; one HMAC per AOR, memoised)."""
        token = self._registered.get(aor)
        if token is None:
            token = self._seal(aor, self._nonce(b"r\x00" + aor.encode()))
            if len(self._registered) < 65536:
                self._registered[aor] = token
        return token

    def for_dialog(self, aor: str, call_id: str) -> str:
        """The user part of ``aor``'s Contact in the dialog whose inner Call-ID is ``call_id``."""
        return self._seal(aor, self._nonce(b"d\x00" + aor.encode() + b"\x00" + call_id.encode()))

    def aor_of(self, user: str) -> str | None:
        """The AOR a token stands for, or None when ``user`` is not a token sealed under this secret."""
        if not user.startswith(_PREFIX) or len(user) > 400:
            return None
        text = user[len(_PREFIX):].upper()
        try:
            raw = base64.b32decode(text + "=" * (-len(text) % 8))
        except (binascii.Error, ValueError):
            return None
        if len(raw) < _NONCE + _BLOCK + _TAG or (len(raw) - _NONCE - _TAG) % _BLOCK:
            return None
        nonce, ct, tag = raw[:_NONCE], raw[_NONCE:-_TAG], raw[-_TAG:]
        if not hmac.compare_digest(tag, self._tag(nonce, ct)):
            return None
        pt = bytes(a ^ b for a, b in zip(ct, self._stream(nonce, len(ct)), strict=True))
        size = pt[0]
        if size + 1 > len(pt) or any(pt[1 + size:]):
            return None
        try:
            name = pt[1:1 + size].decode()
        except UnicodeDecodeError:
            return None
        return f"sip:{name}" if "@" in name else f"sip:{name}@{self.domain}"

    # -- the construction ----------------------------------------------------------------------

    def _nonce(self, data: bytes) -> bytes:
        return hmac.new(self._k_nonce, data, hashlib.sha256).digest()[:_NONCE]

    def _stream(self, nonce: bytes, size: int) -> bytes:
        out = b""
        counter = 0
        while len(out) < size:
            out += hmac.new(self._k_enc, nonce + counter.to_bytes(4, "big"), hashlib.sha256).digest()
            counter += 1
        return out[:size]

    def _tag(self, nonce: bytes, ct: bytes) -> bytes:
        return hmac.new(self._k_mac, nonce + ct, hashlib.sha256).digest()[:_TAG]

    def _seal(self, aor: str, nonce: bytes) -> str:
        name = aor.split(":", 1)[-1]
        user, _, domain = name.rpartition("@")
        if user and domain.lower() == self.domain:
            name = user
        data = name.encode()
        if len(data) > 200:
            raise ValueError("AOR too long for a Contact token")
        pt = bytes([len(data)]) + data
        pt += b"\x00" * (-len(pt) % _BLOCK)
        ct = bytes(a ^ b for a, b in zip(pt, self._stream(nonce, len(pt)), strict=True))
        raw = nonce + ct + self._tag(nonce, ct)
        return _PREFIX + base64.b32encode(raw).decode().rstrip("=").lower()
