"""Prometheus metrics of the proxy/registrar, in a registry of its own per instance."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from sipsec.telemetry.health import build_info

__all__ = ["METHODS", "REJECTION_REASONS", "ProxyMetrics", "method_label"]

METHODS = frozenset({"INVITE", "ACK", "BYE", "CANCEL", "REGISTER", "OPTIONS", "INFO", "UPDATE",
                     "PRACK", "SUBSCRIBE", "NOTIFY", "REFER", "MESSAGE", "PUBLISH"})

#: Every reason a request or message is refused or dropped by the proxy core.
REJECTION_REASONS = frozenset({
    "rate-limited", "overload", "too-many-hops", "loop", "bad-request", "unsupported-uri",
    "bad-extension", "no-route", "not-found", "stray-response", "auth-required", "auth-failed",
    "forbidden", "forbidden-target", "interval-too-brief", "location-error", "no-transaction", "transport-error",
})


def method_label(method: str) -> str:
    """The method, or "other" outside a fixed set (bounded label cardinality)."""
    return method if method in METHODS else "other"


class ProxyMetrics:
    """Requests by method and status class, latency, active transactions, registrations, rejections."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.build_info = build_info(r, "proxy")
        self.requests = Counter(
            "sipsec_proxy_requests_total",
            "Requests answered or forwarded, by method and the class of the final response sent upstream.",
            ["method", "status_class"], registry=r)
        self.latency = Histogram(
            "sipsec_proxy_transaction_duration_seconds",
            "Server transaction time from the request to its final response.",
            ["method"], registry=r,
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
        self.active = Gauge("sipsec_proxy_active_transactions",
                            "Server + client transactions in the table.", registry=r)
        self.registrations = Counter(
            "sipsec_proxy_registrations_total",
            "REGISTER requests by result (ok, challenged, denied, rejected, error).",
            ["result"], registry=r)
        self.rejections = Counter(
            "sipsec_proxy_rejections_total",
            "Requests refused or messages dropped by the proxy core, by reason.",
            ["reason"], registry=r)
        self.location_cache = Counter(
            "sipsec_proxy_location_cache_lookups_total",
            "Location lookups by whether the proxy's location cache answered them (hit) or the store did (miss).",
            ["result"], registry=r)
        self.forwarded = Counter(
            "sipsec_proxy_forwarded_total", "Requests forwarded downstream, by method.",
            ["method"], registry=r)
        self.untrusted_pending = Gauge(
            "sipsec_proxy_untrusted_pending",
            "Location/DNS lookups (route) and REGISTER checks (register) in flight for untrusted sources.",
            ["kind"], registry=r)
        for reason in REJECTION_REASONS:
            self.rejections.labels(reason)
