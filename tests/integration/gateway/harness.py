"""Two sipsec domains on loopback for the gateway tests: real PKG, location, proxy and gateway per domain.

atlanta.com lives on 127.0.0.2 and biloxi.com on 127.0.0.3 (SIP); PKG and location speak
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
from sipsec_gateway.api import create_app
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
HOSTS = {"atlanta.com": "127.0.0.2", "biloxi.com": "127.0.0.3"}

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
                    node_index: int | None = None) -> PkgNode:
    init = init or material(name)
    chosen = init.material() if node_index is None else init.material(node_index)
    node = PkgNode.in_memory(chosen, listen=f"127.0.0.1:{port}", peers=peers,
                             peer_plaintext=True, scrypt=FAST_SCRYPT, fed_timeout_s=2.0)
    await node.start()
    for user in ("alice", "bob", "carol", "dave"):
        await node.add_user(f"sip:{user}@{name}", PASSWORD)
    return node


def gateway_config(name: str, pkg_port: int, proxy_port: int, **overrides: Any) -> GatewayConfig:
    host = HOSTS[name]
    other = [d for d in HOSTS if d != name]
    values: dict[str, Any] = {
        "domain": name, "sip_listen": f"{host}:0", "plain_listen": f"{host}:0",
        "proxy": f"{host}:{proxy_port}", "pkg": f"127.0.0.1:{pkg_port}", "pkg_plaintext": True,
        "peer_domains": ",".join(other), "call_timeout_s": 10.0, "drain_seconds": 0.5,
        "register_expires": 600,
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
    gateway = Gateway(config, **kwargs)
    await gateway.start()
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(gateway)),
                               base_url="http://gateway", timeout=30.0)
    return gateway, client


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
    ) -> None:
        """``gateway_overrides`` / ``gateway_kwargs``: per domain, GatewayConfig fields and
        extra ``Gateway(...)`` arguments (e.g. an engine)."""
        self.tcp = tcp  # gateways <-> proxies over TCP (the proxies also listen on TCP)
        self.threshold = dict(threshold or {})  # domain -> (t, n, indexes of nodes left down)
        self.redis_url = redis_url
        self.overrides = {k: dict(v) for k, v in (gateway_overrides or {}).items()}
        self.kwargs = {k: dict(v) for k, v in (gateway_kwargs or {}).items()}
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
        names = list(HOSTS)
        pkg_ports = {n: free_port() for n in names}
        proxy_ports = {n: free_port_on(HOSTS[n]) for n in names}
        inits = {n: material(n, *self.threshold[n][:2]) if n in self.threshold else material(n) for n in names}
        trusted = {n: inits[n].params for n in names}
        for name in names:
            host = HOSTS[name]
            peers = {o: PkgPeer(o, f"127.0.0.1:{pkg_ports[o]}", inits[o].signed.fingerprint)
                     for o in names if o != name}
            pkg_targets = [f"127.0.0.1:{pkg_ports[name]}"]
            if name in self.threshold:
                _, n, down = self.threshold[name]
                nodes = [await start_pkg(name, pkg_ports[name], peers, inits[name], 1)]
                for i in range(2, n + 1):
                    port = free_port()
                    pkg_targets.append(f"127.0.0.1:{port}")
                    if i not in down:
                        nodes.append(await start_pkg(name, port, peers, inits[name], i))
                for node in nodes:
                    self._stack.push_async_callback(node.stop, 0)
                pkg = nodes[0]
            else:
                pkg = await start_pkg(name, pkg_ports[name], peers)
                self._stack.push_async_callback(pkg.stop, 0)
            location = LocationServer(LocationConfig(listen="127.0.0.1:0", metrics_port=-1))
            await location.start()
            self._stack.push_async_callback(location.stop, 0)
            routes = ",".join(f"{o}={HOSTS[o]}:{proxy_ports[o]}" for o in names if o != name)
            tcp_port = free_port(host) if self.tcp else 0
            pconfig = ProxyConfig(domains=name, listen=f"{host}:{proxy_ports[name]}",
                                  tcp_listen=f"{host}:{tcp_port}" if self.tcp else "",
                                  location=f"127.0.0.1:{location.port}", routes=routes,
                                  metrics_port=-1, drain_seconds=0, rate_limit=0)
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
            overrides: dict[str, Any] = {"pkg": ",".join(pkg_targets)}
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
