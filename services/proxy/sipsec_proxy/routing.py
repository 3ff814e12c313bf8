"""The proxy's routing decision as data: where a request may go, computed without any I/O.

RFC 3261 §16.5 (determining request targets) and §16.6 step 7 (the next hop), RFC 3263 §4
(locating a foreign domain's server), under a *policy*: the proxy is not a relay. A request
is forwarded only to

(a) a registered contact of a served domain (bindings written by the registrar); a contact
    naming a host *name* only when that name is a configured peer or route hop (the transport
    resolves it: container and cluster DNS names such as ``gateway-atlanta``),
(b) a configured peer (``SIPSEC_PROXY_PEERS``) or route-table entry (``SIPSEC_PROXY_ROUTES``),
(c) a foreign domain's server found through RFC 3263 (``SIPSEC_PROXY_DNS``), when the
    answer is a globally routable address (not loopback, link-local, private, shared,
    unspecified or multicast: a name inside the deployment resolves to those) and not one of
    the deployment's own service addresses, unless an allowed network names it.

An IP literal or ``localhost`` named by a request (Request-URI, Route, ``maddr``) is a
target only when it is a configured peer/route hop, or when it is a live binding of the
request's To or From address-of-record in a served domain: after §16.4 loose routing an
in-dialog request's Request-URI is the remote target (§12.2.1.1), the Contact of a user
agent registered here. The deployment's service addresses (this proxy, the location
service, Redis, the PKG, the DNS servers) are never a target unless configured as a peer.

:func:`decide` takes the request (after §16.4 route preprocessing), the
:class:`RoutingPolicy` and what the shell has looked up so far (:class:`Answers`) and
returns one decision: :class:`Forward`, :class:`Refuse`, :class:`Register`,
:class:`AnswerHere`, or a request for more data, :class:`NeedLocation` / :class:`NeedDns`;
the shell performs that look-up and calls :func:`decide` again with the answer.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from sipsec.aio.transport import Peer
from sipsec.config import split_hostport
from sipsec.sip import RemoteProtocolError, Request, SipURI, is_ip_literal, parse_uri
from sipsec.stores.location import InvalidBinding, canonical_aor

from sipsec_proxy.config import ProxyConfig, Route, parse_routes
from sipsec_proxy.locator import Contact

__all__ = [
    "AnswerHere", "Answers", "Decision", "Forward", "NeedDns", "NeedLocation", "PeerRule",
    "MARK_PARAM", "NO_ANSWERS", "Refuse", "Register", "RoutingPolicy", "Target", "contact_target", "decide",
    "normal_host", "parse_networks", "parse_peers", "preprocess", "upstream_hop",
]

_DEFAULT_PORT = {"UDP": 5060, "TCP": 5060, "TLS": 5061}
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


# -- decisions ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Target:
    """One copy to send: its Request-URI (§16.6 step 2) and the hop it goes to."""

    uri: Any
    hop: Peer


@dataclass(frozen=True, slots=True)
class Forward:
    """Forward to these targets (several: parallel forking, §16.6)."""

    targets: tuple[Target, ...]


@dataclass(frozen=True, slots=True)
class Refuse:
    """Answer ``status`` without sending anything on; ``counter`` is the rejection metric reason."""

    status: int
    reason: str | None
    counter: str


@dataclass(frozen=True, slots=True)
class Register:
    """A REGISTER for a served domain: the registrar's (§10.3)."""


@dataclass(frozen=True, slots=True)
class AnswerHere:
    """A request addressed to the domain or the proxy itself, not to a user (§16.5)."""


@dataclass(frozen=True, slots=True)
class NeedLocation:
    """Look these address-of-records up in the location service, then decide again."""

    aors: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class NeedDns:
    """Locate ``uri``'s server through RFC 3263, then decide again (``key``: :func:`dns_key`)."""

    uri: SipURI
    key: str


Decision = Forward | Refuse | Register | AnswerHere | NeedLocation | NeedDns


