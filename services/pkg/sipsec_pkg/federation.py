"""Federation: a peer domain's public parameters via cache → peer fetch → pin + signature check.

Cached copies are fresh for ``refresh_s`` (served without contacting the peer), then refreshed
on use; while the peer is down or misbehaving a copy younger than ``ttl_s`` is still served.
Nothing that failed verification is ever cached. Cached copies are re-verified on read, so a
tampered Redis entry is refused too.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

import grpc
from sipsec.pkgclient import (
    ParamsVerificationError,
    SignedParams,
    signed_from_proto,
    verify_signed_params,
)
from sipsec.rpc import client_channel
from sipsec.rpc._gen.sipsec.pkg.v1 import pkg_pb2, pkg_pb2_grpc
from sipsec.stores.pkg import CachedParams, PkgStore

from sipsec_pkg.clock import Clock
from sipsec_pkg.config import Peer
from sipsec_pkg.errors import InvalidArgument, NotFound, Unavailable
from sipsec_pkg.metrics import PkgMetrics

__all__ = ["Federation", "FederationResult", "GrpcPeerFetcher", "PeerFetcher", "PeerUnreachable"]

log = logging.getLogger("sipsec.pkg.federation")


class PeerUnreachable(Exception):
    """The peer PKG did not answer (down, timeout, TLS failure, error status)."""


class PeerFetcher(Protocol):
    """Fetches a peer's signed parameters (its GetSystemParams); raises PeerUnreachable."""

    async def fetch(self, peer: Peer) -> SignedParams: ...

    async def close(self) -> None: ...


class GrpcPeerFetcher:
    """Calls the peer's ``GetSystemParams`` over TLS (``root_ca``) or, explicitly, plaintext."""

    def __init__(self, *, root_ca: bytes | None = None, plaintext: bool = False, timeout_s: float = 2.0) -> None:
        self._root_ca = root_ca
        self._plaintext = plaintext
        self._timeout_s = timeout_s
        self._channels: dict[str, grpc.aio.Channel] = {}

    async def fetch(self, peer: Peer) -> SignedParams:
        channel = self._channels.get(peer.endpoint)
        if channel is None:
            channel = client_channel(peer.endpoint, root_certificates=self._root_ca, plaintext=self._plaintext,
                                     propagate_trace=False)  # another domain: no trace crosses to it
            self._channels[peer.endpoint] = channel
        stub = pkg_pb2_grpc.KeyGeneratorServiceStub(channel)  # type: ignore[no-untyped-call]
        try:
            resp = await stub.GetSystemParams(pkg_pb2.GetSystemParamsRequest(), timeout=self._timeout_s)
        except grpc.aio.AioRpcError as exc:
            raise PeerUnreachable(f"{exc.code().name}") from None
        return signed_from_proto(resp.params)

    async def close(self) -> None:
        channels, self._channels = self._channels, {}
        for channel in channels.values():
            await channel.close()


@dataclass(frozen=True)
class FederationResult:
    signed: SignedParams
    from_cache: bool
    valid_until: float


def _valid_domain(domain: str) -> str:
    d = domain.strip().lower().rstrip(".")
    if not d or len(d) > 253 or any(not (c.isalnum() or c in "-.") for c in d):
        raise InvalidArgument("bad_domain", "domain must be a host name")
    return d


class Federation:
    """Answers GetDomainParams for our own domain and the configured peers."""

    def __init__(
        self,
        own: SignedParams,
        peers: Mapping[str, Peer],
        store: PkgStore,
        fetcher: PeerFetcher,
        *,
        clock: Clock,
        metrics: PkgMetrics,
        ttl_s: float = 3600.0,
        refresh_s: float = 600.0,
    ) -> None:
        self.own = own
        self.peers = dict(peers)
        self.store = store
        self.fetcher = fetcher
        self.clock = clock
        self.metrics = metrics
        self.ttl_s = ttl_s
        self.refresh_s = min(refresh_s, ttl_s)
        self._locks: dict[str, asyncio.Lock] = {}
        metrics.peers(sorted(self.peers))

    async def get(self, domain: str) -> FederationResult:
        d = _valid_domain(domain)
        if d == self.own.domain:
            return FederationResult(self.own, False, 0.0)
        peer = self.peers.get(d)
        if peer is None:
            self.metrics.fed_errors.labels("unknown_domain").inc()
            raise NotFound("unknown_domain", f"{d} is not a federated domain of this PKG")
        lock = self._locks.setdefault(d, asyncio.Lock())
        async with lock:  # one fetch per domain at a time; waiters then find the cache filled
            cached = await self._cached(peer)
            now = self.clock()
            if cached is not None and now - cached.fetched_at < self.refresh_s:
                self.metrics.fed_hits.inc()
                return FederationResult(self._signed(cached), True, cached.fetched_at + self.ttl_s)
            self.metrics.fed_misses.inc()
            try:
                signed = await self._fetch(peer)
            except Unavailable:
                if cached is not None and now - cached.fetched_at < self.ttl_s:
                    self.metrics.fed_stale.inc()
                    return FederationResult(self._signed(cached), True, cached.fetched_at + self.ttl_s)
                raise
            entry = CachedParams(
                domain=d, params=signed.params, signature=signed.signature,
                signer_public_key=signed.signer_public_key, version=signed.version, fetched_at=now,
            )
            await self.store.put_peer_params(entry, self.ttl_s)
            return FederationResult(signed, False, now + self.ttl_s)

    @staticmethod
    def _signed(c: CachedParams) -> SignedParams:
        return SignedParams(c.domain, c.params, c.signature, c.signer_public_key, c.version)

    async def _cached(self, peer: Peer) -> CachedParams | None:
        try:
            cached = await self.store.get_peer_params(peer.domain)
        except ValueError:
            cached = None
        if cached is None:
            return None
        try:
            verify_signed_params(self._signed(cached), expected_domain=peer.domain, pinned_fingerprint=peer.fingerprint)
        except ParamsVerificationError:
            self.metrics.fed_errors.labels("bad_cache").inc()
            log.warning("cached parameters of %s failed verification; ignoring them", peer.domain)
            return None
        return cached

    async def _fetch(self, peer: Peer) -> SignedParams:
        started = time.perf_counter()
        try:
            signed = await self.fetcher.fetch(peer)
        except PeerUnreachable as exc:
            self.metrics.fed_fetch_seconds.labels(peer.domain).observe(time.perf_counter() - started)
            self.metrics.fed_fetches.labels(peer.domain, "unavailable").inc()
            self.metrics.fed_errors.labels("unavailable").inc()
            log.warning("peer PKG of %s at %s unreachable: %s", peer.domain, peer.endpoint, exc)
            raise Unavailable("peer_unavailable", f"the PKG of {peer.domain} is unreachable") from None
        self.metrics.fed_fetch_seconds.labels(peer.domain).observe(time.perf_counter() - started)
        try:
            verify_signed_params(signed, expected_domain=peer.domain, pinned_fingerprint=peer.fingerprint)
        except ParamsVerificationError as exc:
            self.metrics.fed_fetches.labels(peer.domain, "refused").inc()
            self.metrics.fed_errors.labels(exc.reason).inc()
            log.warning("parameters from the PKG of %s refused: %s", peer.domain, exc.reason)
            raise Unavailable(exc.reason, f"parameters of {peer.domain} failed verification ({exc.reason})") from None
        self.metrics.fed_fetches.labels(peer.domain, "ok").inc()
        return signed
