"""Metrics of the PKG client library (the UA gateway exposes them); no AOR or token as a label."""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Histogram

__all__ = ["NODE_LATENCY_BUCKETS", "PkgClientMetrics"]

#: Buckets of ``sipsec_pkgclient_threshold_node_duration_seconds`` (one GetPrivateKey round trip
#: to a threshold node, its partial's pairing check included).
NODE_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


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
        self.node_latency = Histogram(
            "sipsec_pkgclient_threshold_node_duration_seconds",
            "Time for one threshold PKG node to answer GetPrivateKey with a partial key (its pairing check "
            "included), by node (the configured name of the connection asked) and result (ok, invalid, error).",
            ["node", "result"],
            registry=registry,
            buckets=NODE_LATENCY_BUCKETS,
        )
        self.keys = Counter(
            "sipsec_pkgclient_keys_total",
            "Private keys obtained from a PKG, by mode (full, threshold) and result.",
            ["mode", "result"],
            registry=registry,
        )

    def nodes(self, names: Iterable[str]) -> None:
        """Create the per-node series of the configured nodes at zero (a node that never answered
        still shows), so the ``node`` label values are the configuration's only."""
        for name in names:
            self.bad_shares.labels(name)
            for result in ("ok", "invalid", "error"):
                self.node_latency.labels(name, result)
