"""The two-domain sipsec topology in one process, on the embedded defaults (used by the demo, tests and bench).

The domains, their addresses and users, the PKGs' federation peers, the proxies' routes and
the gateways' peer domains come from the one description :data:`sipsec_cli.plan.PLAN`
(``sipsec up`` runs the same plan as processes). atlanta.com lives on 127.0.0.2 and biloxi.com on 127.0.0.3: each domain has a PKG (in-memory
store, gRPC on loopback), a location service (in-memory store, gRPC on loopback port 0), a SIP
proxy/registrar (UDP on the domain's address) and a UA gateway (secured SIP on the domain's
address, in-process crypto). The two PKGs federate: each pins the other's Ed25519 fingerprint
and fetches its signed parameters on first use. The proxies accept only identity-signed
REGISTERs, verified against the domains' public parameters (:class:`SignedRegisterVerifier`).
A :class:`~sipsec_gateway.trace.WireTap` on each proxy's inbound queue records what the proxy
received, i.e. what an eavesdropper beside the proxies sees.

    async with TwoDomainTopology() as topo:
        await topo.login("sip:alice@atlanta.com")
        await topo.login("sip:bob@biloxi.com", auto_answer=True)
        call = await topo.gateway_for("sip:alice@atlanta.com").place_call(ALICE, BOB)
"""

from __future__ import annotations

import asyncio
import functools
import logging
import secrets
import socket
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from sipsec.aio.ports import spare_port
from sipsec.engine import (
    DEFAULT_BATCH_WINDOW_S,
    DEFAULT_BUSY_CPU,
    CryptoEngine,
    InProcessEngine,
    RemoteEngine,
)
from sipsec.envelope import SecurityPolicy
from sipsec.ibc import DomainParams, IbcError, canonical_aor
from sipsec_gateway.config import GatewayConfig
from sipsec_gateway.gateway import Gateway, GatewayError, UserSettings
from sipsec_gateway.trace import WireTap
from sipsec_location import LocationConfig, LocationServer
from sipsec_pkg.config import Peer as PkgPeer
from sipsec_pkg.material import DomainInit, init_domain
from sipsec_pkg.node import PkgNode
from sipsec_proxy import ProxyConfig, ProxyServer, SignedRegisterVerifier
from sipsec_proxy.server import make_locator
from sipsec_worker.config import WorkerConfig
from sipsec_worker.server import WorkerServer

from sipsec_cli.plan import PLAN, Endpoints, TopologyPlan
from sipsec_cli.up.tls import Pki, make_pki

__all__ = [
    "DEFAULT_HOSTS",
    "DEFAULT_USERS",
    "PARTS",
    "DomainStack",
    "RemoteDomain",
    "ServiceStack",
    "SignedRegisterVerifier",
    "TopologyError",
    "TwoDomainTopology",
    "pick_ports",
]

log = logging.getLogger("sipsec.topology")

#: The domains of the embedded topology and the loopback address each one's SIP lives on (:data:`~sipsec_cli.plan.PLAN`).
DEFAULT_HOSTS: Mapping[str, str] = PLAN.hosts
#: The users provisioned in the PKGs at start.
DEFAULT_USERS: tuple[str, ...] = PLAN.aors
_START_ATTEMPTS = 3
#: What of a domain one topology object runs (``parts``): everything, its services (PKG,
#: location, proxy) without its gateway, or its gateway alone (the services run elsewhere).
PARTS: tuple[str, ...] = ("all", "services", "gateway")


class TopologyError(Exception):
    """The topology could not start, or a user could not be provisioned or logged in."""


@dataclass
class ServiceStack:
    """The running services of one domain: PKG, location service and proxy."""

    name: str
    host: str
    init: DomainInit = field(repr=False)
    pkg: PkgNode
    location: LocationServer
    proxy: ProxyServer
    tap: WireTap | None
    verifier: SignedRegisterVerifier

    @property
    def proxy_address(self) -> tuple[str, int]:
        host, port = self.proxy.udp_address
        return str(host), int(port)


@dataclass
class DomainStack(ServiceStack):
    """The running services of one domain and its UA gateway."""

    gateway: Gateway


@dataclass(frozen=True)
class RemoteDomain:
    """A domain of the topology whose services run in another process: what this side needs to reach it
    (its public parameters, its PKG's federation fingerprint, and the loopback ports of its PKG and proxy)."""

    params: DomainParams
    fingerprint: str
    pkg_port: int
    proxy_port: int


