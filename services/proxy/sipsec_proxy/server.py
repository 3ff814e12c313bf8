"""Wiring of the proxy: transports, the core, the registrar, timers, metrics endpoint."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from prometheus_client import REGISTRY
from prometheus_client.registry import Collector
from sipsec.aio.transport import (
    InboundQueue,
    StreamTransport,
    Transport,
    UdpTransport,
    client_tls_context,
    server_tls_context,
)
from sipsec.config import ConfigError, split_hostport
from sipsec.sip import DEFAULT_TIMERS, Limits, TimerSettings, is_ip_literal
from sipsec.stores.location import MemoryLocationStore, RedisLocationStore
from sipsec.telemetry.http import close_metrics, serve_metrics

from sipsec_proxy.config import ProxyConfig
from sipsec_proxy.core import ProxyCore
from sipsec_proxy.health import proxy_readiness
from sipsec_proxy.locator import CachingLocator, GrpcLocator, Locator, StoreLocator
from sipsec_proxy.metrics import ProxyMetrics
from sipsec_proxy.registrar import RegisterVerifier, Registrar
from sipsec_proxy.signed_register import verifier_from_config

__all__ = ["ProxyServer", "create_proxy_server", "make_locator"]

log = logging.getLogger("sipsec.proxy")


class _Exposed(Collector):
    """What /metrics shows: this proxy's registry plus the process-wide SIP transport metrics."""

    def __init__(self, own: Collector) -> None:
        self.own = own

    def collect(self):  # type: ignore[no-untyped-def]
        yield from self.own.collect()
        yield from REGISTRY.collect()


def make_locator(config: ProxyConfig) -> Locator:
    """memory / redis: the embedded store; anything else: a location service gRPC target.

    Lookups in Redis or the location service go through a :class:`CachingLocator` of
    ``location_cache_ms`` (0 = none); the in-memory store needs none."""
    if config.location == "memory":
        return StoreLocator(MemoryLocationStore(), max_expires=max(86400, config.max_expires))
    inner: Locator
    if config.location == "redis":
        store = RedisLocationStore(config.redis_url, password_file=config.redis_password_file, ca_file=config.redis_ca,
                                   what="SIPSEC_PROXY_REDIS_PASSWORD_FILE / SIPSEC_REDIS_URL")
        inner = StoreLocator(store, max_expires=max(86400, config.max_expires), timeout=config.location_timeout_s)
    else:
        ca = Path(config.location_ca).read_bytes() if config.location_ca else None
        inner = GrpcLocator(config.location, root_certificates=ca, timeout=config.location_timeout_s)
    if config.location_cache_ms > 0:
        return CachingLocator(inner, config.location_cache_ms / 1000)
    return inner


