"""Configuration of the crypto-worker: environment variables with documented defaults, then flags."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from sipsec.config import load_env, parse_flags

__all__ = ["ENV", "WorkerConfig", "parse_args"]

# field -> (environment variable, default, help)
ENV: dict[str, tuple[str, str, str]] = {
    "listen": ("SIPSEC_WORKER_LISTEN", "0.0.0.0:50053", "gRPC listen address host:port (port 0 = any)"),
    "processes": ("SIPSEC_WORKER_PROCESSES", "0", "crypto pool processes (0 = os.cpu_count())"),
    "queue": ("SIPSEC_WORKER_QUEUE", "64", "pool tasks that may wait for a process; beyond it RESOURCE_EXHAUSTED"),
    "max_batch": ("SIPSEC_WORKER_MAX_BATCH", "256", "most items in one batch RPC"),
    "params_cache": ("SIPSEC_WORKER_PARAMS_CACHE", "128", "parsed domain parameters kept per pool process (LRU)"),
    "metrics_host": ("SIPSEC_WORKER_METRICS_HOST", "0.0.0.0", "Prometheus /metrics bind host"),
    "metrics_port": ("SIPSEC_WORKER_METRICS_PORT", "9465", "Prometheus port (0 = any free port, -1 = off)"),
    "drain_seconds": ("SIPSEC_WORKER_DRAIN_SECONDS", "10", "grace period for in-flight RPCs on SIGTERM"),
    "tls_cert": ("SIPSEC_WORKER_TLS_CERT", "", "PEM certificate chain file; set to serve TLS"),
    "tls_key": ("SIPSEC_WORKER_TLS_KEY", "", "PEM private key file (with tls_cert)"),
    "tls_client_ca": ("SIPSEC_WORKER_TLS_CLIENT_CA", "", "PEM CA file; set to require client certificates"),
    "plaintext": ("SIPSEC_WORKER_PLAINTEXT", "false", "serve without TLS (private keys travel in requests: trusted networks only)"),
    "log_level": ("SIPSEC_LOG_LEVEL", "INFO", "logging level"),
}



@dataclass(frozen=True)
class WorkerConfig:
    """Every setting of the worker; see :data:`ENV` for the variables and defaults.

    The worker serves TLS (``tls_cert`` + ``tls_key``) or, only when asked explicitly,
    plaintext: requests carry private keys.
    """

    listen: str = "0.0.0.0:50053"
    processes: int = 0
    queue: int = 64
    max_batch: int = 256
    params_cache: int = 128
    metrics_host: str = "0.0.0.0"
    metrics_port: int = 9465
    drain_seconds: float = 10.0
    tls_cert: str = ""
    tls_key: str = ""
    tls_client_ca: str = ""
    plaintext: bool = False
    log_level: str = "INFO"

    def __post_init__(self) -> None:
        if self.processes < 0 or self.queue < 0:
            raise ValueError("processes and queue must not be negative")
        if self.max_batch < 1 or self.params_cache < 1:
            raise ValueError("max_batch and params_cache must be positive")
        if bool(self.tls_cert) != bool(self.tls_key):
            raise ValueError("tls_cert and tls_key go together")
        if self.tls_cert and self.plaintext:
            raise ValueError("choose TLS (tls_cert/tls_key) or plaintext, not both")
        if not self.tls_cert and not self.plaintext:
            raise ValueError(
                "no TLS configured: set SIPSEC_WORKER_TLS_CERT/KEY, or SIPSEC_WORKER_PLAINTEXT=true "
                "on a trusted network (requests carry private keys)"
            )

    @property
    def pool_processes(self) -> int:
        """The number of pool processes actually started."""
        return self.processes or os.cpu_count() or 1

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: object) -> WorkerConfig:
        return load_env(cls, ENV, environ, **overrides)


def parse_args(argv: Sequence[str] | None, environ: Mapping[str, str] | None = None) -> WorkerConfig:
    """Flags override environment variables, which override the defaults."""
    return parse_flags(
        WorkerConfig, ENV, argv, environ, prog="sipsec-worker",
        description="sipsec crypto-worker: stateless IBE/IBS operations over gRPC, on a process pool.",
    )
