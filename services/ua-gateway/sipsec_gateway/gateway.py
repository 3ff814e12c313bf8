"""The UA gateway: secure user agents for logged-in users, and a B2BUA for legacy plain phones.

``Gateway(config, pkg=..., engine=..., dialog_store=...)`` with ``await start()`` /
``await stop()`` is the in-process form (the demo runs one per domain in one process);
``sipsec-gateway serve`` wraps it with the control API (see :mod:`sipsec_gateway.api`).

**B2BUA, not a transparent security proxy.** A plain phone that uses the gateway as its
outbound proxy gets a plain dialog *with the gateway*; the gateway holds a separate,
secured dialog with the far end and relays the session (SDP, ringing, answer, hang-up)
between the two. A transparent proxy would have to seal messages whose Via, tags, CSeq
and Record-Route it does not own, keep the phone's transactions and the secured ones
aligned hop by hop, and could not re-send (fallback, re-ACK) on the phone's behalf; as a
B2BUA each side is an ordinary, complete UA (transactions, dialogs, retransmissions), the
secured dialog's keys and signatures belong to the gateway user's identity, and a fault on
one side ends the other cleanly. The cost: end-to-end means gateway to gateway (the hop
between phone and gateway is plain; keep it on a trusted network).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import secrets
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sipsec.aio import Peer, SipEndpoint, static_sdp
from sipsec.config import split_hostport
from sipsec.engine import CryptoEngine, InProcessEngine
from sipsec.envelope import SecurityPolicy, sign_register
from sipsec.envelope.errors import EnvelopeUsageError
from sipsec.ibc import IbcError, canonical_aor
from sipsec.sip import Request, SipError, SipURI, is_ip_literal
from sipsec.sip.digest import DigestCredentials, DigestError, DigestServer, StaleNonce
from sipsec.sip.message import generate_call_id, generate_tag, make_response
from sipsec.sip.transaction import ServerTransaction
from sipsec.stores.envelope import (
    DialogStore,
    InMemoryDialogStore,
    InMemoryReplayCache,
    ReplayCache,
)

from sipsec_gateway.calls import Agent, Call, CallFailed, CallState
from sipsec_gateway.config import GatewayConfig
from sipsec_gateway.keys import KeyMaterialError, ParamsDirectory, PkgConnector, UserKeys
from sipsec_gateway.metrics import GatewayMetrics
from sipsec_gateway.store import CallStore, MemoryCallStore
from sipsec_gateway.trace import WireTap, wire_view

__all__ = ["Gateway", "GatewayError", "PhoneBinding", "UserSettings"]

log = logging.getLogger("sipsec.gateway")


class GatewayError(Exception):
    """A control-API level failure: ``status`` is the HTTP status, the message is for the client."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class UserSettings:
    """Per-user behaviour: security policy, auto-answer (and how long to hold an answered call)."""

    aor: str
    policy: SecurityPolicy
    auto_answer: bool = False
    hold_s: float | None = None
    phone_password: str | None = field(default=None, repr=False)
    registered: bool = False
    logged_in_at: float = field(default_factory=time.time)


@dataclass
class PhoneBinding:
    """A plain phone registered on the legacy side for a logged-in user."""

    aor: str
    contact: str
    peer: Peer
    expires_at: float