def _free_port(host: str, kind: int) -> int:
    return spare_port(host, tcp=kind == socket.SOCK_STREAM, udp=kind == socket.SOCK_DGRAM)


def pick_ports(host: str) -> tuple[int, int]:
    """Free ``(pkg, proxy)`` ports for a domain whose proxy lives on ``host`` (see ``ports``)."""
    return _free_port("127.0.0.1", socket.SOCK_STREAM), _free_port(host, socket.SOCK_DGRAM)


class TwoDomainTopology:
    """atlanta.com and biloxi.com in this process; ``await start()`` / ``await stop()`` or ``async with``.

    ``plan``: the domains and their wiring (default :data:`~sipsec_cli.plan.PLAN`); ``hosts``
    replaces its domains and addresses. ``users``: AORs provisioned at start, all with ``password`` (random when None; see
    :attr:`password`). ``trace_calls``: how many recent calls each gateway traces (0 for
    benchmarks). ``tap``: record what the proxies receive. ``signing``: the gateways' signing
    policy. ``materials``: pre-made domain key material (tests reuse it across topologies).
    ``threaded_crypto``: the gateways run pairings on a thread pool instead of inline on the
    event loop (the pairing library releases the GIL for part of each operation).
    ``verify_window_s``: how long an in-process verification waits under load to be batched,
    ``verify_busy_cpu``: how busy the process must be for it to wait
    (:class:`~sipsec.engine.InProcessEngine`). ``workers``: > 0 starts one crypto-worker in
    this process with that many pool processes, and the gateways use it
    (:class:`~sipsec.engine.RemoteEngine`, plaintext gRPC on loopback) instead of in-process crypto. ``engine_factory``: wraps each domain's gateway
    engine (called with the domain and the engine the topology made), e.g. to count operations.

    ``remote``: domains of ``hosts`` whose services run in another process (e.g. a second
    topology object there, which owns them); this side starts only the others, and reaches the
    remote ones' PKG and proxy on the given ports. ``ports``: fixed ``(pkg, proxy)`` ports for
    local domains (so another process can be told them before this one starts); free ones are
    picked otherwise. :meth:`public` gives what the other process needs about a local domain.
    ``parts``: per domain, what this side runs of it (:data:`PARTS`; ``"all"`` when not named):
    ``"services"`` starts a local domain's PKG, location service and proxy but no gateway;
    ``"gateway"`` starts only the gateway of a ``remote`` domain, against that domain's PKG and
    proxy in the other process. The benchmark splits the topology into processes this way
    (one per domain, or a domain's services and its gateway apart), so that it uses both cores.
    """

    def __init__(
        self,
        *,
        plan: TopologyPlan = PLAN,
        hosts: Mapping[str, str] | None = None,
        users: Sequence[str] | None = None,
        password: str | None = None,
        trace_calls: int = 200,
        tap: bool = True,
        signing: str = "every-message",
        call_timeout_s: float = 10.0,
        materials: Mapping[str, DomainInit] | None = None,
        gateway_overrides: Mapping[str, Any] | None = None,
        threaded_crypto: bool = False,
        engine_factory: Callable[[str, CryptoEngine], CryptoEngine] | None = None,
        workers: int = 0,
        remote: Mapping[str, RemoteDomain] | None = None,
        ports: Mapping[str, tuple[int, int]] | None = None,
        verify_window_s: float = DEFAULT_BATCH_WINDOW_S,
        verify_busy_cpu: float = DEFAULT_BUSY_CPU,
        parts: Mapping[str, str] | None = None,
        tls_dir: Path | None = None,
    ) -> None:
        if hosts is not None:
            if len(hosts) < 2:
                raise TopologyError("the topology needs at least two domains")
            plan = plan.with_hosts(hosts)
        self.plan = plan
        self.hosts = plan.hosts
        self.remote = {d.lower(): r for d, r in (remote or {}).items()}
        self.parts = {d.lower(): p for d, p in (parts or {}).items()}
        for name, part in self.parts.items():
            if name not in self.hosts or part not in PARTS:
                raise TopologyError(f"parts: {name}={part!r}: the domain must be one of the topology's, "
                                    f"the part one of {', '.join(PARTS)}")
            if (part == "gateway") != (name in self.remote):
                raise TopologyError(f"parts: {name}: a domain whose gateway alone runs here must be remote, "
                                    "and a remote domain can have only its gateway here")
        if not set(self.remote) <= set(self.hosts) or (set(self.remote) == set(self.hosts)
                                                        and "gateway" not in self.parts.values()):
            raise TopologyError("remote domains must be some, not all, of the topology's domains "
                                "(unless this side runs a remote domain's gateway)")
        self.ports = {d.lower(): p for d, p in (ports or {}).items()}
        if tls_dir is not None and self.remote:
            raise TopologyError("tls_dir: TLS between gateways and proxies needs every domain in this process")
        self.tls_dir = tls_dir
        self.pki: Pki | None = None
        self.tls_ports: dict[str, int] = {}
        self.verify_window_s = verify_window_s
        self.verify_busy_cpu = verify_busy_cpu
        self.users = [str(canonical_aor(u)) for u in (plan.aors if users is None else users)]
        self.password = password if password is not None else secrets.token_urlsafe(18)
        self.trace_calls = trace_calls
        self.tap = tap
        self.signing = signing
        self.call_timeout_s = call_timeout_s
        self.materials: dict[str, DomainInit] = dict(materials or {})
        self.gateway_overrides = dict(gateway_overrides or {})
        self.threaded_crypto = threaded_crypto
        self.engine_factory = engine_factory
        if workers < 0:
            raise TopologyError("workers must not be negative")
        self.workers = workers
        self.worker: WorkerServer | None = None
        self.domains: dict[str, DomainStack] = {}  # local domains with their gateway
        self.services: dict[str, ServiceStack] = {}  # all local domains
        self.gateways: dict[str, Gateway] = {}  # every gateway this side runs, by domain
        self._running: list[tuple[int, str, Callable[[], Awaitable[None]]]] = []
        self._started = False

    # -- access -----------------------------------------------------------------------------------

    def __getitem__(self, domain: str) -> DomainStack:
        return self.domains[domain.lower()]

    @property
    def atlanta(self) -> DomainStack:
        """atlanta.com's stack (with the default hosts)."""
        return self.domains["atlanta.com"]

    @property
    def biloxi(self) -> DomainStack:
        """biloxi.com's stack (with the default hosts)."""
        return self.domains["biloxi.com"]

    @staticmethod
    def _domain_name(aor: str) -> str:
        try:
            return str(canonical_aor(aor)).split("@", 1)[1]
        except IbcError:
            raise TopologyError(f"{aor!r} is not a SIP address of record") from None

    def domain_of(self, aor: str) -> DomainStack:
        name = self._domain_name(aor)
        if name not in self.domains:
            raise TopologyError(f"{aor} is in no domain of this topology")
        return self.domains[name]

    def gateway_for(self, aor: str) -> Gateway:
        """The gateway of ``aor``'s domain, if this side runs it."""
        name = self._domain_name(aor)
        if name not in self.gateways:
            raise TopologyError(f"{aor} is in no domain whose gateway runs here")
        return self.gateways[name]

    @property
    def local(self) -> list[str]:
        """The domains whose services run in this process."""
        return [n for n in self.hosts if n not in self.remote]

    def public(self, domain: str) -> RemoteDomain:
        """What another process needs to reach the running local ``domain`` (see ``remote``)."""
        stack = self.services[domain.lower()]
        return RemoteDomain(stack.init.params, stack.init.signed.fingerprint, stack.pkg.port,
                            stack.proxy_address[1])

    @property
    def taps(self) -> list[WireTap]:
        return [d.tap for d in self.domains.values() if d.tap is not None]

    def clear_taps(self) -> None:
        for tap in self.taps:
            tap.clear()

    # -- lifecycle --------------------------------------------------------------------------------

    async def __aenter__(self) -> TwoDomainTopology:
        await self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.stop()

    async def start(self) -> None:
        """Start every service of both domains (ports picked on loopback; retried if one was taken)."""
        if self._started:
            return
        for name in self.local:
            if name not in self.materials:
                self.materials[name] = init_domain(name)
        last: BaseException | None = None
        for _ in range(_START_ATTEMPTS):
            try:
                await self._start_once()
            except OSError as exc:  # a port picked a moment ago was taken meanwhile: try others
                last = exc
                await self.stop()
                continue
            except BaseException:
                await self.stop()
                raise
            self._started = True
            return
        raise TopologyError(f"could not bind the topology's ports: {last}")

    async def stop(self) -> None:
        """Stop everything, idempotent: gateways first (they hang up, unregister and log out),
        then the crypto-worker, proxies, location services, the PKGs' federation channels, and the PKGs."""
        running, self._running = sorted(self._running, key=lambda r: r[0]), []
        for _, what, stop in running:
            try:
                await stop()
            except Exception:  # noqa: BLE001 - stopping: report, go on with the rest
                log.warning("could not stop %s cleanly", what, exc_info=True)
        self.domains.clear()
        self.services.clear()
        self.gateways.clear()
        self.worker = None
        self._started = False

    def _on_stop(self, rank: int, what: str, stop: Callable[[], Awaitable[None]]) -> None:
        self._running.append((rank, what, stop))

    async def _start_once(self) -> None:
        names = list(self.hosts)
        pkg_ports = {n: self.remote[n].pkg_port if n in self.remote
                     else self.ports[n][0] if n in self.ports
                     else _free_port("127.0.0.1", socket.SOCK_STREAM) for n in names}
        proxy_ports = {n: self.remote[n].proxy_port if n in self.remote
                       else self.ports[n][1] if n in self.ports
                       else _free_port(self.hosts[n], socket.SOCK_DGRAM) for n in names}
        trusted = {n: self.remote[n].params if n in self.remote else self.materials[n].params for n in names}
        fingerprints = {n: self.remote[n].fingerprint if n in self.remote else self.materials[n].signed.fingerprint
                        for n in names}
        endpoints = {n: Endpoints(f"127.0.0.1:{pkg_ports[n]}", f"{self.hosts[n]}:{proxy_ports[n]}", fingerprints[n])
                     for n in names}
        route_transport = ""
        if self.tls_dir is not None:  # SIP over TLS on the gateway-proxy and proxy-proxy legs
            self.tls_ports = {n: _free_port(self.hosts[n], socket.SOCK_STREAM) for n in names}
            self.pki = make_pki(self.tls_dir, {f"{role}-{n}": [self.hosts[n]]
                                               for n in names for role in ("proxy", "gateway")})
            endpoints = {n: Endpoints(e.pkg, f"{self.hosts[n]}:{self.tls_ports[n]}", e.fingerprint)
                         for n, e in endpoints.items()}
            route_transport = "tls"
        worker_target = ""
        if self.workers > 0:
            self.worker = WorkerServer(WorkerConfig(listen="127.0.0.1:0", processes=self.workers,
                                                    metrics_port=-1, plaintext=True, drain_seconds=0))
            await self.worker.start()
            self._on_stop(1, "the crypto-worker", functools.partial(self.worker.stop, 0))
            worker_target = f"127.0.0.1:{self.worker.port}"
        for name in self.local:
            host = self.hosts[name]
            init = self.materials[name]
            peers = {p.domain: PkgPeer(p.domain, p.endpoint, p.fingerprint)
                     for p in self.plan.pkg_peers(name, endpoints)}
            pkg = PkgNode.in_memory(init.material(), listen=f"127.0.0.1:{pkg_ports[name]}", peers=peers,
                                    peer_plaintext=True, fed_timeout_s=2.0)
            await pkg.start()
            self._on_stop(5, f"the {name} PKG", functools.partial(pkg.stop, 0))
            self._on_stop(4, f"the {name} PKG's federation channels", pkg.fetcher.close)
            for aor in self.users:
                if aor.endswith("@" + name):
                    await pkg.add_user(aor, self.password)

            location = LocationServer(LocationConfig(listen="127.0.0.1:0", metrics_port=-1))
            await location.start()
            self._on_stop(3, f"the {name} location service", functools.partial(location.stop, 0))

            proxy_values: dict[str, Any] = {
                "domains": name, "listen": f"{host}:{proxy_ports[name]}",
                "location": f"127.0.0.1:{location.port}",
                "routes": self.plan.routes(name, endpoints, transport=route_transport),
                "metrics_port": -1, "drain_seconds": 0, "rate_limit": 0, **dict(self.plan.proxy_settings)}
            if self.pki is not None:
                files = self.pki[f"proxy-{name}"]
                proxy_values.update(tls_listen=f"{host}:{self.tls_ports[name]}", tls_cert=str(files.cert),
                                    tls_key=str(files.key), tls_ca=str(self.pki.ca))
            pconfig = ProxyConfig(**proxy_values)
            verifier = SignedRegisterVerifier(trusted)
            proxy = ProxyServer(pconfig, make_locator(pconfig), verifier=verifier)
            await proxy.start()
            self._on_stop(2, f"the {name} proxy", functools.partial(proxy.stop, 0))
            tap = WireTap(proxy.queue) if self.tap else None
            services = ServiceStack(name, host, init, pkg, location, proxy, tap, verifier)
            self.services[name] = services
            if self.parts.get(name, "all") == "all":
                gateway = await self._start_gateway(name, pkg_ports, proxy_ports, fingerprints, worker_target)
                self.domains[name] = DomainStack(**vars(services), gateway=gateway)
        for name in self.remote:
            if self.parts.get(name) == "gateway":
                await self._start_gateway(name, pkg_ports, proxy_ports, fingerprints, worker_target)
        log.info("two-domain topology up: %s", ", ".join(
            f"{n} on {self.hosts[n]} ({self.parts.get(n, 'all')})" for n in self.hosts
            if n in self.services or n in self.gateways))

    async def _start_gateway(self, name: str, pkg_ports: Mapping[str, int], proxy_ports: Mapping[str, int],
                             fingerprints: Mapping[str, str], worker_target: str) -> Gateway:
        """Start ``name``'s UA gateway against its PKG and proxy (here or in another process)."""
        host = self.hosts[name]
        values: dict[str, Any] = {
            "domain": name, "sip_listen": f"{host}:0", "proxy": f"{host}:{proxy_ports[name]}",
            "pkg": f"127.0.0.1:{pkg_ports[name]}", "pkg_plaintext": True,
            "pkg_fingerprint": fingerprints[name],
            "peer_domains": self.plan.peer_domains(name),
            "call_timeout_s": self.call_timeout_s, "drain_seconds": 0.5, "register_expires": 3600,
            "trace_calls": self.trace_calls, "signing": self.signing,
            "default_policy": SecurityPolicy.PREFER_SECURE.value,
        }
        if self.pki is not None:
            files = self.pki[f"gateway-{name}"]
            values.update(transport="tls", proxy=f"{host}:{self.tls_ports[name]}", tls_cert=str(files.cert),
                          tls_key=str(files.key), tls_ca=str(self.pki.ca))
        values.update(self.gateway_overrides)
        config = GatewayConfig(**values)
        engine: CryptoEngine = (RemoteEngine([worker_target], plaintext=True, local_sign=config.workers_local_sign)
                                if worker_target else InProcessEngine(threaded=self.threaded_crypto,
                                                     batch_window_s=self.verify_window_s,
                                                     busy_cpu=self.verify_busy_cpu))
        if self.engine_factory is not None:
            engine = self.engine_factory(name, engine)
        gateway = Gateway(config, engine=engine)
        await gateway.start()
        self._on_stop(0, f"the {name} gateway", functools.partial(gateway.stop, 0.5))
        self.gateways[name] = gateway
        return gateway

    # -- users ------------------------------------------------------------------------------------

    async def provision(self, aor: str, password: str | None = None) -> None:
        """Add a user to its domain's PKG (with the topology's password when None)."""
        stack = self.services.get(self._domain_name(aor))
        if stack is None:
            raise TopologyError(f"{aor}: this side runs no PKG of its domain")
        await stack.pkg.add_user(str(canonical_aor(aor)), password or self.password)

    async def login(
        self,
        aor: str,
        *,
        password: str | None = None,
        auto_answer: bool = False,
        hold_s: float | None = None,
        policy: SecurityPolicy | str | None = None,
        timeout_s: float = 15.0,
    ) -> UserSettings:
        """Log ``aor`` in on its domain's gateway (PKG login, keys, signed REGISTER)."""
        gateway = self.gateway_for(aor)
        try:
            return await asyncio.wait_for(
                gateway.login(aor, password or self.password, policy=policy, auto_answer=auto_answer,
                              hold_s=hold_s),
                timeout_s)
        except TimeoutError:
            raise TopologyError(f"logging {aor} in took longer than {timeout_s:g} s") from None
        except GatewayError as exc:
            raise TopologyError(f"logging {aor} in failed: {exc.status} {exc.message}") from None
