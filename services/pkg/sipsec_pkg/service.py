"""The PKG's domain logic: users, sessions, login throttling, key extraction, audit (no gRPC here).

Sessions are MACed records (:mod:`sipsec_pkg.sessions`) with idle and absolute lifetimes, bound to
the user's credential epoch; failed logins back off per (account, client address) and per
address (:mod:`sipsec_pkg.throttle`) instead of locking anybody out.

Depends on Protocols only (a ``PkgStore``, a clock, an audit sink, a federation front), so tests
and the in-process demo drive it directly or through the gRPC adapter.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import secrets
from dataclasses import dataclass, field, replace

from sipsec.ibc import (
    IbcError,
    PeriodNotAllowed,
    Purpose,
    canonical_aor,
    extract,
    partial_extract,
)
from sipsec.pkgclient import SignedParams
from sipsec.stores.pkg import PkgStore, SessionRecord, UserRecord

from sipsec_pkg.audit import AuditLog
from sipsec_pkg.clock import Clock
from sipsec_pkg.errors import InvalidArgument, PermissionDenied, RateLimited, Unauthenticated
from sipsec_pkg.federation import Federation, FederationResult
from sipsec_pkg.material import DomainMaterial
from sipsec_pkg.metrics import PkgMetrics
from sipsec_pkg.passwords import ScryptParams, hash_password, password_matches
from sipsec_pkg.sessions import SessionCheck, SessionSealer, check_session
from sipsec_pkg.throttle import BackoffPolicy, ThrottleScope, address_key, known_key, pair_key

__all__ = ["IssuedKey", "LoginResult", "PkgService", "ServiceSettings", "new_epoch", "token_id"]

log = logging.getLogger("sipsec.pkg")

_MAX_PASSWORD = 1024
_MAX_AOR = 512


def token_id(token: str) -> str:
    """What the store keys a session by: SHA-256 of the bearer token (the token itself is never stored)."""
    return hashlib.sha256(token.encode()).hexdigest()


def new_epoch() -> str:
    """A fresh credential epoch: random, so a removed and re-created account revives no session."""
    return secrets.token_hex(16)


@dataclass(frozen=True)
class ServiceSettings:
    """Session lifetimes (seconds), login back-off (:mod:`sipsec_pkg.throttle`) and password-hash cost.

    ``failure_window_s`` is how long failure counts are remembered; ``known_client_s`` how long a
    successful login from an address exempts that account from the address's back-off.
    """

    idle_timeout_s: float = 900.0
    max_lifetime_s: float = 43200.0
    backoff: BackoffPolicy = BackoffPolicy()
    failure_window_s: float = 86400.0
    known_client_s: float = 30 * 86400.0
    scrypt: ScryptParams = ScryptParams()


@dataclass(frozen=True)
class LoginResult:
    aor: str
    token: str = field(repr=False)
    idle_timeout_s: float
    max_lifetime_s: float = 0.0


@dataclass(frozen=True)
class IssuedKey:
    """A full private key (1-of-1) or this node's partial key, and the identity it is for."""

    aor: str
    purpose: Purpose
    period: int
    period_length_s: int
    not_before: float
    not_after: float
    threshold: int
    params_version: int
    node_index: int
    value: bytes = field(repr=False)


