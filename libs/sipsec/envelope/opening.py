"""Opening: a received outer message -> the verified inner message, or a typed rejection.

Order of checks (each failure raises a :class:`RejectedEnvelope` with its status and
reason, counted in ``sipsec_envelope_rejections_total{reason}``):

1. the outer message declares an authEnveloped-data body (400 ``not-secured``);
2. the CMS parses as exactly sipsec's DER structure (400 ``malformed-cms`` /
   ``unsupported-algorithm``) — and after decryption, a CompressedData layer inflates
   within its bound and dictionary (400 ``malformed-cms``);
3. a key opens it — the own ENC key of the named identity and period (493
   ``wrong-recipient`` / ``key-period`` / ``kem-failed``) or the dialog key named by the
   KEKIdentifier (493 ``unknown-dialog``); then key unwrap and AES-GCM (493
   ``unwrap-failed`` / ``decrypt-failed``);
4. the signature, when present: known domain, current or previous key period, valid
   Cha–Cheon signature over the signed attributes, message digest, signer = the party the
   message claims to come from (403 ``unknown-domain`` / ``signer-period`` / ``stale`` —
   signing time outside the window, checked before the pairing — / ``bad-signature`` /
   ``signer-mismatch``);
5. the inner message parses (400 ``malformed-inner``); the outer agrees with it (403
   ``outer-mismatch``); it belongs to the dialog of its key (403 ``dialog-mismatch`` /
   ``recipient-mismatch``); the receiver's signing policy is met (403 ``unsigned``);
6. its nonce was not seen before (403 ``replay``) — only now, so forgeries cannot fill
   the replay cache; and for a dialog's first request the dialog key is stored.

Call :func:`open` from the transaction user: the transaction layer has already absorbed
retransmissions, which carry the same nonce and would otherwise count as replays.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sipsec import ibc
from sipsec.envelope import _suite, cms, oids
from sipsec.envelope._binding import check_binding
from sipsec.envelope.dialog import DEFAULT_DIALOG_TTL_S, DialogKey, derive_dialog_key
from sipsec.envelope.errors import Forbidden, MalformedEnvelope, RejectedEnvelope, Undecipherable
from sipsec.envelope.keys import Keyring
from sipsec.envelope.policy import SigningPolicy, is_secured, needs_signature
from sipsec.sip import Request, Response, SipError, parse_message
from sipsec.telemetry.envelope import ENVELOPE_REJECTIONS, envelope_operation

if TYPE_CHECKING:  # only the Protocols' shapes: sipsec.engine pulls in grpc, the stores redis
    from sipsec.engine.protocol import CryptoEngine
    from sipsec.stores.envelope import DialogStore, ReplayCache

__all__ = ["DEFAULT_WINDOW_S", "Opened", "open", "open_message", "verify_signer"]

#: How far a signing time may be from the receiver's clock (either way), in seconds.
DEFAULT_WINDOW_S = 300.0


@dataclass(frozen=True)
class Opened:
    """A verified secured message.

    ``message`` is the inner (original) message; ``outer`` the one received; ``dialog`` the
    receiver's view of the dialog key; ``signer`` the verified signature identity (None
    when the message was, as policy allowed, unsigned); ``first`` is True for a dialog's
    first request (the one that carried the KEM).
    """

    message: Request | Response
    outer: Request | Response
    dialog: DialogKey
    signer: ibc.Identity | None
    signing_time: float | None
    first: bool


def _aor(uri: object, reason: str) -> str:
    try:
        return str(ibc.canonical_aor(str(uri)))
    except ibc.IbcError:
        raise Forbidden(reason, "not a SIP AOR") from None


async def verify_signer(
    params_for: Callable[[str], ibc.DomainParams | None],
    signed: cms.SignedContent,
    now: float,
    window_s: float,
    engine: CryptoEngine | None = None,
) -> ibc.Identity:
    """Check a SignedData's signer: trusted domain, current or previous period, signature, time."""
    wire = signed.signer
    try:
        aor = str(ibc.canonical_aor(wire.aor))
    except ibc.IbcError:
        raise Forbidden("signer-mismatch", "signer is not a canonical AOR") from None
    if aor != wire.aor:
        raise Forbidden("signer-mismatch", "signer AOR is not canonical")
    params = params_for(aor.split("@", 1)[-1])
    if params is None:
        raise Forbidden("unknown-domain", "signer's domain is not trusted")
    current = params.policy.current(now)
    if wire.period_length != params.policy.length_s or wire.period not in (current, current - 1):
        raise Forbidden("signer-period", "signer key period is not current or previous")
    if abs(now - signed.signing_time) > window_s:  # before the pairing: stale floods cost little
        raise Forbidden("stale", "signing time outside the window")
    identity = params.identity(aor, ibc.Purpose.SIG, wire.period)
    signature = _suite.expand(signed.signature)
    try:
        if engine is None:
            ibc.verify(params, identity, signed.signed_attrs, signature)
        else:
            await engine.verify(params, identity, signed.signed_attrs, signature)
    except ibc.IbcError:
        raise Forbidden("bad-signature") from None
    return identity


