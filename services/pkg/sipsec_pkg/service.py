"""The PKG's domain logic: users, sessions, login throttling, key extraction, audit (no gRPC here).

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

__all__ = ["IssuedKey", "LoginResult", "PkgService", "ServiceSettings", "token_id"]

log = logging.getLogger("sipsec.pkg")

_MAX_PASSWORD = 1024
_MAX_AOR = 512


def token_id(token: str) -> str:
    """What the store keys a session by: SHA-256 of the bearer token (the token itself is never stored)."""
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class ServiceSettings:
    idle_timeout_s: float = 900.0
    login_max_failures: int = 5
    source_max_failures: int = 20
    failure_window_s: float = 900.0
    lockout_s: float = 900.0
    scrypt: ScryptParams = ScryptParams()


@dataclass(frozen=True)
class LoginResult:
    aor: str
    token: str = field(repr=False)
    idle_timeout_s: float


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
        # compared against when the user is unknown, so unknown and known users cost the same
        self._dummy_hash = hash_password(secrets.token_urlsafe(16), settings.scrypt)

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
        """Provisions (or re-keys) a user; returns the canonical AOR."""
        canon = self.canonical_user(aor)
        if not password or len(password) > _MAX_PASSWORD:
            raise InvalidArgument("bad_password", f"password must be 1..{_MAX_PASSWORD} characters")
        encoded = await asyncio.to_thread(hash_password, password, self.settings.scrypt)
        await self.store.put_user(UserRecord(canon, encoded, self.clock()))
        return canon

    async def remove_user(self, aor: str) -> bool:
        """Removes a user; the store ends its sessions too."""
        removed = await self.store.delete_user(self.canonical_user(aor))
        await self.refresh_session_gauge()
        return removed

    async def list_users(self) -> list[str]:
        return await self.store.list_users()

    # ---- sessions ----------------------------------------------------------------------------

    async def _locked_until(self, key: str, now: float) -> float | None:
        until = await self.store.get_lock(key)
        return until if until is not None and until > now else None

    async def login(self, aor: str, password: str, source: str) -> LoginResult:
        """Checks credentials (throttled per user and per source); returns a new session token."""
        s = self.settings
        try:
            canon = self.canonical_user(aor)
        except InvalidArgument:
            self.metrics.login_failures.labels("invalid_request").inc()
            raise
        if len(password) > _MAX_PASSWORD:
            self.metrics.login_failures.labels("invalid_request").inc()
            raise InvalidArgument("bad_password", "password too long")
        now = self.clock()
        user_key, source_key = f"user:{canon}", f"source:{source}"
        for key, scope in ((source_key, "source"), (user_key, "user")):
            until = await self._locked_until(key, now)
            if until is not None:
                self.metrics.login_failures.labels(f"locked_{scope}").inc()
                self.audit.record("login_refused", now, aor=canon, peer=source, reason=f"locked_{scope}")
                raise RateLimited(
                    f"locked_{scope}", "too many failed logins; try again later",
                    retry_after_s=str(max(1, int(until - now + 0.999))),
                )
        user = await self.store.get_user(canon)
        encoded = user.password_hash if user is not None else self._dummy_hash
        ok = await asyncio.to_thread(password_matches, password, encoded)
        if user is None or not ok:
            self.metrics.login_failures.labels("bad_credentials").inc()
            self.audit.record("login_failed", now, aor=canon, peer=source)
            await self._count_failure(user_key, s.login_max_failures, "user", now)
            await self._count_failure(source_key, s.source_max_failures, "source", now)
            raise Unauthenticated("bad_credentials", "invalid AOR or password")
        await self.store.clear_failures(user_key)
        token = secrets.token_urlsafe(32)
        await self.store.put_session(token_id(token), SessionRecord(canon, now, now), 2 * s.idle_timeout_s)
        self.audit.record("login", now, aor=canon, peer=source)
        await self.refresh_session_gauge()
        return LoginResult(canon, token, s.idle_timeout_s)

    async def _count_failure(self, key: str, limit: int, scope: str, now: float) -> None:
        s = self.settings
        count = await self.store.incr_failures(key, s.failure_window_s)
        if count >= limit:
            await self.store.set_lock(key, now + s.lockout_s, s.lockout_s)
            await self.store.clear_failures(key)
            self.metrics.lockouts.labels(scope).inc()
            log.warning("login lockout (%s) for %d s after %d failures", scope, int(s.lockout_s), count)

    async def logout(self, token: str) -> None:
        """Ends the session (idempotent: an unknown token is already logged out)."""
        if token:
            session = await self.store.get_session(token_id(token))
            await self.store.delete_session(token_id(token))
            if session is not None:
                self.audit.record("logout", self.clock(), aor=session.aor)
        await self.refresh_session_gauge()

    async def session_aor(self, token: str) -> str:
        """The AOR of a live session, touching it; raises Unauthenticated."""
        if not token or len(token) > 256:
            self.metrics.session_rejections.labels("invalid").inc()
            raise Unauthenticated("invalid_session", "a session token is required")
        tid = token_id(token)
        session = await self.store.get_session(tid)
        now = self.clock()
        if session is None:
            self.metrics.session_rejections.labels("invalid").inc()
            raise Unauthenticated("invalid_session", "unknown or ended session; log in again")
        if now - session.last_seen > self.settings.idle_timeout_s:
            await self.store.delete_session(tid)
            await self.refresh_session_gauge()
            self.metrics.session_rejections.labels("expired").inc()
            raise Unauthenticated("session_expired", "session expired after idle time; log in again")
        await self.store.put_session(tid, replace(session, last_seen=now), 2 * self.settings.idle_timeout_s)
        return session.aor

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
        self.metrics.extractions.labels(purpose.value, mode).inc()
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