class PkgService:
    """One PKG node of one domain."""

    def __init__(
        self,
        material: DomainMaterial,
        store: PkgStore,
        *,
        clock: Clock,
        audit: AuditLog,
        metrics: PkgMetrics,
        federation: Federation,
        session_key: bytes,
        settings: ServiceSettings = ServiceSettings(),
    ) -> None:
        self.material = material
        self.params = material.params
        self.domain = material.params.domain
        self.store = store
        self.clock = clock
        self.audit = audit
        self.metrics = metrics
        self.federation = federation
        self.settings = settings
        self.sessions = SessionSealer(session_key, self.domain)
        # compared against when the user is unknown, so unknown and known users cost the same
        self._dummy_hash = hash_password(secrets.token_urlsafe(16), settings.scrypt)
        # (account, client) pairs whose password check is running: one guess at a time per pair, so
        # parallel guesses cannot all pass the back-off check before the first failure is counted
        self._checking: set[str] = set()

    # ---- users -------------------------------------------------------------------------------

    def canonical_user(self, aor: str) -> str:
        """The canonical AOR of a user of this domain; raises InvalidArgument."""
        if len(aor) > _MAX_AOR:
            raise InvalidArgument("bad_aor", "AOR too long")
        try:
            canon = str(canonical_aor(aor))
        except IbcError:
            raise InvalidArgument("bad_aor", "not a SIP address-of-record") from None
        if canon.rsplit("@", 1)[-1] != self.domain:
            raise InvalidArgument("foreign_aor", f"users of this PKG belong to {self.domain}")
        return canon

    async def add_user(self, aor: str, password: str) -> str:
        """Provisions a user or sets a new password; returns the canonical AOR.

        A new credential epoch is drawn each time, so every session of the user opened before
        (with the old password) stops working.
        """
        canon = self.canonical_user(aor)
        if not password or len(password) > _MAX_PASSWORD:
            raise InvalidArgument("bad_password", f"password must be 1..{_MAX_PASSWORD} characters")
        encoded = await asyncio.to_thread(hash_password, password, self.settings.scrypt)
        await self.store.put_user(UserRecord(canon, encoded, self.clock(), new_epoch()))
        await self.refresh_session_gauge()
        return canon

    async def remove_user(self, aor: str) -> bool:
        """Removes a user; the store ends its sessions too."""
        removed = await self.store.delete_user(self.canonical_user(aor))
        await self.refresh_session_gauge()
        return removed

    async def list_users(self) -> list[str]:
        return await self.store.list_users()

    # ---- sessions ----------------------------------------------------------------------------

    async def _not_before(self, key: str, now: float) -> float | None:
        until = await self.store.get_lock(key)
        return until if until is not None and until > now else None

    def _throttled(self, scope: ThrottleScope, canon: str, source: str, until: float, now: float) -> RateLimited:
        self.metrics.login_failures.labels("backoff").inc()
        self.metrics.login_throttled.labels(scope.value).inc()
        self.audit.record("login_refused", now, aor=canon, peer=source, reason=f"backoff_{scope.value}")
        return RateLimited(
            "backoff", "too many failed logins from this client; try again later",
            scope=scope.value, retry_after_s=str(max(1, int(until - now + 0.999))),
        )

    async def login(self, aor: str, password: str, source: str) -> LoginResult:
        """Checks credentials, throttled per (account, client address) and per address
        (:mod:`sipsec_pkg.throttle`); returns a new session token."""
        try:
            canon = self.canonical_user(aor)
        except InvalidArgument:
            self.metrics.login_failures.labels("invalid_request").inc()
            raise
        if len(password) > _MAX_PASSWORD:
            self.metrics.login_failures.labels("invalid_request").inc()
            raise InvalidArgument("bad_password", "password too long")
        now = self.clock()
        pair, addr = pair_key(canon, source), address_key(source)
        if pair in self._checking:  # taken before the back-off is read: no window between the two
            raise self._throttled(ThrottleScope.ACCOUNT_CLIENT, canon, source, now + 1.0, now)
        self._checking.add(pair)
        try:
            return await self._check_password(canon, password, source, pair, addr, now)
        finally:
            self._checking.discard(pair)

    async def _check_password(self, canon: str, password: str, source: str, pair: str, addr: str,
                              now: float) -> LoginResult:
        s = self.settings
        until = await self._not_before(pair, now)
        if until is not None:
            raise self._throttled(ThrottleScope.ACCOUNT_CLIENT, canon, source, until, now)
        known = await self._not_before(known_key(canon, source), now) is not None
        if not known:
            until = await self._not_before(addr, now)
            if until is not None:
                raise self._throttled(ThrottleScope.CLIENT_ADDRESS, canon, source, until, now)
        user = await self.store.get_user(canon)
        encoded = user.password_hash if user is not None else self._dummy_hash
        ok = await asyncio.to_thread(password_matches, password, encoded)
        now = self.clock()
        if user is None or not ok:
            self.metrics.login_failures.labels("bad_credentials").inc()
            self.audit.record("login_failed", now, aor=canon, peer=source)
            policy = s.backoff
            pair_failures = await self.store.incr_failures(pair, s.failure_window_s)
            await self._back_off(pair, policy.pair_delay(pair_failures), ThrottleScope.ACCOUNT_CLIENT, now)
            addr_failures = await self.store.incr_failures(addr, s.failure_window_s)
            await self._back_off(addr, policy.address_delay(addr_failures), ThrottleScope.CLIENT_ADDRESS, now)
            raise Unauthenticated("bad_credentials", "invalid AOR or password")
        await self.store.clear_failures(pair)
        await self.store.set_lock(known_key(canon, source), now + s.known_client_s, s.known_client_s)
        token = secrets.token_urlsafe(32)
        tid = token_id(token)
        record = self.sessions.seal(tid, SessionRecord(canon, now, now, user.epoch))
        await self.store.put_session(tid, record, self._session_ttl(record, now))
        self.audit.record("login", now, aor=canon, peer=source)
        await self.refresh_session_gauge()
        return LoginResult(canon, token, s.idle_timeout_s, s.max_lifetime_s)

    async def _back_off(self, key: str, delay_s: float, scope: ThrottleScope, now: float) -> None:
        if delay_s <= 0:
            return
        await self.store.set_lock(key, now + delay_s, delay_s)
        self.metrics.login_backoffs.labels(scope.value).inc()
        log.warning("login back-off (%s): next attempt in %.0f s after repeated failures", scope.value, delay_s)

    def _session_ttl(self, record: SessionRecord, now: float) -> float:
        """The store's garbage-collection TTL: twice the idle timeout, and not much past the absolute
        lifetime (kept one idle timeout longer, so a late request learns why it was refused)."""
        s = self.settings
        return max(1.0, min(2 * s.idle_timeout_s, record.created_at + s.max_lifetime_s - now + s.idle_timeout_s))

    async def logout(self, token: str) -> None:
        """Ends the session (idempotent: an unknown token is already logged out)."""
        if token:
            session = await self.store.get_session(token_id(token))
            await self.store.delete_session(token_id(token))
            if session is not None:
                self.audit.record("logout", self.clock(), aor=session.aor)
        await self.refresh_session_gauge()

    async def session_aor(self, token: str) -> str:
        """The AOR of a live session, touching it; raises Unauthenticated.

        A record must carry this PKG's MAC (else it was written by something else), be younger
        than the absolute lifetime, not idle past the timeout, and bound to the user's current
        credential epoch (a password change or removal revokes it).
        """
        if not token or len(token) > 256:
            self.metrics.session_rejections.labels("invalid").inc()
            raise Unauthenticated("invalid_session", "a session token is required")
        tid = token_id(token)
        session = await self.store.get_session(tid)
        if session is None:
            self.metrics.session_rejections.labels("invalid").inc()
            raise Unauthenticated("invalid_session", "unknown or ended session; log in again")
        user = await self.store.get_user(session.aor) if self.sessions.verify(tid, session) else None
        now = self.clock()
        s = self.settings
        verdict = check_session(self.sessions, tid, session, user, now,
                                idle_timeout_s=s.idle_timeout_s, max_lifetime_s=s.max_lifetime_s)
        if verdict is SessionCheck.VALID:
            touched = self.sessions.seal(tid, replace(session, last_seen=now))
            await self.store.put_session(tid, touched, self._session_ttl(touched, now))
            return session.aor
        self.metrics.session_rejections.labels(verdict.value).inc()
        if verdict is SessionCheck.FORGED:
            # not ours: leave the record alone (deleting would let a forger probe) and say no more
            log.warning("refused a session record whose MAC does not verify (not written by this PKG)")
            raise Unauthenticated("invalid_session", "unknown or ended session; log in again")
        await self.store.delete_session(tid)
        await self.refresh_session_gauge()
        if verdict is SessionCheck.REVOKED:
            self.audit.record("session_revoked", now, aor=session.aor)
            raise Unauthenticated("session_revoked", "the credentials changed or the account was removed; log in again")
        if verdict is SessionCheck.LIFETIME:
            raise Unauthenticated("session_expired", "session reached its maximum lifetime; log in again")
        raise Unauthenticated("session_expired", "session expired after idle time; log in again")

    async def refresh_session_gauge(self) -> None:
        count = await self.store.count_sessions(self.clock() - self.settings.idle_timeout_s)
        self.metrics.active_sessions.set(count)

    # ---- parameters and keys -----------------------------------------------------------------

    def system_params(self) -> SignedParams:
        return self.material.signed

    async def domain_params(self, domain: str) -> FederationResult:
        return await self.federation.get(domain)

    async def get_key(
        self,
        token: str,
        purpose: Purpose | None,
        *,
        period: int | None = None,
        next_period: bool = False,
        aor: str = "",
        peer: str = "",
    ) -> IssuedKey:
        """Extracts the session user's key (or this node's partial) for ``purpose`` and a period."""
        session_aor = await self.session_aor(token)
        if aor and self.canonical_user_or_foreign(aor) != session_aor:
            raise PermissionDenied("not_own_aor", "a session obtains keys for its own AOR only")
        if purpose is None:
            raise InvalidArgument("bad_purpose", "purpose must be enc or sig")
        policy = self.params.policy
        now = self.clock()
        if period is None:
            period = policy.next(now) if next_period else policy.current(now)
        try:
            policy.check_issuable(period, now)
        except PeriodNotAllowed:
            raise InvalidArgument(
                "period_not_allowed", "period not issuable (current and next only)",
                current_period=str(policy.current(now)), max_period=str(policy.current(now) + policy.max_ahead),
            ) from None
        identity = self.params.identity(session_aor, purpose, period)
        m = self.material
        if m.master is not None:
            value = extract(m.master, self.params, identity).to_bytes()
            mode = "full"
        else:
            assert m.share is not None
            value = partial_extract(m.share, identity).value
            mode = "partial"
        self.metrics.extractions.labels(purpose.value, mode, "current" if period == policy.current(now) else "ahead").inc()
        self.audit.record(
            "extract", now, aor=session_aor, purpose=purpose.value, period=period,
            peer=peer, node=m.node_index, mode=mode,
        )
        start, end = policy.bounds(period)
        return IssuedKey(
            aor=session_aor, purpose=purpose, period=period, period_length_s=policy.length_s,
            not_before=start, not_after=end, threshold=self.params.threshold,
            params_version=self.params.version, node_index=m.node_index, value=value,
        )

    def canonical_user_or_foreign(self, aor: str) -> str:
        """Canonical form of any AOR (another domain's included), for the own-AOR check."""
        if len(aor) > _MAX_AOR:
            raise InvalidArgument("bad_aor", "AOR too long")
        try:
            return str(canonical_aor(aor))
        except IbcError:
            raise InvalidArgument("bad_aor", "not a SIP address-of-record") from None
