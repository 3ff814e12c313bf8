"""OpenTelemetry tracing of a call setup within one domain; off unless asked for.

Turned on by the standard OpenTelemetry variable ``OTEL_TRACES_EXPORTER`` (read once, when a
service configures its logging, :func:`configure`):

``OTEL_TRACES_EXPORTER``  unset or ``none``: off (the default; OpenTelemetry's own default
                          would be ``otlp``, sipsec's is off); ``otlp``: OTLP over gRPC
                          (``OTEL_EXPORTER_OTLP_ENDPOINT``, ``OTEL_EXPORTER_OTLP_TRACES_*``…,
                          read by the exporter); ``console``: one JSON span per line on stderr
``OTEL_SERVICE_NAME``     default ``sipsec-<service>`` (``sipsec-pkg``, ``sipsec-gateway``…)
``OTEL_TRACES_SAMPLER``   the SDK's samplers (default ``parentbased_always_on``)

Off, nothing of OpenTelemetry is imported and every helper here returns at its first line:
no span, no context object, no interceptor on a channel.

The spans (see ``docs/sre.md``, "Traces"):

* ``gateway call setup``: a root span per call leg of the UA gateway, from the INVITE sent
  (or received) to its final response (:func:`setup_scope`, :func:`claim_setup`,
  :func:`end_setup`);
* ``<package.Service>/<Method>`` client spans of every gRPC call a service makes through
  :func:`sipsec.rpc.client_channel` (PKG, location, crypto worker), which carry the W3C
  ``traceparent`` in the gRPC metadata, and the server spans of the shared server interceptor
  (:func:`server_handler`), which continue it (health checks are not traced);
* ``proxy request``: the proxy's handling of one stateful SIP request, up to its final
  response (:func:`start_sip_span`, :func:`end_sip_span`); a separate trace: nothing is added
  to a SIP message, so no hop between two services over SIP (gateway to proxy, proxy to proxy)
  carries a trace, and a domain's spans never link a caller's calls across domains.

Attributes are names of methods, status codes, directions and domains: never an AOR, a
Call-ID, a token, a password, key material or decrypted content.
"""

from __future__ import annotations

import contextvars
import functools
import os
import sys
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Final, ParamSpec, TypeVar

__all__ = [
    "EXPORTERS",
    "claim_setup",
    "client_interceptors",
    "configure",
    "enabled",
    "end_setup",
    "end_sip_span",
    "open_setups",
    "reset",
    "server_handler",
    "setup_scope",
    "start_sip_span",
    "use_exporter",
    "use_span",
    "release_span",
]

#: ``OTEL_TRACES_EXPORTER`` values that turn tracing on.
EXPORTERS: Final = ("otlp", "console")
#: The propagation header, in gRPC metadata only (never in a SIP message).
TRACEPARENT: Final = "traceparent"
#: How many call setups may be open at once before the oldest is ended as ``abandoned``.
MAX_OPEN_SETUPS: Final = 10000
_HEALTH: Final = "/grpc.health.v1.Health/"

P = ParamSpec("P")
R = TypeVar("R")

_tracer: Any = None  # an SDK tracer while on; None while off
_provider: Any = None
_domain = ""
#: the call-setup span started by a :func:`setup_scope` and not yet claimed by a call
_pending: contextvars.ContextVar[Any] = contextvars.ContextVar("sipsec_pending_setup", default=None)
_open: OrderedDict[str, Any] = OrderedDict()  # call id -> open call-setup span


def enabled() -> bool:
    """Whether spans are recorded in this process."""
    return _tracer is not None


def domain_of(uri: str) -> str:
    """The domain of an AOR or SIP URI (``sip:alice@atlanta.com`` -> ``atlanta.com``): what a
    span may say about a user. "" when there is no ``@``."""
    if "@" not in uri:
        return ""
    host = uri.rsplit("@", 1)[1]
    for stop in (">", ";", "?", ":"):
        host = host.split(stop, 1)[0]
    return host.strip().lower()


# -- setting up --------------------------------------------------------------------------------


def configure(service: str, domain: str = "", *, environ: Mapping[str, str] | None = None) -> bool:
    """Turn tracing on for this process when ``OTEL_TRACES_EXPORTER`` asks for it (see the module
    text); True when on. Called by every service at start (``sipsec.cli.configure_from``)."""
    env = os.environ if environ is None else environ
    kind = env.get("OTEL_TRACES_EXPORTER", "none").strip().lower()
    if kind in ("", "none"):
        return False
    if kind not in EXPORTERS:
        from sipsec.config import ConfigError

        raise ConfigError(f"OTEL_TRACES_EXPORTER={kind!r}: use one of otlp, console, none")
    if kind == "otlp":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        exporter: Any = OTLPSpanExporter()
        batch = True
    else:
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        exporter = ConsoleSpanExporter(out=sys.stderr, formatter=lambda s: s.to_json(indent=None) + "\n")
        batch = False
    name = env.get("OTEL_SERVICE_NAME") or f"sipsec-{service}"
    use_exporter(exporter, service_name=name, domain=domain, batch=batch)
    return True


