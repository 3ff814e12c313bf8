"""PKG configuration: each setting declared once (variable, default, help); the environment
overrides the defaults, the flags of ``sipsec-pkg serve`` override the environment (see
:mod:`sipsec.config`)."""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from sipsec.config import (
    ConfigError,
    env_table,
    load,
    log_format,
    log_level,
    pin_problem,
    redis_url,
    setting,
)
from sipsec.pkgclient import normalize_fingerprint
from sipsec.rpc import ServerTLS

from sipsec_pkg.passwords import ScryptParams
from sipsec_pkg.throttle import BackoffPolicy

__all__ = ["ENV", "ConfigError", "Peer", "PkgConfig", "parse_peers"]


@dataclass(frozen=True)
class Peer:
    """A federated domain: where its PKG listens and the pinned fingerprint of its Ed25519 key."""

    domain: str
    endpoint: str
    fingerprint: str


def parse_peers(text: str) -> dict[str, Peer]:
    """``domain,endpoint,fingerprint`` entries separated by ``;`` or newlines, or a JSON list of
    ``{"domain", "endpoint", "fingerprint"}`` objects. Raises ConfigError."""
    text = text.strip()
    if not text:
        return {}
    entries: list[tuple[str, str, str]] = []
    if text.startswith("["):
        try:
            raw = json.loads(text)
            entries = [(str(e["domain"]), str(e["endpoint"]), str(e["fingerprint"])) for e in raw]
        except (ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"SIPSEC_PKG_PEERS is not a valid JSON peer list: {exc}") from None
    else:
        for item in text.replace("\n", ";").split(";"):
            if not item.strip():
                continue
            parts = [p.strip() for p in item.split(",")]
            if len(parts) == 3 and parts[0] and parts[1] and not parts[2]:
                raise ConfigError(f"SIPSEC_PKG_PEERS: peer {parts[0]} has no pinned fingerprint; it is required "
                                  "(the `sha256:<hex>` its `sipsec-pkg fingerprint` prints)")
            if len(parts) != 3 or not all(parts):
                raise ConfigError(f"peer entry {item.strip()!r} is not domain,endpoint,fingerprint")
            entries.append((parts[0], parts[1], parts[2]))
    peers = [_peer(domain, endpoint, fp) for domain, endpoint, fp in entries]
    return {peer.domain: peer for peer in peers}


def _peer(domain: str, endpoint: str, fingerprint: str) -> Peer:
    """One peer, its pin normalised; raises ConfigError for a malformed or placeholder pin."""
    try:
        fp = normalize_fingerprint(fingerprint)
    except ValueError as exc:
        raise ConfigError(f"peer {domain}: {exc}") from None
    problem = pin_problem(fp)
    if problem:  # the all-zero stand-in of a template: no key hashes to it
        raise ConfigError(f"SIPSEC_PKG_PEERS: peer {domain}'s fingerprint {problem}; set the "
                          "`sha256:<hex>` its `sipsec-pkg fingerprint` prints")
    return Peer(domain.lower(), endpoint, fp)


def _lower(raw: str) -> str:
    return raw.strip().lower()


def _addresses(raw: str) -> tuple[str, ...]:
    return tuple(str(ipaddress.ip_address(a.strip())) for a in raw.split(",") if a.strip())


def _names(raw: str) -> tuple[str, ...]:
    """Comma-separated certificate names (subject CN or SAN DNS name), lower case."""
    names = tuple(n.strip().lower() for n in raw.split(",") if n.strip())
    for name in names:
        if len(name) > 253 or any(c.isspace() or not c.isprintable() for c in name):
            raise ValueError(f"{name!r} is not a certificate name")
    return names


def _metrics_port(raw: str) -> int | None:
    raw = raw.strip()
    if raw in ("", "-1", "off"):
        return None
    return int(raw)


