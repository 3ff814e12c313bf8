"""The RFC 3261 §10.3 registrar: digest authentication, expiry limits, bindings via the locator."""

from __future__ import annotations

import email.utils
import logging
import secrets
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from sipsec.envelope.errors import CLOCK_SKEW_PHRASE, CLOCK_SKEW_WARNING
from sipsec.sip import (
    NameAddr,
    RemoteProtocolError,
    Request,
    SipURI,
    canonical_host,
    canonical_user,
    parse_uri,
)
from sipsec.sip.digest import (
    AuthenticationFailed,
    DigestCredentials,
    DigestError,
    DigestServer,
    StaleNonce,
)
from sipsec.stores.location import LocationError, StaleCSeq, canonical_aor

from sipsec_proxy.config import ProxyConfig, parse_users
from sipsec_proxy.locator import BindRequest, Locator
from sipsec_proxy.metrics import ProxyMetrics

if TYPE_CHECKING:
    from sipsec_proxy.core import ProxyCore, ResponseContext

__all__ = ["RegisterRejected", "RegisterVerifier", "Registrar"]

log = logging.getLogger("sipsec.proxy.registrar")


class RegisterRejected(Exception):
    """Raised by a :class:`RegisterVerifier` for a REGISTER whose signature is invalid (403)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class RegisterVerifier(Protocol):
    """The hook for identity-signed REGISTER requests (RFC 5652 SignedData), checked before digest.

    ``verify`` returns True when ``request`` carries a valid signature by ``aor``'s
    signature identity (the registrar then skips digest), False when it carries no
    signature at all (digest applies, as for a plain phone), and raises
    :class:`RegisterRejected` when a signature is present but does not verify (403).
    :class:`sipsec_proxy.SignedRegisterVerifier` is the PKG-backed implementation.
    """

    async def verify(self, request: Request, aor: str) -> bool:
        ...


def _q_milli(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        q = float(value)
    except ValueError:
        raise RemoteProtocolError("bad-q", 400, value[:16]) from None
    if not 0.0 <= q <= 1.0:
        raise RemoteProtocolError("bad-q", 400, value[:16])
    return int(round(q * 1000))


def _expires_value(value: str | None) -> int | None:
    if value is None:
        return None
    value = value.strip()
    if not value.isdigit() or len(value) > 10:
        raise RemoteProtocolError("bad-expires", 400, value[:16])
    return int(value)


class Registrar:
    """Handles REGISTER for the served domains (called by the core with a response context)."""

    def __init__(
        self,
        config: ProxyConfig,
        locator: Locator,
        metrics: ProxyMetrics,
        *,
        verifier: RegisterVerifier | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.locator = locator
        self.metrics = metrics
        self.verifier = verifier
        self.clock = clock
        self.users = parse_users(config.users, config.users_file)
        secret = bytes.fromhex(config.nonce_secret) if config.nonce_secret else secrets.token_bytes(32)
        algorithms = [a.strip() for a in config.digest_algorithms.split(",") if a.strip()]
        self.digest = DigestServer(config.digest_realm, secret, algorithms=algorithms)
        # checked for unknown users so that they cost the same and fail the same way
        self._decoy = secrets.token_hex(16)

    async def __call__(self, core: ProxyCore, ctx: ResponseContext) -> None:
        req = ctx.request
        to_uri = req.to.uri
        if not isinstance(to_uri, SipURI) or to_uri.user is None:
            self._result("rejected")
            core.reject("bad-request")
            core.respond(ctx, 400, "Bad To")
            return
        aor = canonical_aor(to_uri.aor)
        if canonical_host(to_uri.host) not in core.domains:
            self._result("rejected")
            core.reject("not-found")
            core.respond(ctx, 404, "Not Our Domain")
            return
        if not await self._authorised(core, ctx, aor, canonical_user(to_uri.user)):
            return
        await self._apply(core, ctx, aor)

    def _result(self, result: str) -> None:
        self.metrics.registrations.labels(result).inc()

    def _challenge(self, core: ProxyCore, ctx: ResponseContext, *, stale: bool = False) -> None:
        self._result("challenged")
        core.reject("auth-required")
        challenges = self.digest.challenges(self.clock(), stale=stale)
        core.respond(ctx, 401, extra=[("WWW-Authenticate", c.to_header()) for c in challenges])

    async def _authorised(self, core: ProxyCore, ctx: ResponseContext, aor: str, user: str) -> bool:
        req = ctx.request
        if self.verifier is not None:
            try:
                if await self.verifier.verify(req, aor):
                    return True
            except RegisterRejected as exc:
                self._result("denied")
                core.reject("auth-failed")
                if exc.reason == "stale":  # the signature may be fine: the clocks disagree
                    core.respond(ctx, 403, CLOCK_SKEW_PHRASE,
                                 extra=[("Warning", f'399 {self.config.digest_realm} "{CLOCK_SKEW_WARNING}"')])
                else:
                    core.respond(ctx, 403, "Invalid Signature")
                return False
        if self.config.auth == "none":
            return True
        credentials = None
        for value in req.headers.get_all("Authorization"):
            try:
                c = DigestCredentials.parse(value)
            except RemoteProtocolError:
                continue
            if c.realm == self.digest.realm:
                credentials = c
                break
        if credentials is None:
            self._challenge(core, ctx)
            return False
        known = credentials.username in self.users
        password = self.users.get(credentials.username, self._decoy)
        try:
            expected_uri = str(parse_uri(credentials.uri)) == str(req.uri)
            if not expected_uri:
                raise AuthenticationFailed("uri-mismatch")
            self.digest.verify(credentials, req.method, self.clock(), password=password)
        except StaleNonce:
            self._challenge(core, ctx, stale=known)
            return False
        except (DigestError, RemoteProtocolError) as exc:
            log.debug("digest refused: %s", exc.reason)
            core.reject("auth-failed")
            self._challenge(core, ctx)  # same answer for unknown users and wrong passwords
            return False
        if not known:  # unreachable in practice: the decoy password is never disclosed
            self._challenge(core, ctx)
            return False
        if credentials.username != user:
            self._result("denied")
            core.reject("forbidden")
            core.respond(ctx, 403, "Forbidden")
            return False
        return True

    async def _apply(self, core: ProxyCore, ctx: ResponseContext, aor: str) -> None:
        req = ctx.request
        cfg = self.config
        header_expires = _expires_value(req.headers.get("Expires"))
        call_id, cseq = req.call_id, req.cseq.seq
        if req.contact_star:
            if req.contact or header_expires != 0:
                self._result("rejected")
                core.reject("bad-request")
                core.respond(ctx, 400, "Invalid Contact *")
                return
            await self.locator.unbind_all(aor, call_id, cseq)
            self._result("ok")
            await self._ok(core, ctx, aor)
            return
        items: list[tuple[NameAddr, int]] = []
        for contact in req.contact:
            value = _expires_value(contact.params.get("expires"))
            expires = value if value is not None else header_expires
            if expires is None:
                expires = cfg.default_expires
            if 0 < expires < cfg.min_expires:
                self._result("rejected")
                core.reject("interval-too-brief")
                core.respond(ctx, 423, extra=[("Min-Expires", str(cfg.min_expires))])
                return
            items.append((contact, min(expires, cfg.max_expires)))
        received = str(ctx.inbound.peer)
        for contact, _ in items:
            if not core.policy.bindable(contact.uri):
                # a binding is a target the proxy forwards to: never one of its own services
                self._result("denied")
                core.reject("forbidden-target")
                core.respond(ctx, 403, "Contact Not Allowed")
                return
        for contact, expires in items:
            uri = str(contact.uri)
            instance = contact.params.get("+sip.instance") or ""
            reg_id_text = contact.params.get("reg-id")
            reg_id = int(reg_id_text) if reg_id_text and reg_id_text.isdigit() and instance else 0
            if expires == 0:
                await self.locator.unbind(aor, uri, instance, reg_id)
            else:
                try:
                    await self.locator.bind(aor, BindRequest(uri, expires, _q_milli(contact.params.get("q")),
                                                             instance, reg_id), call_id, cseq, received)
                except StaleCSeq:
                    raise
                except LocationError as exc:
                    if exc.reason.startswith("bad-"):
                        self._result("rejected")
                        core.reject("bad-request")
                        core.respond(ctx, 400, "Invalid Contact")
                        return
                    raise
        if cfg.auth != "none":
            # an authenticated registration: its source is one of ours (a gateway, a phone),
            # exempt from the limits on unauthenticated traffic while the binding lasts
            core.trust_source(ctx.inbound.peer.host, max((e for _, e in items), default=0))
        self._result("ok")
        await self._ok(core, ctx, aor)

    async def _ok(self, core: ProxyCore, ctx: ResponseContext, aor: str) -> None:
        bindings = await self.locator.lookup(aor)
        extra = [("Contact", f"<{b.uri}>;expires={b.expires}" + (
            f";q={b.q_milli / 1000:.3g}" if b.q_milli != 1000 else "")) for b in bindings]
        extra.append(("Date", email.utils.formatdate(usegmt=True)))
        core.respond(ctx, 200, extra=extra)