def use_exporter(exporter: Any, *, service_name: str = "sipsec", domain: str = "", batch: bool = False) -> None:
    """Record spans into ``exporter`` (an SDK ``SpanExporter``; tests pass an
    ``InMemorySpanExporter``) from now on. ``batch``: export in the background (OTLP)."""
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

    global _tracer, _provider, _domain
    reset()
    attributes = {"service.name": service_name, **({"sipsec.domain": domain} if domain else {})}
    provider = TracerProvider(resource=Resource.create(attributes))
    provider.add_span_processor(BatchSpanProcessor(exporter) if batch else SimpleSpanProcessor(exporter))
    _provider, _domain = provider, domain
    _tracer = provider.get_tracer("sipsec")


def reset() -> None:
    """Tracing off again (spans still open are dropped; the exporter is flushed and shut down)."""
    global _tracer, _provider, _domain
    provider, _tracer, _provider, _domain = _provider, None, None, ""
    _open.clear()
    if provider is not None:
        provider.shutdown()


def tracer() -> Any:
    """The tracer in use: the SDK's while on, OpenTelemetry's no-op tracer while off."""
    if _tracer is not None:
        return _tracer
    from opentelemetry.trace import NoOpTracer

    return NoOpTracer()


# -- spans as the current context ----------------------------------------------------------------


def use_span(span: Any) -> object | None:
    """Make ``span`` the current span of this task; returns the token for :func:`release_span`
    (None, and nothing done, when ``span`` is None)."""
    if span is None:
        return None
    from opentelemetry import context, trace

    return context.attach(trace.set_span_in_context(span))


def release_span(token: object | None) -> None:
    """Undo :func:`use_span`."""
    if token is None:
        return
    from opentelemetry import context

    context.detach(token)  # type: ignore[arg-type]


def _set_error(span: Any, description: str) -> None:
    from opentelemetry.trace import Status, StatusCode

    span.set_status(Status(StatusCode.ERROR, description))


# -- the gateway's call setups -----------------------------------------------------------------


