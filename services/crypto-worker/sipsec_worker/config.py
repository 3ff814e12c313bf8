"""Configuration of the crypto-worker: each setting declared once (variable, default, help);
the environment overrides the defaults, flags override the environment (see :mod:`sipsec.config`)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from sipsec.config import ConfigError, env_table, load, log_format, log_level, parse_flags, setting

__all__ = ["ENV", "WorkerConfig", "parse_args"]


@dataclass(frozen=True)
class WorkerConfig:
    """Every setting of the worker (each declared once: variable, default, help).

    The worker serves TLS (``tls_cert`` + ``tls_key``) or, only when asked explicitly,
    plaintext: requests carry private keys.
    """

    listen: str = setting("SIPSEC_WORKER_LISTEN", "0.0.0.0:50053", "gRPC listen address host:port (port 0 = any)")
    processes: int = setting("SIPSEC_WORKER_PROCESSES", 0, "crypto pool processes (0 = os.cpu_count(); in a container set the CPU limit: os.cpu_count() sees the host)")
    queue: int = setting("SIPSEC_WORKER_QUEUE", 64, "pool tasks that may wait for a process; beyond it RESOURCE_EXHAUSTED")
    max_batch: int = setting("SIPSEC_WORKER_MAX_BATCH", 256, "most items in one batch RPC (INVALID_ARGUMENT / batch-too-large above)")
    params_cache: int = setting("SIPSEC_WORKER_PARAMS_CACHE", 128, "parsed domain parameters kept per pool process (LRU)")
    key_cache: int = setting("SIPSEC_WORKER_KEY_CACHE", 4096, "parsed private keys kept per pool process (LRU; a key keeps its signing tables only while cached)")
    table_mib: float = setting("SIPSEC_WORKER_TABLE_MIB", 64.0, "memory for fixed-base tables per pool process, MiB (3/8 identity points ~171 KiB each, 3/8 signing keys ~343 KiB, 1/4 recipients ~588 KiB; built only for values used often enough to repay them; 0 = none)")
    metrics_host: str = setting("SIPSEC_WORKER_METRICS_HOST", "0.0.0.0", "bind host of the Prometheus /metrics endpoint")
    metrics_port: int = setting("SIPSEC_WORKER_METRICS_PORT", 9465, "Prometheus port (0 = any free port, -1 = off)")
    drain_seconds: float = setting("SIPSEC_WORKER_DRAIN_SECONDS", 10.0, "grace period for in-flight RPCs after SIGTERM, seconds")
    tls_cert: str = setting("SIPSEC_WORKER_TLS_CERT", "", "PEM certificate chain file; set with the key to serve TLS")
    tls_key: str = setting("SIPSEC_WORKER_TLS_KEY", "", "PEM private key file (with the certificate)")
    tls_client_ca: str = setting("SIPSEC_WORKER_TLS_CLIENT_CA", "", "PEM CA file; set to require client certificates")
    plaintext: bool = setting("SIPSEC_WORKER_PLAINTEXT", False, "serve without TLS, asked for explicitly (private keys travel in requests: trusted networks only)")
    log_level: str = log_level()
    log_format: str = log_format()

    def __post_init__(self) -> None:
        if self.processes < 0 or self.queue < 0:
            raise ConfigError("processes and queue must not be negative")
        if self.max_batch < 1 or self.params_cache < 1 or self.key_cache < 1:
            raise ConfigError("max_batch, params_cache and key_cache must be positive")
        if self.table_mib < 0:
            raise ConfigError("table_mib must not be negative")
        if bool(self.tls_cert) != bool(self.tls_key):
            raise ConfigError("tls_cert and tls_key go together")
        if self.tls_cert and self.plaintext:
            raise ConfigError("choose TLS (tls_cert/tls_key) or plaintext, not both")
        if not self.tls_cert and not self.plaintext:
            raise ConfigError(
                "no TLS configured: set SIPSEC_WORKER_TLS_CERT/KEY, or SIPSEC_WORKER_PLAINTEXT=true "
                "on a trusted network (requests carry private keys)"
            )

    @property
    def pool_processes(self) -> int:
        """The number of pool processes actually started."""
        return self.processes or os.cpu_count() or 1

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: object) -> WorkerConfig:
        """The defaults, then ``environ`` (default ``os.environ``), then ``overrides``."""
        return load(cls, environ, **overrides)


#: field -> (variable, default, help), derived from :class:`WorkerConfig`.
ENV = env_table(WorkerConfig)


def parse_args(argv: Sequence[str] | None, environ: Mapping[str, str] | None = None) -> WorkerConfig:
    """Flags override environment variables, which override the defaults."""
    return parse_flags(
        WorkerConfig, argv, environ, prog="sipsec-worker",
        description="sipsec crypto-worker: stateless IBE/IBS operations over gRPC, on a process pool.",
    )
