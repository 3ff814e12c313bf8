"""The secured SIP message (RFC 5652, RFC 3261 §23.4): CMS AuthEnvelopedData + SignedData around message/sip, seal and open.

``seal`` signs (per :class:`SigningPolicy`) and encrypts a SIP message — to the callee's
BF-IBE identity for a dialog's first request, under the dialog key for every later
message — and returns the anonymised outer message; ``open`` (async: it consults the
dialog store and the replay cache) verifies and returns the inner message or raises a
:class:`RejectedEnvelope` whose ``status`` (400/403/493) and ``reason`` answer and count it.
``sign_register`` / ``verify_register`` sign a REGISTER for the registrar.
"""

from __future__ import annotations

from sipsec.envelope.dialog import DialogKey, derive_dialog_key
from sipsec.envelope.errors import (
    REASONS,
    EnvelopeError,
    EnvelopeUsageError,
    Forbidden,
    MalformedEnvelope,
    RejectedEnvelope,
    Undecipherable,
)
from sipsec.envelope.keys import Keyring
from sipsec.envelope.opening import DEFAULT_WINDOW_S, Opened, open, open_message
from sipsec.envelope.policy import (
    CONTENT_DISPOSITION,
    CONTENT_TYPE,
    OPTION_TAG,
    Compression,
    Fallback,
    SecurityPolicy,
    SigningPolicy,
    advertise,
    capability_headers,
    fallback_after,
    is_secured,
    needs_signature,
    peer_accepts_secured,
    rejection_response,
    unsupported_media_response,
)
from sipsec.envelope.register import VerifiedRegister, sign_register, verify_register
from sipsec.envelope.sealing import EnvelopeBuilder, Sealed, seal, seal_async

__all__ = [
    "CONTENT_DISPOSITION",
    "CONTENT_TYPE",
    "DEFAULT_WINDOW_S",
    "OPTION_TAG",
    "REASONS",
    "Compression",
    "DialogKey",
    "EnvelopeBuilder",
    "EnvelopeError",
    "EnvelopeUsageError",
    "Fallback",
    "Forbidden",
    "Keyring",
    "MalformedEnvelope",
    "Opened",
    "RejectedEnvelope",
    "Sealed",
    "SecurityPolicy",
    "SigningPolicy",
    "Undecipherable",
    "VerifiedRegister",
    "advertise",
    "capability_headers",
    "derive_dialog_key",
    "fallback_after",
    "is_secured",
    "needs_signature",
    "open",
    "open_message",
    "peer_accepts_secured",
    "rejection_response",
    "seal",
    "seal_async",
    "sign_register",
    "unsupported_media_response",
    "verify_register",
]
