"""Signed REGISTER: the AOR's signature identity signs the whole REGISTER so a registrar knows who registers.

Choice: an ``application/pkcs7-mime; smime-type=signed-data`` body holding a CMS SignedData
that *encapsulates* the complete REGISTER as ``message/sip`` (RFC 3261 §23.4), rather
than a detached ``multipart/signed`` signature. The outer REGISTER stays readable
(the registrar needs Contact and Expires; nothing is encrypted), one CMS structure and
one verification path are shared with the envelope, and there is no multipart boundary
or canonicalisation of a detached part to get wrong. The registrar checks that the outer
REGISTER agrees with the signed one (Request-URI, To, From, Call-ID, CSeq, Contact,
Expires) and that the signer is the To AOR (no third-party registration), within the
signing-time window and with a fresh nonce.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sipsec import ibc
from sipsec.envelope import _suite, cms
from sipsec.envelope.errors import (
    EnvelopeUsageError,
    Forbidden,
    MalformedEnvelope,
    RejectedEnvelope,
)
from sipsec.envelope.keys import Keyring
from sipsec.envelope.opening import DEFAULT_WINDOW_S, verify_signer
from sipsec.envelope.policy import CONTENT_DISPOSITION, SIGNED_CONTENT_TYPE
from sipsec.sip import LocalProtocolError, Request, SipError, parse_message
from sipsec.telemetry.envelope import ENVELOPE_OPERATIONS, ENVELOPE_REJECTIONS

if TYPE_CHECKING:  # only the Protocols' shapes: sipsec.engine pulls in grpc, the stores redis
    from sipsec.engine.protocol import CryptoEngine
    from sipsec.stores.envelope import ReplayCache

__all__ = ["VerifiedRegister", "sign_register", "verify_register"]


@dataclass(frozen=True)
class VerifiedRegister:
    """A REGISTER whose signature checked: the registered ``aor``, the ``signer`` and the signed copy."""

    aor: str
    signer: ibc.Identity
    message: Request
    signing_time: float


def sign_register(register: Request, keys: Keyring, *, now: float | None = None) -> Request:
    """The REGISTER to send: same headers, body = SignedData over the complete original REGISTER."""
    if not isinstance(register, Request) or register.method != "REGISTER":
        raise EnvelopeUsageError("sign_register needs a REGISTER request")
    if register.body:
        raise EnvelopeUsageError("a REGISTER to be signed must not have a body")
    try:
        to_aor = str(ibc.canonical_aor(str(register.to.uri)))
        inner = register.to_bytes()
    except (SipError, ibc.IbcError, LocalProtocolError):
        raise EnvelopeUsageError("the REGISTER is not valid SIP with a SIP To AOR") from None
    if to_aor != keys.aor:
        raise EnvelopeUsageError("the REGISTER's To AOR is not this keyring's AOR")
    when = time.time() if now is None else now
    sig_key = keys.signing_key(when)
    ident = sig_key.identity
    signed = cms.build_signed_data(
        cms.mime_wrap(inner),
        cms.WireIdentity(ident.aor, ident.period, ident.period_length_s),
        int(when),
        os.urandom(cms.NONCE_BYTES),
        lambda data: _suite.compact(ibc.sign(sig_key, data)),
    )
    outer = register.copy()
    outer.headers.remove("Content-Type")
    outer.headers.remove("Content-Disposition")
    outer.headers.add("Content-Type", SIGNED_CONTENT_TYPE)
    outer.headers.add("Content-Disposition", CONTENT_DISPOSITION)
    outer.body = cms.build_signed_content_info(signed)
    ENVELOPE_OPERATIONS.labels("sign", "register").inc()
    return outer


def _is_signed_register(message: Request) -> bool:
    value = message.headers.get("Content-Type") or ""
    parts = [p.strip().lower() for p in value.split(";")]
    return parts[0] == "application/pkcs7-mime" and "smime-type=signed-data" in parts[1:]


def _bound(message: Request) -> tuple[object, ...]:
    return (
        message.method,
        str(message.uri),
        str(message.to),
        str(message.from_),
        message.call_id,
        message.cseq,
        [str(c) for c in message.contact],
        message.contact_star,
        message.headers.get("Expires"),
    )


async def verify_register(
    register: Request,
    trusted: Mapping[str, ibc.DomainParams],
    replay: ReplayCache,
    *,
    now: float | None = None,
    window_s: float = DEFAULT_WINDOW_S,
    engine: CryptoEngine | None = None,
) -> VerifiedRegister:
    """Verify a signed REGISTER; raises a :class:`RejectedEnvelope` (400/403) counted by reason.

    ``trusted`` maps a domain to its parameters; ``engine`` runs the pairing (in-process when None).
    """
    try:
        return await _verify(register, trusted, replay, time.time() if now is None else now,
                             window_s, engine)
    except RejectedEnvelope as exc:
        ENVELOPE_REJECTIONS.labels(exc.reason).inc()
        raise


async def _verify(
    register: Request,
    trusted: Mapping[str, ibc.DomainParams],
    replay: ReplayCache,
    now: float,
    window_s: float,
    engine: CryptoEngine | None,
) -> VerifiedRegister:
    if not isinstance(register, Request) or register.method != "REGISTER":
        raise MalformedEnvelope("not-secured", "not a REGISTER")
    if not _is_signed_register(register):
        raise MalformedEnvelope("not-secured", "no signed-data body")
    signed = cms.parse_signed_content_info(register.body)
    signer = await verify_signer(trusted.get, signed, now, window_s, engine)
    try:
        inner = parse_message(cms.mime_unwrap(signed.content))
        if not isinstance(inner, Request):
            raise MalformedEnvelope("malformed-inner", "signed content is not a request")
        same = _bound(inner) == _bound(register)
        aor = str(ibc.canonical_aor(str(inner.to.uri)))
    except SipError:
        raise MalformedEnvelope("malformed-inner", "signed REGISTER is not valid SIP") from None
    except ibc.IbcError:
        raise Forbidden("signer-mismatch", "To is not a SIP AOR") from None
    if not same:
        raise Forbidden("outer-mismatch", "REGISTER differs from the signed one")
    if signer.aor != aor:
        raise Forbidden("signer-mismatch", "signer is not the registered AOR")
    if not await replay.remember(b"r" + signed.nonce, 2 * window_s, now):
        raise Forbidden("replay", "nonce seen before")
    ENVELOPE_OPERATIONS.labels("verify", "register").inc()
    return VerifiedRegister(aor, signer, inner, float(signed.signing_time))
