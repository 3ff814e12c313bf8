"""Sealing: a SIP message -> its outer message with a CMS AuthEnvelopedData body (sign, then encrypt).

:class:`EnvelopeBuilder` is immutable (every setter returns a new builder, setting a field
twice is an error) and validates eagerly; :meth:`EnvelopeBuilder.seal` checks the
combination and the message before any cryptography runs. :func:`seal` is the one-call form.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from sipsec import ibc
from sipsec.envelope import _suite, cms, oids
from sipsec.envelope._binding import build_outer
from sipsec.envelope.dialog import DialogKey, derive_dialog_key
from sipsec.envelope.errors import EnvelopeUsageError
from sipsec.envelope.keys import Keyring
from sipsec.envelope.policy import Compression, SigningPolicy, needs_signature
from sipsec.sip import LocalProtocolError, Request, Response, SipError
from sipsec.telemetry.envelope import envelope_operation

if TYPE_CHECKING:  # sipsec.engine pulls in grpc; the envelope needs only the Protocol's shape
    from sipsec.engine.protocol import CryptoEngine

__all__ = ["EnvelopeBuilder", "Sealed", "seal", "seal_async"]


@dataclass(frozen=True)
class Sealed:
    """The result of sealing: the outer ``message`` to send and the ``dialog`` it belongs to.

    For a dialog's first request ``dialog`` is new (the caller keeps it in its dialog
    store); otherwise it is the dialog key that was used. ``signed`` says whether the inner
    message carries a signature.
    """

    message: Request | Response
    dialog: DialogKey
    signed: bool


def _aor_of(header_uri: Any) -> str:
    try:
        return str(ibc.canonical_aor(str(header_uri)))
    except ibc.IbcError:
        raise EnvelopeUsageError("From/To is not a SIP AOR") from None


# -- the builder's argument checks (one per setter; the one-call forms run the same, in the same order)


def _check_keys(keyring: Keyring) -> Keyring:
    if not isinstance(keyring, Keyring):
        raise EnvelopeUsageError("keys must be a Keyring")
    return keyring


def _check_recipient(identity: ibc.Identity | str) -> ibc.Identity | str:
    if isinstance(identity, ibc.Identity):
        if identity.purpose is not ibc.Purpose.ENC:
            raise EnvelopeUsageError("the recipient must be an encryption (enc) identity")
    elif isinstance(identity, str):
        identity = _aor_of(identity)
    else:
        raise EnvelopeUsageError("recipient must be an ibc.Identity or an AOR string")
    return identity


def _check_dialog(dialog: DialogKey) -> DialogKey:
    if not isinstance(dialog, DialogKey):
        raise EnvelopeUsageError("dialog must be a DialogKey")
    return dialog


def _check_policy(policy: SigningPolicy) -> SigningPolicy:
    if not isinstance(policy, SigningPolicy):
        raise EnvelopeUsageError("policy must be a SigningPolicy")
    return policy


def _check_in_reply_to(outer_request: Request) -> Request:
    if not isinstance(outer_request, Request):
        raise EnvelopeUsageError("in_reply_to must be the received outer Request")
    return outer_request


def _check_route(route: Sequence[str]) -> tuple[str, ...]:
    values = tuple(route)
    if not all(isinstance(v, str) and v for v in values):
        raise EnvelopeUsageError("route values must be non-empty strings")
    return values


def _check_compression(compression: Compression) -> Compression:
    if not isinstance(compression, Compression):
        raise EnvelopeUsageError("compression must be a Compression")
    return compression


def _check_now(now: float) -> float:
    if not isinstance(now, int | float) or now < 0:
        raise EnvelopeUsageError("now must be a non-negative number of seconds")
    return float(now)


@dataclass
class _Plan:
    """What sealing needs from the pairing engine: a signature over ``to_sign``, a KEM to ``recipient``."""

    message: Request | Response
    keys: Keyring
    now: float
    entity: bytes
    recipient: ibc.Identity | None = None
    params: ibc.DomainParams | None = None
    sig_key: ibc.PrivateKey | None = None
    signer: cms.WireIdentity | None = None
    to_sign: bytes | None = None


@dataclass(frozen=True)
class EnvelopeBuilder:
    """Immutable builder of a sealed message.

    Exactly one of :meth:`recipient` (a dialog's first request: BF-IBE KEM to the callee's
    encryption identity) or :meth:`dialog` (every later message, either direction) must
    be set, and :meth:`keys`. Responses also need :meth:`in_reply_to`, the received *outer*
    request, whose Via and Record-Route the outer response copies.
    """

    _keys: Keyring | None = None
    _recipient: ibc.Identity | str | None = None
    _dialog: DialogKey | None = None
    _policy: SigningPolicy | None = None
    _in_reply_to: Request | None = None
    _route: tuple[str, ...] | None = None
    _now: float | None = None
    _compression: Compression | None = None

    def _set(self, name: str, value: object) -> EnvelopeBuilder:
        if getattr(self, name) is not None:
            raise EnvelopeUsageError(f"{name.lstrip('_')} is already set")
        return replace(self, **{name: value})  # type: ignore[arg-type]

    def keys(self, keyring: Keyring) -> EnvelopeBuilder:
        return self._set("_keys", _check_keys(keyring))

    def recipient(self, identity: ibc.Identity | str) -> EnvelopeBuilder:
        return self._set("_recipient", _check_recipient(identity))

    def dialog(self, dialog: DialogKey) -> EnvelopeBuilder:
        return self._set("_dialog", _check_dialog(dialog))

    def signing_policy(self, policy: SigningPolicy) -> EnvelopeBuilder:
        return self._set("_policy", _check_policy(policy))

    def in_reply_to(self, outer_request: Request) -> EnvelopeBuilder:
        return self._set("_in_reply_to", _check_in_reply_to(outer_request))

    def route(self, route: Sequence[str]) -> EnvelopeBuilder:
        """Outer Route header values (the outer route set) instead of the inner message's."""
        return self._set("_route", _check_route(route))

    def compression(self, compression: Compression) -> EnvelopeBuilder:
        """Compress the content before encryption (default :attr:`Compression.SIP_DICTIONARY`) or not."""
        return self._set("_compression", _check_compression(compression))

    def at(self, now: float) -> EnvelopeBuilder:
        """The signing time (unix seconds); defaults to the wall clock at :meth:`seal`."""
        return self._set("_now", _check_now(now))

    # -- sealing ------------------------------------------------------------------------------

    def _validate(self, message: Request | Response) -> tuple[Keyring, str, str]:
        keys = self._keys
        if keys is None:
            raise EnvelopeUsageError("keys are not set")
        if (self._recipient is None) == (self._dialog is None):
            raise EnvelopeUsageError("set exactly one of recipient (first request) or dialog")
        if not isinstance(message, Request | Response):
            raise EnvelopeUsageError("message must be a sipsec.sip Request or Response")
        try:
            from_, to = message.from_, message.to
            from_aor, to_aor = _aor_of(from_.uri), _aor_of(to.uri)
            if from_.tag is None:
                raise EnvelopeUsageError("the message has no From tag")
            call_id = message.call_id
            message.cseq  # noqa: B018 - parse check
        except SipError as exc:
            raise EnvelopeUsageError(f"the message is not valid SIP: {exc}") from None
        if isinstance(message, Response):
            if self._recipient is not None:
                raise EnvelopeUsageError("a response is sealed under its dialog key, not a recipient")
            if self._in_reply_to is None:
                raise EnvelopeUsageError("a response needs in_reply_to (the outer request)")
            if to_aor != keys.aor:
                raise EnvelopeUsageError("a response must come from the To AOR (this keyring)")
        else:
            if self._in_reply_to is not None:
                raise EnvelopeUsageError("in_reply_to is only for responses")
            if from_aor != keys.aor:
                raise EnvelopeUsageError("a request must come from the From AOR (this keyring)")
            if self._recipient is not None and to.tag is not None:
                raise EnvelopeUsageError("only a dialog's first request (no To tag) uses a recipient")
        if self._dialog is not None:
            d = self._dialog
            if call_id != d.call_id or d.local_aor != keys.aor:
                raise EnvelopeUsageError("the message does not belong to this dialog")
            peer = to_aor if isinstance(message, Request) else from_aor
            if peer != d.peer_aor:
                raise EnvelopeUsageError("the message is not addressed to this dialog's peer")
        return keys, from_aor, to_aor

    def _prepare(self, message: Request | Response) -> _Plan:
        """Validate everything and build what does not need a pairing; misuse raises here."""
        keys, _from_aor, to_aor = self._validate(message)
        policy = self._policy or SigningPolicy.EVERY_MESSAGE
        now = self._now if self._now is not None else time.time()
        try:
            inner = message.to_bytes()
        except LocalProtocolError as exc:
            raise EnvelopeUsageError(f"the message cannot be serialised: {exc}") from None
        plan = _Plan(message=message, keys=keys, now=now, entity=cms.mime_wrap(inner))
        if self._recipient is not None:
            plan.recipient, plan.params = self._resolve_recipient(keys, now)
            if plan.recipient.aor != to_aor:
                raise EnvelopeUsageError("the recipient identity is not the request's To AOR")
        if plan.recipient is not None or needs_signature(policy, message):
            plan.sig_key = keys.signing_key(now)
            ident = plan.sig_key.identity
            plan.signer = cms.WireIdentity(ident.aor, ident.period, ident.period_length_s)
            plan.to_sign = cms.signed_attributes(plan.entity, plan.signer, int(now), os.urandom(cms.NONCE_BYTES))
        return plan

    def _finish(self, plan: _Plan, signature: bytes | None,
                kem: tuple[bytes, bytes] | None) -> Sealed:
        """Encrypt and wrap, given the signature and the KEM output the plan asked for."""
        if plan.to_sign is not None:
            assert signature is not None and plan.signer is not None
            content = cms.assemble_signed_data(plan.entity, plan.signer, plan.to_sign,
                                               _suite.compact(signature))
            content_type = oids.ID_SIGNED_DATA
        else:
            content, content_type = plan.entity, oids.ID_DATA
        primer = b""  # a dialog's first request is compressed with the static dictionary
        if self._dialog is not None:
            primer = self._dialog.primer
        uncompressed = content
        if (self._compression or Compression.SIP_DICTIONARY) is Compression.SIP_DICTIONARY:
            content = cms.build_compressed_data(content_type, content, primer)
            content_type = oids.ID_CT_COMPRESSED_DATA
        cek = os.urandom(cms.CEK_BYTES)
        if plan.recipient is not None:
            assert kem is not None
            shared, kemct = kem
            rid = cms.WireIdentity(plan.recipient.aor, plan.recipient.period,
                                   plan.recipient.period_length_s)
            info = cms.kem_recipient_info(rid, _suite.compact(kemct), shared, cek)
            key, key_id = derive_dialog_key(shared)
            dialog = DialogKey(key, key_id, plan.message.call_id, plan.keys.aor,
                               plan.recipient.aor, True, plan.now, cms.dialog_primer(rid, uncompressed))
        else:
            assert self._dialog is not None
            dialog = self._dialog
            info = cms.kek_recipient_info(dialog.key_id, dialog.key, cek)
        body = cms.build_auth_enveloped(info, content_type, content, cek)
        outer = build_outer(plan.message, dialog, body, self._in_reply_to, self._route)
        envelope_operation("seal", "kem" if plan.recipient is not None else "kek").inc()
        return Sealed(outer, dialog, plan.to_sign is not None)

    def seal(self, message: Request | Response) -> Sealed:
        """Sign (per policy) and encrypt ``message`` in-process; return the outer message and dialog."""
        plan = self._prepare(message)
        signature = None
        if plan.to_sign is not None:
            assert plan.sig_key is not None
            signature = ibc.sign(plan.sig_key, plan.to_sign)
        kem = None
        if plan.recipient is not None:
            assert plan.params is not None
            kem = ibc.encapsulate(plan.params, plan.recipient)
        return self._finish(plan, signature, kem)

    async def seal_async(self, message: Request | Response, engine: CryptoEngine) -> Sealed:
        """As :meth:`seal`, with the pairing operations run by ``engine`` (e.g. a crypto-worker pool)."""
        plan = self._prepare(message)
        signature = None
        if plan.to_sign is not None:
            assert plan.sig_key is not None
            signature = await engine.sign(plan.sig_key, plan.to_sign)
        kem = None
        if plan.recipient is not None:
            assert plan.params is not None
            kem = await engine.encapsulate(plan.params, plan.recipient)
        return self._finish(plan, signature, kem)

    def _resolve_recipient(self, keys: Keyring, now: float) -> tuple[ibc.Identity, ibc.DomainParams]:
        target = self._recipient
        aor = target.aor if isinstance(target, ibc.Identity) else str(target)
        domain = aor.split("@", 1)[-1]
        params = keys.params(domain)
        if params is None:
            raise EnvelopeUsageError(f"no trusted parameters for domain {domain!r}")
        if isinstance(target, ibc.Identity):
            return target, params
        return params.identity(aor, ibc.Purpose.ENC, params.policy.current(now)), params


