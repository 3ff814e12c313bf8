"""PKG configuration: environment variables with documented defaults; CLI flags override them.

Every variable is listed in ``ENV_DEFAULTS`` (and in the service README).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from sipsec.pkgclient import normalize_fingerprint
from sipsec.rpc import ServerTLS

from sipsec_pkg.passwords import ScryptParams

__all__ = ["ENV_DEFAULTS", "ConfigError", "Peer", "PkgConfig", "parse_peers"]


class ConfigError(ValueError):
    """A configuration value is missing or malformed."""


ENV_DEFAULTS: dict[str, str] = {
    "SIPSEC_PKG_DOMAIN": "",
    "SIPSEC_PKG_LISTEN": "0.0.0.0:50051",
    "SIPSEC_PKG_DATA_DIR": "/var/lib/sipsec-pkg",
    "SIPSEC_PKG_NODE": "0",
    "SIPSEC_PKG_STORE": "memory",
    "SIPSEC_REDIS_URL": "redis://127.0.0.1:6379/0",
    "SIPSEC_PKG_KEK": "",
    "SIPSEC_PKG_KEK_FILE": "",
    "SIPSEC_PKG_TLS_CERT": "",
    "SIPSEC_PKG_TLS_KEY": "",
    "SIPSEC_PKG_TLS_CLIENT_CA": "",
    "SIPSEC_PKG_PLAINTEXT": "0",
    "SIPSEC_PKG_IDLE_TIMEOUT_S": "900",
    "SIPSEC_PKG_LOGIN_MAX_FAILURES": "5",
    "SIPSEC_PKG_SOURCE_MAX_FAILURES": "20",
    "SIPSEC_PKG_FAILURE_WINDOW_S": "900",
    "SIPSEC_PKG_LOCKOUT_S": "900",
    "SIPSEC_PKG_SCRYPT_N": str(2**15),
    "SIPSEC_PKG_SCRYPT_R": "8",
    "SIPSEC_PKG_SCRYPT_P": "1",
    "SIPSEC_PKG_PEERS": "",
    "SIPSEC_PKG_PEER_CA": "",
    "SIPSEC_PKG_PEER_PLAINTEXT": "0",
    "SIPSEC_PKG_FED_TTL_S": "3600",
    "SIPSEC_PKG_FED_REFRESH_S": "600",
    "SIPSEC_PKG_FED_TIMEOUT_S": "2",
    "SIPSEC_PKG_AUDIT_LOG": "",
    "SIPSEC_PKG_METRICS_HOST": "0.0.0.0",
    "SIPSEC_PKG_METRICS_PORT": "9464",
    "SIPSEC_PKG_SHUTDOWN_GRACE_S": "5",
    "SIPSEC_PKG_LOG_LEVEL": "INFO",
}


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
            if len(parts) != 3 or not all(parts):
                raise ConfigError(f"peer entry {item.strip()!r} is not domain,endpoint,fingerprint")
            entries.append((parts[0], parts[1], parts[2]))
    peers: dict[str, Peer] = {}
    for domain, endpoint, fp in entries:
        try:
            fp = normalize_fingerprint(fp)
        except ValueError as exc:
            raise ConfigError(f"peer {domain}: {exc}") from None
        peers[domain.lower()] = Peer(domain.lower(), endpoint, fp)
    return peers


def _bool(value: str, name: str) -> bool:
    v = value.strip().lower()
    if v in ("1", "true", "yes", "on"):
        return True
    if v in ("0", "false", "no", "off", ""):
        return False
    raise ConfigError(f"{name} must be a boolean (1/0, true/false)")


def _num(value: str, name: str, kind: type[int] | type[float]) -> Any:
    try:
        return kind(value)
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {value!r}") from None


@dataclass(frozen=True)
class PkgConfig:
    """Everything a PKG node needs; build it with ``from_env`` and ``with_overrides``."""

    domain: str = ""
    listen: str = "0.0.0.0:50051"
    data_dir: str = "/var/lib/sipsec-pkg"
    node: int = 0
    store: str = "memory"
    redis_url: str = "redis://127.0.0.1:6379/0"
    kek: str = field(default="", repr=False)
    kek_file: str = ""
    tls_cert: str = ""
    tls_key: str = ""
    tls_client_ca: str = ""
    plaintext: bool = False
    idle_timeout_s: float = 900.0
    login_max_failures: int = 5
    source_max_failures: int = 20
    failure_window_s: float = 900.0
    lockout_s: float = 900.0
    scrypt: ScryptParams = ScryptParams()
    peers: Mapping[str, Peer] = field(default_factory=dict)
    peer_ca: str = ""
    peer_plaintext: bool = False
    fed_ttl_s: float = 3600.0
    fed_refresh_s: float = 600.0
    fed_timeout_s: float = 2.0
    audit_log: str = ""
    metrics_host: str = "0.0.0.0"
    metrics_port: int | None = 9464
    shutdown_grace_s: float = 5.0
    log_level: str = "INFO"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> PkgConfig:
        env = dict(ENV_DEFAULTS)
        src = os.environ if environ is None else environ
        env.update({k: v for k, v in src.items() if k in ENV_DEFAULTS})
        metrics_port = env["SIPSEC_PKG_METRICS_PORT"].strip()
        try:
            scrypt = ScryptParams(
                _num(env["SIPSEC_PKG_SCRYPT_N"], "SIPSEC_PKG_SCRYPT_N", int),
                _num(env["SIPSEC_PKG_SCRYPT_R"], "SIPSEC_PKG_SCRYPT_R", int),
                _num(env["SIPSEC_PKG_SCRYPT_P"], "SIPSEC_PKG_SCRYPT_P", int),
            )
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        config = cls(
            domain=env["SIPSEC_PKG_DOMAIN"].strip().lower(),
            listen=env["SIPSEC_PKG_LISTEN"],
            data_dir=env["SIPSEC_PKG_DATA_DIR"],
            node=_num(env["SIPSEC_PKG_NODE"], "SIPSEC_PKG_NODE", int),
            store=env["SIPSEC_PKG_STORE"].strip().lower(),
            redis_url=env["SIPSEC_REDIS_URL"],
            kek=env["SIPSEC_PKG_KEK"],
            kek_file=env["SIPSEC_PKG_KEK_FILE"],
            tls_cert=env["SIPSEC_PKG_TLS_CERT"],
            tls_key=env["SIPSEC_PKG_TLS_KEY"],
            tls_client_ca=env["SIPSEC_PKG_TLS_CLIENT_CA"],
            plaintext=_bool(env["SIPSEC_PKG_PLAINTEXT"], "SIPSEC_PKG_PLAINTEXT"),
            idle_timeout_s=_num(env["SIPSEC_PKG_IDLE_TIMEOUT_S"], "SIPSEC_PKG_IDLE_TIMEOUT_S", float),
            login_max_failures=_num(env["SIPSEC_PKG_LOGIN_MAX_FAILURES"], "SIPSEC_PKG_LOGIN_MAX_FAILURES", int),
            source_max_failures=_num(env["SIPSEC_PKG_SOURCE_MAX_FAILURES"], "SIPSEC_PKG_SOURCE_MAX_FAILURES", int),
            failure_window_s=_num(env["SIPSEC_PKG_FAILURE_WINDOW_S"], "SIPSEC_PKG_FAILURE_WINDOW_S", float),
            lockout_s=_num(env["SIPSEC_PKG_LOCKOUT_S"], "SIPSEC_PKG_LOCKOUT_S", float),
            scrypt=scrypt,
            peers=parse_peers(env["SIPSEC_PKG_PEERS"]),
            peer_ca=env["SIPSEC_PKG_PEER_CA"],
            peer_plaintext=_bool(env["SIPSEC_PKG_PEER_PLAINTEXT"], "SIPSEC_PKG_PEER_PLAINTEXT"),
            fed_ttl_s=_num(env["SIPSEC_PKG_FED_TTL_S"], "SIPSEC_PKG_FED_TTL_S", float),
            fed_refresh_s=_num(env["SIPSEC_PKG_FED_REFRESH_S"], "SIPSEC_PKG_FED_REFRESH_S", float),
            fed_timeout_s=_num(env["SIPSEC_PKG_FED_TIMEOUT_S"], "SIPSEC_PKG_FED_TIMEOUT_S", float),
            audit_log=env["SIPSEC_PKG_AUDIT_LOG"],
            metrics_host=env["SIPSEC_PKG_METRICS_HOST"],
            metrics_port=None if metrics_port in ("", "-1", "off") else _num(metrics_port, "SIPSEC_PKG_METRICS_PORT", int),
            shutdown_grace_s=_num(env["SIPSEC_PKG_SHUTDOWN_GRACE_S"], "SIPSEC_PKG_SHUTDOWN_GRACE_S", float),
            log_level=env["SIPSEC_PKG_LOG_LEVEL"].upper(),
        )
        config.validate()
        return config

    def with_overrides(self, **values: Any) -> PkgConfig:
        """A copy with the given fields replaced (``None`` values are ignored), validated."""
        config = replace(self, **{k: v for k, v in values.items() if v is not None})
        config.validate()
        return config

    def validate(self) -> None:
        if self.store not in ("memory", "redis"):
            raise ConfigError("SIPSEC_PKG_STORE must be memory or redis")
        if self.idle_timeout_s <= 0 or self.lockout_s <= 0 or self.failure_window_s <= 0:
            raise ConfigError("timeouts must be positive")
        if self.login_max_failures < 1 or self.source_max_failures < 1:
            raise ConfigError("failure limits must be at least 1")
        if self.fed_ttl_s <= 0 or self.fed_refresh_s <= 0 or self.fed_timeout_s <= 0:
            raise ConfigError("federation TTL, refresh time and timeout must be positive")
        if self.node < 0:
            raise ConfigError("SIPSEC_PKG_NODE must be 0 (whole master secret) or a share index >= 1")
        if bool(self.tls_cert) != bool(self.tls_key):
            raise ConfigError("SIPSEC_PKG_TLS_CERT and SIPSEC_PKG_TLS_KEY go together")

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
