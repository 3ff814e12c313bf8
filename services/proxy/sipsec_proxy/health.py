"""The proxy's readiness: the location it routes with answers within the readiness deadline.

Served as ``/livez`` and ``/readyz`` on the metrics port (the proxy has no gRPC server):
:func:`sipsec.telemetry.http.serve_metrics`.
"""

from __future__ import annotations

from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import CollectorRegistry
from sipsec.telemetry.health import CHECK_DEADLINE_S, Check, Readiness

from sipsec_proxy.locator import CachingLocator, GrpcLocator, Locator, StoreLocator

__all__ = ["location_check", "proxy_readiness"]


class NotServing(Exception):
    """The location service reports NOT_SERVING (its own store is not ready)."""


def location_check(locator: Locator) -> Check | None:
    """How to ask ``locator``'s backend whether it can serve (None: in-process memory, always can).

    The location service: its gRPC health (overall status, which follows its own store);
    Redis directly: a PING (or a count when the store has no ping).
    """
    inner = locator.inner if isinstance(locator, CachingLocator) else locator
    if isinstance(inner, GrpcLocator):
        return _grpc_health(inner)
    if isinstance(inner, StoreLocator):
        store = inner.store
        if type(store).__name__ == "MemoryLocationStore":
            return None
        ping = getattr(store, "ping", None)
        return ping if ping is not None else store.count
    return None


def _grpc_health(locator: GrpcLocator) -> Check:
    # the locator's own channel (same target, TLS and connection as the lookups)
    stub = health_pb2_grpc.HealthStub(locator._channel)  # noqa: SLF001

    async def check() -> None:
        reply = await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=CHECK_DEADLINE_S)
        if reply.status != health_pb2.HealthCheckResponse.SERVING:
            raise NotServing("the location service is not serving")

    return check


def proxy_readiness(locator: Locator, registry: CollectorRegistry) -> Readiness:
    """The proxy's :class:`Readiness`: check ``location`` when its locator has a remote backend."""
    check = location_check(locator)
    return Readiness({"location": check} if check is not None else {}, registry=registry)