class ProxyServer:
    """One proxy instance: ``await start()`` binds the transports, ``await stop()`` drains."""

    def __init__(self, config: ProxyConfig, locator: Locator | None = None,
                 verifier: RegisterVerifier | None = None, *, timers: TimerSettings = DEFAULT_TIMERS) -> None:
        self.config = config
        self.timers = timers
        self.locator = locator if locator is not None else make_locator(config)
        self.verifier = verifier
        self.metrics = ProxyMetrics()
        self.readiness = proxy_readiness(self.locator, self.metrics.registry)
        if isinstance(self.locator, CachingLocator) and self.locator.on_result is None:
            hit, miss = self.metrics.location_cache.labels("hit"), self.metrics.location_cache.labels("miss")
            self.locator.on_result = lambda cached: (hit if cached else miss).inc()
        self.queue = InboundQueue(config.queue_size)
        self.transports: dict[str, Transport] = {}
        self.core: ProxyCore | None = None
        self._peer_ips: list[str] = []  # the configured peer names' addresses (_refresh_peers)
        self.registrar: Registrar | None = None
        self.metrics_port: int | None = None
        self._http: Any = None
        self._tasks: list[asyncio.Task[None]] = []
        self.shared_udp: UdpTransport | None = None

    @property
    def udp_address(self) -> tuple[str, int]:
        """Where UDP clients send (the shared port for a worker)."""
        transport = self.shared_udp if self.shared_udp is not None else self.transports["UDP"]
        return self.address_of(transport)

    def address(self, transport: str = "UDP") -> tuple[str, int]:
        return self.address_of(self.transports[transport])

    @staticmethod
    def address_of(transport: Transport) -> tuple[str, int]:
        host, port = transport.local_address
        return (str(host), int(port))

    async def start(self) -> None:
        cfg = self.config
        if self.verifier is None and cfg.pkg_target:
            # before any socket is bound: a PKG that cannot be reached or verified stops the start
            self.verifier = await verifier_from_config(cfg)
        limits = Limits(max_message_bytes=cfg.max_message_bytes)
        host, port = split_hostport(cfg.listen)
        shared: UdpTransport | None = None
        if cfg.reuse_port:
            # a worker: requests arrive on the shared port; forward from a private one (workers.py)
            shared = await UdpTransport.listen(self.queue, host, port, limits=limits, reuse_port=True,
                                               rcvbuf=cfg.udp_rcvbuf)
            self.shared_udp = shared
            port = 0
        self.transports["UDP"] = await UdpTransport.listen(self.queue, host, port, limits=limits,
                                                           rcvbuf=cfg.udp_rcvbuf)
        if cfg.tcp_listen or cfg.tls_listen:
            await self._listen_streams(limits)
        self.registrar = Registrar(cfg, self.locator, self.metrics, verifier=self.verifier)
        loop = asyncio.get_running_loop()
        self.core = ProxyCore(cfg, self.locator, self.metrics, self.transports,
                              register_handler=self.registrar, clock=loop.time, call_at=loop.call_at,
                              shared_udp=shared.local_address if shared is not None else None,
                              timers=self.timers)
        # a message that cannot be sent (connect refused or timed out, ICMP error, no route)
        # reaches its transaction: a final response upstream, never silence (RFC 3261 §8.1.3.1)
        for transport in [*self.transports.values(), *([shared] if shared is not None else [])]:
            transport.on_send_error = self.core.send_failed
            if isinstance(transport, StreamTransport):  # a hop that closed or reset its connection
                transport.on_connection_lost = self.core.connection_lost
        self.core.peer_addresses = frozenset(self._peer_ips)
        self._tasks = [loop.create_task(self._consume())]
        if any(not is_ip_literal(h) for h in cfg.peer_hosts()):
            self._tasks.append(loop.create_task(self._refresh_peers()))
        await self.readiness.start()
        self._http, self.metrics_port = serve_metrics(cfg.metrics_port, cfg.metrics_host,
                                                      _Exposed(self.metrics.registry), self.readiness)
        log.info("proxy for %s on %s (metrics port %s)", ",".join(sorted(cfg.domain_set)),
                 {k: v.local_address for k, v in self.transports.items()}, self.metrics_port)

    async def _listen_streams(self, limits: Limits) -> None:
        """The TCP and TLS listeners, bounded by the configured :class:`ConnectionLimits`
        (the peers' and routes' hosts exempt from the per-source cap)."""
        cfg = self.config
        self._peer_ips, _ = await _resolve(cfg.peer_hosts(), cfg.dns_timeout_s)
        conn_limits = cfg.connection_limits(self._peer_ips)
        if cfg.tcp_listen:
            host, port = split_hostport(cfg.tcp_listen)
            self.transports["TCP"] = await StreamTransport.listen(self.queue, host, port, limits=limits,
                                                                  connection_limits=conn_limits)
        if cfg.tls_listen:
            try:
                server_ssl = server_tls_context(cfg.tls_cert, cfg.tls_key)
                client_ssl = client_tls_context(cfg.tls_ca or None)  # next hops verified (RFC 5922 §7)
            except (OSError, ssl.SSLError) as exc:
                raise ConfigError(f"SIPSEC_PROXY_TLS_CERT / _TLS_KEY / _TLS_CA cannot be used: {exc}") from None
            host, port = split_hostport(cfg.tls_listen, 5061)
            self.transports["TLS"] = await StreamTransport.listen(self.queue, host, port, server_ssl=server_ssl,
                                                                  client_ssl=client_ssl, limits=limits,
                                                                  connection_limits=conn_limits)

    async def _refresh_peers(self) -> None:
        """Resolves the configured peer and route host names again: every
        :data:`PEER_REFRESH_S` seconds, every :data:`PEER_RETRY_S` while one does not resolve
        (a peer started after this proxy, a container or pod restarted with a new address).
        The addresses found are trusted sources of the core and exempt from the per-source
        connection cap."""
        cfg = self.config
        literal = [h.strip("[]") for h in cfg.peer_hosts() if is_ip_literal(h)]
        while True:
            ips, missing = await _resolve(cfg.peer_hosts(), cfg.dns_timeout_s, quiet=True)
            if self.core is not None:
                self.core.peer_addresses = frozenset(ips)
            if set(ips) != set(self._peer_ips):
                self._peer_ips = ips
                for transport in self.transports.values():
                    if isinstance(transport, StreamTransport):
                        transport.set_peers([*literal, *ips])
                log.info("configured peers resolve to %s", ", ".join(ips) or "nothing")
            await asyncio.sleep(PEER_RETRY_S if missing else PEER_REFRESH_S)

    async def _consume(self) -> None:
        core = self.core
        assert core is not None
        queue = self.queue
        while True:
            core.handle(await queue.get())
            while queue.qsize():  # drain what is already queued without yielding per message
                core.handle(queue.get_nowait())

    async def stop(self, drain: float | None = None) -> None:
        """Stops reading, lets transactions finish for ``drain`` seconds, then closes."""
        drain = self.config.drain_seconds if drain is None else drain
        core = self.core
        if core is not None and drain > 0:
            loop = asyncio.get_running_loop()
            end = loop.time() + drain
            while core.transaction_count and loop.time() < end:
                # only transactions still waiting for an answer matter; Completed ones can go
                if not any(not ctx.final_sent for ctx in list(core._server.values())):
                    break
                await asyncio.sleep(0.05)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if core is not None:
            await core.aclose()
        for transport in [*self.transports.values(), *([self.shared_udp] if self.shared_udp else [])]:
            await transport.close()
        await self.readiness.stop()
        close_metrics(self._http)
        self._http = None
        await self.locator.close()