@dataclass(frozen=True, slots=True)
class Answers:
    """What the shell looked up for one request: bindings per AOR; RFC 3263 hops (or the
    failure's SIP status, 404/503) per :func:`dns_key`."""

    locations: Mapping[str, tuple[Contact, ...]] = field(default_factory=dict)
    dns: Mapping[str, tuple[Peer, ...] | int] = field(default_factory=dict)

    def with_locations(self, found: Mapping[str, tuple[Contact, ...]]) -> Answers:
        return Answers({**self.locations, **found}, self.dns)

    def with_dns(self, key: str, found: tuple[Peer, ...] | int) -> Answers:
        return Answers(self.locations, {**self.dns, key: found})


NO_ANSWERS = Answers()

FORBIDDEN = Refuse(403, "Forbidden", "forbidden-target")
NOT_FOUND = Refuse(404, None, "not-found")
NO_ROUTE = Refuse(404, "No Route", "no-route")


# -- the policy -----------------------------------------------------------------------------


@functools.lru_cache(maxsize=4096)
def normal_host(host: str) -> str:
    """Lower case, no brackets; an IP address in its canonical text (IPv4-mapped IPv6 as IPv4)."""
    host = host.strip().strip("[]").lower()
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return host
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ip)


@dataclass(frozen=True, slots=True)
class PeerRule:
    """A configured next hop the proxy trusts: ``host``, any port when ``port`` is None."""

    host: str
    port: int | None = None
    transport: str | None = None

    def matches(self, host: str, port: int) -> bool:
        return self.host == host and (self.port is None or self.port == port)


def parse_peers(text: str) -> tuple[PeerRule, ...]:
    """``'10.0.0.5:5060;transport=tcp, gw.example.com, 127.0.0.1'`` -> rules (no port: any port)."""
    rules: list[PeerRule] = []
    for item in filter(None, (p.strip() for p in text.split(","))):
        hostport, _, params = item.partition(";")
        transport = None
        if params:
            key, _, value = params.partition("=")
            if key.strip().lower() != "transport" or value.strip().upper() not in _DEFAULT_PORT:
                raise ValueError(f"peer {item!r}: only ;transport=udp|tcp|tls is allowed")
            transport = value.strip().upper()
        host, port = _peer_hostport(item, hostport.strip())
        rules.append(PeerRule(normal_host(host), port, transport))
    return tuple(rules)


def _peer_hostport(item: str, hostport: str) -> tuple[str, int | None]:
    """A peer's ``host[:port]`` (``[v6]:port``, or a bare IPv6 address) -> (host, port or None)."""
    port: int | None = None
    if not hostport:
        raise ValueError(f"peer {item!r} names no host")
    if hostport.startswith("["):
        host, _, rest = hostport[1:].partition("]")
        if rest:
            if not rest.startswith(":") or not rest[1:].isdigit():
                raise ValueError(f"peer {item!r}: bad port")
            port = int(rest[1:])
    elif hostport.count(":") == 1:
        host, _, text = hostport.partition(":")
        if not text.isdigit() or not 0 < int(text) < 65536:
            raise ValueError(f"peer {item!r}: bad port")
        port = int(text)
    else:
        host = hostport  # a name, an IPv4 address, or a bare IPv6 address: any port
    if not host:
        raise ValueError(f"peer {item!r} names no host")
    return host, port


def parse_networks(text: str) -> tuple[IPNetwork, ...]:
    """``'127.0.0.0/8, fd00::/8'`` -> networks (ValueError on a malformed one)."""
    return tuple(ipaddress.ip_network(p.strip(), strict=False) for p in text.split(",") if p.strip())


