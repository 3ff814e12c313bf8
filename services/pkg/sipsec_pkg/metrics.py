"""The PKG's Prometheus metrics (own registry per instance); RPC latency and outcomes are the
shared server interceptor's (``sipsec_rpc_server_*``, :mod:`sipsec.rpc.interceptor`).

Labels come from small fixed sets (method, code, purpose, mode, reason, scope); never an AOR,
token, client address or domain typed by a caller.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server
from sipsec.rpc import RpcServerMetrics

__all__ = ["MetricsHttpServer", "PkgMetrics"]


class PkgMetrics:
    """Every metric of one PKG instance, registered in ``registry``."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.rpc = RpcServerMetrics(r)
        self.extractions = Counter(
            "sipsec_pkg_extractions_total",
            "Private keys (mode=full) or threshold partial keys (mode=partial) issued, by purpose.",
            ["purpose", "mode"], registry=r,
        )
        self.active_sessions = Gauge(
            "sipsec_pkg_active_sessions", "Login sessions not idle past the timeout.", registry=r
        )
        self.login_failures = Counter(
            "sipsec_pkg_login_failures_total",
            "Refused logins by reason (bad_credentials, backoff, invalid_request).",
            ["reason"], registry=r,
        )
        self.login_throttled = Counter(
            "sipsec_pkg_login_throttled_total",
            "Login attempts refused unchecked while a back-off ran, by scope (account_client, client_address).",
            ["scope"], registry=r,
        )
        self.login_backoffs = Counter(
            "sipsec_pkg_login_backoffs_total",
            "Failed logins past the free allowance that started or lengthened a back-off (a guessing signal), "
            "by scope (account_client, client_address).",
            ["scope"], registry=r,
        )
        self.session_rejections = Counter(
            "sipsec_pkg_session_rejections_total",
            "Key requests refused for their session, by reason (invalid, forged, expired, lifetime, revoked).",
            ["reason"], registry=r,
        )
        self.fed_hits = Counter(
            "sipsec_pkg_federation_cache_hits_total", "Peer parameters served from the cache.", registry=r
        )
        self.fed_misses = Counter(
            "sipsec_pkg_federation_cache_misses_total",
            "Peer parameter requests that had to contact the peer.", registry=r,
        )
        self.fed_errors = Counter(
            "sipsec_pkg_federation_errors_total",
            "Federation failures by reason (unknown_domain, unavailable, bad_signature, pin_mismatch, "
            "bad_params, wrong_domain, bad_cache).",
            ["reason"], registry=r,
        )
        self.fed_stale = Counter(
            "sipsec_pkg_federation_stale_served_total",
            "Cached peer parameters served past their refresh time because the peer failed.", registry=r,
        )

    def render(self) -> bytes:
        from prometheus_client import generate_latest

        return generate_latest(self.registry)


class MetricsHttpServer:
    """``/metrics`` over HTTP in a daemon thread (prometheus_client); port 0 picks a free one."""

    def __init__(self, metrics: PkgMetrics, host: str, port: int) -> None:
        self._httpd, self._thread = start_http_server(port, addr=host, registry=metrics.registry)
        self.port: int = int(self._httpd.server_port)

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)
