"""Prometheus metrics of the location service, in a registry of its own per server."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["LocationMetrics"]


class LocationMetrics:
    """Bindings held, operations by method and status, operation latency."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.bindings = Gauge(
            "sipsec_location_bindings", "Live AOR -> contact bindings in the store.",
            registry=self.registry,
        )
        self.operations = Counter(
            "sipsec_location_operations_total",
            "Location RPCs by method and gRPC status (lower-case code name).",
            ["method", "status"], registry=self.registry,
        )
        self.latency = Histogram(
            "sipsec_location_operation_duration_seconds", "Location RPC handling time.",
            ["method"], registry=self.registry,
            buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
        )