#: how often the configured peer names are resolved again, seconds (PEER_RETRY_S while one fails)
PEER_REFRESH_S = 30.0
PEER_RETRY_S = 2.0


async def _resolve(hosts: Iterable[str], timeout: float, *, quiet: bool = False) -> tuple[list[str], list[str]]:
    """The IP addresses of the host names among ``hosts`` (IP literals are left out: the
    config adds them itself), and the names that did not resolve within ``timeout`` seconds
    (logged unless ``quiet``: they are tried again, :meth:`ProxyServer._refresh_peers`)."""
    loop = asyncio.get_running_loop()
    found: list[str] = []
    missing: list[str] = []
    for host in hosts:
        if is_ip_literal(host):
            continue
        try:
            infos = await asyncio.wait_for(loop.getaddrinfo(host, None, type=socket.SOCK_STREAM), timeout)
        except (OSError, TimeoutError) as exc:
            missing.append(host)
            if not quiet:
                log.warning("peer %s does not resolve yet (%s): tried again every %.0f s", host, exc, PEER_RETRY_S)
            continue
        found += [str(info[4][0]) for info in infos]
    return list(dict.fromkeys(found)), missing


def create_proxy_server(config: ProxyConfig, locator: Locator | None = None,
                        verifier: RegisterVerifier | None = None, *,
                        timers: TimerSettings = DEFAULT_TIMERS) -> ProxyServer:
    """Builds (not starts) a proxy; ``await server.start()`` binds its sockets.

    With ``config.pkg_target`` set and no ``verifier`` given, ``start()`` first fetches the
    domain's signed parameters from the PKG and verifies signed REGISTERs with them.
    """
    return ProxyServer(config, locator, verifier, timers=timers)