def _hostport(target: str, default_port: int) -> tuple[str, int] | None:
    """``host:port`` of a gRPC target or URL; None when it names none (memory, unix sockets)."""
    target = target.strip()
    if not target or target in ("memory", "redis"):
        return None
    if "://" in target:
        parts = urlsplit(target)
        if not parts.hostname:
            return None
        try:
            port = parts.port or default_port
        except ValueError:
            return None
        return normal_host(parts.hostname), port
    if target.startswith(("unix:", "dns:", "ipv4:", "ipv6:")):
        target = target.split(":", 1)[1].lstrip("/")
    try:
        host, port = split_hostport(target, default_port)
    except ValueError:
        return None
    return normal_host(host), port


_WILDCARD_HOSTS = ("127.0.0.1", "::1", "localhost")
_LOCAL_ALIASES = (*_WILDCARD_HOSTS, "0.0.0.0", "::")


@dataclass(frozen=True)
class RoutingPolicy:
    """Everything :func:`decide` needs besides the request; built once per proxy."""

    domains: frozenset[str]
    my_addresses: frozenset[tuple[str, int]]
    routes: Mapping[str, Route]
    transports: tuple[str, ...]
    peers: tuple[PeerRule, ...] = ()
    service_addresses: frozenset[tuple[str, int]] = frozenset()
    allow_networks: tuple[IPNetwork, ...] = ()
    dns: bool = False
    route_hops: frozenset[tuple[str, int]] = frozenset()
    trusted_hosts: frozenset[str] = frozenset()
    route_key: bytes = b""

    @classmethod
    def build(cls, config: ProxyConfig, my_addresses: Iterable[tuple[str, int]],
              transports: Iterable[str], *, dns: bool = False,
              nameservers: Iterable[tuple[str, int]] = (), route_key: bytes = b"") -> RoutingPolicy:
        """The policy of a proxy with ``config`` whose sockets are bound at ``my_addresses``."""
        routes = parse_routes(config.routes)
        peers = parse_peers(config.peers)
        mine = {(normal_host(h), p) for h, p in my_addresses}
        service: set[tuple[str, int]] = set(mine)
        for host, port in list(mine):
            if host in ("0.0.0.0", "::"):
                service.update((h, port) for h in _WILDCARD_HOSTS)
        for target, default in ((config.redis_url if config.location == "redis" else "", 6379),
                                (config.location, 50052), (config.pkg_target, 50051)):
            found = _hostport(target, default)
            if found is not None:
                service.add(found)
        if config.metrics_port > 0:
            host = normal_host(config.metrics_host)
            hosts = _WILDCARD_HOSTS if host in ("0.0.0.0", "::") else (host,)
            service.update((h, config.metrics_port) for h in hosts)
        service.update((normal_host(h), p) for h, p in nameservers)
        # a service named "localhost" (or bound to a wildcard) is reached at every loopback spelling
        for host, port in list(service):
            if host in _LOCAL_ALIASES:
                service.update((h, port) for h in _LOCAL_ALIASES)
        route_hops = frozenset((normal_host(r.host), r.port) for r in routes.values())
        trusted = frozenset({h for h, _ in route_hops} | {r.host for r in peers})
        return cls(
            domains=config.domain_set, my_addresses=frozenset(mine), routes=routes,
            transports=tuple(transports), peers=peers, service_addresses=frozenset(service),
            allow_networks=parse_networks(config.allow_networks), dns=dns, route_hops=route_hops,
            trusted_hosts=trusted, route_key=route_key,
        )

    # -- what the shell asks ------------------------------------------------------------

    def trusted_source(self, host: str) -> bool:
        """A configured peer or route hop (not rate-limited; answered statefully)."""
        return host in self.trusted_hosts  # transports report addresses in canonical text

    def is_me(self, uri: SipURI) -> bool:
        transport = (uri.params.get("transport") or "").lower()
        default = 5061 if uri.scheme == "sips" or transport == "tls" else 5060
        return (normal_host(uri.host), uri.port or default) in self.my_addresses

    def is_route_to_me(self, uri: SipURI) -> bool:
        """§16.4: a Route entry naming this proxy (its address, or a served domain without user/port)."""
        if self.is_me(uri):
            return True
        return uri.user is None and uri.port is None and uri.host.lower() in self.domains

    def configured(self, hop: Peer) -> bool:
        """A peer rule or a route-table hop names this address."""
        host = normal_host(hop.host)
        if (host, hop.port) in self.route_hops:
            return True
        return any(rule.matches(host, hop.port) for rule in self.peers)

    def service(self, hop: Peer) -> bool:
        """One of the deployment's own addresses, and no route or peer rule names exactly that
        host *and port* (a peer rule without a port does not open the services on that host)."""
        key = (normal_host(hop.host), hop.port)
        if key not in self.service_addresses or key in self.route_hops:
            return False
        return not any(rule.port is not None and rule.matches(*key) for rule in self.peers)

    def internal(self, host: str) -> bool:
        """Not a globally routable unicast address (loopback, link-local, private, shared,
        documentation, reserved, unspecified, multicast), unless in an allowed network."""
        try:
            ip = ipaddress.ip_address(normal_host(host))
        except ValueError:
            return normal_host(host) == "localhost"
        if any(ip in net for net in self.allow_networks):
            return False
        return not ip.is_global or ip.is_multicast

    def bindable(self, uri: object) -> bool:
        """A REGISTER may bind this Contact: not one of the deployment's service addresses
        (unless configured as a peer), whatever its transport or ``maddr`` says."""
        if not isinstance(uri, SipURI):
            return True  # other schemes are never a forwarding target
        host = normal_host(uri.params.get("maddr") or uri.host)
        if host == "localhost":
            host = "127.0.0.1"
        ports = {uri.port} if uri.port is not None else {5060, 5061}
        for port in ports:
            if self.service(Peer("UDP", host, port)):
                return False
        return True

    def mark(self, hop: Peer) -> str:
        """The Record-Route mark that lets an in-dialog request name ``hop`` (see :func:`decide`):
        HMAC-SHA-256 under the proxy's route key over transport, host and port, 96 bits."""
        text = f"{hop.transport}|{normal_host(hop.host)}|{hop.port}".encode()
        digest = hmac.new(self.route_key, text, hashlib.sha256).digest()[:12]
        return base64.urlsafe_b64encode(digest).decode().rstrip("=")

    def marked(self, hop: Peer, marks: Iterable[str]) -> bool:
        if not self.route_key:
            return False
        expected = self.mark(hop)
        # compare_digest raises TypeError for a non-ASCII str: a mark is network input
        return any(m.isascii() and hmac.compare_digest(expected, m) for m in marks)

    def transport_of(self, uri: SipURI) -> str:
        transport = (uri.params.get("transport") or "").upper() or ("TLS" if uri.scheme == "sips" else "UDP")
        if transport not in self.transports:
            transport = "UDP" if "UDP" in self.transports else self.transports[0]
        return transport


