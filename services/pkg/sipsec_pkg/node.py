"""Wiring of one PKG node: store, federation, domain logic, gRPC server, metrics endpoint.

``PkgNode`` is the in-process form (the demo runs several in one process with in-memory
stores); ``create_pkg_server(config) -> (server, port)`` gives just the bound, unstarted server.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import secrets
from pathlib import Path

import grpc
from grpc_health.v1 import health
from prometheus_client import CollectorRegistry
from sipsec.rpc import create_server
from sipsec.rpc._gen.sipsec.pkg.v1 import pkg_pb2_grpc
from sipsec.stores.epoch import store_epoch
from sipsec.stores.pkg import MemoryPkgStore, PkgStore, UserRecord, open_pkg_store
from sipsec.telemetry.health import Readiness

from sipsec_pkg.audit import AuditLog
from sipsec_pkg.clock import Clock, system_clock
from sipsec_pkg.config import ConfigError, PkgConfig
from sipsec_pkg.federation import Federation, GrpcPeerFetcher, PeerFetcher
from sipsec_pkg.grpc_api import SERVICE_NAME, KeyGeneratorServicer
from sipsec_pkg.material import (
    DomainMaterial,
    MaterialError,
    derive_session_key,
    load_kek,
    load_material,
)
from sipsec_pkg.metrics import MetricsHttpServer, PkgMetrics
from sipsec_pkg.passwords import ScryptParams
from sipsec_pkg.service import PkgService, ServiceSettings
from sipsec_pkg.sessions import SESSION_KEY_BYTES

__all__ = ["PkgNode", "create_pkg_server", "load_users_file", "users_file"]

log = logging.getLogger("sipsec.pkg")


def users_file(data_dir: str | Path) -> Path:
    """Where ``sipsec-pkg user add`` keeps users for the memory store (scrypt hashes only)."""
    return Path(data_dir) / "users.json"


def load_users_file(path: Path) -> list[UserRecord]:
    if not path.exists():
        return []
    doc = json.loads(path.read_text())
    return [UserRecord(str(u["aor"]), str(u["password_hash"]), float(u["created_at"]), str(u.get("epoch", "")))
            for u in doc["users"]]


class PkgNode:
    """One running PKG node.

    ``material`` defaults to loading ``config.data_dir`` with the configured KEK; ``store`` to the
    configured one (a memory store seeded from ``users.json``); ``audit`` to ``config.audit_path``.
    Set ``config.metrics_port=None`` for no HTTP metrics endpoint (port 0 picks a free one).
    """

    def __init__(
        self,
        config: PkgConfig,
        material: DomainMaterial | None = None,
        *,
        store: PkgStore | None = None,
        clock: Clock = system_clock,
        registry: CollectorRegistry | None = None,
        audit: AuditLog | None = None,
        fetcher: PeerFetcher | None = None,
        session_key: bytes | None = None,
    ) -> None:
        if material is None:
            kek = load_kek(config.kek, config.kek_file)
            material = load_material(config.data_dir, kek, config.node)
            if session_key is None:
                session_key = derive_session_key(kek, material.params.domain)
        if config.domain and config.domain != material.params.domain:
            raise ConfigError(f"SIPSEC_PKG_DOMAIN is {config.domain} but the key material is for {material.params.domain}")
        self.config = config
        self.material = material
        self.clock = clock
        self.metrics = PkgMetrics(registry)
        self._own_store = store is None
        if store is None and config.store == "memory":
            store = MemoryPkgStore(clock, users=load_users_file(users_file(config.data_dir)))
        elif store is None:
            store = open_pkg_store(config.store, domain=material.params.domain, redis_url=config.redis_url, clock=clock,
                                   redis_password_file=config.redis_password_file, redis_ca=config.redis_ca)
        self.store = store
        self._own_audit = audit is None
        self.audit = audit if audit is not None else AuditLog(config.audit_path)
        self._own_fetcher = fetcher is None
        if fetcher is None:
            peer_ca = Path(config.peer_ca).read_bytes() if config.peer_ca else None
            fetcher = GrpcPeerFetcher(root_ca=peer_ca, plaintext=config.peer_plaintext, timeout_s=config.fed_timeout_s)
        self.fetcher = fetcher
        self.federation = Federation(
            material.signed, config.peers, store, fetcher, clock=clock, metrics=self.metrics,
            ttl_s=config.fed_ttl_s, refresh_s=config.fed_refresh_s,
        )
        self.service = PkgService(
            material, store, clock=clock, audit=self.audit, metrics=self.metrics, federation=self.federation,
            session_key=session_key if session_key is not None else self._session_key(config, material),
            settings=ServiceSettings(
                idle_timeout_s=config.idle_timeout_s,
                max_lifetime_s=config.session_max_lifetime_s,
                backoff=config.backoff,
                failure_window_s=config.failure_window_s,
                scrypt=config.scrypt,
            ),
        )
        self.server: grpc.aio.Server | None = None
        self.health: health.aio.HealthServicer | None = None
        self.port = 0
        self.metrics_http: MetricsHttpServer | None = None
        self._gauge_task: asyncio.Task[None] | None = None
        self._material_ok: bool | None = None
        # user accounts live in the store: an emptied store is found and reported (stores.epoch)
        self.epoch = store_epoch(store, "pkg", "user accounts", registry=self.metrics.registry)
        epoch_check = {"store_epoch": self.epoch.check} if self.epoch is not None else {}
        self.readiness = Readiness({"store": self._check_store, "key_material": self._check_material, **epoch_check},
                                   registry=self.metrics.registry)

    async def _check_store(self) -> None:
        """The store answers (Redis: a PING; the readiness deadline bounds it)."""
        ping = getattr(self.store, "ping", None)
        if ping is not None:
            await ping()

    async def _check_material(self) -> None:
        """The node's secret fits the domain's public parameters (checked once, at start)."""
        if self._material_ok is None:
            try:
                await asyncio.to_thread(self.material.self_check)
            except MaterialError:
                self._material_ok = False
                log.error("key material self-check failed: the secret does not fit the public parameters")
            else:
                self._material_ok = True
            self.metrics.key_material_checks.labels("ok" if self._material_ok else "failed").inc()
        if not self._material_ok:
            raise MaterialError("key material self-check failed")

    @staticmethod
    def _session_key(config: PkgConfig, material: DomainMaterial) -> bytes:
        """The session MAC key: derived from the configured KEK, else random for this process only."""
        if config.kek or config.kek_file:
            return derive_session_key(load_kek(config.kek, config.kek_file), material.params.domain)
        if config.store != "memory":
            log.warning("no KEK configured: sessions are MACed under a key of this process only "
                        "(other nodes sharing the store will not accept them)")
        return secrets.token_bytes(SESSION_KEY_BYTES)

    @classmethod
    def in_memory(
        cls,
        material: DomainMaterial,
        *,
        clock: Clock = system_clock,
        registry: CollectorRegistry | None = None,
        store: PkgStore | None = None,
        audit: AuditLog | None = None,
        fetcher: PeerFetcher | None = None,
        session_key: bytes | None = None,
        **overrides: object,
    ) -> PkgNode:
        """A node for one-process use: loopback port 0, plaintext, memory store, audit kept in memory,
        no metrics endpoint. Each default can be overridden with a ``PkgConfig`` field; a given
        ``store``/``audit``/``fetcher`` stays the caller's to close. ``session_key`` (the session MAC
        key) defaults to one derived from a configured KEK, else a random one of this node."""
        values: dict[str, object] = {
            "domain": material.params.domain, "listen": "127.0.0.1:0", "plaintext": True,
            "store": "memory" if store is None or isinstance(store, MemoryPkgStore) else "redis",
            "metrics_port": None,
        }
        values.update(overrides)
        scrypt = values.pop("scrypt", None)
        if isinstance(scrypt, ScryptParams):
            values.update(scrypt_n=scrypt.n, scrypt_r=scrypt.r, scrypt_p=scrypt.p)
        config = dataclasses.replace(PkgConfig(), **values)  # type: ignore[arg-type]
        config.validate()
        if store is None:
            store = MemoryPkgStore(clock)
            own_store = True
        else:
            own_store = False
        own_audit = audit is None
        node = cls(config, material, store=store, clock=clock, registry=registry,
                   audit=audit if audit is not None else AuditLog(config.audit_log or None), fetcher=fetcher,
                   session_key=session_key)
        node._own_store = own_store
        node._own_audit = own_audit
        return node

    @property
    def domain(self) -> str:
        return self.material.params.domain

    @property
    def metrics_port(self) -> int | None:
        return self.metrics_http.port if self.metrics_http else None

    def build_server(self) -> tuple[grpc.aio.Server, int]:
        """Creates and binds (but does not start) the gRPC server."""
        servicer = KeyGeneratorServicer(self.service, trusted_forwarders=self.config.trusted_forwarders,
                                        trusted_forwarder_names=self.config.trusted_forwarder_names)
        self.server, self.port, self.health = create_server(
            self.config.listen,
            [lambda s: pkg_pb2_grpc.add_KeyGeneratorServiceServicer_to_server(servicer, s)],  # type: ignore[no-untyped-call]
            service_names=[SERVICE_NAME],
            tls=self.config.server_tls(),
            metrics=self.metrics.rpc,
        )
        return self.server, self.port

    async def start(self) -> int:
        """Starts gRPC and metrics; returns the gRPC port."""
        if self.server is None:
            self.build_server()
        assert self.server is not None and self.health is not None
        self.readiness.attach(self.health, [SERVICE_NAME])
        await self.readiness.start()  # publishes SERVING (or NOT_SERVING) for "" and the service
        await self.server.start()
        if self.config.metrics_port is not None:
            self.metrics_http = MetricsHttpServer(self.metrics, self.config.metrics_host, self.config.metrics_port,
                                                  self.readiness)
        await self.service.refresh_session_gauge()
        self._gauge_task = asyncio.create_task(self._refresh_gauge_forever())
        log.info(
            "PKG %s node %d serving on port %d (%s, store=%s, threshold=%d)",
            self.domain, self.material.node_index, self.port,
            "plaintext" if self.config.plaintext else "TLS", self.config.store, self.material.params.threshold,
        )
        return self.port

    async def _refresh_gauge_forever(self, every_s: float = 15.0) -> None:
        while True:
            await asyncio.sleep(every_s)
            try:
                await self.service.refresh_session_gauge()
            except Exception:  # noqa: BLE001 - a store hiccup must not end the loop
                log.warning("could not refresh the active-session gauge", exc_info=True)

    async def add_user(self, aor: str, password: str) -> str:
        """Provisions a user (in-process convenience for the demo and tests)."""
        return await self.service.add_user(aor, password)

    async def stop(self, grace: float | None = None) -> None:
        """Drains: health NOT_SERVING, in-flight RPCs get ``grace`` seconds, then closes everything."""
        if self._gauge_task is not None:
            self._gauge_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._gauge_task
            self._gauge_task = None
        await self.readiness.stop()
        if self.health is not None:
            await self.health.enter_graceful_shutdown()
        if self.server is not None:
            await self.server.stop(self.config.drain_seconds if grace is None else grace)
        if self.metrics_http is not None:
            self.metrics_http.close()
            self.metrics_http = None
        if self._own_fetcher:
            await self.fetcher.close()
        if self._own_store:
            await self.store.close()
        if self._own_audit:
            self.audit.close()


def create_pkg_server(
    config: PkgConfig,
    material: DomainMaterial | None = None,
    *,
    store: PkgStore | None = None,
    clock: Clock = system_clock,
    registry: CollectorRegistry | None = None,
) -> tuple[grpc.aio.Server, int]:
    """The bound, unstarted gRPC server of a PKG node (``await server.start()`` to serve).

    For the full lifecycle (users file, metrics endpoint, graceful stop) use ``PkgNode``.
    """
    node = PkgNode(config, material, store=store, clock=clock, registry=registry)
    return node.build_server()
