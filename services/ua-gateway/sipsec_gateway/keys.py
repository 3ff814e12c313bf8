"""Users' key material from the PKG: login, own and federated domain parameters, enc/sig keys per period.

:class:`ParamsDirectory` holds the trusted parameters of the own domain and of peer domains
(GetDomainParams through the own PKG's federation cache, fetched once and kept: a PKG that
goes down later does not stop calls). :class:`UserKeys` is one logged-in user: its PKG
session(s), its SIG and ENC keys for the current and the next key period (threshold mode:
partial keys from every node, each checked by pairing, t of them combined — all through
:mod:`sipsec.pkgclient`), and the :class:`~sipsec.envelope.Keyring` built from them.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sipsec.envelope import Keyring
from sipsec.ibc import DomainParams, PrivateKey, Purpose, canonical_aor
from sipsec.pkgclient import PkgClient, PkgClientError, ThresholdPkgClient
from sipsec.rpc.server import client_channel

from sipsec_gateway.metrics import GatewayMetrics

__all__ = ["ClientFactory", "KeyMaterialError", "ParamsDirectory", "PkgConnector", "PkgProbe", "UserKeys", "client_ip"]

log = logging.getLogger("sipsec.gateway.keys")

#: Builds a :class:`PkgClient` for a target (TLS settings are the connector's business).
ClientFactory = Callable[[str], PkgClient]


def client_ip(address: str | None) -> str:
    """``address`` when it is an IP address (v4 or v6, canonical form), else ``""`` (not passed on)."""
    if not address:
        return ""
    try:
        return str(ipaddress.ip_address(address.strip()))
    except ValueError:
        return ""


class KeyMaterialError(Exception):
    """Login or key retrieval failed; ``status`` is the HTTP status the API answers with."""

    def __init__(self, message: str, status: int = 502) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class PkgConnector:
    """Where the PKG is and how to reach it: one target, or t-of-n threshold nodes.

    ``client_cert`` is the gateway's (private key, certificate chain) PEM pair for TLS client
    authentication (RFC 8446 §4.4.2), presented where the PKG requires client certificates; a
    PKG that trusts its name takes the end user's address from each login for throttling.
    """

    targets: tuple[str, ...]
    plaintext: bool = False
    root_certificates: bytes | None = field(default=None, repr=False)
    timeout_s: float = 5.0
    pinned_fingerprint: str | None = None
    client_cert: tuple[bytes, bytes] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if not self.targets:
            raise ValueError("at least one PKG target is needed")

    @property
    def threshold_mode(self) -> bool:
        return len(self.targets) > 1

    def client(self, target: str) -> PkgClient:
        return PkgClient(target, plaintext=self.plaintext, root_certificates=self.root_certificates,
                         client_cert=self.client_cert, timeout_s=self.timeout_s)


class PkgProbe:
    """Whether the PKG answers: the standard gRPC health check of every node, each within a deadline.

    The channels are opened once and kept (a probe every few seconds must not cost a TLS handshake)."""

    def __init__(self, connector: PkgConnector) -> None:
        self.connector = connector
        self._stubs: dict[str, Any] = {}
        self._channels: list[grpc.aio.Channel] = []

    def _stub(self, target: str) -> Any:
        stub = self._stubs.get(target)
        if stub is None:
            c = self.connector
            channel = client_channel(target, root_certificates=c.root_certificates, client_cert=c.client_cert,
                                     plaintext=c.plaintext)
            self._channels.append(channel)
            stub = self._stubs[target] = health_pb2_grpc.HealthStub(channel)
        return stub

    async def _serving(self, target: str, timeout: float) -> bool:
        try:
            resp = await self._stub(target).Check(health_pb2.HealthCheckRequest(), timeout=timeout)
        except grpc.aio.AioRpcError:
            return False
        return bool(resp.status == health_pb2.HealthCheckResponse.SERVING)

    async def serving(self, timeout: float) -> int:
        """How many PKG nodes answered SERVING within ``timeout`` seconds (all asked at once)."""
        results = await asyncio.gather(*(self._serving(t, timeout) for t in self.connector.targets))
        return sum(results)

    async def close(self) -> None:
        channels, self._channels, self._stubs = self._channels, [], {}
        for channel in channels:
            await channel.close()


class ParamsDirectory:
    """Trusted domain parameters: the own domain (verified, optionally pinned) and federated peers."""

    def __init__(self, connector: PkgConnector, domain: str, metrics: GatewayMetrics) -> None:
        self.connector = connector
        self.domain = domain.lower()
        self.metrics = metrics
        self._params: dict[str, DomainParams] = {}
        self._client: PkgClient | None = None
        self._lock = asyncio.Lock()

    def _pkg(self) -> PkgClient:
        if self._client is None:
            self._client = self.connector.client(self.connector.targets[0])
        return self._client

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None

    @property
    def known(self) -> dict[str, DomainParams]:
        return dict(self._params)

    def get(self, domain: str) -> DomainParams | None:
        return self._params.get(domain.lower())

    async def own(self) -> DomainParams:
        cached = self._params.get(self.domain)
        if cached is not None:
            return cached
        async with self._lock:
            if self.domain in self._params:
                return self._params[self.domain]
            errors: list[str] = []
            for target in self.connector.targets:
                client = self.connector.client(target)
                try:
                    system = await client.get_system_params(pinned_fingerprint=self.connector.pinned_fingerprint)
                except PkgClientError as exc:
                    errors.append(f"{target}: {exc}")
                    continue
                finally:
                    await client.close()
                if system.params.domain != self.domain:
                    raise KeyMaterialError(f"the PKG serves {system.params.domain}, not {self.domain}", 502)
                self._params[self.domain] = system.params
                self.metrics.key_fetches.labels("system_params", "ok").inc()
                return system.params
            self.metrics.key_fetches.labels("system_params", "failed").inc()
            raise KeyMaterialError("no PKG node returned the domain parameters: " + "; ".join(errors), 503)

    async def peer(self, domain: str) -> DomainParams | None:
        """A peer domain's parameters (fetched once through the own PKG's federation); None if unknown."""
        domain = domain.lower()
        if domain == self.domain:
            return await self.own()
        cached = self._params.get(domain)
        if cached is not None:
            return cached
        try:
            params = await self._pkg().get_domain_params(domain)
        except PkgClientError as exc:
            self.metrics.key_fetches.labels("domain_params", "failed").inc()
            log.warning("parameters of %s not available: %s", domain, exc)
            return None
        self._params[domain] = params
        self.metrics.key_fetches.labels("domain_params", "ok").inc()
        return params


class UserKeys:
    """One logged-in user: PKG session(s), SIG/ENC keys of the current and next period, keyring.

    The password is kept in memory (never logged, never in ``repr``) only to log in again
    when the PKG session has expired at key-renewal time. ``client_address`` is the end user's
    IP address (the control API's caller): every login names it to the PKG
    (``LoginRequest.client_address``), which throttles failures per end user when it lists this
    gateway as a trusted forwarder; anything that is not an IP address is not passed on.
    """

    def __init__(
        self,
        aor: str,
        password: str,
        connector: PkgConnector,
        directory: ParamsDirectory,
        metrics: GatewayMetrics,
        *,
        clock: Callable[[], float] = time.time,
        client_address: str = "",
    ) -> None:
        self.aor = str(canonical_aor(aor))
        self.client_address = client_ip(client_address)
        self._password = password
        self.connector = connector
        self.directory = directory
        self.metrics = metrics
        self.clock = clock
        self._clients: list[PkgClient] = [connector.client(t) for t in connector.targets]
        self._sig: dict[int, PrivateKey] = {}
        self._enc: dict[int, PrivateKey] = {}
        self._keyring: Keyring | None = None
        self._keyring_domains: tuple[str, ...] = ()

    def __repr__(self) -> str:
        return f"UserKeys({self.aor!r}, periods={sorted(self._sig)})"

    async def close(self) -> None:
        await asyncio.gather(*(c.close() for c in self._clients), return_exceptions=True)

    async def login(self) -> None:
        """Log in on the PKG (every node in threshold mode; t of them suffice)."""
        try:
            if self.connector.threshold_mode:
                failed = await ThresholdPkgClient(self._clients).login(
                    self.aor, self._password, client_address=self.client_address)
                if failed:
                    log.warning("login refused or failed on %d PKG node(s)", len(failed))
            else:
                await self._clients[0].login(self.aor, self._password, client_address=self.client_address)
        except PkgClientError as exc:
            code = getattr(exc, "code", None)
            name = getattr(code, "name", "")
            status = 401 if name in ("UNAUTHENTICATED", "PERMISSION_DENIED", "NOT_FOUND") else (
                429 if name == "RESOURCE_EXHAUSTED" else 503 if name in ("UNAVAILABLE", "DEADLINE_EXCEEDED") else 502)
            self.metrics.key_fetches.labels("login", "failed").inc()
            raise KeyMaterialError(f"PKG login failed: {exc}", status) from None
        self.metrics.key_fetches.labels("login", "ok").inc()

    def check_password(self, password: str) -> bool:
        """Constant-time check of ``password`` against the one this user logged in with."""
        return hmac.compare_digest(password.encode(), self._password.encode())

    async def logout(self) -> None:
        await asyncio.gather(*(c.logout() for c in self._clients), return_exceptions=True)

    async def _fetch(self, params: DomainParams, purpose: Purpose, period: int) -> PrivateKey:
        if self.connector.threshold_mode:
            result = await ThresholdPkgClient(self._clients, clock=self.clock, metrics=self.metrics.pkgclient).get_private_key(
                params, purpose, period=period)
            return result.key
        return await self._clients[0].get_private_key(params, purpose, period=period)

    async def _fetch_logged_in(self, params: DomainParams, purpose: Purpose, period: int) -> PrivateKey:
        try:
            return await self._fetch(params, purpose, period)
        except PkgClientError as exc:
            if getattr(getattr(exc, "code", None), "name", "") != "UNAUTHENTICATED":
                raise
        await self.login()  # the session expired (idle timeout): once more with a fresh one
        return await self._fetch(params, purpose, period)

    async def refresh_keys(self) -> bool:
        """Make sure the keys of the current and the next period are held; True if any was fetched.

        Keys of periods before the previous one are dropped (a message sealed just before a
        period change can still be opened).
        """
        params = await self.directory.own()
        now = self.clock()
        current, upcoming = params.policy.current(now), params.policy.next(now)
        wanted = [p for p in (current, upcoming) if p not in self._sig or p not in self._enc]
        fetched = 0
        for period in wanted:
            for purpose, table in ((Purpose.SIG, self._sig), (Purpose.ENC, self._enc)):
                if period in table:
                    continue
                try:
                    table[period] = await self._fetch_logged_in(params, purpose, period)
                except (PkgClientError, KeyMaterialError) as exc:
                    if period == current:
                        self.metrics.key_fetches.labels("private_key", "failed").inc()
                        raise KeyMaterialError(f"could not get the {purpose.value} key: {exc}", 503) from None
                    else:  # the next period can wait for the next renewal
                        self.metrics.key_fetches.labels("private_key", "failed").inc()
                        log.warning("next-period %s key not available yet: %s", purpose.value, exc)
                        continue
                fetched += 1
                self.metrics.key_fetches.labels("private_key", "ok").inc()
        for table in (self._sig, self._enc):
            for old in [p for p in table if p < current - 1]:
                del table[old]
        self._keyring = None
        return fetched > 0

    def renew_at(self) -> float:
        """When the next renewal is due (unix seconds): the end of the current period, when the
        PKG starts issuing the period after next (the next period's keys are held already)."""
        params = self.directory.get(self.directory.domain)
        if params is None:
            return self.clock() + 60.0
        now = self.clock()
        _, end = params.policy.bounds(params.policy.current(now))
        return float(end)

    def holds_next(self) -> bool:
        """Whether the keys of the next period are held already."""
        params = self.directory.get(self.directory.domain)
        if params is None:
            return False
        upcoming = params.policy.next(self.clock())
        return upcoming in self._sig and upcoming in self._enc

    @property
    def periods(self) -> list[int]:
        return sorted(set(self._sig) & set(self._enc))

    def keyring(self) -> Keyring:
        """The keyring over every key held and every domain known now (rebuilt when either changes)."""
        domains = self.directory.known
        names = tuple(sorted(domains))
        if self._keyring is None or names != self._keyring_domains:
            self._keyring = Keyring.create(
                self.aor, sig_keys=self._sig.values(), enc_keys=self._enc.values(), domains=domains.values())
            self._keyring_domains = names
        return self._keyring


def domains_of(aors: Sequence[str]) -> list[str]:
    return sorted({a.split("@", 1)[-1].lower() for a in aors})
