"""Dialog keys: derived from the first request's KEM secret, named by a key id, and the outer-name derivations.

The first request of a dialog carries a BF-IBE encapsulation; both ends derive from its
shared secret ``ss`` (HKDF-SHA256, RFC 5869, distinct ``info`` per use, so the RFC 9629
KEK of that first message and these values are independent):

* the **dialog key** ``dk = HKDF(ss, info="sipsec-v1 dialog key")`` — the AES-256 key-wrap
  key of every later message of the dialog, in both directions (a KEKRecipientInfo);
* the **key id** ``HKDF(dk, 8, info="sipsec-v1 key id")`` — the KEKIdentifier
  ``keyIdentifier`` by which a receiver finds the dialog key in its dialog store. It links
  the messages of one dialog to each other (as the outer Call-ID must anyway) and nothing else;
* the **outer Call-ID** ``b64url(HMAC(dk, "sipsec-v1 call-id" 0 inner-Call-ID)[:12])`` (16
  characters) and the **outer tags** ``b64url(HMAC(dk, "sipsec-v1 tag" 0 inner-tag)[:6])``
  (8 characters): both ends compute them, so no mapping is stored, responses map back to
  requests by construction, and an observer without ``dk`` cannot link them to the inner
  Call-ID or tags (HMAC is a PRF).

How long they are: every dialog has its own random ``dk``, so outer Call-IDs of different
dialogs are independent uniform 96-bit values. RFC 3261 §8.1.1.4 wants Call-IDs unique
over space and time; with ``n`` dialogs in existence together the chance that two share one
is about ``n² / 2^97`` — for a billion (2^30) at once, 2^-37. A collision could only
confuse two calls' routing state, never their security: each message still opens only
under its own dialog key (found by the key id, not the Call-ID). An
outer tag only has to tell apart the tags under one outer Call-ID (a dialog's two parties
and its forks); 48 bits is more than the "at least 32 bits of randomness" of RFC 3261
§19.3.

Both ends also keep the first request's uncompressed content (``primer``): the compression
dictionary of the dialog's later messages (:mod:`sipsec.envelope.compression`).
"""

from __future__ import annotations

import base64
import hmac
import json
from dataclasses import dataclass, field

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

__all__ = [
    "DEFAULT_DIALOG_TTL_S",
    "DIALOG_KEY_BYTES",
    "KEY_ID_BYTES",
    "OUTER_CALL_ID_BYTES",
    "OUTER_TAG_BYTES",
    "DialogKey",
    "derive_dialog_key",
]

DIALOG_KEY_BYTES = 32
KEY_ID_BYTES = 8
#: HMAC bytes of an outer Call-ID (96 bits; see the module docstring for why that is enough).
OUTER_CALL_ID_BYTES = 12
#: HMAC bytes of an outer tag (48 bits: RFC 3261 §19.3 asks at least 32 bits of randomness).
OUTER_TAG_BYTES = 6
#: How long a dialog key is kept when nobody says otherwise (a long call plus margin).
DEFAULT_DIALOG_TTL_S = 12 * 3600.0
#: How many outer tags a :class:`DialogKey` remembers (its two parties' tags, and some forks).
_MAX_MEMO_TAGS = 8


def _hkdf(secret: bytes, length: int, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=None, info=info).derive(secret)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def derive_dialog_key(shared_secret: bytes) -> tuple[bytes, bytes]:
    """``(dialog key, key id)`` from the KEM shared secret of a dialog's first request."""
    key = _hkdf(shared_secret, DIALOG_KEY_BYTES, b"sipsec-v1 dialog key")
    return key, _hkdf(key, KEY_ID_BYTES, b"sipsec-v1 key id")


@dataclass(frozen=True)
class DialogKey:
    """One end's view of a secured dialog: the key and who the dialog is between.

    ``call_id`` is the *inner* Call-ID; ``local_aor`` is this end's AOR and ``peer_aor`` the
    other end's (both canonical); ``local_is_caller`` says whether this end sent the
    dialog's first request. ``repr`` never shows the key.
    """

    key: bytes = field(repr=False)
    key_id: bytes
    call_id: str
    local_aor: str
    peer_aor: str
    local_is_caller: bool
    created: float = 0.0
    #: The uncompressed content of the dialog's first request (its SignedData DER), which
    #: both ends hold: it extends the compression dictionary of every later message
    #: (``id-sipsec-alg-deflate-sipdict-dialog-v2``). Empty: later messages use the static one.
    primer: bytes = field(default=b"", repr=False)

    def __post_init__(self) -> None:
        if len(self.key) != DIALOG_KEY_BYTES or len(self.key_id) != KEY_ID_BYTES:
            raise ValueError("dialog key must be 32 bytes and its id 8 bytes")

    def outer_call_id(self) -> str:
        """The outer Call-ID of every message of this dialog (16 characters, unlinkable).

        Computed once per instance (every message of the dialog needs it, at both ends).
        """
        cached: str | None = self.__dict__.get("_outer_call_id")
        if cached is None:
            mac = hmac.digest(self.key, b"sipsec-v1 call-id\x00" + self.call_id.encode(), "sha256")
            cached = _b64(mac[:OUTER_CALL_ID_BYTES])
            object.__setattr__(self, "_outer_call_id", cached)  # a memo, not a field: frozen stays frozen
        return cached

    def outer_tag(self, inner_tag: str) -> str:
        """The outer From/To tag that stands for ``inner_tag`` (8 characters, unlinkable)."""
        tags: dict[str, str] | None = self.__dict__.get("_outer_tags")
        if tags is None:
            tags = {}
            object.__setattr__(self, "_outer_tags", tags)
        cached = tags.get(inner_tag)
        if cached is None:
            mac = hmac.digest(self.key, b"sipsec-v1 tag\x00" + inner_tag.encode(), "sha256")
            cached = _b64(mac[:OUTER_TAG_BYTES])
            if len(tags) < _MAX_MEMO_TAGS:  # a dialog has two tags (a few more when forked)
                tags[inner_tag] = cached
        return cached

    @property
    def caller_aor(self) -> str:
        """The AOR of the party that sent the dialog's first request (anonymised on the wire)."""
        return self.local_aor if self.local_is_caller else self.peer_aor

    def reversed(self) -> DialogKey:
        """The same dialog seen from the other end (local and peer swapped)."""
        return DialogKey(self.key, self.key_id, self.call_id, self.peer_aor, self.local_aor,
                         not self.local_is_caller, self.created, self.primer)

    def to_bytes(self) -> bytes:
        """A compact JSON record for a dialog store (the key is secret: protect the store)."""
        record: dict[str, object] = {
            "k": _b64(self.key),
            "i": _b64(self.key_id),
            "c": self.call_id,
            "l": self.local_aor,
            "p": self.peer_aor,
            "o": self.local_is_caller,
            "t": self.created,
        }
        if self.primer:
            record["f"] = _b64(self.primer)
        return json.dumps(record, separators=(",", ":")).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> DialogKey:
        """Inverse of :meth:`to_bytes`; raises ValueError on a damaged record."""
        try:
            rec = json.loads(data)
            return cls(
                key=_unb64(rec["k"]),
                key_id=_unb64(rec["i"]),
                call_id=str(rec["c"]),
                local_aor=str(rec["l"]),
                peer_aor=str(rec["p"]),
                local_is_caller=bool(rec["o"]),
                created=float(rec["t"]),
                primer=_unb64(rec["f"]) if "f" in rec else b"",
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError("damaged dialog record") from exc