def _builder(
    keys: Keyring,
    to: ibc.Identity | str | DialogKey,
    policy: SigningPolicy,
    in_reply_to: Request | None,
    route: Sequence[str] | None,
    now: float | None,
    compression: Compression,
) -> EnvelopeBuilder:
    """The builder the one-call forms use: the setters' checks, in their order, and one instance
    (not one copy per setter: this runs for every message)."""
    checked_keys = _check_keys(keys)
    checked_policy = _check_policy(policy)
    checked_compression = _check_compression(compression)
    dialog: DialogKey | None = None
    recipient: ibc.Identity | str | None = None
    if isinstance(to, DialogKey):
        dialog = to
    else:
        recipient = _check_recipient(to)
    return EnvelopeBuilder(
        _keys=checked_keys,
        _recipient=recipient,
        _dialog=dialog,
        _policy=checked_policy,
        _in_reply_to=None if in_reply_to is None else _check_in_reply_to(in_reply_to),
        _route=None if route is None else _check_route(route),
        _now=None if now is None else _check_now(now),
        _compression=checked_compression,
    )


def seal(
    message: Request | Response,
    keys: Keyring,
    to: ibc.Identity | str | DialogKey,
    policy: SigningPolicy = SigningPolicy.EVERY_MESSAGE,
    *,
    in_reply_to: Request | None = None,
    route: Sequence[str] | None = None,
    now: float | None = None,
    compression: Compression = Compression.SIP_DICTIONARY,
) -> Sealed:
    """Seal ``message`` from ``keys`` to ``to``: a recipient identity / AOR (a dialog's first
    request) or a :class:`DialogKey` (every later message, both directions).

    Responses need ``in_reply_to``, the outer request they answer. ``compression`` says
    whether the content is compressed before encryption. Misuse raises
    :class:`EnvelopeUsageError` before any cryptography runs.
    """
    return _builder(keys, to, policy, in_reply_to, route, now, compression).seal(message)


async def seal_async(
    message: Request | Response,
    keys: Keyring,
    to: ibc.Identity | str | DialogKey,
    policy: SigningPolicy = SigningPolicy.EVERY_MESSAGE,
    *,
    engine: CryptoEngine,
    in_reply_to: Request | None = None,
    route: Sequence[str] | None = None,
    now: float | None = None,
    compression: Compression = Compression.SIP_DICTIONARY,
) -> Sealed:
    """:func:`seal` with the pairing operations run by ``engine`` (in-process or a crypto-worker)."""
    return await _builder(keys, to, policy, in_reply_to, route, now, compression).seal_async(message, engine)
