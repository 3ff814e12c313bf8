"""Two sipsec domains on loopback for the gateway tests: real PKG, location, proxy and gateway per domain.

The domains, their addresses, PKG federation peers, proxy routes and gateway peer domains come
from the one topology description, :data:`sipsec_cli.plan.PLAN` (atlanta.com lives on
127.0.0.2 and biloxi.com on 127.0.0.3, for SIP); PKG and location speak
gRPC on 127.0.0.1 port 0 (PKG ports are picked first: each PKG pins the other as a
federation peer). The proxies verify signed REGISTERs with :class:`SignedRegisterVerifier`
(the PKG-backed verifier the proxy's ``RegisterVerifier`` hook expects) and refuse unsigned
ones (digest with no users). Every proxy's inbound traffic is recorded by a ``WireTap``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx
from sipsec.stores.envelope import (
    RedisDialogStore,
    RedisReplayCache,
)
from sipsec_cli.plan import PLAN, Endpoints
from sipsec_gateway.api import ApiTokens, create_app
from sipsec_gateway.config import GatewayConfig
from sipsec_gateway.gateway import Gateway
from sipsec_gateway.store import RedisCallStore
from sipsec_gateway.trace import WireTap
from sipsec_location import LocationConfig, LocationServer
from sipsec_pkg.config import Peer as PkgPeer
from sipsec_pkg.material import DomainInit, init_domain
from sipsec_pkg.node import PkgNode
from sipsec_pkg.passwords import ScryptParams
from sipsec_proxy import ProxyConfig, ProxyServer, SignedRegisterVerifier
from sipsec_proxy.server import make_locator

from tests.conftest import free_port
from tests.sipp import free_port_on

FAST_SCRYPT = ScryptParams(n=16, r=1, p=1)
PASSWORD = "correct horse battery staple"
HOSTS = PLAN.hosts
#: Users every PKG of the harness provisions (more than the plan's: the tests call around).
USERS = ("alice", "bob", "carol", "dave")

_MATERIAL: dict[tuple[str, int, int], DomainInit] = {}


def material(domain: str, threshold: int = 1, nodes: int = 1) -> DomainInit:
    """Domain key material (t-of-n shares when ``nodes`` > 1), generated once per test session."""
    key = (domain, threshold, nodes)
    if key not in _MATERIAL:
        _MATERIAL[key] = init_domain(domain, threshold=threshold, nodes=nodes) if nodes > 1 else init_domain(domain)
    return _MATERIAL[key]


@dataclass
class Domain:
    name: str
    host: str
    pkg: PkgNode
    location: LocationServer
    proxy: ProxyServer
    gateway: Gateway
    client: httpx.AsyncClient
    tap: WireTap
    extra: list[Any] = field(default_factory=list)

    @property
    def proxy_port(self) -> int:
        return self.proxy.udp_address[1]


async def start_pkg(name: str, port: int, peers: dict[str, PkgPeer], init: DomainInit | None = None,
                    node_index: int | None = None, **overrides: Any) -> PkgNode:
    init = init or material(name)
    chosen = init.material() if node_index is None else init.material(node_index)
    node = PkgNode.in_memory(chosen, listen=f"127.0.0.1:{port}", peers=peers,
                             peer_plaintext=True, scrypt=FAST_SCRYPT, fed_timeout_s=2.0, **overrides)
    await node.start()
    for user in USERS:
        await node.add_user(f"sip:{user}@{name}", PASSWORD)
    return node


def gateway_config(name: str, pkg_port: int, proxy_port: int, **overrides: Any) -> GatewayConfig:
    host = HOSTS[name]
    values: dict[str, Any] = {
        "domain": name, "sip_listen": f"{host}:0", "plain_listen": f"{host}:0",
        "proxy": f"{host}:{proxy_port}", "pkg": f"127.0.0.1:{pkg_port}", "pkg_plaintext": True,
        "peer_domains": PLAN.peer_domains(name), "call_timeout_s": 10.0, "drain_seconds": 0.5,
        "register_expires": 600, "trace_calls": 200,
    }
    values.update(overrides)
    return GatewayConfig(**values)


def redis_stores(redis_url: str, name: str, replica_group: str = "") -> dict[str, Any]:
    """Gateway stores in Redis; one key prefix per domain (replicas of one domain share it)."""
    prefix = f"sipsec:{name}{replica_group}:"
    return {
        "dialog_store": RedisDialogStore.from_url(redis_url, prefix=prefix + "envelope:"),
        "replay_cache": RedisReplayCache.from_url(redis_url, prefix=prefix + "envelope:"),
        "call_store": RedisCallStore.from_url(redis_url, prefix=prefix + "gateway:"),
    }


async def start_gateway(config: GatewayConfig, **kwargs: Any) -> tuple[Gateway, httpx.AsyncClient]:
    """A started gateway and a client of its control API holding a token of every scope (the
    app's :class:`ApiTokens` is ``api_tokens(client)``: tests issue narrower tokens from it)."""
    gateway = Gateway(config, **kwargs)
    await gateway.start()
    tokens = ApiTokens()
    admin = tokens.issue("tests")
    app = create_app(gateway, tokens)
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                               base_url="http://gateway", timeout=30.0,
                               headers={"Authorization": f"Bearer {admin}"})
    _APPS[id(client)] = (app, tokens)
    return gateway, client