# -- the decision ---------------------------------------------------------------------------


#: The Record-Route URI parameter carrying the marks of the hops a dialog may name.
MARK_PARAM = "sps"


def _marks_of(uri: SipURI) -> list[str]:
    value = uri.params.get(MARK_PARAM)
    return [m for m in value.split(".") if m] if value else []


def preprocess(req: Request, policy: RoutingPolicy) -> tuple[str, ...]:
    """§16.4 route information preprocessing, in place; returns the marks our own entries carried.

    A Request-URI naming this proxy (the previous hop was a strict router) is replaced by the
    last Route entry; then every leading Route entry naming this proxy is removed (two of them
    after a double Record-Route, RFC 5658 §3)."""
    marks: list[str] = []
    uri = req.uri
    if isinstance(uri, SipURI) and uri.user is None and policy.is_me(uri):
        routes = req.route
        if routes:
            marks += _marks_of(uri)
            req.uri = routes[-1].uri
            _set_routes(req, routes[:-1])
    routes = req.route
    mine = 0
    while mine < len(routes):
        entry = routes[mine].uri
        if not isinstance(entry, SipURI) or not policy.is_route_to_me(entry):
            break
        marks += _marks_of(entry)
        mine += 1
    if mine:
        _set_routes(req, routes[mine:])
    return tuple(marks)