def setup_scope(
    direction: str, when: Callable[..., bool] | None = None
) -> Callable[[Callable[P, Awaitable[R]]], Callable[P, Awaitable[R]]]:
    """Decorates the coroutine that begins a call setup (``direction``: ``outgoing`` or
    ``incoming``): while tracing is on (and ``when(*args)`` holds, if given) a ``gateway call
    setup`` span starts with it and is the current span inside it, so that the RPCs it makes
    (PKG, crypto worker) are its children. :func:`claim_setup` hands the span to the call the
    coroutine creates, which ends it at its final response (:func:`end_setup`); a span no call
    claimed ends with the coroutine (the request was refused before a call existed)."""

    def decorate(fn: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
        @functools.wraps(fn)
        async def scoped(*args: P.args, **kwargs: P.kwargs) -> R:
            if _tracer is None or (when is not None and not when(*args, **kwargs)):
                return await fn(*args, **kwargs)
            from opentelemetry import context, trace

            span = _tracer.start_span(
                "gateway call setup", kind=trace.SpanKind.INTERNAL,
                attributes={"sipsec.call.direction": direction, **({"sipsec.domain": _domain} if _domain else {})},
            )
            pending = _pending.set(span)
            token = context.attach(trace.set_span_in_context(span))
            outcome = "refused"
            try:
                return await fn(*args, **kwargs)
            except BaseException as exc:
                outcome = "error"
                _set_error(span, type(exc).__name__)
                raise
            finally:
                context.detach(token)
                if _pending.get() is span:  # not claimed by a call: the setup ended here
                    span.set_attribute("sipsec.call.outcome", outcome)
                    if outcome == "refused":
                        _set_error(span, outcome)
                    span.end()
                _pending.reset(pending)

        return scoped

    return decorate


def claim_setup(call_id: str, *, side: str, secure: bool, local_aor: str, peer_aor: str) -> None:
    """Give the current :func:`setup_scope` span to the call ``call_id`` (the gateway's own id
    of the call, never put in a span); the AORs only give their domains."""
    if _tracer is None:
        return
    span = _pending.get()
    if span is None:
        return
    _pending.set(None)
    span.set_attributes({
        "sipsec.call.side": side,
        "sipsec.call.secure": secure,
        "sipsec.domain": domain_of(local_aor) or _domain,
        "sipsec.peer_domain": domain_of(peer_aor),
    })
    _open[call_id] = span
    while len(_open) > MAX_OPEN_SETUPS:
        _, oldest = _open.popitem(last=False)
        oldest.set_attribute("sipsec.call.outcome", "abandoned")
        oldest.end()


def end_setup(call_id: str, outcome: str, status: int | None = None) -> None:
    """End the setup span of call ``call_id`` (no-op when it has none or it has ended):
    ``outcome`` as in ``sipsec_gateway_call_setups_total``, ``status`` the final SIP status."""
    if not _open:
        return
    span = _open.pop(call_id, None)
    if span is None:
        return
    span.set_attribute("sipsec.call.outcome", outcome)
    if status is not None:
        span.set_attribute("sip.status_code", status)
    if outcome != "answered":
        _set_error(span, outcome)
    span.end()


def open_setups() -> int:
    """How many call-setup spans are open (tests)."""
    return len(_open)


# -- the proxy's requests ----------------------------------------------------------------------


def start_sip_span(method: str, domain: str = "") -> Any:
    """A ``proxy request`` span for one stateful request (``method`` from a bounded set), or None
    while off. A new trace: nothing in a SIP message continues one."""
    if _tracer is None:
        return None
    from opentelemetry import context, trace

    return _tracer.start_span(
        "proxy request", kind=trace.SpanKind.SERVER, context=context.Context(),
        attributes={"sip.method": method, **({"sipsec.domain": domain or _domain} if domain or _domain else {})},
    )


def end_sip_span(span: Any, status: int) -> None:
    """End a :func:`start_sip_span` span with the final status sent upstream."""
    if span is None:
        return
    span.set_attribute("sip.status_code", status)
    if status >= 500:
        _set_error(span, str(status))
    span.end()


# -- gRPC ----------------------------------------------------------------------------------------


def _rpc_attributes(full_method: str) -> dict[str, str]:
    service, _, method = full_method.lstrip("/").rpartition("/")
    return {"rpc.system": "grpc", "rpc.service": service, "rpc.method": method}


def client_interceptors(*, propagate: bool = True) -> Sequence[Any]:
    """What :func:`sipsec.rpc.client_channel` adds to a channel: the tracing interceptor while on,
    nothing while off (a channel made while off stays untraced). ``propagate=False`` for a
    channel to another domain (PKG federation): its RPCs are client spans here, but no
    ``traceparent`` goes with them, so no trace crosses a domain."""
    if _tracer is None:
        return ()
    return (_client_interceptor(propagate),)


def _client_interceptor(propagate: bool) -> Any:
    import grpc
    from opentelemetry import trace
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    propagator = TraceContextTextMapPropagator()

    class TracingClientInterceptor(grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[misc]
        """A client span per unary RPC; its ``traceparent`` travels in the gRPC metadata."""

        async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
            current = _tracer
            method = details.method.decode() if isinstance(details.method, bytes) else str(details.method)
            if current is None or method.startswith(_HEALTH):  # probes are not traced
                return await continuation(details, request)
            with current.start_as_current_span(
                method.lstrip("/"), kind=trace.SpanKind.CLIENT, attributes=_rpc_attributes(method),
                record_exception=False, set_status_on_exception=False,
            ) as span:
                if propagate:
                    carrier: dict[str, str] = {}
                    propagator.inject(carrier)
                    metadata = [*(details.metadata or ()), *carrier.items()]
                    details = grpc.aio.ClientCallDetails(
                        details.method, details.timeout, metadata, details.credentials, details.wait_for_ready)
                call = await continuation(details, request)
                code = await call.code()
                span.set_attribute("rpc.grpc.status_code", code.value[0])
                if code is not grpc.StatusCode.OK:
                    _set_error(span, code.name)
                return call

    return TracingClientInterceptor()


def server_handler(
    handler: Callable[[Any, Any], Awaitable[Any]], full_method: str, metadata: Sequence[tuple[str, Any]] | None,
) -> Callable[[Any, Any], Awaitable[Any]]:
    """``handler`` (a unary server handler) inside a server span that continues the caller's
    trace from the ``traceparent`` in ``metadata``; ``handler`` itself while off."""
    if _tracer is None:
        return handler
    import grpc
    from opentelemetry import trace
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    carrier = {k: v for k, v in metadata or () if k == TRACEPARENT and isinstance(v, str)}
    parent = TraceContextTextMapPropagator().extract(carrier)
    name = full_method.lstrip("/")
    attributes = _rpc_attributes(full_method)
    tracer_ = _tracer

    async def traced(request: Any, context: Any) -> Any:
        with tracer_.start_as_current_span(
            name, context=parent, kind=trace.SpanKind.SERVER, attributes=attributes,
            record_exception=False, set_status_on_exception=False,
        ) as span:
            code = grpc.StatusCode.OK
            try:
                return await handler(request, context)
            except BaseException:
                code = grpc.StatusCode.UNKNOWN
                raise
            finally:
                got = context.code()
                code = got if isinstance(got, grpc.StatusCode) else code
                span.set_attribute("rpc.grpc.status_code", code.value[0])
                if code is not grpc.StatusCode.OK:
                    _set_error(span, code.name)

    return traced
