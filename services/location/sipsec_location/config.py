"""Configuration of the location service: environment variables with defaults, then flags."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from sipsec.config import load_env, parse_flags

__all__ = ["ENV", "LocationConfig", "parse_args"]

# field -> (environment variable, default, help)
ENV: dict[str, tuple[str, str, str]] = {
    "listen": ("SIPSEC_LOCATION_LISTEN", "0.0.0.0:50052", "gRPC listen address host:port (port 0 = any)"),
    "store": ("SIPSEC_LOCATION_STORE", "memory", "binding store: memory | redis"),
    "redis_url": ("SIPSEC_REDIS_URL", "redis://127.0.0.1:6379/0", "Redis URL (store=redis)"),
    "metrics_host": ("SIPSEC_LOCATION_METRICS_HOST", "0.0.0.0", "Prometheus /metrics bind host"),
    "metrics_port": ("SIPSEC_LOCATION_METRICS_PORT", "9462", "Prometheus port (0 = any free port, -1 = off)"),
    "max_expires": ("SIPSEC_LOCATION_MAX_EXPIRES", "86400", "largest accepted binding expiry, seconds"),
    "max_contacts": ("SIPSEC_LOCATION_MAX_CONTACTS", "16", "most bindings one AOR may hold"),
    "drain_seconds": ("SIPSEC_LOCATION_DRAIN_SECONDS", "5", "grace period for in-flight RPCs on SIGTERM"),
    "tls_cert": ("SIPSEC_LOCATION_TLS_CERT", "", "PEM certificate chain file; set to serve TLS"),
    "tls_key": ("SIPSEC_LOCATION_TLS_KEY", "", "PEM private key file (with tls_cert)"),
    "tls_client_ca": ("SIPSEC_LOCATION_TLS_CLIENT_CA", "", "PEM CA file; set to require client certificates"),
    "log_level": ("SIPSEC_LOG_LEVEL", "INFO", "logging level"),
}


@dataclass(frozen=True)
class LocationConfig:
    """Every setting of the service; see :data:`ENV` for the variables and defaults."""

    listen: str = "0.0.0.0:50052"
    store: str = "memory"
    redis_url: str = "redis://127.0.0.1:6379/0"
    metrics_host: str = "0.0.0.0"
    metrics_port: int = 9462
    max_expires: int = 86400
    max_contacts: int = 16
    drain_seconds: float = 5.0
    tls_cert: str = ""
    tls_key: str = ""
    tls_client_ca: str = ""
    log_level: str = "INFO"

    def __post_init__(self) -> None:
        if self.store not in ("memory", "redis"):
            raise ValueError(f"store must be memory or redis, not {self.store!r}")
        if self.max_expires < 1 or self.max_contacts < 1:
            raise ValueError("max_expires and max_contacts must be positive")
        if bool(self.tls_cert) != bool(self.tls_key):
            raise ValueError("tls_cert and tls_key go together")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> LocationConfig:
        return load_env(cls, ENV, environ)


def parse_args(argv: Sequence[str] | None, environ: Mapping[str, str] | None = None) -> LocationConfig:
    """Flags override environment variables, which override the defaults."""
    return parse_flags(
        LocationConfig, ENV, argv, environ, prog="sipsec-location",
        description="sipsec location service: AOR -> contact bindings over gRPC (RFC 3261 §10).",
    )
