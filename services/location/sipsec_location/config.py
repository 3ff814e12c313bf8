"""Configuration of the location service: each setting declared once (variable, default, help);
the environment overrides the defaults, flags override the environment (see :mod:`sipsec.config`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from sipsec import config as shared
from sipsec.config import ConfigError, env_table, load, parse_flags, setting

__all__ = ["ENV", "LocationConfig", "parse_args"]


@dataclass(frozen=True)
class LocationConfig:
    """Every setting of the service (RFC 3261 §10.3 bindings kept behind gRPC)."""

    listen: str = setting("SIPSEC_LOCATION_LISTEN", "0.0.0.0:50052", "gRPC listen address host:port (port 0 = any)")
    store: str = setting("SIPSEC_LOCATION_STORE", "memory", "binding store: memory or redis")
    redis_url: str = shared.redis_url("store=redis; names the service's ACL user: redis://location@host:6379/0, rediss:// for TLS")
    redis_password_file: str = shared.redis_password_file("SIPSEC_LOCATION")
    redis_ca: str = shared.redis_ca("SIPSEC_LOCATION")
    metrics_host: str = setting("SIPSEC_LOCATION_METRICS_HOST", "0.0.0.0", "bind host of the Prometheus /metrics endpoint")
    metrics_port: int = setting("SIPSEC_LOCATION_METRICS_PORT", 9462, "Prometheus port (0 = any free port, -1 = off)")
    max_expires: int = setting("SIPSEC_LOCATION_MAX_EXPIRES", 86400, "largest binding expiry accepted by Bind, seconds")
    max_contacts: int = setting("SIPSEC_LOCATION_MAX_CONTACTS", 16, "most bindings one AOR may hold")
    drain_seconds: float = setting("SIPSEC_LOCATION_DRAIN_SECONDS", 5.0, "grace period for in-flight RPCs after SIGTERM, seconds")
    tls_cert: str = setting("SIPSEC_LOCATION_TLS_CERT", "", "PEM certificate chain file; set with the key to serve TLS")
    tls_key: str = setting("SIPSEC_LOCATION_TLS_KEY", "", "PEM private key file (with the certificate)")
    tls_client_ca: str = setting("SIPSEC_LOCATION_TLS_CLIENT_CA", "", "PEM CA file; set to require client certificates")
    log_level: str = shared.log_level()
    log_format: str = shared.log_format()

    def __post_init__(self) -> None:
        if self.store not in ("memory", "redis"):
            raise ConfigError(f"store must be memory or redis, not {self.store!r}")
        if self.max_expires < 1 or self.max_contacts < 1:
            raise ConfigError("max_expires and max_contacts must be positive")
        if bool(self.tls_cert) != bool(self.tls_key):
            raise ConfigError("tls_cert and tls_key go together")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: object) -> LocationConfig:
        """The defaults, then ``environ`` (default ``os.environ``), then ``overrides``."""
        return load(cls, environ, **overrides)


#: field -> (variable, default, help), derived from :class:`LocationConfig`.
ENV = env_table(LocationConfig)


def parse_args(argv: Sequence[str] | None, environ: Mapping[str, str] | None = None) -> LocationConfig:
    """Flags override environment variables, which override the defaults."""
    return parse_flags(
        LocationConfig, argv, environ, prog="sipsec-location",
        description="sipsec location service: AOR -> contact bindings over gRPC (RFC 3261 §10).",
    )
