"""Metrics of the PKG client library (the UA gateway exposes them); no AOR or token as a label."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter

__all__ = ["PkgClientMetrics"]


class PkgClientMetrics:
    """Counters for threshold key fetching, registered in the caller's registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.bad_shares = Counter(
            "sipsec_pkgclient_bad_threshold_shares_total",
            "Invalid partial keys from threshold PKG nodes (failed pairing check or mismatching index), "
            "by node: the configured name of the connection asked (never an index the answer claims).",
            ["node"],
            registry=registry,
        )
        self.node_errors = Counter(
            "sipsec_pkgclient_node_errors_total",
            "Threshold PKG nodes that could not be used for a key, by gRPC status code.",
            ["code"],
            registry=registry,
        )
        self.keys = Counter(
            "sipsec_pkgclient_keys_total",
            "Private keys obtained from a PKG, by mode (full, threshold) and result.",
            ["mode", "result"],
            registry=registry,
        )
