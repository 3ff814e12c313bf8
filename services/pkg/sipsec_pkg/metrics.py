"""The PKG's Prometheus metrics (own registry per instance); RPC latency and outcomes are the
shared server interceptor's (``sipsec_rpc_server_*``, :mod:`sipsec.rpc.interceptor`).

Labels come from small fixed sets (method, code, purpose, mode, reason, scope, outcome, result)
or from the configuration (``peer``: a domain listed in ``SIPSEC_PKG_PEERS``); never an AOR,
token, client address or domain typed by a caller.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from sipsec.rpc import RpcServerMetrics
from sipsec.stores.access import StoreMetricsCollector
from sipsec.telemetry.health import Readiness, build_info
from sipsec.telemetry.http import close_metrics, serve_metrics

__all__ = ["MetricsHttpServer", "PkgMetrics"]


class PkgMetrics:
    """Every metric of one PKG instance, registered in ``registry``."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.rpc = RpcServerMetrics(r)
        self.build_info = build_info(r, "pkg")
        r.register(StoreMetricsCollector())  # sipsec_store_* of the process's store clients
        self.extractions = Counter(
            "sipsec_pkg_extractions_total",
            "Private keys (mode=full) or threshold partial keys (mode=partial) issued, by purpose and period "
            "(current, or ahead: a later period issued before it starts).",
            ["purpose", "mode", "period"], registry=r,
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

        self.fed_fetch_seconds = Histogram(
            "sipsec_pkg_federation_fetch_duration_seconds",
            "Time to fetch a peer PKG's signed parameters (cache misses only), by peer domain (from the configuration).",
            ["peer"], registry=r, buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
        )
        self.fed_fetches = Counter(
            "sipsec_pkg_federation_fetches_total",
            "Fetches of a peer PKG's signed parameters by peer domain (from the configuration) and outcome "
            "(ok, unavailable, refused).",
            ["peer", "outcome"], registry=r,
        )
        self.key_material_checks = Counter(
            "sipsec_pkg_key_material_checks_total",
            "Self-checks of the node's secret against the domain's public parameters, by result (ok, failed).",
            ["result"], registry=r,
        )
        for result in ("ok", "failed"):
            self.key_material_checks.labels(result)

    def peers(self, domains: list[str]) -> None:
        """Create the per-peer series of the configured peers (so that they exist at zero)."""
        for domain in domains:
            self.fed_fetch_seconds.labels(domain)
            for outcome in ("ok", "unavailable", "refused"):
                self.fed_fetches.labels(domain, outcome)

    def render(self) -> bytes:
        from prometheus_client import generate_latest

        return generate_latest(self.registry)


class MetricsHttpServer:
    """``/metrics``, ``/livez`` and ``/readyz`` over HTTP in a daemon thread; port 0 picks a free one."""

    def __init__(self, metrics: PkgMetrics, host: str, port: int, readiness: Readiness | None = None) -> None:
        self._httpd, bound = serve_metrics(port, host, metrics.registry, readiness)
        self.port: int = int(bound or 0)

    def close(self) -> None:
        close_metrics(self._httpd)
