"""Opening: a received outer message -> the verified inner message, or a typed rejection.

Order of checks (each failure raises a :class:`RejectedEnvelope` with its status and
reason, counted in ``sipsec_envelope_rejections_total{reason}``):

1. the outer message declares an authEnveloped-data body (400 ``not-secured``);
2. the CMS parses as exactly sipsec's DER structure, authAttrs holding exactly the
   content-type attribute of the content (RFC 5083 §2.1; 400 ``malformed-cms`` /
   ``unsupported-algorithm``) — and after decryption, a CompressedData layer inflates
   within its bound and dictionary (400 ``malformed-cms``);
3. a key opens it — the own ENC key of the named identity and period (493
   ``wrong-recipient`` / ``key-period`` / ``kem-failed``) or the dialog key named by the
   KEKIdentifier (493 ``unknown-dialog``); then key unwrap and AES-GCM, the authAttrs as
   associated data (493 ``unwrap-failed`` / ``decrypt-failed``). Before the decapsulation,
   the body's digest is looked up in the replay cache (403 ``replay``: opened before;
   ``failed-before``: it failed a check after a pairing before);
4. the signature, when present: its nonce (unsigned: the GCM nonce; for a dialog
   message also the body's digest) looked up first (403 ``replay`` / ``failed-before``),
   then known domain, current or previous key period, valid Cha–Cheon signature over the
   signed attributes, message digest, signer = the party the message claims to come from
   (403 ``unknown-domain`` / ``signer-period`` / ``stale`` — signing time outside the
   window, checked before the pairing — / ``bad-signature`` / ``signer-mismatch``);
5. the inner message parses (400 ``malformed-inner``); the outer agrees with it (403
   ``outer-mismatch``, RFC 3261 §23.4.1.1: what proxies may change is not bound); it belongs
   to the dialog of its key (403 ``dialog-mismatch`` / ``recipient-mismatch``) — each of
   these names the field class that differed (``RejectedEnvelope.field`` / ``.warning``, for
   a ``Warning: 399`` header, RFC 3261 §20.43); the receiver's signing policy is met (403 ``unsigned``);
6. its nonce and body digest are recorded (403 ``replay`` if another copy got there
   first) — only now, so no forged copy can burn a genuine message's tokens; and for a
   dialog's first request the dialog key is stored.

A body that failed after a pairing ran, for a reason that is a property of the body alone
(a failed decapsulation, unwrap, decryption or signature, a malformed or mismatched
content), is recorded as failed, so sending it again costs a cache lookup, not a pairing
(for twice the window; the envelope README, "Failing cheaply").

Call :func:`open` from the transaction user: the transaction layer has already absorbed
retransmissions, which carry the same nonce and would otherwise count as replays.
"""

from __future__ import annotations

import hashlib
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

__all__ = ["DEFAULT_WINDOW_S", "Opened", "body_tokens", "open", "open_message", "verify_signer"]

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


#: Failures that are a property of the body alone (with the receiver's keys and dialog
#: records): once one of them was found after a pairing, the same body fails the same way.
_BODY_FAILURES = frozenset({
    "kem-failed", "unwrap-failed", "decrypt-failed", "malformed-cms", "unsupported-algorithm",
    "bad-signature", "signer-mismatch", "malformed-inner", "recipient-mismatch", "dialog-mismatch",
})


def body_tokens(body: bytes) -> tuple[bytes, bytes]:
    """The replay-cache tokens of a CMS body: (opened before, failed before) — ``b"b"`` or
    ``b"f"`` and the first 16 bytes of its SHA-256."""
    digest = hashlib.sha256(body).digest()[:16]
    return b"b" + digest, b"f" + digest


async def _fresh(replay: ReplayCache, tokens: tuple[bytes, ...], now: float) -> None:
    """Raise 403 ``replay`` / ``failed-before`` when a token is recorded (looks, records nothing)."""
    hit = await replay.seen(tokens, now)
    if hit is not None:
        if hit[:1] == b"f":
            raise Forbidden("failed-before", "this body failed a check before")
        raise Forbidden("replay", "seen before")


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
    body = bytes(outer.body)
    env = cms.parse_auth_enveloped(body)
    body_token, failed_token = body_tokens(body)
    paid = [False]  # a pairing ran: a body failure found now is recorded (``failed_token``)
    try:
        return await _open_checked(outer, env, keys, dialogs, replay, policy, now, window_s,
                                   dialog_ttl_s, engine, body_token, failed_token, paid)
    except RejectedEnvelope as exc:
        if paid[0] and exc.reason in _BODY_FAILURES:
            await replay.remember(failed_token, 2 * window_s, now)
        raise


