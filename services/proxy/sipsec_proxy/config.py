"""Configuration of the proxy/registrar: environment variables with defaults, then flags."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from sipsec.config import load_env, parse_flags, split_hostport

from sipsec_proxy.dns import parse_dns

__all__ = ["ENV", "ProxyConfig", "Route", "parse_args", "parse_routes", "parse_users"]

# field -> (environment variable, default, help)
ENV: dict[str, tuple[str, str, str]] = {
    "domains": ("SIPSEC_PROXY_DOMAINS", "localhost", "comma-separated domains this proxy serves (registrar + location lookup)"),
    "listen": ("SIPSEC_PROXY_LISTEN", "0.0.0.0:5060", "UDP listen address host:port"),
    "tcp_listen": ("SIPSEC_PROXY_TCP_LISTEN", "", "TCP listen address host:port (empty = no TCP)"),
    "tls_listen": ("SIPSEC_PROXY_TLS_LISTEN", "", "TLS listen address host:port (needs tls_cert/tls_key)"),
    "tls_cert": ("SIPSEC_PROXY_TLS_CERT", "", "PEM certificate chain for SIP over TLS"),
    "tls_key": ("SIPSEC_PROXY_TLS_KEY", "", "PEM private key for SIP over TLS"),
    "advertise": ("SIPSEC_PROXY_ADVERTISE", "", "host written in Via/Record-Route (default: the listen host, 127.0.0.1 for 0.0.0.0)"),
    "location": ("SIPSEC_PROXY_LOCATION", "memory", "bindings: memory | redis | a location service gRPC target host:port"),
    "location_ca": ("SIPSEC_PROXY_LOCATION_CA", "", "PEM CA of the location service (TLS); empty = plaintext gRPC"),
    "location_cache_ms": ("SIPSEC_PROXY_LOCATION_CACHE_MS", "1000", "keep location lookups (location service or redis) this long, ms; this proxy's REGISTERs refresh them at once, other replicas' within this time (0 = off)"),
    "redis_url": ("SIPSEC_REDIS_URL", "redis://127.0.0.1:6379/0", "Redis URL (location=redis)"),
    "routes": ("SIPSEC_PROXY_ROUTES", "", "other domains: 'domain=host:port[;transport=tcp],...'; '*' is the default route"),
    "dns": ("SIPSEC_PROXY_DNS", "off", "RFC 3263 SRV/A lookup of foreign domains without a route: off | system | nameserver host:port[,host:port]"),
    "dns_timeout_s": ("SIPSEC_PROXY_DNS_TIMEOUT_S", "2", "DNS lookup time limit, seconds (503 beyond)"),
    "auth": ("SIPSEC_PROXY_AUTH", "digest", "REGISTER authentication: digest | none"),
    "pkg_target": ("SIPSEC_PROXY_PKG_TARGET", "", "PKG gRPC target host:port: accept REGISTERs signed by the AOR's key, verified with the domain parameters fetched from it at start (empty = off)"),
    "pkg_plaintext": ("SIPSEC_PROXY_PKG_PLAINTEXT", "0", "1 = plaintext gRPC to the PKG (loopback/tests only); 0 = TLS"),
    "pkg_ca": ("SIPSEC_PROXY_PKG_CA", "", "PEM CA of the PKG's TLS certificate (empty = system roots)"),
    "pkg_fingerprint": ("SIPSEC_PROXY_PKG_FINGERPRINT", "", "pin: the expected fingerprint of the domain's Ed25519 parameter-signing key (empty = no pin)"),
    "users": ("SIPSEC_PROXY_USERS", "", "digest credentials 'user:password,...' (prefer users_file)"),
    "users_file": ("SIPSEC_PROXY_USERS_FILE", "", "file of 'user:password' lines"),
    "realm": ("SIPSEC_PROXY_REALM", "", "digest realm (default: the first domain)"),
    "digest_algorithms": ("SIPSEC_PROXY_DIGEST_ALGORITHMS", "SHA-256,MD5", "digest algorithms offered, preferred first (RFC 8760)"),
    "nonce_secret": ("SIPSEC_PROXY_NONCE_SECRET", "", "hex HMAC key for digest nonces (random per start when empty)"),
    "min_expires": ("SIPSEC_PROXY_MIN_EXPIRES", "60", "shortest registration accepted (423 below), seconds"),
    "max_expires": ("SIPSEC_PROXY_MAX_EXPIRES", "7200", "longest registration granted (clamped), seconds"),
    "default_expires": ("SIPSEC_PROXY_DEFAULT_EXPIRES", "3600", "registration expiry when the REGISTER names none"),
    "record_route": ("SIPSEC_PROXY_RECORD_ROUTE", "1", "add Record-Route to dialog-creating requests (1/0)"),
    "rate_limit": ("SIPSEC_PROXY_RATE_LIMIT", "500", "requests per second per source address (0 = off)"),
    "rate_burst": ("SIPSEC_PROXY_RATE_BURST", "1000", "token bucket size per source address"),
    "max_message_bytes": ("SIPSEC_PROXY_MAX_MESSAGE_BYTES", "65535", "largest SIP message accepted"),
    "max_transactions": ("SIPSEC_PROXY_MAX_TRANSACTIONS", "100000", "transaction table size (503 beyond)"),
    "udp_rcvbuf": ("SIPSEC_PROXY_UDP_RCVBUF", "4194304", "UDP socket receive buffer, bytes (capped by net.core.rmem_max; 0 = system default)"),
    "queue_size": ("SIPSEC_PROXY_QUEUE_SIZE", "8192", "inbound message queue (drops beyond)"),
    "metrics_host": ("SIPSEC_PROXY_METRICS_HOST", "0.0.0.0", "Prometheus /metrics bind host"),
    "metrics_port": ("SIPSEC_PROXY_METRICS_PORT", "9463", "Prometheus port (0 = any free port, -1 = off)"),
    "workers": ("SIPSEC_PROXY_WORKERS", "1", "worker processes sharing the UDP port (SO_REUSEPORT)"),
    "reuse_port": ("SIPSEC_PROXY_REUSE_PORT", "0", "bind the UDP port with SO_REUSEPORT (set by the parent for its workers)"),
    "drain_seconds": ("SIPSEC_PROXY_DRAIN_SECONDS", "2", "time to finish transactions after SIGTERM"),
    "log_level": ("SIPSEC_LOG_LEVEL", "INFO", "logging level"),
}


@dataclass(frozen=True)
class Route:
    """A next hop for a foreign domain."""

    host: str
    port: int
    transport: str = "UDP"


@dataclass(frozen=True)
class ProxyConfig:
    """Every setting of the proxy; see :data:`ENV` for the variables and defaults."""

    domains: str = "localhost"
    listen: str = "0.0.0.0:5060"
    tcp_listen: str = ""
    tls_listen: str = ""
    tls_cert: str = ""
    tls_key: str = ""
    advertise: str = ""
    location: str = "memory"
    location_ca: str = ""
    location_cache_ms: float = 1000.0
    redis_url: str = "redis://127.0.0.1:6379/0"
    routes: str = ""
    dns: str = "off"
    dns_timeout_s: float = 2.0
    auth: str = "digest"
    pkg_target: str = ""
    pkg_plaintext: int = 0
    pkg_ca: str = ""
    pkg_fingerprint: str = ""
    users: str = ""
    users_file: str = ""
    realm: str = ""
    digest_algorithms: str = "SHA-256,MD5"
    nonce_secret: str = ""
    min_expires: int = 60
    max_expires: int = 7200
    default_expires: int = 3600
    record_route: int = 1
    rate_limit: float = 500.0
    rate_burst: float = 1000.0
    max_message_bytes: int = 65535
    max_transactions: int = 100000
    udp_rcvbuf: int = 4194304
    queue_size: int = 8192
    metrics_host: str = "0.0.0.0"
    metrics_port: int = 9463
    workers: int = 1
    reuse_port: int = 0
    drain_seconds: float = 2.0
    log_level: str = "INFO"

    def __post_init__(self) -> None:
        if self.auth not in ("digest", "none"):
            raise ValueError("auth must be digest or none")
        if not 1 <= self.min_expires <= self.default_expires <= self.max_expires:
            raise ValueError("need 1 <= min_expires <= default_expires <= max_expires")
        if self.pkg_plaintext and self.pkg_ca:
            raise ValueError("pkg_plaintext and pkg_ca exclude each other")
        if self.tls_listen and not (self.tls_cert and self.tls_key):
            raise ValueError("tls_listen needs tls_cert and tls_key")
        if self.workers < 1 or self.max_transactions < 1 or self.queue_size < 1:
            raise ValueError("workers, max_transactions and queue_size must be positive")
        parse_routes(self.routes)
        parse_dns(self.dns)
        if self.dns_timeout_s <= 0:
            raise ValueError("dns_timeout_s must be positive")
        if not 0 <= self.location_cache_ms <= 60000:
            raise ValueError("location_cache_ms must be between 0 and 60000")
        if self.nonce_secret:
            bytes.fromhex(self.nonce_secret)

    @property
    def domain_set(self) -> frozenset[str]:
        return frozenset(d.strip().lower() for d in self.domains.split(",") if d.strip())

    @property
    def digest_realm(self) -> str:
        return self.realm or (sorted(self.domain_set)[0] if self.domain_set else "sipsec")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ProxyConfig:
        config: ProxyConfig = load_env(cls, ENV, environ)
        return config


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
        ProxyConfig, ENV, argv, environ, prog="sipsec-proxy",
        description="sipsec SIP proxy and registrar (RFC 3261 §16 transaction-stateful, §10).",
    )
    return config
