"""The PKG's Prometheus metrics (own registry per instance) and the gRPC interceptor that times RPCs.

Labels come from small fixed sets (method, code, purpose, mode, reason, scope); never an AOR,
token or domain typed by a caller.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

__all__ = ["MetricsHttpServer", "PkgMetrics", "RpcMetricsInterceptor"]

_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class PkgMetrics:
    """Every metric of one PKG instance, registered in ``registry``."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.rpc_duration = Histogram(
            "sipsec_pkg_rpc_duration_seconds", "gRPC handling time by method.", ["method"],
            buckets=_BUCKETS, registry=r,
        )
        self.rpc_total = Counter(
            "sipsec_pkg_rpc_requests_total", "gRPC requests by method and status code.",
            ["method", "code"], registry=r,
        )
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
            "Refused logins by reason (bad_credentials, locked_user, locked_source, invalid_request).",
            ["reason"], registry=r,
        )
        self.lockouts = Counter(
            "sipsec_pkg_lockouts_total", "Lockouts imposed after repeated failures, by scope (user, source).",
            ["scope"], registry=r,
        )
        self.session_rejections = Counter(
            "sipsec_pkg_session_rejections_total",
            "Key requests refused for their session, by reason (invalid, expired).",
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


class RpcMetricsInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Observes latency (seconds) and status code of every unary RPC; refuses undecodable requests."""

    def __init__(self, metrics: PkgMetrics) -> None:
        self._m = metrics

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler
        method = handler_call_details.method.rsplit("/", 1)[-1]
        inner = handler.unary_unary
        deserialize = handler.request_deserializer
        metrics = self._m

        async def observed(raw: bytes, context: grpc.aio.ServicerContext) -> Any:
            start = time.perf_counter()
            code = grpc.StatusCode.UNKNOWN
            try:
                try:  # decoding here turns a malformed request into INVALID_ARGUMENT, not INTERNAL
                    request = deserialize(raw) if deserialize is not None else raw
                except Exception:  # noqa: BLE001 - any decoding failure is the caller's fault
                    context.set_trailing_metadata((("sipsec-reason", "malformed_request"),))
                    await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "malformed request message")
                response = await inner(request, context)
                code = context.code() or grpc.StatusCode.OK
                return response
            except grpc.aio.AbortError:
                code = context.code() or grpc.StatusCode.UNKNOWN
                raise
            finally:
                if not isinstance(code, grpc.StatusCode):
                    code = grpc.StatusCode.UNKNOWN
                metrics.rpc_duration.labels(method).observe(time.perf_counter() - start)
                metrics.rpc_total.labels(method, code.name).inc()

        return grpc.unary_unary_rpc_method_handler(
            observed, request_deserializer=None, response_serializer=handler.response_serializer
        )


class MetricsHttpServer:
    """``/metrics`` over HTTP in a daemon thread (prometheus_client); port 0 picks a free one."""

    def __init__(self, metrics: PkgMetrics, host: str, port: int) -> None:
        self._httpd, self._thread = start_http_server(port, addr=host, registry=metrics.registry)
        self.port: int = int(self._httpd.server_port)

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)
