"""Prometheus metrics of the location service, in a registry of its own per server."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Gauge
from sipsec.rpc import RpcServerMetrics
from sipsec.stores.access import StoreMetricsCollector
from sipsec.telemetry.health import build_info

__all__ = ["LocationMetrics"]


class LocationMetrics:
    """Bindings held; RPC latency and outcomes by method (``sipsec_rpc_server_*``); the Redis
    store's operation latency and errors (``sipsec_store_operation_seconds{store="location"}``,
    ``sipsec_store_errors_total``)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.bindings = Gauge(
            "sipsec_location_bindings", "Live AOR -> contact bindings in the store.",
            registry=self.registry,
        )
        self.rpc = RpcServerMetrics(self.registry)
        self.build_info = build_info(self.registry, "location")
        self.registry.register(StoreMetricsCollector())
