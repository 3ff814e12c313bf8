"""Prometheus metrics of the location service, in a registry of its own per server."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Gauge
from sipsec.rpc import RpcServerMetrics

__all__ = ["LocationMetrics"]


class LocationMetrics:
    """Bindings held; RPC latency and outcomes by method (``sipsec_rpc_server_*``)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.bindings = Gauge(
            "sipsec_location_bindings", "Live AOR -> contact bindings in the store.",
            registry=self.registry,
        )
        self.rpc = RpcServerMetrics(self.registry)