class Gateway:
    """One UA gateway (one domain). See the module docstring."""

    def __init__(
        self,
        config: GatewayConfig,
        *,
        pkg: PkgConnector | None = None,
        engine: CryptoEngine | None = None,
        dialog_store: DialogStore | None = None,
        replay_cache: ReplayCache | None = None,
        call_store: CallStore | None = None,
        metrics: GatewayMetrics | None = None,
    ) -> None:
        self.config = config
        self.domain = config.domain.lower()
        self.metrics = metrics or GatewayMetrics()
        self.pkg = pkg or PkgConnector(tuple(config.pkg_targets), plaintext=config.pkg_plaintext,
                                       pinned_fingerprint=config.pkg_fingerprint or None)
        self.engine: CryptoEngine = (engine if engine is not None
                                     else InProcessEngine(batch_window_s=config.verify_window_ms / 1000,
                                                          busy_cpu=config.verify_busy_cpu))
        self.dialog_store: DialogStore = dialog_store or InMemoryDialogStore()
        self.replay_cache: ReplayCache = replay_cache or InMemoryReplayCache()
        self.call_store: CallStore = call_store or MemoryCallStore()
        self.directory = ParamsDirectory(self.pkg, self.domain, self.metrics)
        self.users: dict[str, UserKeys] = {}
        self.settings: dict[str, UserSettings] = {}
        self.phones: dict[str, PhoneBinding] = {}
        self.secure: Agent | None = None
        self.plain: Agent | None = None
        proxy_host, proxy_port = split_hostport(config.proxy)
        self.proxy = Peer(config.transport.upper(), proxy_host, proxy_port)
        self._maintain: dict[str, asyncio.Task[None]] = {}
        self._contact_key = bytes.fromhex(config.contact_secret) if config.contact_secret else secrets.token_bytes(32)
        self._contact_users: dict[str, str] = {}
        self._contact_tokens: dict[str, str] = {}  # AOR -> its contact token (as _contact_users grows)
        self.digest = DigestServer(self.domain, secrets.token_bytes(32), algorithms=config.phone_digest_algorithms)
        self._started = False
        self.started_at = 0.0

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        host, port = split_hostport(self.config.sip_listen)
        secure_ep = SipEndpoint()
        transport = self.config.transport.upper()
        if transport == "TCP":
            await secure_ep.listen_tcp(host, port)
        else:
            await secure_ep.listen_udp(host, port)
        self.secure = Agent(
            secure_ep, self, self.metrics, side="secure", secured=True, dialogs=self.dialog_store,
            replay=self.replay_cache, outbound=self.proxy, signing=self.config.signing_policy,
            dialog_ttl_s=self.config.dialog_ttl_s, trace_calls=self.config.trace_calls, keep_calls=self.config.keep_calls,
            call_store=self.call_store, engine=self.engine, advertise=self.config.advertise,
            transport=transport,
        )
        secure_ep.start()
        self.secure.start()
        if self.config.plain_listen:
            phost, pport = split_hostport(self.config.plain_listen)
            plain_ep = SipEndpoint()
            await plain_ep.listen_udp(phost, pport)
            self.plain = Agent(
                plain_ep, self, self.metrics, side="plain", secured=False, dialogs=self.dialog_store,
                replay=self.replay_cache, outbound=None, trace_calls=self.config.trace_calls, keep_calls=self.config.keep_calls, engine=self.engine,
                advertise=self.config.advertise,
            )
            plain_ep.start()
            self.plain.start()
        self._started = True
        self.started_at = time.time()
        log.info("gateway for %s: secured SIP on %s, plain SIP on %s, proxy %s", self.domain,
                 self.secure.address, self.plain.address if self.plain else "-", self.config.proxy)

    async def stop(self, drain: float | None = None) -> None:
        """End live calls (up to ``drain`` seconds), unregister and log out users, close everything."""
        drain = self.config.drain_seconds if drain is None else drain
        for agent in (self.plain, self.secure):
            if agent is None:
                continue
            live = [c for c in agent.calls.values() if c.state is CallState.ESTABLISHED]
            if live and drain > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(
                        asyncio.gather(*(agent.hangup(c, timeout=drain) for c in live), return_exceptions=True),
                        drain)
        unregister = min(drain, 2.0) if drain > 0 else 0.0
        await asyncio.gather(*(self.logout(aor, unregister_timeout=unregister) for aor in list(self.users)),
                             return_exceptions=True)
        for agent in (self.plain, self.secure):
            if agent is not None:
                await agent.close()
                await agent.endpoint.close()
        await self.directory.close()
        await self.engine.close()
        self._started = False

    @property
    def sip_address(self) -> tuple[str, int]:
        assert self.secure is not None
        return self.secure.address

    @property
    def plain_address(self) -> tuple[str, int] | None:
        return self.plain.address if self.plain is not None else None

    # -- users ---------------------------------------------------------------------------------

    def _canonical_local(self, aor: str) -> str:
        try:
            canonical = str(canonical_aor(aor))
        except IbcError:
            raise GatewayError(400, f"{aor!r} is not a SIP address of record") from None
        if canonical.split("@", 1)[-1] != self.domain:
            raise GatewayError(400, f"{canonical} is not in this gateway's domain {self.domain}")
        return canonical

    async def login(
        self,
        aor: str,
        password: str,
        *,
        policy: SecurityPolicy | str | None = None,
        auto_answer: bool = False,
        hold_s: float | None = None,
        register: bool = True,
        phone_password: str | None = None,
    ) -> UserSettings:
        """Log ``aor`` in with its PKG credentials, get its keys, and register it with the proxy.

        ``phone_password``: the plain side then requires Digest (RFC 8760) from this user's
        phone, on REGISTER (401) and INVITE (407); without it the plain side trusts its network.
        """
        canonical = self._canonical_local(aor)
        try:
            chosen = self.config.security_policy if policy is None else SecurityPolicy(policy)
        except ValueError:
            raise GatewayError(400, f"unknown policy {policy!r}") from None
        if hold_s is not None and hold_s < 0:
            raise GatewayError(400, "hold_s must not be negative")
        if canonical in self.users:
            if not self.users[canonical].check_password(password):
                raise GatewayError(401, f"{canonical} is logged in with other credentials")
            settings = self.settings[canonical]
            settings.policy, settings.auto_answer, settings.hold_s = chosen, auto_answer, hold_s
            settings.phone_password = phone_password
            return settings
        keys = UserKeys(canonical, password, self.pkg, self.directory, self.metrics)
        try:
            await keys.login()
            await self.directory.own()
            for peer in self.config.peer_domain_list:
                await self.directory.peer(peer)
            await keys.refresh_keys()
        except KeyMaterialError as exc:
            await keys.close()
            raise GatewayError(exc.status, str(exc)) from None
        self.users[canonical] = keys
        settings = UserSettings(canonical, chosen, auto_answer, hold_s, phone_password)
        self.settings[canonical] = settings
        self.metrics.users.set(len(self.users))
        if register:
            try:
                await self.register(canonical)
            except GatewayError:
                await self._drop_user(canonical)
                raise
        self._maintain[canonical] = asyncio.get_running_loop().create_task(self._maintain_user(canonical))
        return settings

    async def _drop_user(self, aor: str) -> None:
        keys = self.users.pop(aor, None)
        self.settings.pop(aor, None)
        self.phones.pop(aor, None)
        task = self._maintain.pop(aor, None)
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if keys is not None:
            with contextlib.suppress(Exception):
                await keys.logout()
            await keys.close()
        self.metrics.users.set(len(self.users))

    async def logout(self, aor: str, *, unregister_timeout: float = 5.0) -> None:
        canonical = self._canonical_local(aor)
        if canonical not in self.users:
            raise GatewayError(404, f"{canonical} is not logged in")
        if self.settings[canonical].registered and unregister_timeout > 0:
            with contextlib.suppress(GatewayError, CallFailed):
                await self.register(canonical, expires=0, timeout=unregister_timeout)
        await self._drop_user(canonical)

    async def register(self, aor: str, *, expires: int | None = None, timeout: float = 10.0) -> None:
        """A signed REGISTER of ``aor``'s contact on this gateway with the proxy (DESIGN §5)."""
        assert self.secure is not None
        keys = self.users[aor]
        exp = self.config.register_expires if expires is None else expires
        call_id = generate_call_id()
        register = Request("REGISTER", f"sip:{self.domain}", [
            ("Via", self.secure.via()), ("Max-Forwards", "70"),
            ("From", f"<{aor}>;tag={generate_tag()}"), ("To", f"<{aor}>"),
            ("Call-ID", call_id), ("CSeq", "1 REGISTER"),
            ("Contact", f"<{self.secure.contact_uri(aor)}>"), ("Expires", str(exp)),
        ])
        t0 = time.perf_counter()
        try:
            signed = sign_register(register, keys.keyring())
        except EnvelopeUsageError as exc:
            raise GatewayError(500, f"cannot sign the REGISTER: {exc}") from None
        self.metrics.crypto_seconds.labels("sign_register").observe(time.perf_counter() - t0)
        try:
            resp = await self.secure.request(signed, self.proxy, timeout)
        except CallFailed as exc:
            self.metrics.registrations.labels("proxy", "failed").inc()
            raise GatewayError(504, f"the proxy did not answer the REGISTER ({exc})") from None
        if not 200 <= resp.status < 300:
            self.metrics.registrations.labels("proxy", "refused").inc()
            raise GatewayError(502, f"the proxy refused the REGISTER: {resp.status} {resp.reason}")
        self.metrics.registrations.labels("proxy", "ok").inc()
        self.settings[aor].registered = exp > 0

    async def _maintain_user(self, aor: str) -> None:
        """Refresh the registration at 80 % of its lifetime; keep the keys of the current and the
        next period (fetch the new next period's as soon as the PKG issues it, at each period
        change; retry every ``key_retry_s`` while one is missing)."""
        clock = time.time
        retry = self.config.key_retry_s
        next_register = clock() + 0.8 * self.config.register_expires
        while True:
            keys = self.users.get(aor)
            if keys is None:
                return
            now = clock()
            keys_due = keys.renew_at() if keys.holds_next() else now + retry
            await asyncio.sleep(max(1.0, min(next_register, keys_due) - now))
            try:
                if clock() >= keys_due:
                    await keys.refresh_keys()
                if clock() >= next_register:
                    await self.register(aor)
                    next_register = clock() + 0.8 * self.config.register_expires
            except (GatewayError, KeyMaterialError) as exc:
                log.warning("maintenance of a user failed (retrying in %g s): %s", retry, exc)
                next_register = min(next_register, clock() + retry)

    def user_list(self) -> list[dict[str, Any]]:
        return [self.user_doc(a) for a in sorted(self.users)]

    def user_doc(self, aor: str) -> dict[str, Any]:
        s = self.settings[aor]
        phone = self.phones.get(aor)
        return {
            "aor": aor, "policy": s.policy.value, "auto_answer": s.auto_answer, "hold_s": s.hold_s,
            "registered": s.registered, "key_periods": self.users[aor].periods,
            "phone": None if phone is None else phone.contact,
            "phone_auth": s.phone_password is not None,
        }

    # -- AgentOwner ----------------------------------------------------------------------------

    def user_keys(self, aor: str) -> UserKeys | None:
        return self.users.get(aor)

    def contact_user(self, aor: str) -> str:
        """The opaque user part of ``aor``'s secured-side Contact (an HMAC under the contact secret:
        replicas sharing ``SIPSEC_GATEWAY_CONTACT_SECRET`` agree on it; observers cannot map it to the AOR)."""
        token = self._contact_tokens.get(aor)
        if token is None:  # the key is fixed for the gateway's life: one HMAC per AOR
            token = "u" + hmac.new(self._contact_key, aor.encode(), hashlib.sha256).hexdigest()[:20]
            self._contact_tokens[aor] = token
        self._contact_users[token] = aor
        return token

    def user_for_uri(self, uri: object) -> str | None:
        if isinstance(uri, SipURI) and uri.user and uri.user in self._contact_users:
            aor = self._contact_users[uri.user]
            return aor if aor in self.users else None
        if isinstance(uri, SipURI) and uri.user:
            aor = f"sip:{uri.user}@{self.domain}"
            try:
                aor = str(canonical_aor(aor))
            except IbcError:
                return None
            return aor if aor in self.users else None
        return None

    def allows_plain(self, aor: str) -> bool:
        s = self.settings.get(aor)
        return s is not None and s.policy is not SecurityPolicy.SECURE_ONLY

    async def ensure_peer(self, domain: str) -> bool:
        return await self.directory.peer(domain) is not None

    # -- calls ---------------------------------------------------------------------------------

    async def place_call(
        self,
        from_aor: str,
        to: str,
        *,
        secure: bool | None = None,
        sdp: bytes | None = None,
        wait: bool = True,
        timeout: float | None = None,
    ) -> Call:
        """Place a call from a logged-in user; with ``wait``, returns after the final response."""
        assert self.secure is not None
        caller = self._canonical_local(from_aor)
        if caller not in self.users:
            raise GatewayError(404, f"{caller} is not logged in on this gateway")
        try:
            callee = str(canonical_aor(to))
        except IbcError:
            raise GatewayError(400, f"{to!r} is not a SIP address of record") from None
        call = await self._start_call(caller, callee, secure, sdp)
        if wait:
            with contextlib.suppress(CallFailed):
                await self.secure.wait_setup(call, timeout or self.config.call_timeout_s)
        return call

    async def _start_call(self, caller: str, callee: str, secure: bool | None, sdp: bytes | None) -> Call:
        assert self.secure is not None
        policy = self.settings[caller].policy
        if secure is None:
            secure = policy is not SecurityPolicy.PLAIN
        if secure and policy is SecurityPolicy.PLAIN:
            raise GatewayError(409, f"{caller}'s policy is plain: it places no secured calls")
        if not secure and policy is SecurityPolicy.SECURE_ONLY:
            self.metrics.call_setups.labels("policy", "false").inc()
            raise GatewayError(403, f"{caller}'s policy is secure-only: a plain call is not allowed")
        if secure and not await self.ensure_peer(callee.split("@", 1)[-1]):
            if policy is SecurityPolicy.PREFER_SECURE:
                secure = False
                self.metrics.fallbacks.inc()
            else:
                self.metrics.call_setups.labels("failed", "true").inc()
                raise GatewayError(502, f"no trusted parameters for {callee.split('@', 1)[-1]}: "
                                        "the domain is not federated or the PKG is unreachable")
        call = self.secure.new_call(direction="outgoing", local_aor=caller, peer_aor=callee, secure=secure)
        host = self.secure.address[0]
        try:
            await self.secure.invite(call, callee, sdp if sdp is not None else static_sdp(host))
        except CallFailed as exc:
            self.secure._fail(call, exc.status, exc.reason)
            raise GatewayError(500, exc.reason) from None
        return call

    def call_list(self, limit: int = 100) -> list[dict[str, Any]]:
        """The most recent calls of this replica (both sides), newest first."""
        calls = [c for agent in (self.secure, self.plain) if agent is not None for c in agent.calls.values()]
        calls.sort(key=lambda c: c.created, reverse=True)
        return [c.summary() for c in calls[:limit]]

    def find_call(self, call_id: str) -> Call | None:
        for agent in (self.secure, self.plain):
            if agent is not None and call_id in agent.calls:
                return agent.calls[call_id]
        return None

    async def call_doc(self, call_id: str) -> dict[str, Any]:
        call = self.find_call(call_id)
        if call is not None:
            return call.summary()
        record = await self.call_store.get(call_id)
        if record is None:
            raise GatewayError(404, f"no call {call_id}")
        return {"id": call_id, "state": "established", "direction": record["direction"],
                "from": record["local_aor"] if record["direction"] == "outgoing" else record["peer_aor"],
                "to": record["peer_aor"] if record["direction"] == "outgoing" else record["local_aor"],
                "secure": True, "setup_ms": record.get("setup_ms"), "replica": "other"}

    async def hangup(self, call_id: str) -> int:
        """Hang up a call of this replica, or one another replica established (shared store)."""
        assert self.secure is not None
        call = self.find_call(call_id)
        if call is None:
            record = await self.call_store.get(call_id)
            if record is None:
                raise GatewayError(404, f"no call {call_id}")
            try:
                return await self.secure.hangup_from_store(record)
            except CallFailed as exc:
                raise GatewayError(exc.status, exc.reason) from None
        if not call.live:
            raise GatewayError(409, f"the call is already {call.state.value}")
        agent = self.secure if call.side == "secure" else self.plain
        assert agent is not None
        return await agent.hangup(call)

    def wire_view(self, call_id: str, taps: Sequence[WireTap] = ()) -> dict[str, Any]:
        """The call's wire view for the demo: its outer messages as sent/received (and, with
        ``taps`` on the proxies' inbound queues, as each proxy saw them) and the inner messages
        as opened, with the verified signer."""
        call = self.find_call(call_id)
        if call is None:
            raise GatewayError(404, f"no call {call_id}")
        return wire_view(call, taps)

    # -- incoming calls and the B2BUA ------------------------------------------------------------

    async def on_incoming(self, agent: Agent, call: Call, txn: ServerTransaction) -> None:
        if agent is self.plain:
            await self._phone_calls(call)
            return
        settings = self.settings.get(call.local_aor)
        if settings is None:
            await agent.reject(call, 404, "Not Found")
            return
        phone = self.phones.get(call.local_aor)
        if phone is not None and self.plain is not None and phone.expires_at > time.time():
            await agent.ring(call)
            await self._call_phone(call, phone)
            return
        if settings.auto_answer:
            await agent.ring(call)
            call.hold_s = settings.hold_s
            await agent.answer(call, static_sdp(agent.address[0]))
            await agent.save(call)
            return
        await agent.reject(call, 480, "Temporarily Unavailable")

    async def _call_phone(self, far: Call, phone: PhoneBinding) -> None:
        assert self.plain is not None
        leg = self.plain.new_call(direction="outgoing", local_aor=far.peer_aor, peer_aor=far.local_aor, secure=False)
        leg.bridge, far.bridge = far, leg
        try:
            await self.plain.invite(leg, phone.contact, far.remote_sdp, dest=phone.peer,
                                    to_text=f"<{far.local_aor}>")
        except (CallFailed, SipError) as exc:
            assert self.secure is not None
            await self.secure.reject(far, 480, f"Phone Unreachable ({exc})"[:60])

    async def _phone_calls(self, leg: Call) -> None:
        """A phone's INVITE on the plain side: place the secured leg for its user."""
        assert self.plain is not None and self.secure is not None and leg.invite is not None
        invite = leg.invite
        user = self.user_for_uri(invite.from_.uri)
        if user is None:
            await self.plain.reject(leg, 403, "User Not Logged In")
            return
        challenge = self._phone_auth(user, invite, "Proxy-Authorization")
        if challenge is not None:
            assert isinstance(leg.invite_txn, ServerTransaction)
            self.plain.respond_plain(leg.invite_txn, 407, "Proxy Authentication Required",
                                     [("Proxy-Authenticate", c) for c in challenge])
            self.plain._fail(leg, 407, "Proxy Authentication Required")
            return
        leg.local_aor = user
        target = invite.to.uri
        if isinstance(target, SipURI) and target.user and (is_ip_literal(target.host) or target.host == self.domain):
            callee = f"sip:{target.user}@{self.domain}"
        else:
            try:
                callee = str(canonical_aor(str(target)))
            except IbcError:
                await self.plain.reject(leg, 404, "Not Found")
                return
        leg.peer_aor = callee
        try:
            far = await self._start_call(user, callee, None, invite.body)
        except GatewayError as exc:
            status = 403 if exc.status == 403 else 502 if exc.status >= 500 else 488
            await self.plain.reject(leg, status, exc.message[:60])
            return
        far.bridge, leg.bridge = leg, far

    def on_ringing(self, call: Call) -> None:
        other = call.bridge
        if other is None or other.direction != "incoming" or not other.live:
            return
        agent = self.plain if other.side == "plain" else self.secure
        if agent is not None and other.state is CallState.CALLING:
            agent.spawn(agent.ring(other))

    def on_established(self, call: Call) -> None:
        other = call.bridge
        if other is None or not other.live:
            return
        if other.direction == "incoming" and other.state is not CallState.ESTABLISHED:
            agent = self.plain if other.side == "plain" else self.secure
            assert agent is not None
            agent.spawn(self._answer_bridged(agent, other, call.remote_sdp))

    async def _answer_bridged(self, agent: Agent, call: Call, sdp: bytes) -> None:
        await agent.answer(call, sdp)
        if agent is self.secure:
            await agent.save(call)

    def on_ended(self, call: Call) -> None:
        other = call.bridge
        if other is None or not other.live:
            return
        agent = self.plain if other.side == "plain" else self.secure
        assert agent is not None
        if other.state is CallState.ESTABLISHED:
            agent.spawn(agent.hangup(other))
        elif other.direction == "incoming":
            status = call.status if call.status and call.status >= 300 else 480
            agent.spawn(agent.reject(other, status, call.reason[:60] or None))
        else:
            agent.cancel(other)

    async def on_plain_request(self, agent: Agent, request: Request, txn: ServerTransaction) -> bool:
        """REGISTER from a phone on the plain side: bind its contact to the logged-in user."""
        if request.method != "REGISTER":
            return False
        user = self.user_for_uri(request.to.uri)
        if user is None:
            self.metrics.registrations.labels("phone", "refused").inc()
            agent.respond_plain(txn, 404, "Not Found")
            return True
        challenge = self._phone_auth(user, request, "Authorization")
        if challenge is not None:
            self.metrics.registrations.labels("phone", "challenged").inc()
            agent.respond_plain(txn, 401, "Unauthorized", [("WWW-Authenticate", c) for c in challenge])
            return True
        try:
            contacts = request.contact
            expires_raw = request.headers.get("Expires")
            expires = int(expires_raw) if expires_raw and expires_raw.strip().isdigit() else 3600
            if contacts and contacts[0].params.get("expires"):
                expires = int(str(contacts[0].params["expires"]))
        except (SipError, ValueError):
            agent.respond_plain(txn, 400, "Bad Contact")
            return True
        ok = make_response(request, 200, to_tag=generate_tag())
        if expires == 0 or not contacts:
            self.phones.pop(user, None)
        else:
            uri = contacts[0].uri
            # the Contact's address (RFC 3261 §10.3); the packet's source when it names no IP
            if isinstance(uri, SipURI) and is_ip_literal(uri.host):
                peer = Peer("UDP", uri.host.strip("[]"), uri.port or 5060)
            elif isinstance(txn.addr, Peer):
                peer = txn.addr
            else:
                agent.respond_plain(txn, 400, "Bad Contact")
                return True
            self.phones[user] = PhoneBinding(user, str(uri), peer, time.time() + min(expires, 7200))
            ok.headers.add("Contact", f"<{uri}>;expires={min(expires, 7200)}")
        self.metrics.registrations.labels("phone", "ok").inc()
        agent.endpoint.send_response(txn, ok)
        return True

    def _phone_auth(self, user: str, request: Request, header: str) -> list[str] | None:
        """None when ``request`` may pass (no phone password set, or valid Digest credentials
        for the user's name); else the challenge header values to answer with."""
        settings = self.settings.get(user)
        if settings is None or settings.phone_password is None:
            return None
        now = time.time()
        name = user.split(":", 1)[-1].split("@", 1)[0]
        stale = False
        for value in request.headers.get_all(header):
            try:
                creds = DigestCredentials.parse(value)
            except SipError:
                continue
            if creds.realm != self.digest.realm:
                continue
            if not hmac.compare_digest(creds.username.encode(), name.encode()):
                break
            try:
                self.digest.verify(creds, request.method, now, password=settings.phone_password,
                                   body=request.body)
            except StaleNonce:
                stale = True
            except DigestError as exc:
                self.metrics.rejections.labels("phone-auth").inc()
                log.info("phone Digest refused: %s", exc.reason)
            else:
                return None
            break
        return [c.to_header() for c in self.digest.challenges(now, stale=stale)]

    # -- health --------------------------------------------------------------------------------

    def health(self) -> Mapping[str, Any]:
        return {
            "status": "ok" if self._started else "starting",
            "domain": self.domain,
            "users": len(self.users),
            "sip": list(self.secure.address) if self.secure else None,
            "plain_sip": list(self.plain.address) if self.plain else None,
        }
