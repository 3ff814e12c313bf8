"""Configuration of the UA gateway: each setting declared once (variable, default, help);
the environment overrides the defaults (see :mod:`sipsec.config`)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from sipsec import config as shared
from sipsec.aio.transport import ConnectionLimits
from sipsec.config import ConfigError, env_table, load, setting, split_hostport
from sipsec.envelope import SecurityPolicy, SigningPolicy
from sipsec.sip import is_ip_literal

__all__ = ["ENV", "ConfigError", "GatewayConfig"]


#: The source the TCP/TLS connection limits exempt (see :func:`sipsec.config.tcp_limit`).
_TCP_PEERS = "the proxy (SIPSEC_GATEWAY_PROXY)"


@dataclass(frozen=True)
class GatewayConfig:
    """Every setting of the gateway (each declared once: variable, default, help)."""

    domain: str = setting("SIPSEC_GATEWAY_DOMAIN", "localhost", "the provider domain of the users this gateway serves")
    sip_listen: str = setting("SIPSEC_GATEWAY_SIP_LISTEN", "127.0.0.1:5070", "secured-side SIP (UDP) listen address host:port (port 0 = any)")
    transport: str = setting("SIPSEC_GATEWAY_TRANSPORT", "udp", "secured-side transport: udp, tcp or tls (tcp/tls suit secured messages above the 1300-byte UDP guideline; tls also hides the routing headers and Contacts on the gateway-proxy leg)")
    tls_cert: str = setting("SIPSEC_GATEWAY_TLS_CERT", "", "transport=tls: PEM certificate chain of the secured-side listener (the proxy connects to it for requests to this gateway's users)")
    tls_key: str = setting("SIPSEC_GATEWAY_TLS_KEY", "", "transport=tls: PEM private key of that certificate")
    tls_ca: str = setting("SIPSEC_GATEWAY_TLS_CA", "", "transport=tls: PEM CA file the proxy's certificate must chain to (empty = the system's roots)")
    tls_server_name: str = setting("SIPSEC_GATEWAY_TLS_SERVER_NAME", "", "transport=tls: the name the proxy's certificate must carry (empty = the host of SIPSEC_GATEWAY_PROXY, a DNS name or IP address)")
    advertise: str = setting("SIPSEC_GATEWAY_ADVERTISE", "", "host written in Via and Contact (default: the listen host; set it when listening on 0.0.0.0)")
    contact_secret: str = setting("SIPSEC_GATEWAY_CONTACT_SECRET", "", "hex key of the opaque Contact user parts (replicas share it; empty = random per start)", secret=True)
    tcp_max_connections: int = shared.tcp_limit("SIPSEC_GATEWAY", "max_connections", _TCP_PEERS)
    tcp_max_per_source: int = shared.tcp_limit("SIPSEC_GATEWAY", "max_per_source", _TCP_PEERS)
    tcp_reserved_for_peers: int = shared.tcp_limit("SIPSEC_GATEWAY", "reserved_for_peers", _TCP_PEERS)
    tcp_idle_timeout_s: float = shared.tcp_limit("SIPSEC_GATEWAY", "idle_timeout_s", _TCP_PEERS)
    tcp_header_timeout_s: float = shared.tcp_limit("SIPSEC_GATEWAY", "header_timeout_s", _TCP_PEERS)
    plain_listen: str = setting("SIPSEC_GATEWAY_PLAIN_LISTEN", "", "legacy-side plain SIP (UDP) listen address for phones (empty = off)")
    phone_digest: str = setting("SIPSEC_GATEWAY_PHONE_DIGEST", "SHA-256,MD5", "Digest algorithms offered to phones, preferred first (RFC 8760)")
    phone_free_failures: int = setting("SIPSEC_GATEWAY_PHONE_FREE_FAILURES", 3, "wrong Digest answers per phone user name and source address checked before back-off starts")
    phone_backoff_s: float = setting("SIPSEC_GATEWAY_PHONE_BACKOFF_S", 1.0, "first back-off after those, seconds; doubles with each further wrong answer (answers meanwhile get 403, unchecked)")
    phone_backoff_max_s: float = setting("SIPSEC_GATEWAY_PHONE_BACKOFF_MAX_S", 300.0, "longest phone Digest back-off, seconds")
    phone_source_failures: int = setting("SIPSEC_GATEWAY_PHONE_SOURCE_FAILURES", 30, "wrong Digest answers one source address may make per window, over all user names")
    phone_source_window_s: float = setting("SIPSEC_GATEWAY_PHONE_SOURCE_WINDOW_S", 600.0, "that window, seconds")
    phone_rate: float = setting("SIPSEC_GATEWAY_PHONE_RATE", 20.0, "out-of-dialog phone-side requests per second per source address (token bucket; past it 503; 0 = no limit)")
    phone_burst: float = setting("SIPSEC_GATEWAY_PHONE_BURST", 40.0, "burst of that token bucket")
    proxy: str = setting("SIPSEC_GATEWAY_PROXY", "127.0.0.1:5060", "the domain's SIP proxy/registrar host:port (outbound proxy)")
    pkg: str = setting("SIPSEC_GATEWAY_PKG", "127.0.0.1:50051", "PKG gRPC target(s), comma-separated; several = threshold PKG nodes")
    pkg_plaintext: bool = setting("SIPSEC_GATEWAY_PKG_PLAINTEXT", False, "1 = plaintext gRPC to the PKG (loopback/tests only)")
    pkg_ca: str = setting("SIPSEC_GATEWAY_PKG_CA", "", "PEM CA file of the PKG's TLS certificate")
    pkg_client_cert: str = setting("SIPSEC_GATEWAY_PKG_CLIENT_CERT", "", "client certificate chain (PEM file) presented to the PKG: required where the PKG asks for client certificates; its name in the PKG's SIPSEC_PKG_TRUSTED_FORWARDER_NAMES lets the gateway name each end user's address for login throttling")
    pkg_client_key: str = setting("SIPSEC_GATEWAY_PKG_CLIENT_KEY", "", "private key (PEM file) of SIPSEC_GATEWAY_PKG_CLIENT_CERT")
    pkg_fingerprint: str = setting("SIPSEC_GATEWAY_PKG_FINGERPRINT", "", "pinned fingerprint (`sha256:<hex>`, printed by `sipsec-pkg init`/`fingerprint`) of the own domain's Ed25519 parameter-signing key; required (empty only with SIPSEC_INSECURE_DEV=1)")
    peer_domains: str = setting("SIPSEC_GATEWAY_PEER_DOMAINS", "", "federated domains whose parameters are fetched at login (others on first call)")
    workers: str = setting("SIPSEC_GATEWAY_WORKERS", "", "crypto-worker gRPC targets, comma-separated (empty = in-process crypto)")
    workers_plaintext: bool = setting("SIPSEC_GATEWAY_WORKERS_PLAINTEXT", False, "1 = plaintext gRPC to the crypto-workers (private keys travel to them: loopback/tests only)")
    workers_ca: str = setting("SIPSEC_GATEWAY_WORKERS_CA", "", "PEM CA file of the crypto-workers' TLS certificates")
    workers_local_sign: bool = setting("SIPSEC_GATEWAY_WORKERS_LOCAL_SIGN", False, "1 = with crypto-workers, sign here (with the key's fixed-base tables: less CPU than the stream message and the worker's hop a signature would take, and the signing key does not travel); the pairings (verify, decapsulate) and encapsulations go to the workers; 0 = every operation to the workers (the default until the compose fault table passes with it on)")
    workers_stream: bool = setting("SIPSEC_GATEWAY_WORKERS_STREAM", True, "1 = batches to each crypto-worker travel on one long-lived gRPC stream (less gRPC work per batch on both sides); 0 = one unary call per batch (also used while tracing is on, and with a worker that has no Stream method)")
    verify_window_ms: float = setting("SIPSEC_GATEWAY_VERIFY_WINDOW_MS", 16.0, "in-process crypto under load (verifies arriving more often than this, and CPU short): how long a signature verification waits to be batched with others, ms (0 = never waits)")
    verify_busy_cpu: float = setting("SIPSEC_GATEWAY_VERIFY_BUSY_CPU", 0.7, "in-process crypto: the share of one core the gateway process must be using before verifications wait to be batched (0 = on the arrival rate alone)")
    table_mib: float = setting("SIPSEC_GATEWAY_TABLE_MIB", 64.0, "in-process crypto (and the fallback beside a worker pool): memory for fixed-base tables, MiB (3/8 identity points ~171 KiB each, 3/8 signing keys ~343 KiB, 1/4 recipients ~588 KiB; built only for values used often enough to repay them; 0 = none)")
    store: str = setting("SIPSEC_GATEWAY_STORE", "memory", "dialog state: memory or redis (redis lets any replica continue a dialog)")
    redis_url: str = shared.redis_url("store=redis; names the gateway's ACL user: redis://gateway@host:6379/0, rediss:// for TLS")
    redis_password_file: str = shared.redis_password_file("SIPSEC_GATEWAY")
    redis_ca: str = shared.redis_ca("SIPSEC_GATEWAY")
    sealing_key_file: str = setting("SIPSEC_GATEWAY_SEALING_KEY_FILE", "", "file holding the 32-byte key (raw, or 64 hex digits) sealing dialog keys and call records in Redis with AES-256-GCM; required with store=redis; every replica gets the same")
    insecure_plain_store: bool = setting("SIPSEC_GATEWAY_INSECURE_PLAIN_STORE", False, "1 = allow store=redis without a sealing key: dialog keys, first INVITEs, AORs in clear in Redis, and records planted there accepted (development only; warned at start)")
    http_listen: str = setting("SIPSEC_GATEWAY_HTTP_LISTEN", "127.0.0.1:8080", "control API (FastAPI) listen address host:port")
    api_tokens: str = setting("SIPSEC_GATEWAY_API_TOKENS", "", "file of the control API's bearer tokens, one `sha256-hex scope,scope name` line each (scopes: calls, users, read); empty = `api-tokens` in the state directory, made with one token of every scope at first start")
    state_dir: str = setting("SIPSEC_GATEWAY_STATE_DIR", "", "directory of the generated control-API token files (`api-tokens`, `api-token`, both 0600; empty = ~/.local/state/sipsec-gateway)")
    metrics_host: str = setting("SIPSEC_GATEWAY_METRICS_HOST", "0.0.0.0", "bind host of the Prometheus /metrics endpoint (its own port, never the control API's)")
    metrics_port: int = setting("SIPSEC_GATEWAY_METRICS_PORT", 9466, "Prometheus port (0 = any free port, -1 = off)")
    register_expires: int = setting("SIPSEC_GATEWAY_REGISTER_EXPIRES", 600, "Expires asked for in REGISTER, seconds (refreshed at 80 %; also how long a dead gateway's bindings stay in location)")
    key_retry_s: float = setting("SIPSEC_GATEWAY_KEY_RETRY_S", 60.0, "retry interval when a key fetch or re-registration failed, seconds")
    signing: str = setting("SIPSEC_GATEWAY_SIGNING", "every-message", "signing policy: every-message or dialog-establishing")
    default_policy: str = setting("SIPSEC_GATEWAY_DEFAULT_POLICY", "secure-only", "per-user default: secure-only, prefer-secure or plain")
    call_timeout_s: float = setting("SIPSEC_GATEWAY_CALL_TIMEOUT_S", 32.0, "longest wait for a final response to an INVITE, seconds")
    dialog_ttl_s: float = setting("SIPSEC_GATEWAY_DIALOG_TTL_S", 43200.0, "how long dialog keys and call records are kept, seconds")
    keep_calls: int = setting("SIPSEC_GATEWAY_KEEP_CALLS", 1000, "how many finished calls stay visible in the API (older ones are forgotten)")
    trace_calls: int = setting("SIPSEC_GATEWAY_TRACE_CALLS", 0, "how many recent calls keep a decrypted wire trace for `GET /v1/calls/{id}/wire` (0 = none, the default: traces hold the opened messages; e.g. 200 to debug)")
    trace_minutes: float = setting("SIPSEC_GATEWAY_TRACE_MINUTES", 10.0, "longest a wire trace is kept, minutes (then dropped)")
    trace_reveal: bool = setting("SIPSEC_GATEWAY_TRACE_REVEAL", False, "1 = a `read` token may ask for unredacted wire views (`?reveal=true`: SDP, AORs, display names, Contact user parts, Call-IDs); otherwise they are always redacted")
    session_expires_s: int = setting("SIPSEC_GATEWAY_SESSION_EXPIRES_S", 1800, "RFC 4028 session timer of secured calls, and of phone legs whose phone says Supported: timer (in its INVITE, or in its REGISTER for calls to it): the interval offered and the longest accepted, seconds (0 = off); the refresher sends an UPDATE at half of it, and a call whose far end stops refreshing ends with BYE")
    min_se_s: int = setting("SIPSEC_GATEWAY_MIN_SE_S", 90, "RFC 4028 Min-SE: the shortest session interval accepted (a shorter offer gets 422), seconds")
    bye_retry_s: float = setting("SIPSEC_GATEWAY_BYE_RETRY_S", 32.0, "how long a BYE answered 408, 500, 503, 403 Clock Skew or a transport error is sent again (back-off 0.5 s doubling to 4 s, the next CSeq each time), seconds (0 = never)")
    replica: str = setting("SIPSEC_GATEWAY_REPLICA", "", "this replica's stable name in the store: the users it keeps are restored by the next start with the same name (empty = domain and secured-side address; set it where the address changes on restart, e.g. to a StatefulSet pod name)")
    max_call_legs: int = setting("SIPSEC_GATEWAY_MAX_CALL_LEGS", 20000, "most call legs in progress at once (a call bridged to a phone is two legs, a call between two users of this gateway four); a new call beyond it gets 503 + Retry-After (a call placed through the API: 503) and the calls in progress go on. Bounds memory: a held bridged call costs ~15–30 KiB of the gateway's RSS (docs/load.md); 0 = no limit")
    drain_seconds: float = setting("SIPSEC_GATEWAY_DRAIN_SECONDS", 2.0, "when stopping: how long to wait for the BYE/CANCEL of each call still up to be answered, seconds")
    call_grace_s: float = setting("SIPSEC_GATEWAY_CALL_GRACE_S", 30.0, "after SIGTERM: how long calls in progress may go on (new INVITEs get 503 + Retry-After, readiness is red) before the gateway ends them (BYE, CANCEL) and exits, seconds; a second SIGTERM ends them at once")
    ready_timeout_s: float = setting("SIPSEC_GATEWAY_READY_TIMEOUT_S", 1.0, "/readyz: how long the store and the PKG may take to answer before the gateway says it is not ready, seconds")
    insecure_dev: bool = shared.insecure_dev()
    log_level: str = shared.log_level()
    log_format: str = shared.log_format()

    def __post_init__(self) -> None:
        if not self.domain or "@" in self.domain:
            raise ConfigError("domain must be a host name")
        self._check_phone_side()
        self._check_store()
        self._check_limits()
        if bool(self.pkg_client_cert) != bool(self.pkg_client_key):
            raise ConfigError("SIPSEC_GATEWAY_PKG_CLIENT_CERT and SIPSEC_GATEWAY_PKG_CLIENT_KEY go together")
        if self.pkg_client_cert and self.pkg_plaintext:
            raise ConfigError("SIPSEC_GATEWAY_PKG_CLIENT_CERT needs TLS to the PKG (not SIPSEC_GATEWAY_PKG_PLAINTEXT)")
        try:
            SigningPolicy(self.signing)
            SecurityPolicy(self.default_policy)
            self.connection_limits()
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        if self.contact_secret:
            try:
                bytes.fromhex(self.contact_secret)
            except ValueError:
                raise ConfigError("contact_secret must be hex") from None
        for name in ("sip_listen", "proxy", "http_listen") + (("plain_listen",) if self.plain_listen else ()):
            split_hostport(getattr(self, name))

    def _check_phone_side(self) -> None:
        """The phone-side (legacy SIP) settings: Digest, back-off, rate."""
        if not self.phone_digest_algorithms or not set(self.phone_digest_algorithms) <= {"SHA-256", "MD5"}:
            raise ConfigError("phone_digest must list SHA-256 and/or MD5")
        if self.phone_free_failures < 0 or self.phone_source_failures < 1:
            raise ConfigError("phone_free_failures must not be negative and phone_source_failures must be positive")
        if not 0 < self.phone_backoff_s <= self.phone_backoff_max_s or self.phone_source_window_s <= 0:
            raise ConfigError("phone back-off times must be positive, the first no longer than the longest")
        if self.phone_rate < 0 or (self.phone_rate > 0 and self.phone_burst < 1):
            raise ConfigError("phone_rate must not be negative and phone_burst at least 1")

    def _check_store(self) -> None:
        """Transport and dialog store (a Redis store needs its sealing key)."""
        if self.transport not in ("udp", "tcp", "tls"):
            raise ConfigError("transport must be udp, tcp or tls")
        if self.transport == "tls" and not (self.tls_cert and self.tls_key):
            raise ConfigError("SIPSEC_GATEWAY_TRANSPORT=tls needs SIPSEC_GATEWAY_TLS_CERT and SIPSEC_GATEWAY_TLS_KEY")
        if self.store not in ("memory", "redis"):
            raise ConfigError("store must be memory or redis")
        if self.store == "redis" and not self.sealing_key_file and not self.insecure_plain_store:
            raise ConfigError("SIPSEC_GATEWAY_SEALING_KEY_FILE is required with SIPSEC_GATEWAY_STORE=redis "
                              "(SIPSEC_GATEWAY_INSECURE_PLAIN_STORE=1 stores dialog keys in clear, for development only)")

    def _check_limits(self) -> None:
        """Sizes, times and ports (ConfigError on the first bad one)."""
        if self.keep_calls < 1 or self.trace_calls < 0:
            raise ConfigError("keep_calls must be positive and trace_calls not negative")
        if not 0 < self.trace_minutes <= 1440:
            raise ConfigError("trace_minutes must be positive and at most 1440 (a day)")
        if self.metrics_port < -1 or self.metrics_port > 65535:
            raise ConfigError("metrics_port must be a port number, 0 (any) or -1 (off)")
        if self.register_expires < 60:
            raise ConfigError("register_expires must be at least 60 seconds")
        if self.call_timeout_s <= 0 or self.dialog_ttl_s <= 0 or self.key_retry_s <= 0:
            raise ConfigError("timeouts must be positive")
        if self.bye_retry_s < 0:
            raise ConfigError("bye_retry_s must not be negative")
        if self.min_se_s < 1 or (self.session_expires_s and self.session_expires_s < self.min_se_s):
            raise ConfigError("min_se_s must be positive and session_expires_s 0 (off) or at least min_se_s")
        if self.max_call_legs < 0:
            raise ConfigError("max_call_legs must not be negative (0 = no limit)")
        if self.call_grace_s < 0 or self.drain_seconds < 0 or not 0 < self.ready_timeout_s <= 30:
            raise ConfigError("call_grace_s and drain_seconds must not be negative; ready_timeout_s must be in (0, 30]")
        if not 0 <= self.verify_window_ms <= 100:
            raise ConfigError("verify_window_ms must be between 0 and 100")
        if not 0 <= self.verify_busy_cpu <= 1:
            raise ConfigError("verify_busy_cpu must be between 0 and 1")
        if self.table_mib < 0:
            raise ConfigError("table_mib must not be negative")

    def check_trust(self) -> list[str]:
        """At start: the trust anchors a production gateway must have. Raises ConfigError naming
        the first missing one; with ``insecure_dev`` on, returns the ``INSECURE:`` warnings to log."""
        warnings = [shared.require_pin(self.pkg_fingerprint, "SIPSEC_GATEWAY_PKG_FINGERPRINT",
                                       "the domain parameters fetched from the PKG", insecure=self.insecure_dev)]
        return [w for w in warnings if w]

    def connection_limits(self, peers: Iterable[str] = ()) -> ConnectionLimits:
        """The TCP/TLS listener's :class:`ConnectionLimits`; ``peers`` (IP addresses: the proxy's,
        resolved by the caller when it is a name) are exempt from the per-source cap and may
        use the reserved connections. A proxy given as an IP address is always among them."""
        host = split_hostport(self.proxy)[0].strip("[]")
        return shared.connection_limits(self, "SIPSEC_GATEWAY", [*([host] if is_ip_literal(host) else []), *peers])

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
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: object) -> GatewayConfig:
        """The defaults, then ``environ`` (default ``os.environ``), then ``overrides``."""
        return load(cls, environ, **overrides)


#: field -> (variable, default, help), derived from :class:`GatewayConfig`.
ENV = env_table(GatewayConfig)