@dataclass(frozen=True)
class PkgConfig:
    """Everything a PKG node needs; build it with ``from_env`` and ``with_overrides``."""

    domain: str = setting("SIPSEC_PKG_DOMAIN", "", "the provider domain; `init` needs it (or `--domain`); `serve` checks it against the key material when set", parse=_lower)
    listen: str = setting("SIPSEC_PKG_LISTEN", "0.0.0.0:50051", "gRPC listen address host:port (port 0 = any)")
    data_dir: str = setting("SIPSEC_PKG_DATA_DIR", "/var/lib/sipsec-pkg", "key material directory (see Files)")
    node: int = setting("SIPSEC_PKG_NODE", 0, "0: whole master secret (1-of-1); i: serve share i of a threshold domain")
    store: str = setting("SIPSEC_PKG_STORE", "memory", "state store: memory or redis", parse=_lower)
    redis_url: str = redis_url("store=redis; names the PKG's ACL user: redis://pkg@host:6379/0, rediss:// for TLS")
    redis_password_file: str = setting("SIPSEC_PKG_REDIS_PASSWORD_FILE", "", "file holding the password of the Redis user named in the URL (never in the URL itself)")
    redis_ca: str = setting("SIPSEC_PKG_REDIS_CA", "", "PEM CA file verifying the Redis server of a rediss:// URL (empty = the system's roots)")
    kek: str = setting("SIPSEC_PKG_KEK", "", "key-encryption key, 32 bytes base64 (`sipsec-pkg gen-kek`)", secret=True)
    kek_file: str = setting("SIPSEC_PKG_KEK_FILE", "", "file holding the KEK (raw 32 bytes or base64), e.g. a mounted Secret; used when SIPSEC_PKG_KEK is empty")
    tls_cert: str = setting("SIPSEC_PKG_TLS_CERT", "", "server certificate chain (PEM file)")
    tls_key: str = setting("SIPSEC_PKG_TLS_KEY", "", "server private key (PEM file)")
    tls_client_ca: str = setting("SIPSEC_PKG_TLS_CLIENT_CA", "", "PEM CA file; set to require client certificates signed by it")
    plaintext: bool = setting("SIPSEC_PKG_PLAINTEXT", False, "serve without TLS (local use only); otherwise TLS material is required")
    idle_timeout_s: float = setting("SIPSEC_PKG_IDLE_TIMEOUT_S", 900.0, "session idle timeout, seconds")
    session_max_lifetime_s: float = setting("SIPSEC_PKG_SESSION_MAX_LIFETIME_S", 43200.0, "absolute session lifetime whatever the activity, seconds (then log in again)")
    backoff_free_failures: int = setting("SIPSEC_PKG_BACKOFF_FREE_FAILURES", 3, "consecutive failed logins for one account from one client address before its attempts back off")
    backoff_base_s: float = setting("SIPSEC_PKG_BACKOFF_BASE_S", 1.0, "first back-off delay, seconds; doubles with each further failure")
    backoff_max_s: float = setting("SIPSEC_PKG_BACKOFF_MAX_S", 900.0, "longest back-off for one account from one client address, seconds")
    address_failure_budget: int = setting("SIPSEC_PKG_ADDRESS_FAILURE_BUDGET", 20, "failed logins from one client address (within the window) before its attempts for accounts never logged in from it back off")
    address_backoff_max_s: float = setting("SIPSEC_PKG_ADDRESS_BACKOFF_MAX_S", 60.0, "longest back-off of a client address over its budget, seconds")
    failure_window_s: float = setting("SIPSEC_PKG_FAILURE_WINDOW_S", 86400.0, "how long failed logins are remembered, seconds")
    trusted_forwarders: tuple[str, ...] = setting("SIPSEC_PKG_TRUSTED_FORWARDERS", (), "comma-separated IP addresses (e.g. UA gateways) whose Login may name the end user's client address for throttling", parse=_addresses, doc_default="")
    trusted_forwarder_names: tuple[str, ...] = setting("SIPSEC_PKG_TRUSTED_FORWARDER_NAMES", (), "comma-separated names (subject CN or SAN DNS name) of verified client certificates (e.g. UA gateways) whose Login may name the end user's client address for throttling; needs SIPSEC_PKG_TLS_CLIENT_CA", parse=_names, doc_default="")
    scrypt_n: int = setting("SIPSEC_PKG_SCRYPT_N", 2**15, "scrypt N (a power of two) for new password hashes (each hash keeps its own cost)")
    scrypt_r: int = setting("SIPSEC_PKG_SCRYPT_R", 8, "scrypt r")
    scrypt_p: int = setting("SIPSEC_PKG_SCRYPT_P", 1, "scrypt p")
    peers: Mapping[str, Peer] = setting("SIPSEC_PKG_PEERS", {}, "federation peers: `domain,endpoint,fingerprint` entries separated by `;`, or a JSON list of `{\"domain\",\"endpoint\",\"fingerprint\"}`; fingerprint = `sha256:<hex>` printed by the peer's `init`/`fingerprint`", parse=parse_peers)
    peer_ca: str = setting("SIPSEC_PKG_PEER_CA", "", "CA bundle (PEM file) for TLS to peers (empty = system roots)")
    peer_plaintext: bool = setting("SIPSEC_PKG_PEER_PLAINTEXT", False, "talk to peers without TLS (local use only)")
    fed_ttl_s: float = setting("SIPSEC_PKG_FED_TTL_S", 3600.0, "how long a verified peer copy may be served, seconds")
    fed_refresh_s: float = setting("SIPSEC_PKG_FED_REFRESH_S", 600.0, "age after which a cached peer copy is refreshed on use, seconds")
    fed_timeout_s: float = setting("SIPSEC_PKG_FED_TIMEOUT_S", 2.0, "time limit of one peer fetch, seconds")
    audit_log: str = setting("SIPSEC_PKG_AUDIT_LOG", "", "audit log file (JSON lines); `-` writes to stdout", doc_default="<data dir>/audit.jsonl")
    metrics_host: str = setting("SIPSEC_PKG_METRICS_HOST", "0.0.0.0", "bind host of the Prometheus /metrics endpoint")
    metrics_port: int | None = setting("SIPSEC_PKG_METRICS_PORT", 9464, "Prometheus port (0 = any free port; -1, `off` or empty = off)", parse=_metrics_port)
    drain_seconds: float = setting("SIPSEC_PKG_DRAIN_SECONDS", 5.0, "on SIGTERM: health goes NOT_SERVING, in-flight RPCs get this long, seconds", aliases=("SIPSEC_PKG_SHUTDOWN_GRACE_S",))
    log_level: str = log_level(aliases=("SIPSEC_PKG_LOG_LEVEL",))
    log_format: str = log_format()

    def __post_init__(self) -> None:
        self.validate()

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> PkgConfig:
        """The defaults, then ``environ`` (default ``os.environ``), then ``overrides``."""
        return load(cls, environ, **overrides)

    @property
    def backoff(self) -> BackoffPolicy:
        """The login back-off (``backoff_*``, ``address_*``); raises ValueError for bad values."""
        return BackoffPolicy(self.backoff_free_failures, self.backoff_base_s, self.backoff_max_s,
                             self.address_failure_budget, self.address_backoff_max_s)

    @property
    def scrypt(self) -> ScryptParams:
        """The cost of new password hashes (``scrypt_n``, ``scrypt_r``, ``scrypt_p``)."""
        return ScryptParams(self.scrypt_n, self.scrypt_r, self.scrypt_p)

    def with_overrides(self, **values: Any) -> PkgConfig:
        """A copy with the given fields replaced (``None`` values are ignored), validated."""
        config = replace(self, **{k: v for k, v in values.items() if v is not None})
        config.validate()
        return config

    def validate(self) -> None:
        """Check the combination; raises ConfigError."""
        try:
            self.scrypt  # noqa: B018 - ScryptParams checks its values
        except ValueError as exc:
            raise ConfigError(f"SIPSEC_PKG_SCRYPT_N/_R/_P: {exc}") from None
        if self.store not in ("memory", "redis"):
            raise ConfigError(f"store must be memory or redis, not {self.store!r}")
        if self.idle_timeout_s <= 0 or self.session_max_lifetime_s <= 0 or self.failure_window_s <= 0:
            raise ConfigError("timeouts must be positive")
        try:
            self.backoff  # noqa: B018 - BackoffPolicy checks its values
        except ValueError as exc:
            raise ConfigError(f"SIPSEC_PKG_BACKOFF_* / SIPSEC_PKG_ADDRESS_*: {exc}") from None
        if self.fed_ttl_s <= 0 or self.fed_refresh_s <= 0 or self.fed_timeout_s <= 0:
            raise ConfigError("federation TTL, refresh time and timeout must be positive")
        if self.node < 0:
            raise ConfigError("SIPSEC_PKG_NODE must be 0 (whole master secret) or a share index >= 1")
        if bool(self.tls_cert) != bool(self.tls_key):
            raise ConfigError("SIPSEC_PKG_TLS_CERT and SIPSEC_PKG_TLS_KEY go together")
        if self.trusted_forwarder_names and (self.plaintext or not self.tls_client_ca):
            raise ConfigError("SIPSEC_PKG_TRUSTED_FORWARDER_NAMES needs verified client certificates: "
                              "set SIPSEC_PKG_TLS_CLIENT_CA (and TLS, not SIPSEC_PKG_PLAINTEXT)")

    @property
    def audit_path(self) -> str:
        """The audit log file: SIPSEC_PKG_AUDIT_LOG, or ``<data dir>/audit.jsonl``; ``-`` is stdout."""
        return self.audit_log or str(Path(self.data_dir) / "audit.jsonl")

    def server_tls(self) -> ServerTLS | None:
        """TLS material, or None when plaintext was asked for explicitly; raises ConfigError."""
        if self.plaintext:
            return None
        if not self.tls_cert:
            raise ConfigError(
                "TLS needs SIPSEC_PKG_TLS_CERT and SIPSEC_PKG_TLS_KEY "
                "(set SIPSEC_PKG_PLAINTEXT=1 only for local use)"
            )
        try:
            return ServerTLS(
                cert_chain=Path(self.tls_cert).read_bytes(),
                private_key=Path(self.tls_key).read_bytes(),
                client_ca=Path(self.tls_client_ca).read_bytes() if self.tls_client_ca else None,
            )
        except OSError as exc:
            raise ConfigError(f"cannot read TLS material: {exc.strerror} ({exc.filename})") from None


#: field -> (variable, default, help), derived from :class:`PkgConfig`.
ENV = env_table(PkgConfig)