def _set_routes(msg: Request, routes: list[Any]) -> None:
    msg.headers.remove("Route")
    for r in routes:
        msg.headers.add("Route", str(r))


def upstream_hop(req: Request, policy: RoutingPolicy, source_host: str) -> Peer | None:
    """The hop an in-dialog request from the callee side goes to after this proxy: the top
    Record-Route entry the request arrived with (a proxy before us), else its Contact (the
    caller). Only an address on the host the request came from (so a request cannot have us
    vouch for a third party), never a service address; None otherwise."""
    source = normal_host(source_host)
    if any(rule.port is None and rule.host == source for rule in policy.peers):
        return None  # every port of that host is a configured peer: no mark needed (nor parsing)
    rrs = req.record_route
    named = rrs[0].uri if rrs else (req.contact[0].uri if req.contact else None)
    if not isinstance(named, SipURI):
        return None
    host = normal_host(named.params.get("maddr") or named.host)
    if host != source or not is_ip_literal(host):
        return None
    hop = _literal_hop(policy, named)
    if policy.service(hop) or policy.configured(hop):
        return None
    return hop


def dns_key(uri: SipURI) -> str:
    return str(uri)


def _route_hop(policy: RoutingPolicy, host: str) -> Peer | None:
    route = policy.routes.get(host) or policy.routes.get("*")
    return Peer(route.transport, route.host, route.port) if route is not None else None


def _literal_hop(policy: RoutingPolicy, uri: SipURI) -> Peer:
    transport = policy.transport_of(uri)
    host = normal_host(uri.params.get("maddr") or uri.host)
    if host == "localhost":
        host = "127.0.0.1"
    return Peer(transport, host, uri.port or _DEFAULT_PORT[transport])


def _configured_name_hop(policy: RoutingPolicy, uri: SipURI) -> Peer | None:
    """A URI naming a configured peer or route hop by host name (a gateway or peer proxy in a
    container network, ``gateway-atlanta``): that hop, resolved by the transport when sent.
    Any other name is not a target here (no open relay: names from the network that no
    configuration mentions go through the route table or RFC 3263, or nowhere)."""
    hop = _literal_hop(policy, uri)
    if is_ip_literal(hop.host) or not policy.configured(hop) or policy.service(hop):
        return None
    return hop


def contact_target(policy: RoutingPolicy, contact: Contact) -> Target | None:
    """Where a binding's request goes (§16.5): its URI's address, or (RFC 5626 outbound) the
    flow its REGISTER came on; None when unusable or a service address of the deployment."""
    try:
        uri = parse_uri(contact.uri)
    except RemoteProtocolError:
        return None
    if not isinstance(uri, SipURI):
        return None
    host = normal_host(uri.params.get("maddr") or uri.host)
    hop: Peer | None
    if is_ip_literal(host) or host == "localhost":
        hop = _literal_hop(policy, uri)
    else:
        hop = _configured_name_hop(policy, uri) or _route_hop(policy, host)
    if contact.received and "ob" in uri.params:
        proto, _, hostport = contact.received.partition(":")
        rhost, _, port = hostport.rpartition(":")
        if proto.upper() in policy.transports and rhost and port.isdigit():
            hop = Peer(proto.upper(), normal_host(rhost), int(port))
    if hop is None or policy.service(hop):
        return None
    return Target(uri, hop)


def _dialog_aors(policy: RoutingPolicy, req: Request) -> tuple[str, ...]:
    """The To and From address-of-records of ``req`` that belong to a served domain."""
    aors: list[str] = []
    for view in (req.to_view(), req.from_view()):
        uri = view.uri
        if isinstance(uri, SipURI) and uri.user is not None and uri.host.lower() in policy.domains:
            try:
                aor = str(canonical_aor(uri.aor))
            except InvalidBinding:
                continue
            if aor not in aors:
                aors.append(aor)
    return tuple(aors)


