"""Configuration of the proxy/registrar: each setting declared once (variable, default, help);
the environment overrides the defaults, flags override the environment (see :mod:`sipsec.config`)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from sipsec import config as shared
from sipsec.aio.transport import ConnectionLimits
from sipsec.config import ConfigError, env_table, load, parse_flags, setting, split_hostport
from sipsec.sip import is_ip_literal

from sipsec_proxy.dns import parse_dns

__all__ = ["ENV", "ProxyConfig", "Route", "parse_args", "parse_routes", "parse_users"]


@dataclass(frozen=True)
class Route:
    """A next hop for a foreign domain."""

    host: str
    port: int
    transport: str = "UDP"


#: The sources the TCP/TLS connection limits exempt (see :func:`sipsec.config.tcp_limit`).
_TCP_PEERS = "the configured peers and routes' hosts"


@dataclass(frozen=True)
class ProxyConfig:
    """Every setting of the proxy (each declared once: variable, default, help)."""

    domains: str = setting("SIPSEC_PROXY_DOMAINS", "localhost", "comma-separated domains this proxy serves (registrar + location lookup)")
    listen: str = setting("SIPSEC_PROXY_LISTEN", "0.0.0.0:5060", "UDP listen address host:port")
    tcp_listen: str = setting("SIPSEC_PROXY_TCP_LISTEN", "", "TCP listen address host:port (empty = no TCP)")
    tls_listen: str = setting("SIPSEC_PROXY_TLS_LISTEN", "", "TLS listen address host:port (needs tls_cert/tls_key)")
    tls_cert: str = setting("SIPSEC_PROXY_TLS_CERT", "", "PEM certificate chain for SIP over TLS")
    tls_key: str = setting("SIPSEC_PROXY_TLS_KEY", "", "PEM private key for SIP over TLS")
    tls_ca: str = setting("SIPSEC_PROXY_TLS_CA", "", "PEM CA file the certificates of TLS next hops (gateways, peer proxies; `;transport=tls` routes and Contacts) must chain to; their host name or IP address is checked too (empty = the system's roots)")
    tcp_max_connections: int = shared.tcp_limit("SIPSEC_PROXY", "max_connections", _TCP_PEERS)
    tcp_max_per_source: int = shared.tcp_limit("SIPSEC_PROXY", "max_per_source", _TCP_PEERS)
    tcp_reserved_for_peers: int = shared.tcp_limit("SIPSEC_PROXY", "reserved_for_peers", _TCP_PEERS)
    tcp_idle_timeout_s: float = shared.tcp_limit("SIPSEC_PROXY", "idle_timeout_s", _TCP_PEERS)
    tcp_header_timeout_s: float = shared.tcp_limit("SIPSEC_PROXY", "header_timeout_s", _TCP_PEERS)
    advertise: str = setting("SIPSEC_PROXY_ADVERTISE", "", "host written in Via/Record-Route (default: the listen host, 127.0.0.1 for 0.0.0.0)")
    location: str = setting("SIPSEC_PROXY_LOCATION", "memory", "bindings: memory | redis | a location service gRPC target host:port")
    location_ca: str = setting("SIPSEC_PROXY_LOCATION_CA", "", "PEM CA of the location service (TLS); empty = plaintext gRPC")
    location_timeout_s: float = setting("SIPSEC_PROXY_LOCATION_TIMEOUT_S", 2.0, "deadline of one location lookup or write (location service gRPC or redis), seconds; beyond it, or with the store unreachable, a request is answered 503 with Retry-After")
    retry_after_s: int = setting("SIPSEC_PROXY_RETRY_AFTER_S", 5, "Retry-After (seconds) of the 503s the proxy sends when a dependency (location service, redis, DNS) is unavailable or it is overloaded (RFC 3261 §21.5.4)")
    location_cache_ms: float = setting("SIPSEC_PROXY_LOCATION_CACHE_MS", 1000.0, "keep location lookups (location service or redis) this long, ms; this proxy's REGISTERs refresh them at once, other replicas' within this time (0 = off)")
    redis_url: str = shared.redis_url("location=redis; names the proxy's ACL user: redis://proxy@host:6379/0, rediss:// for TLS")
    redis_password_file: str = shared.redis_password_file("SIPSEC_PROXY")
    redis_ca: str = shared.redis_ca("SIPSEC_PROXY")
    routes: str = setting("SIPSEC_PROXY_ROUTES", "", "other domains: 'domain=host:port[;transport=tcp],...'; '*' is the default route")
    peers: str = setting("SIPSEC_PROXY_PEERS", "", "trusted next hops and sources: 'host[:port][;transport=tcp],...' (no port: any port of that host); requests may name them as a destination, and they are not rate-limited")
    allow_networks: str = setting("SIPSEC_PROXY_ALLOW_NETWORKS", "", "CIDRs that RFC 3263 answers may point into although not global (loopback, link-local, private), e.g. a test lab's 127.0.0.0/8 or a private peering network; empty = none")
    dns: str = setting("SIPSEC_PROXY_DNS", "off", "RFC 3263 SRV/A lookup of foreign domains without a route: off | system | nameserver host:port[,host:port]")
    dns_timeout_s: float = setting("SIPSEC_PROXY_DNS_TIMEOUT_S", 2.0, "DNS lookup time limit, seconds (503 beyond)")
    auth: str = setting("SIPSEC_PROXY_AUTH", "digest", "REGISTER authentication: digest | none")
    pkg_target: str = setting("SIPSEC_PROXY_PKG_TARGET", "", "PKG gRPC target host:port: accept REGISTERs signed by the AOR's key, verified with the domain parameters fetched from it at start (empty = off)")
    pkg_plaintext: int = setting("SIPSEC_PROXY_PKG_PLAINTEXT", 0, "1 = plaintext gRPC to the PKG (loopback/tests only); 0 = TLS")
    pkg_ca: str = setting("SIPSEC_PROXY_PKG_CA", "", "PEM CA of the PKG's TLS certificate (empty = system roots)")
    pkg_fingerprint: str = setting("SIPSEC_PROXY_PKG_FINGERPRINT", "", "pin: the expected fingerprint (`sha256:<hex>`) of the domain's Ed25519 parameter-signing key; required with pkg_target (empty only with SIPSEC_INSECURE_DEV=1)")
    users: str = setting("SIPSEC_PROXY_USERS", "", "digest credentials 'user:password,...' (prefer users_file)")
    users_file: str = setting("SIPSEC_PROXY_USERS_FILE", "", "file of 'user:password' lines")
    realm: str = setting("SIPSEC_PROXY_REALM", "", "digest realm (default: the first domain)")
    digest_algorithms: str = setting("SIPSEC_PROXY_DIGEST_ALGORITHMS", "SHA-256,MD5", "digest algorithms offered, preferred first (RFC 8760)")
    nonce_secret: str = setting("SIPSEC_PROXY_NONCE_SECRET", "", "hex HMAC key for digest nonces (random per start when empty)", secret=True)
    min_expires: int = setting("SIPSEC_PROXY_MIN_EXPIRES", 60, "shortest registration accepted (423 below), seconds")
    max_expires: int = setting("SIPSEC_PROXY_MAX_EXPIRES", 7200, "longest registration granted (clamped), seconds")
    default_expires: int = setting("SIPSEC_PROXY_DEFAULT_EXPIRES", 3600, "registration expiry when the REGISTER names none")
    record_route: int = setting("SIPSEC_PROXY_RECORD_ROUTE", 1, "add Record-Route to dialog-creating requests (1/0)")
    rate_limit: float = setting("SIPSEC_PROXY_RATE_LIMIT", 500.0, "requests per second per source address (0 = off)")
    rate_burst: float = setting("SIPSEC_PROXY_RATE_BURST", 1000.0, "token bucket size per source address")
    untrusted_rate: float = setting("SIPSEC_PROXY_UNTRUSTED_RATE", 1000.0, "requests per second from all untrusted sources together (not a configured peer, no authenticated registration from that address); beyond it they are dropped (0 = off)")
    untrusted_burst: float = setting("SIPSEC_PROXY_UNTRUSTED_BURST", 2000.0, "token bucket size of the untrusted sources' common budget")
    untrusted_pending: int = setting("SIPSEC_PROXY_UNTRUSTED_PENDING", 64, "location/DNS lookups and REGISTER checks in flight at once for untrusted sources, per kind (routing, REGISTER); beyond it a request is answered 503 at once, so a flood cannot pile up work or memory behind a slow location service")
    rate_sources: int = setting("SIPSEC_PROXY_RATE_SOURCES", 65536, "source addresses the rate limiter tracks (least recently seen forgotten first)")
    max_message_bytes: int = setting("SIPSEC_PROXY_MAX_MESSAGE_BYTES", 65535, "largest SIP message accepted")
    max_transactions: int = setting("SIPSEC_PROXY_MAX_TRANSACTIONS", 100000, "transaction table size (503 beyond)")
    udp_rcvbuf: int = setting("SIPSEC_PROXY_UDP_RCVBUF", 4194304, "UDP socket receive buffer, bytes (capped by net.core.rmem_max; 0 = system default)")
    queue_size: int = setting("SIPSEC_PROXY_QUEUE_SIZE", 8192, "inbound message queue (drops beyond)")
    metrics_host: str = setting("SIPSEC_PROXY_METRICS_HOST", "0.0.0.0", "Prometheus /metrics bind host")
    metrics_port: int = setting("SIPSEC_PROXY_METRICS_PORT", 9463, "Prometheus port (0 = any free port, -1 = off)")
    workers: int = setting("SIPSEC_PROXY_WORKERS", 1, "worker processes sharing the UDP port (SO_REUSEPORT)")
    reuse_port: int = setting("SIPSEC_PROXY_REUSE_PORT", 0, "bind the UDP port with SO_REUSEPORT (set by the parent for its workers)")
    drain_seconds: float = setting("SIPSEC_PROXY_DRAIN_SECONDS", 2.0, "time to finish transactions after SIGTERM")
    insecure_dev: bool = shared.insecure_dev()
    log_level: str = shared.log_level()
    log_format: str = shared.log_format()

    def __post_init__(self) -> None:
        self._check_values()
        try:
            parse_routes(self.routes)
            parse_dns(self.dns)
            _check_policy(self.peers, self.allow_networks)
            self.connection_limits()
        except ConfigError:
            raise
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        if self.nonce_secret:
            try:
                bytes.fromhex(self.nonce_secret)
            except ValueError:
                raise ConfigError("nonce_secret must be hex") from None

    def _check_values(self) -> None:
        """The checks of single values and simple combinations (ConfigError on the first bad one)."""
        if self.auth not in ("digest", "none"):
            raise ConfigError("auth must be digest or none")
        if not 1 <= self.min_expires <= self.default_expires <= self.max_expires:
            raise ConfigError("need 1 <= min_expires <= default_expires <= max_expires")
        if self.pkg_plaintext and self.pkg_ca:
            raise ConfigError("pkg_plaintext and pkg_ca exclude each other")
        if self.tls_listen and not (self.tls_cert and self.tls_key):
            raise ConfigError("tls_listen needs tls_cert and tls_key")
        if self.workers < 1 or self.max_transactions < 1 or self.queue_size < 1:
            raise ConfigError("workers, max_transactions and queue_size must be positive")
        if self.rate_sources < 1:
            raise ConfigError("rate_sources must be positive")
        if self.untrusted_pending < 1:
            raise ConfigError("untrusted_pending must be positive")
        if not 0 < self.location_timeout_s <= 60:
            raise ConfigError("location_timeout_s must be in (0, 60]")
        if not 1 <= self.retry_after_s <= 3600:
            raise ConfigError("retry_after_s must be between 1 and 3600")
        if self.dns_timeout_s <= 0:
            raise ConfigError("dns_timeout_s must be positive")
        if not 0 <= self.location_cache_ms <= 60000:
            raise ConfigError("location_cache_ms must be between 0 and 60000")

    def check_trust(self) -> list[str]:
        """At start: the trust anchors a production proxy must have. Raises ConfigError naming
        the first missing one; with ``insecure_dev`` on, returns the ``INSECURE:`` warnings to log."""
        warnings: list[str | None] = []
        if self.pkg_target:
            warnings.append(shared.require_pin(self.pkg_fingerprint, "SIPSEC_PROXY_PKG_FINGERPRINT",
                                               "the domain parameters verifying signed REGISTERs",
                                               insecure=bool(self.insecure_dev)))
        return [w for w in warnings if w]

    def peer_hosts(self) -> tuple[str, ...]:
        """The hosts of the configured peers and routes (names or IP addresses), sorted."""
        from sipsec_proxy.routing import parse_peers  # routing imports this module

        hosts = {rule.host for rule in parse_peers(self.peers)}
        hosts.update(route.host for route in parse_routes(self.routes).values())
        return tuple(sorted(hosts))

    def connection_limits(self, peers: Iterable[str] = ()) -> ConnectionLimits:
        """The TCP/TLS listeners' :class:`ConnectionLimits`; ``peers`` (IP addresses) are
        exempt from the per-source cap and may use the reserved connections. The peer and
        route hosts that are IP addresses are always among them (names are resolved by the
        caller, :func:`peer_hosts`)."""
        literal = [h.strip("[]") for h in self.peer_hosts() if is_ip_literal(h)]
        return shared.connection_limits(self, "SIPSEC_PROXY", [*literal, *peers])

    @property
    def domain_set(self) -> frozenset[str]:
        return frozenset(d.strip().lower() for d in self.domains.split(",") if d.strip())

    @property
    def digest_realm(self) -> str:
        return self.realm or (sorted(self.domain_set)[0] if self.domain_set else "sipsec")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: object) -> ProxyConfig:
        """The defaults, then ``environ`` (default ``os.environ``), then ``overrides``."""
        config: ProxyConfig = load(cls, environ, **overrides)
        return config


def _check_policy(peers: str, networks: str) -> None:
    from sipsec_proxy.routing import parse_networks, parse_peers  # routing imports this module

    parse_peers(peers)
    parse_networks(networks)


#: field -> (variable, default, help), derived from :class:`ProxyConfig`.
ENV = env_table(ProxyConfig)


def parse_routes(text: str) -> dict[str, Route]:
    """``'biloxi.com=127.0.0.3:5060;transport=tcp, *=10.0.0.1'`` -> {domain: Route}."""
    routes: dict[str, Route] = {}
    for item in filter(None, (p.strip() for p in text.split(","))):
        domain, sep, hop = item.partition("=")
        if not sep or not domain.strip() or not hop.strip():
            raise ValueError(f"route {item!r} is not domain=host:port")
        hostport, _, params = hop.partition(";")
        transport = "UDP"
        if params:
            key, _, value = params.partition("=")
            if key.strip().lower() != "transport" or value.strip().upper() not in ("UDP", "TCP", "TLS"):
                raise ValueError(f"route {item!r}: only ;transport=udp|tcp|tls is allowed")
            transport = value.strip().upper()
        host, port = split_hostport(hostport, 5061 if transport == "TLS" else 5060)
        routes[domain.strip().lower()] = Route(host, port, transport)
    return routes


def parse_users(text: str, file: str = "") -> dict[str, str]:
    """``user:password`` pairs from the comma list and the file (one a line, # comments)."""
    users: dict[str, str] = {}
    lines = [p for p in text.split(",") if p.strip()]
    if file:
        with open(file, encoding="utf-8") as fh:
            lines += [ln for ln in fh.read().splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    for line in lines:
        user, sep, password = line.strip().partition(":")
        if not sep or not user:
            raise ValueError("a credential line must be user:password")
        users[user] = password
    return users


def parse_args(argv: Sequence[str] | None, environ: Mapping[str, str] | None = None) -> ProxyConfig:
    """Flags override environment variables, which override the defaults."""
    config: ProxyConfig = parse_flags(
        ProxyConfig, argv, environ, prog="sipsec-proxy",
        description="sipsec SIP proxy and registrar (RFC 3261 §16 transaction-stateful, §10).",
    )
    return config
