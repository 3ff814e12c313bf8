"""The one server interceptor every sipsec gRPC service runs (installed by ``create_server``).

For every unary RPC it:

* decodes the request itself, so that bytes that are not the method's protobuf message are
  answered ``INVALID_ARGUMENT`` with a short fixed message (never the decoder's exception text);
* refuses a request whose deadline has already passed with ``DEADLINE_EXCEEDED`` before the
  handler runs (gRPC over HTTP/2 carries the deadline as ``grpc-timeout``);
* turns an unexpected exception of a handler into ``INTERNAL`` with a generic message and a
  request id, logging the exception's type and stack frames server side under that id (not
  its message, which may quote request data such as a password; the caller gets only the id);
* times the RPC and counts it by status code: ``sipsec_rpc_server_handling_seconds{service,
  method}`` and ``sipsec_rpc_server_handled_total{service,method,code}``. The standard health
  service (``grpc.health.v1.Health``) is decoded and guarded the same way but kept out of both,
  so that probes do not drown the method histograms;
* while tracing is on (:mod:`sipsec.telemetry.tracing`), runs the RPC in a server span that
  continues the caller's trace from the W3C ``traceparent`` of the gRPC metadata (health
  checks are not traced; off, nothing is added).

Labels are the fully qualified service name and the method name, both fixed by the server's
registered services: a caller cannot create new label values (an unknown method never reaches
an interceptor's handler).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final

import grpc
from prometheus_client import CollectorRegistry, Counter, Histogram

from sipsec.stores.access import StoreUnavailable
from sipsec.telemetry import tracing

__all__ = [
    "HEALTH_SERVICE",
    "REQUEST_ID_KEY",
    "RpcReasons",
    "RpcServerMetrics",
    "SipsecServerInterceptor",
    "split_method",
]

log = logging.getLogger("sipsec.rpc")

#: The standard health service; its calls stay out of the method metrics.
HEALTH_SERVICE: Final = "grpc.health.v1.Health"
#: Trailing metadata key carrying the id under which an INTERNAL error was logged.
REQUEST_ID_KEY: Final = "sipsec-request-id"

_BUCKETS: Final = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
)


def split_method(path: str) -> tuple[str, str]:
    """``/pkg.Service/Method`` -> ``("pkg.Service", "Method")``."""
    service, _, method = path.lstrip("/").rpartition("/")
    return service, method


@dataclass(frozen=True)
class RpcReasons:
    """The ``sipsec-reason`` trailer values a service uses for the interceptor's own answers
    (each service keeps its own reason vocabulary; see its README)."""

    malformed: str = "malformed_request"
    deadline: str = "deadline_exceeded"
    internal: str = "internal"


class RpcServerMetrics:
    """Per-method latency and outcome of a server's RPCs, in the service's own registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.handling = Histogram(
            "sipsec_rpc_server_handling_seconds",
            "gRPC server handling time by service and method (health checks excluded).",
            ["service", "method"], registry=registry, buckets=_BUCKETS,
        )
        self.handled = Counter(
            "sipsec_rpc_server_handled_total",
            "gRPC requests handled by service, method and status code name (health checks excluded).",
            ["service", "method", "code"], registry=registry,
        )

    def observe(self, service: str, method: str, code: grpc.StatusCode, seconds: float) -> None:
        self.handling.labels(service, method).observe(seconds)
        self.handled.labels(service, method, code.name).inc()


def _code_of(context: grpc.aio.ServicerContext, default: grpc.StatusCode) -> grpc.StatusCode:
    code = context.code()
    return code if isinstance(code, grpc.StatusCode) else default


class SipsecServerInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Decoding, deadlines, unexpected errors and metrics for every unary RPC of a server.

    ``on_expired(service, method)`` is called for a request refused because its deadline
    had passed on arrival (a service may count it as a rejection of its own).
    """

    def __init__(
        self,
        metrics: RpcServerMetrics | None = None,
        *,
        reasons: RpcReasons | None = None,
        on_expired: Callable[[str, str], None] | None = None,
    ) -> None:
        self._metrics = metrics
        self._reasons = reasons if reasons is not None else RpcReasons()
        self._on_expired = on_expired

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler  # unknown method (UNIMPLEMENTED) or streaming (health Watch)
        service, method = split_method(handler_call_details.method)
        metrics = None if service == HEALTH_SERVICE else self._metrics
        inner = handler.unary_unary
        deserialize = handler.request_deserializer
        reasons = self._reasons
        on_expired = self._on_expired

        async def guarded(raw: bytes, context: grpc.aio.ServicerContext) -> Any:
            start = time.perf_counter()
            code = grpc.StatusCode.OK
            observed = False

            async def fail(status: grpc.StatusCode, details: str) -> None:
                # grpc sends the status from inside abort(): observe first, so the metric is
                # there by the time the caller sees the error
                nonlocal code, observed
                code = status
                if metrics is not None:
                    metrics.observe(service, method, code, time.perf_counter() - start)
                observed = True
                await context.abort(status, details)

            try:
                remaining = context.time_remaining()
                if remaining is not None and remaining <= 0:
                    if on_expired is not None:
                        on_expired(service, method)
                    context.set_trailing_metadata((("sipsec-reason", reasons.deadline),))
                    await fail(grpc.StatusCode.DEADLINE_EXCEEDED, "deadline passed before the request was handled")
                try:
                    request = deserialize(raw) if deserialize is not None else raw
                except Exception:  # noqa: BLE001 - any decoding failure is the caller's fault
                    context.set_trailing_metadata((("sipsec-reason", reasons.malformed),))
                    await fail(grpc.StatusCode.INVALID_ARGUMENT, "malformed request message")
                response = await inner(request, context)
                code = _code_of(context, grpc.StatusCode.OK)
                return response
            except grpc.aio.AbortError:
                if not observed:
                    code = _code_of(context, grpc.StatusCode.UNKNOWN)
                raise
            except asyncio.CancelledError:
                code = grpc.StatusCode.CANCELLED
                raise
            except StoreUnavailable:  # overload or an unreachable store: retry later, not a fault
                context.set_trailing_metadata((("sipsec-reason", "store-unavailable"),))
                await fail(grpc.StatusCode.UNAVAILABLE, "store unavailable, retry later")
            except Exception as exc:  # noqa: BLE001 - answered INTERNAL, logged with an id
                request_id = secrets.token_hex(8)
                # the exception's type and frames, not its message: a message may quote request data
                log.error(
                    "unexpected %s in %s/%s (request id %s)\n%s", type(exc).__name__, service, method,
                    request_id, "".join(traceback.format_tb(exc.__traceback__)).rstrip(),
                )
                context.set_trailing_metadata(
                    (("sipsec-reason", reasons.internal), (REQUEST_ID_KEY, request_id))
                )
                await fail(grpc.StatusCode.INTERNAL, f"internal error (request id {request_id})")
            finally:
                if metrics is not None and not observed:
                    metrics.observe(service, method, code, time.perf_counter() - start)

        if service != HEALTH_SERVICE and tracing.enabled():
            guarded = tracing.server_handler(  # type: ignore[assignment]
                guarded, handler_call_details.method, handler_call_details.invocation_metadata)
        return grpc.unary_unary_rpc_method_handler(
            guarded, request_deserializer=None, response_serializer=handler.response_serializer
        )