def _named_hop(policy: RoutingPolicy, req: Request, named: SipURI, target: Any, answers: Answers,
               marks: tuple[str, ...]) -> Decision:
    """The next hop named by a URI (the top Route entry, or a foreign Request-URI)."""
    host = normal_host(named.params.get("maddr") or named.host)
    literal = is_ip_literal(host) or host == "localhost"
    if not literal:
        route = _route_hop(policy, host)
        if route is not None:
            return Forward((Target(target, route),))
    hop = _literal_hop(policy, named)
    if policy.service(hop):
        return FORBIDDEN
    if policy.configured(hop):
        return Forward((Target(target, hop),))
    if literal:
        if marks and policy.marked(hop, marks):
            return Forward((Target(target, hop),))  # a hop our own Record-Route vouched for
        return _dialog_check(policy, req, target, hop, answers)
    if not policy.dns:
        return NO_ROUTE
    key = dns_key(named)
    found = answers.dns.get(key)
    if found is None:
        return NeedDns(named, key)
    if isinstance(found, int):
        return NO_ROUTE if found == 404 else Refuse(503, "DNS Failure", "no-route")
    for candidate in found:
        if policy.service(candidate):
            continue
        if policy.configured(candidate):
            return Forward((Target(target, candidate),))
        if not policy.internal(candidate.host):
            return Forward((Target(target, Peer(candidate.transport, normal_host(candidate.host), candidate.port)),))
    return FORBIDDEN


def _dialog_check(policy: RoutingPolicy, req: Request, target: Any, hop: Peer, answers: Answers) -> Decision:
    """An address named by the request: allowed when it is a live binding of the request's
    To or From AOR in a served domain (the remote target of a dialog, §12.2.1.1)."""
    aors = _dialog_aors(policy, req)
    missing = tuple(a for a in aors if a not in answers.locations)
    if missing:
        return NeedLocation(missing)
    for aor in aors:
        for contact in answers.locations[aor]:
            found = contact_target(policy, contact)
            if found is not None and found.hop == hop:
                return Forward((Target(target, hop),))
    return FORBIDDEN


def decide(req: Request, policy: RoutingPolicy, answers: Answers = NO_ANSWERS,
           marks: tuple[str, ...] = ()) -> Decision:
    """Where ``req`` goes (§16.5/§16.6 step 7), ``req`` already through :func:`preprocess`.

    ``marks`` are what :func:`preprocess` found in our own Route entries: when the proxy
    forwards a dialog-creating request it writes into its Record-Route URI the marks
    (:meth:`RoutingPolicy.mark`) of the hop it sent the request to and of the hop back
    towards the caller (:func:`upstream_hop`), so that the dialog's later requests may name
    exactly those addresses, in either direction, whatever their From/To say (a gateway
    that hides identities writes ``anonymous.invalid`` there). The marks are keyed by the
    proxy's route key: replicas sharing it accept each other's; nothing is stored.

    Raises :class:`~sipsec.sip.RemoteProtocolError` for a malformed header read on the way.
    """
    routes = req.route
    if routes:
        first = routes[0].uri
        if not isinstance(first, SipURI):
            return NO_ROUTE
        return _named_hop(policy, req, first, req.uri, answers, marks)
    uri = req.uri
    if not isinstance(uri, SipURI):
        return Refuse(416, None, "unsupported-uri")
    host = uri.host.lower()
    if host in policy.domains or policy.is_me(uri):
        if req.method == "REGISTER":
            return Register()
        if uri.user is None:
            return AnswerHere()
        try:
            aor = str(canonical_aor(uri.aor))
        except InvalidBinding:
            return NOT_FOUND
        contacts = answers.locations.get(aor)
        if contacts is None:
            return NeedLocation((aor,))
        targets = tuple(t for t in (contact_target(policy, c) for c in contacts) if t is not None)
        return Forward(targets) if targets else NOT_FOUND
    return _named_hop(policy, req, uri, uri, answers, marks)