async def _open_checked(
    outer: Request | Response,
    env: cms.AuthEnveloped,
    keys: Keyring,
    dialogs: DialogStore,
    replay: ReplayCache,
    policy: SigningPolicy,
    now: float,
    window_s: float,
    dialog_ttl_s: float,
    engine: CryptoEngine | None,
    body_token: bytes,
    failed_token: bytes,
    paid: list[bool],
) -> Opened:
    first = isinstance(env.recipient, cms.KemRecipient)

    # 3. a key (for a KEM, the body's replay check first: a replay pays no decapsulation)
    stored: DialogKey | None = None
    if isinstance(env.recipient, cms.KemRecipient):
        rid = env.recipient.identity
        if rid.aor != keys.aor:
            raise Undecipherable("wrong-recipient", "not encrypted to this AOR")
        enc_key = keys.enc_key(rid.aor, rid.period, rid.period_length)
        if enc_key is None:
            raise Undecipherable("key-period", "no key for that period")
        await _fresh(replay, (body_token, failed_token), now)
        kemct = _suite.expand(env.recipient.kemct)
        paid[0] = True
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

    # 4. the signature: its nonce (or, unsigned, the GCM nonce) checked before the pairing
    signer: ibc.Identity | None = None
    signed: cms.SignedContent | None = None
    if content_type == oids.ID_SIGNED_DATA:
        signed = cms.parse_signed_data(content)
        own_token = b"s" + signed.nonce
        entity = signed.content
    else:
        own_token = b"g" + env.nonce
        entity = content
    await _fresh(replay, (own_token,) if first else (body_token, failed_token, own_token), now)
    if signed is not None:
        paid[0] = True
        signer = await verify_signer(keys.params, signed, now, window_s, engine)

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
            raise Forbidden("outer-mismatch", "a KEM opens only a dialog's first request", field="to-tag")
        if signer is None:
            raise Forbidden("unsigned", "a dialog's first request must be signed")
        if inner_to != keys.aor:
            raise Forbidden("recipient-mismatch", "inner request is addressed to another AOR", field="to")
        assert isinstance(env.recipient, cms.KemRecipient)
        dialog = DialogKey(dialog_key, key_id, inner_call_id, keys.aor, inner_from, False, now,
                           cms.dialog_primer(env.recipient.identity, content))
    else:
        assert stored is not None
        dialog = stored
        local, peer = (inner_to, inner_from) if is_request else (inner_from, inner_to)
        if inner_call_id != dialog.call_id or local != dialog.local_aor or peer != dialog.peer_aor:
            raise Forbidden("dialog-mismatch", "message does not belong to the key's dialog", field="dialog")
    check_binding(outer, inner, dialog)
    if signer is None and needs_signature(policy, inner):
        raise Forbidden("unsigned", "policy requires a signature")

    # 6. record it (atomically: of two concurrent copies one is the replay), then keep the dialog
    ttl_s = 2 * window_s if signed is not None else dialog_ttl_s
    # a first request's tokens and new dialog in one store round trip where the stores allow it
    keep = getattr(replay, "remember_all_and_keep", None) if first else None
    fresh = None if keep is None else await keep((own_token, body_token), ttl_s, now, dialogs, dialog, dialog_ttl_s)
    if fresh is None:
        fresh = await replay.remember_all((own_token, body_token), ttl_s, now)
        if fresh and first:
            await dialogs.put(dialog, dialog_ttl_s, now)
    if not fresh:
        raise Forbidden("replay", "seen before")
    envelope_operation("open", "kem" if first else "kek").inc()
    return Opened(
        message=inner,
        outer=outer,
        dialog=dialog,
        signer=signer,
        signing_time=float(signed.signing_time) if signed is not None else None,
        first=first,
    )
