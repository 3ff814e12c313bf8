"""The two-domain topology as data: domains, their addresses and users, peers and routes.

One description, from which every two-domain wiring derives: the in-process topology of
``sipsec demo`` (:mod:`sipsec_cli.topology`), ``sipsec up``'s process plan
(:mod:`sipsec_cli.up`), the call benchmark (``bench/call_setup.py``) and the tests' harness.
What it says, and nothing about how the services are run:

* the provider domains (RFC 3665's atlanta.com and biloxi.com), each on its own loopback
  address, with the users its PKG provisions (:class:`DomainPlan`);
* the services each domain runs (:data:`DOMAIN_SERVICES`) and the shared ones
  (:data:`SHARED_SERVICES`, on :attr:`TopologyPlan.shared_host`);
* once addresses are known (:class:`Endpoints`): each PKG's federation peers (the other
  domains' PKGs, pinned by fingerprint), each proxy's routes to the other domains' proxies
  (RFC 3263 would find them in DNS; here they are configured), and each gateway's peer domains.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

__all__ = [
    "DOMAIN_SERVICES",
    "PLAN",
    "SHARED_SERVICES",
    "DomainPlan",
    "Endpoints",
    "PeerLink",
    "TopologyPlan",
]

#: The services every domain runs, in start order.
DOMAIN_SERVICES: tuple[str, ...] = ("pkg", "location", "proxy", "gateway")
#: The services one instance of which serves every domain (on the shared host).
SHARED_SERVICES: tuple[str, ...] = ("worker",)


@dataclass(frozen=True)
class DomainPlan:
    """A provider domain: its name, the loopback address its SIP (and, in ``sipsec up``, its
    services) lives on, and the user parts of the AORs its PKG provisions."""

    name: str
    host: str
    users: tuple[str, ...]

    def aor(self, user: str) -> str:
        """``sip:user@domain`` (RFC 3261 §19.1.1)."""
        return f"sip:{user}@{self.name}"

    @property
    def aors(self) -> tuple[str, ...]:
        return tuple(self.aor(u) for u in self.users)


@dataclass(frozen=True)
class PeerLink:
    """A PKG federation peer: the peer domain, its PKG's gRPC endpoint and the Ed25519
    fingerprint of its signed parameters, which the other side pins."""

    domain: str
    endpoint: str
    fingerprint: str


@dataclass(frozen=True)
class Endpoints:
    """Where a running domain is reached: its PKG's gRPC ``host:port``, its proxy's SIP
    ``host:port`` and its PKG's federation fingerprint (empty when not known yet)."""

    pkg: str
    proxy: str
    fingerprint: str = ""


@dataclass(frozen=True)
class TopologyPlan:
    """The provider domains of a topology and how they are wired to each other.

    ``proxy_settings``: extra settings every domain's proxy gets (``ProxyConfig`` field name ->
    value; ``sipsec up`` passes them as ``SIPSEC_PROXY_<FIELD>``), for wirings that need more
    than routes.
    """

    domains: tuple[DomainPlan, ...]
    shared_host: str = "127.0.0.1"
    proxy_settings: tuple[tuple[str, str | int | float | bool], ...] = field(default=())

    def __post_init__(self) -> None:
        names = [d.name for d in self.domains]
        if len(names) < 2 or len(set(names)) != len(names):
            raise ValueError("a topology needs at least two distinct domains")

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(d.name for d in self.domains)

    @property
    def hosts(self) -> dict[str, str]:
        """Domain -> the loopback address its SIP lives on."""
        return {d.name: d.host for d in self.domains}

    @property
    def aors(self) -> tuple[str, ...]:
        """Every provisioned user's AOR, domain by domain."""
        return tuple(a for d in self.domains for a in d.aors)

    @property
    def caller(self) -> str:
        """The first domain's first user (alice@atlanta.com): who places the demo's calls."""
        return self.domains[0].aors[0]

    @property
    def callee(self) -> str:
        """The second domain's first user (bob@biloxi.com): who answers them."""
        return self.domains[1].aors[0]

    def domain(self, name: str) -> DomainPlan:
        for d in self.domains:
            if d.name == name.lower():
                return d
        raise KeyError(name)

    def peers(self, name: str) -> tuple[DomainPlan, ...]:
        """The other domains, as ``name`` sees them."""
        return tuple(d for d in self.domains if d.name != name.lower())

    def peer_domains(self, name: str) -> str:
        """The gateway setting: the other domains, comma-separated."""
        return ",".join(d.name for d in self.peers(name))

    def pkg_peers(self, name: str, endpoints: Mapping[str, Endpoints]) -> tuple[PeerLink, ...]:
        """``name``'s PKG federation peers: every other domain with a known endpoint."""
        return tuple(PeerLink(d.name, endpoints[d.name].pkg, endpoints[d.name].fingerprint)
                     for d in self.peers(name) if d.name in endpoints)

    def routes(self, name: str, endpoints: Mapping[str, Endpoints], transport: str = "") -> str:
        """``name``'s proxy routes (``domain=host:port[;transport=t],...``): each other domain's
        requests go to that domain's proxy."""
        suffix = f";transport={transport}" if transport else ""
        return ",".join(f"{d.name}={endpoints[d.name].proxy}{suffix}"
                        for d in self.peers(name) if d.name in endpoints)

    def with_hosts(self, hosts: Mapping[str, str]) -> TopologyPlan:
        """The same users on other domains/addresses: ``hosts`` maps domain -> address
        (users are kept for domains of this plan, none for new ones)."""
        known = {d.name: d.users for d in self.domains}
        return TopologyPlan(tuple(DomainPlan(n.lower(), h, known.get(n.lower(), ())) for n, h in hosts.items()),
                            self.shared_host, self.proxy_settings)


#: The topology of RFC 3665 and the thesis: alice@atlanta.com on 127.0.0.2, bob@biloxi.com on 127.0.0.3.
PLAN = TopologyPlan((
    DomainPlan("atlanta.com", "127.0.0.2", ("alice",)),
    DomainPlan("biloxi.com", "127.0.0.3", ("bob",)),
))
