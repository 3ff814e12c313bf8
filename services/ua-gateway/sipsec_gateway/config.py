"""Configuration of the UA gateway: environment variables with documented defaults."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from sipsec.config import ConfigError, load_env, split_hostport
from sipsec.envelope import SecurityPolicy, SigningPolicy

__all__ = ["ENV", "ConfigError", "GatewayConfig"]


# field -> (environment variable, default, help); the README's Configuration table lists these.
ENV: dict[str, tuple[str, str, str]] = {
    "domain": ("SIPSEC_GATEWAY_DOMAIN", "localhost", "the provider domain of the users this gateway serves"),
    "sip_listen": ("SIPSEC_GATEWAY_SIP_LISTEN", "127.0.0.1:5070", "secured-side SIP (UDP) listen address host:port (port 0 = any)"),
    "transport": ("SIPSEC_GATEWAY_TRANSPORT", "udp", "secured-side transport: udp or tcp (tcp suits secured messages above the 1300-byte UDP guideline)"),
    "advertise": ("SIPSEC_GATEWAY_ADVERTISE", "", "host written in Via and Contact (default: the listen host; set it when listening on 0.0.0.0)"),
    "contact_secret": ("SIPSEC_GATEWAY_CONTACT_SECRET", "", "hex key of the opaque Contact user parts (replicas share it; empty = random per start)"),
    "plain_listen": ("SIPSEC_GATEWAY_PLAIN_LISTEN", "", "legacy-side plain SIP (UDP) listen address for phones (empty = off)"),
    "phone_digest": ("SIPSEC_GATEWAY_PHONE_DIGEST", "SHA-256,MD5", "Digest algorithms offered to phones, preferred first (RFC 8760)"),
    "proxy": ("SIPSEC_GATEWAY_PROXY", "127.0.0.1:5060", "the domain's SIP proxy/registrar host:port (outbound proxy)"),
    "pkg": ("SIPSEC_GATEWAY_PKG", "127.0.0.1:50051", "PKG gRPC target(s), comma-separated; several = threshold PKG nodes"),
    "pkg_plaintext": ("SIPSEC_GATEWAY_PKG_PLAINTEXT", "0", "1 = plaintext gRPC to the PKG (loopback/tests only)"),
    "pkg_ca": ("SIPSEC_GATEWAY_PKG_CA", "", "PEM CA file of the PKG's TLS certificate"),
    "pkg_fingerprint": ("SIPSEC_GATEWAY_PKG_FINGERPRINT", "", "pinned Ed25519 fingerprint of the own domain's signed parameters (empty = trust the PKG channel)"),
    "peer_domains": ("SIPSEC_GATEWAY_PEER_DOMAINS", "", "federated domains whose parameters are fetched at login (others on first call)"),
    "workers": ("SIPSEC_GATEWAY_WORKERS", "", "crypto-worker gRPC targets, comma-separated (empty = in-process crypto)"),
    "workers_plaintext": ("SIPSEC_GATEWAY_WORKERS_PLAINTEXT", "0", "1 = plaintext gRPC to the crypto-workers (private keys travel to them: loopback/tests only)"),
    "workers_ca": ("SIPSEC_GATEWAY_WORKERS_CA", "", "PEM CA file of the crypto-workers' TLS certificates"),
    "verify_window_ms": ("SIPSEC_GATEWAY_VERIFY_WINDOW_MS", "16", "in-process crypto under load (verifies arriving more often than this, and CPU short): how long a signature verification waits to be batched with others, ms (0 = never waits)"),
    "verify_busy_cpu": ("SIPSEC_GATEWAY_VERIFY_BUSY_CPU", "0.7", "in-process crypto: the share of one core the gateway process must be using before verifications wait to be batched (0 = on the arrival rate alone)"),
    "store": ("SIPSEC_GATEWAY_STORE", "memory", "dialog state: memory or redis (redis lets any replica continue a dialog)"),
    "redis_url": ("SIPSEC_REDIS_URL", "redis://127.0.0.1:6379/0", "Redis URL (store=redis)"),
    "http_listen": ("SIPSEC_GATEWAY_HTTP_LISTEN", "127.0.0.1:8080", "control API (FastAPI) listen address host:port"),
    "register_expires": ("SIPSEC_GATEWAY_REGISTER_EXPIRES", "3600", "Expires asked for in REGISTER, seconds (refreshed at 80 %)"),
    "key_retry_s": ("SIPSEC_GATEWAY_KEY_RETRY_S", "60", "retry interval when a key fetch or re-registration failed, seconds"),
    "signing": ("SIPSEC_GATEWAY_SIGNING", "every-message", "signing policy: every-message or dialog-establishing"),
    "default_policy": ("SIPSEC_GATEWAY_DEFAULT_POLICY", "secure-only", "per-user default: secure-only, prefer-secure or plain"),
    "call_timeout_s": ("SIPSEC_GATEWAY_CALL_TIMEOUT_S", "32", "longest wait for a final response to an INVITE, seconds"),
    "dialog_ttl_s": ("SIPSEC_GATEWAY_DIALOG_TTL_S", "43200", "how long dialog keys and call records are kept, seconds"),
    "keep_calls": ("SIPSEC_GATEWAY_KEEP_CALLS", "1000", "how many finished calls stay visible in the API (older ones are forgotten)"),
    "trace_calls": ("SIPSEC_GATEWAY_TRACE_CALLS", "200", "how many recent calls keep a wire trace (0 = none)"),
    "drain_seconds": ("SIPSEC_GATEWAY_DRAIN_SECONDS", "2", "time to end calls after SIGTERM before exiting"),
    "log_level": ("SIPSEC_LOG_LEVEL", "INFO", "logging level"),
}


@dataclass(frozen=True)
class GatewayConfig:
    """Every setting of the gateway; :data:`ENV` names the variable and default of each."""

    domain: str = "localhost"
    sip_listen: str = "127.0.0.1:5070"
    transport: str = "udp"
    advertise: str = ""
    contact_secret: str = ""
    plain_listen: str = ""
    phone_digest: str = "SHA-256,MD5"
    proxy: str = "127.0.0.1:5060"
    pkg: str = "127.0.0.1:50051"
    pkg_plaintext: bool = False
    pkg_ca: str = ""
    pkg_fingerprint: str = ""
    peer_domains: str = ""
    workers: str = ""
    workers_plaintext: bool = False
    workers_ca: str = ""
    verify_window_ms: float = 16.0
    verify_busy_cpu: float = 0.7
    store: str = "memory"
    redis_url: str = "redis://127.0.0.1:6379/0"
    http_listen: str = "127.0.0.1:8080"
    register_expires: int = 3600
    key_retry_s: float = 60.0
    signing: str = "every-message"
    default_policy: str = "secure-only"
    call_timeout_s: float = 32.0
    dialog_ttl_s: float = 43200.0
    keep_calls: int = 1000
    trace_calls: int = 200
    drain_seconds: float = 2.0
    log_level: str = "INFO"

    def __post_init__(self) -> None:
        if not self.domain or "@" in self.domain:
            raise ConfigError("domain must be a host name")
        if not self.phone_digest_algorithms or not set(self.phone_digest_algorithms) <= {"SHA-256", "MD5"}:
            raise ConfigError("phone_digest must list SHA-256 and/or MD5")
        if self.transport not in ("udp", "tcp"):
            raise ConfigError("transport must be udp or tcp")
        if self.store not in ("memory", "redis"):
            raise ConfigError("store must be memory or redis")
        if self.keep_calls < 1 or self.trace_calls < 0:
            raise ConfigError("keep_calls must be positive and trace_calls not negative")
        if self.register_expires < 60:
            raise ConfigError("register_expires must be at least 60 seconds")
        if self.call_timeout_s <= 0 or self.dialog_ttl_s <= 0 or self.key_retry_s <= 0:
            raise ConfigError("timeouts must be positive")
        if not 0 <= self.verify_window_ms <= 100:
            raise ConfigError("verify_window_ms must be between 0 and 100")
        if not 0 <= self.verify_busy_cpu <= 1:
            raise ConfigError("verify_busy_cpu must be between 0 and 1")
        try:
            SigningPolicy(self.signing)
            SecurityPolicy(self.default_policy)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        if self.contact_secret:
            try:
                bytes.fromhex(self.contact_secret)
            except ValueError:
                raise ConfigError("contact_secret must be hex") from None
        for name in ("sip_listen", "proxy", "http_listen") + (("plain_listen",) if self.plain_listen else ()):
            split_hostport(getattr(self, name))

    @property
    def phone_digest_algorithms(self) -> tuple[str, ...]:
        return tuple(a.strip().upper() for a in self.phone_digest.split(",") if a.strip())

    @property
    def signing_policy(self) -> SigningPolicy:
        return SigningPolicy(self.signing)

    @property
    def security_policy(self) -> SecurityPolicy:
        return SecurityPolicy(self.default_policy)

    @property
    def pkg_targets(self) -> list[str]:
        return [t.strip() for t in self.pkg.split(",") if t.strip()]

    @property
    def worker_targets(self) -> list[str]:
        return [t.strip() for t in self.workers.split(",") if t.strip()]

    @property
    def peer_domain_list(self) -> list[str]:
        return [d.strip().lower() for d in self.peer_domains.split(",") if d.strip()]

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> GatewayConfig:
        return load_env(cls, ENV, environ)