async def open_message(
    outer: Request | Response,
    keys: Keyring,
    dialogs: DialogStore,
    replay: ReplayCache,
    *,
    policy: SigningPolicy = SigningPolicy.EVERY_MESSAGE,
    now: float | None = None,
    window_s: float = DEFAULT_WINDOW_S,
    dialog_ttl_s: float = DEFAULT_DIALOG_TTL_S,
    engine: CryptoEngine | None = None,
) -> Opened:
    """Open a received secured message; raises a :class:`RejectedEnvelope` subclass on any failure.

    ``policy`` is the receiver's own signing policy, enforced whatever the sender chose.
    ``engine`` runs the pairing operations (a crypto-worker pool); in-process when None.
    """
    try:
        return await _open(
            outer, keys, dialogs, replay, policy,
            time.time() if now is None else now, window_s, dialog_ttl_s, engine,
        )
    except RejectedEnvelope as exc:
        ENVELOPE_REJECTIONS.labels(exc.reason).inc()
        raise


open = open_message  # noqa: A001 - the issue's name; ``open_message`` avoids shadowing the builtin


async def _open(
    outer: Request | Response,
    keys: Keyring,
    dialogs: DialogStore,
    replay: ReplayCache,
    policy: SigningPolicy,
    now: float,
    window_s: float,
    dialog_ttl_s: float,
    engine: CryptoEngine | None,
) -> Opened:
    if not isinstance(outer, Request | Response) or not is_secured(outer):
        raise MalformedEnvelope("not-secured", "no authEnveloped-data body")
    env = cms.parse_auth_enveloped(outer.body)
    first = isinstance(env.recipient, cms.KemRecipient)

    # 3. a key
    stored: DialogKey | None = None
    if isinstance(env.recipient, cms.KemRecipient):
        rid = env.recipient.identity
        if rid.aor != keys.aor:
            raise Undecipherable("wrong-recipient", "not encrypted to this AOR")
        enc_key = keys.enc_key(rid.aor, rid.period, rid.period_length)
        if enc_key is None:
            raise Undecipherable("key-period", "no key for that period")
        kemct = _suite.expand(env.recipient.kemct)
        try:
            if engine is None:
                shared = ibc.decapsulate(enc_key, kemct)
            else:
                shared = await engine.decapsulate(enc_key, kemct)
        except ibc.IbcError:
            raise Undecipherable("kem-failed") from None
        cek = cms.kem_unwrap(env.recipient, shared)
        dialog_key, key_id = derive_dialog_key(shared)
    else:
        stored = await dialogs.get(env.recipient.key_id, now)
        if stored is None:
            raise Undecipherable("unknown-dialog", "no dialog key with that id")
        cek = cms.kek_unwrap(env.recipient, stored.key)
    content_type, content = cms.open_content(env.content_type, cms.decrypt_content(env, cek),
                                             b"" if stored is None else stored.primer)

    # 4. the signature
    signer: ibc.Identity | None = None
    signed: cms.SignedContent | None = None
    if content_type == oids.ID_SIGNED_DATA:
        signed = cms.parse_signed_data(content)
        signer = await verify_signer(keys.params, signed, now, window_s, engine)
        entity = signed.content
    else:
        entity = content

    # 5. the inner message and its bindings
    try:
        inner = parse_message(cms.mime_unwrap(entity))
        inner_from_na = inner.from_
        inner_to_na = inner.to
        inner_from = _aor(inner_from_na.uri, "dialog-mismatch")
        inner_to = _aor(inner_to_na.uri, "dialog-mismatch")
        inner_call_id = inner.call_id
        inner_from_tag = inner_from_na.tag
    except SipError:
        raise MalformedEnvelope("malformed-inner", "inner message is not valid SIP") from None
    is_request = isinstance(inner, Request)
    if signer is not None and signer.aor != (inner_from if is_request else inner_to):
        raise Forbidden("signer-mismatch", "signer is not the message's originator")
    if first:
        if not is_request or inner_to_na.tag is not None or inner_from_tag is None:
            raise Forbidden("outer-mismatch", "a KEM opens only a dialog's first request")
        if signer is None:
            raise Forbidden("unsigned", "a dialog's first request must be signed")
        if inner_to != keys.aor:
            raise Forbidden("recipient-mismatch", "inner request is addressed to another AOR")
        assert isinstance(env.recipient, cms.KemRecipient)
        dialog = DialogKey(dialog_key, key_id, inner_call_id, keys.aor, inner_from, False, now,
                           cms.dialog_primer(env.recipient.identity, content))
    else:
        assert stored is not None
        dialog = stored
        local, peer = (inner_to, inner_from) if is_request else (inner_from, inner_to)
        if inner_call_id != dialog.call_id or local != dialog.local_aor or peer != dialog.peer_aor:
            raise Forbidden("dialog-mismatch", "message does not belong to the key's dialog")
    check_binding(outer, inner, dialog)
    if signer is None and needs_signature(policy, inner):
        raise Forbidden("unsigned", "policy requires a signature")

    # 6. freshness, then keep the dialog
    if signed is not None:
        fresh = await replay.remember(b"s" + signed.nonce, 2 * window_s, now)
    else:
        fresh = await replay.remember(b"g" + env.nonce, dialog_ttl_s, now)
    if not fresh:
        raise Forbidden("replay", "nonce seen before")
    if first:
        await dialogs.put(dialog, dialog_ttl_s, now)
    envelope_operation("open", "kem" if first else "kek").inc()
    return Opened(
        message=inner,
        outer=outer,
        dialog=dialog,
        signer=signer,
        signing_time=float(signed.signing_time) if signed is not None else None,
        first=first,
    )