_APPS: dict[int, tuple[Any, ApiTokens]] = {}


def api_tokens(client: httpx.AsyncClient) -> ApiTokens:
    """The tokens the control API behind ``client`` (made by :func:`start_gateway`) accepts."""
    return _APPS[id(client)][1]


def api_app(client: httpx.AsyncClient) -> Any:
    """The control API application behind ``client`` (for clients of other tokens or addresses)."""
    return _APPS[id(client)][0]


class TwoDomains:
    """atlanta.com and biloxi.com, each with PKG, location, proxy and gateway (``async with``)."""

    def __init__(
        self,
        *,
        redis_url: str | None = None,
        gateway_overrides: Mapping[str, Mapping[str, Any]] | None = None,
        gateway_kwargs: Mapping[str, Mapping[str, Any]] | None = None,
        threshold: Mapping[str, tuple[int, int, frozenset[int]]] | None = None,
        tcp: bool = False,
        pkg_overrides: Mapping[str, Any] | None = None,
        proxy_overrides: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> None:
        """``gateway_overrides`` / ``gateway_kwargs``: per domain, GatewayConfig fields and
        extra ``Gateway(...)`` arguments (e.g. an engine); ``proxy_overrides``: per domain,
        ProxyConfig fields (e.g. ``routes`` and ``peers`` through a middle proxy)."""
        self.tcp = tcp  # gateways <-> proxies over TCP (the proxies also listen on TCP)
        self.pkg_overrides = dict(pkg_overrides or {})  # PkgConfig fields of every PKG node
        self.threshold = dict(threshold or {})  # domain -> (t, n, indexes of nodes left down)
        self.redis_url = redis_url
        self.overrides = {k: dict(v) for k, v in (gateway_overrides or {}).items()}
        self.kwargs = {k: dict(v) for k, v in (gateway_kwargs or {}).items()}
        self.proxy_overrides = {k: dict(v) for k, v in (proxy_overrides or {}).items()}
        self.domains: dict[str, Domain] = {}
        self.pkg_ports: dict[str, int] = {}
        self._stack = contextlib.AsyncExitStack()

    def __getitem__(self, name: str) -> Domain:
        return self.domains[name]

    @property
    def atlanta(self) -> Domain:
        return self.domains["atlanta.com"]

    @property
    def biloxi(self) -> Domain:
        return self.domains["biloxi.com"]

    async def __aenter__(self) -> TwoDomains:
        try:
            await self._start()
        except BaseException:
            await self._stack.aclose()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._stack.aclose()

    async def _start(self) -> None:
        names = list(PLAN.names)
        pkg_ports = {n: free_port() for n in names}
        proxy_ports = {n: free_port_on(HOSTS[n]) for n in names}
        inits = {n: material(n, *self.threshold[n][:2]) if n in self.threshold else material(n) for n in names}
        trusted = {n: inits[n].params for n in names}
        endpoints = {n: Endpoints(f"127.0.0.1:{pkg_ports[n]}", f"{HOSTS[n]}:{proxy_ports[n]}",
                                  inits[n].signed.fingerprint) for n in names}
        for name in names:
            host = HOSTS[name]
            peers = {p.domain: PkgPeer(p.domain, p.endpoint, p.fingerprint)
                     for p in PLAN.pkg_peers(name, endpoints)}
            pkg_targets = [f"127.0.0.1:{pkg_ports[name]}"]
            if name in self.threshold:
                _, n, down = self.threshold[name]
                nodes = [await start_pkg(name, pkg_ports[name], peers, inits[name], 1, **self.pkg_overrides)]
                for i in range(2, n + 1):
                    port = free_port()
                    pkg_targets.append(f"127.0.0.1:{port}")
                    if i not in down:
                        nodes.append(await start_pkg(name, port, peers, inits[name], i, **self.pkg_overrides))
                for node in nodes:
                    self._stack.push_async_callback(node.stop, 0)
                pkg = nodes[0]
            else:
                pkg = await start_pkg(name, pkg_ports[name], peers, **self.pkg_overrides)
                self._stack.push_async_callback(pkg.stop, 0)
            location = LocationServer(LocationConfig(listen="127.0.0.1:0", metrics_port=-1))
            await location.start()
            self._stack.push_async_callback(location.stop, 0)
            tcp_port = free_port(host) if self.tcp else 0
            pconfig = ProxyConfig(**{
                "domains": name, "listen": f"{host}:{proxy_ports[name]}",
                "tcp_listen": f"{host}:{tcp_port}" if self.tcp else "",
                "location": f"127.0.0.1:{location.port}", "routes": PLAN.routes(name, endpoints),
                "metrics_port": -1, "drain_seconds": 0, "rate_limit": 0, **dict(PLAN.proxy_settings),
                **self.proxy_overrides.get(name, {})})
            proxy = ProxyServer(pconfig, make_locator(pconfig), verifier=SignedRegisterVerifier(trusted))
            await proxy.start()
            self._stack.push_async_callback(proxy.stop, 0)
            tap = WireTap(proxy.queue)
            kwargs: dict[str, Any] = {}
            if self.redis_url:
                kwargs = redis_stores(self.redis_url, name)
                for store in kwargs.values():
                    self._stack.push_async_callback(store.aclose)
            kwargs.update(self.kwargs.get(name, {}))
            overrides: dict[str, Any] = {"pkg": ",".join(pkg_targets),
                                         "pkg_fingerprint": inits[name].signed.fingerprint}  # the real pin
            if self.tcp:
                overrides.update(transport="tcp", proxy=f"{host}:{tcp_port}")
            overrides.update(self.overrides.get(name, {}))
            config = gateway_config(name, pkg_ports[name], proxy_ports[name], **overrides)
            gateway, client = await start_gateway(config, **kwargs)
            self._stack.push_async_callback(gateway.stop, 0)
            self._stack.push_async_callback(client.aclose)
            self.domains[name] = Domain(name, host, pkg, location, proxy, gateway, client, tap)
            self.pkg_ports[name] = pkg_ports[name]

    def push(self, callback: Any, *args: Any) -> None:
        self._stack.push_async_callback(callback, *args)


async def login(domain: Domain, user: str, **options: Any) -> dict[str, Any]:
    response = await domain.client.post("/v1/users", json={
        "aor": f"sip:{user}@{domain.name}", "password": PASSWORD, **options})
    assert response.status_code == 201, response.text
    return dict(response.json())


async def call(domain: Domain, frm: str, to: str, **options: Any) -> dict[str, Any]:
    response = await domain.client.post("/v1/calls", json={"from": frm, "to": to, **options})
    assert response.status_code == 201, response.text
    return dict(response.json())


async def wait_for(predicate: Any, timeout: float = 5.0) -> None:
    """Poll ``predicate()`` until true (asserts it became true within ``timeout`` seconds)."""
    import asyncio

    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        assert loop.time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)
