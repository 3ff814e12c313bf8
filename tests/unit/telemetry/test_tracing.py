"""sipsec.telemetry.tracing: off by default, the OpenTelemetry variables, call-setup spans, the
gRPC client and server spans (W3C ``traceparent`` in the metadata), nothing recorded while off."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from sipsec.config import ConfigError
from sipsec.rpc import client_channel, create_server
from sipsec.rpc._gen.sipsec.location.v1 import location_pb2, location_pb2_grpc
from sipsec.telemetry import tracing


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    tracing.use_exporter(exporter, service_name="sipsec-test", domain="atlanta.com")
    try:
        yield exporter
    finally:
        tracing.reset()


@pytest.fixture(autouse=True)
def _off_after() -> Iterator[None]:
    yield
    tracing.reset()


def _by_name(exporter: InMemorySpanExporter, name: str) -> list[ReadableSpan]:
    return [s for s in exporter.get_finished_spans() if s.name == name]


# -- turning it on -------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [None, "", "none", "NONE"])
def test_off_unless_the_exporter_variable_names_one(value: str | None) -> None:
    env = {} if value is None else {"OTEL_TRACES_EXPORTER": value}
    assert tracing.configure("pkg", "atlanta.com", environ=env) is False
    assert not tracing.enabled()
    assert tracing.client_interceptors() == ()


def test_console_exporter_and_the_default_service_name() -> None:
    assert tracing.configure("gateway", "atlanta.com", environ={"OTEL_TRACES_EXPORTER": "console"})
    assert tracing.enabled()
    resource = tracing._provider.resource.attributes
    assert resource["service.name"] == "sipsec-gateway" and resource["sipsec.domain"] == "atlanta.com"


def test_otlp_exporter_and_an_explicit_service_name() -> None:
    env = {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_SERVICE_NAME": "pkg-atlanta",
           "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4317"}
    assert tracing.configure("pkg", "", environ=env)
    assert tracing._provider.resource.attributes["service.name"] == "pkg-atlanta"
    tracing.reset()  # flushes nothing, ends quickly
    assert not tracing.enabled()


def test_an_unknown_exporter_is_a_configuration_error() -> None:
    with pytest.raises(ConfigError, match="OTEL_TRACES_EXPORTER"):
        tracing.configure("pkg", environ={"OTEL_TRACES_EXPORTER": "zipkin"})


def test_importing_the_services_with_tracing_off_loads_no_tracing_sdk() -> None:
    """(redis-py loads ``opentelemetry.sdk.metrics`` for its own observability; not the trace SDK.)"""
    code = ("import sys, sipsec.rpc, sipsec.pkgclient, sipsec_gateway.gateway, sipsec_proxy.core, sipsec.cli; "
            "from sipsec.telemetry import tracing; tracing.configure('gateway', environ={}); "
            "print(sorted(m for m in sys.modules if m.startswith(('opentelemetry.sdk.trace', 'opentelemetry.exporter'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "[]", out.stdout


# -- call setups ----------------------------------------------------------------------------------


@tracing.setup_scope("outgoing")
async def _place(call_id: str | None, *, fail: bool = False) -> str:
    if fail:
        raise RuntimeError("no route")
    if call_id is not None:
        tracing.claim_setup(call_id, side="secure", secure=True, local_aor="sip:alice@atlanta.com",
                            peer_aor="<sip:bob@Biloxi.com;transport=tcp>")
    return "placed"


async def test_a_call_setup_span_lives_until_its_final_response(spans: InMemorySpanExporter) -> None:
    assert await _place("c1") == "placed"
    assert _by_name(spans, "gateway call setup") == []  # claimed: open until the final response
    assert tracing.open_setups() == 1
    tracing.end_setup("c1", "answered", 200)
    tracing.end_setup("c1", "failed", 500)  # ended once only
    (span,) = _by_name(spans, "gateway call setup")
    assert span.parent is None  # a root span per call leg
    assert dict(span.attributes or {}) == {
        "sipsec.call.direction": "outgoing", "sipsec.call.side": "secure", "sipsec.call.secure": True,
        "sipsec.domain": "atlanta.com", "sipsec.peer_domain": "biloxi.com", "sipsec.call.outcome": "answered",
        "sip.status_code": 200,
    }
    assert span.status.status_code is StatusCode.UNSET
    assert tracing.open_setups() == 0


async def test_a_failed_or_unclaimed_setup_ends_as_such(spans: InMemorySpanExporter) -> None:
    await _place("c2")
    tracing.end_setup("c2", "timeout", 408)
    assert await _place(None) == "placed"  # refused before a call existed
    with pytest.raises(RuntimeError):
        await _place(None, fail=True)
    outcomes = [(s.attributes or {}).get("sipsec.call.outcome") for s in _by_name(spans, "gateway call setup")]
    assert outcomes == ["timeout", "refused", "error"]
    assert all(s.status.status_code is StatusCode.ERROR for s in _by_name(spans, "gateway call setup"))


async def test_the_setup_span_is_current_inside_the_scope_only(spans: InMemorySpanExporter) -> None:
    from opentelemetry import trace

    seen: list[Any] = []

    @tracing.setup_scope("incoming", when=lambda method: method == "INVITE")
    async def handle(method: str) -> None:
        seen.append(trace.get_current_span().get_span_context())
        if method == "INVITE":
            tracing.claim_setup("c3", side="secure", secure=True, local_aor="sip:bob@biloxi.com",
                                peer_aor="sip:alice@atlanta.com")

    await handle("INVITE")
    await handle("BYE")  # not a setup: no span
    assert seen[0].is_valid and not seen[1].is_valid
    assert not trace.get_current_span().get_span_context().is_valid
    tracing.end_setup("c3", "answered", 200)
    assert len(_by_name(spans, "gateway call setup")) == 1


async def test_open_setups_are_bounded(spans: InMemorySpanExporter, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tracing, "MAX_OPEN_SETUPS", 2)
    for i in range(3):
        await _place(f"b{i}")
    assert tracing.open_setups() == 2
    (oldest,) = _by_name(spans, "gateway call setup")
    assert (oldest.attributes or {})["sipsec.call.outcome"] == "abandoned"


async def test_nothing_is_recorded_while_off() -> None:
    exporter = InMemorySpanExporter()
    tracing.use_exporter(exporter)
    tracing.reset()  # off again
    assert await _place("c4") == "placed"
    tracing.end_setup("c4", "answered", 200)
    assert tracing.start_sip_span("INVITE") is None
    assert tracing.use_span(None) is None
    handler = _echo_handler
    assert tracing.server_handler(handler, "/x.Y/Z", [("traceparent", "00-" + "1" * 32 + "-" + "2" * 16 + "-01")]) \
        is handler
    assert exporter.get_finished_spans() == () and tracing.open_setups() == 0


async def _echo_handler(request: Any, context: Any) -> Any:
    return request


def test_domain_of_keeps_only_the_domain() -> None:
    assert tracing.domain_of("sip:alice@Atlanta.com") == "atlanta.com"
    assert tracing.domain_of("<sip:bob@biloxi.com:5060;transport=tcp>") == "biloxi.com"
    assert tracing.domain_of("sip:biloxi.com") == ""


# -- the proxy's request spans ----------------------------------------------------------------


def test_a_proxy_request_span_is_a_new_trace(spans: InMemorySpanExporter) -> None:
    from opentelemetry import trace

    with tracing.tracer().start_as_current_span("outer"):
        span = tracing.start_sip_span("INVITE", "biloxi.com")
    tracing.end_sip_span(span, 503)
    (request,) = _by_name(spans, "proxy request")
    (outer,) = _by_name(spans, "outer")
    assert request.parent is None and request.context.trace_id != outer.context.trace_id
    assert request.kind is SpanKind.SERVER
    assert dict(request.attributes or {}) == {"sip.method": "INVITE", "sipsec.domain": "biloxi.com",
                                              "sip.status_code": 503}
    assert request.status.status_code is StatusCode.ERROR
    assert not trace.get_current_span().get_span_context().is_valid


# -- gRPC: client span -> traceparent -> server span ---------------------------------------------


class _Location(location_pb2_grpc.LocationServiceServicer):  # type: ignore[misc]
    """A location service that knows nobody; an AOR without ``@`` is INVALID_ARGUMENT."""

    async def Lookup(self, request: Any, context: grpc.aio.ServicerContext) -> Any:  # noqa: N802 - gRPC's name
        if "@" not in request.aor:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "not an AOR")
        return location_pb2.LookupResponse()


class _Spy(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Records the metadata of every request (after the sipsec interceptor)."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []

    async def intercept_service(self, continuation: Any, details: Any) -> Any:
        self.seen.extend((k, v) for k, v in details.invocation_metadata or () if isinstance(v, str))
        return await continuation(details)


async def _lookup(aor: str = "sip:alice@atlanta.com", *, propagate: bool = True) -> list[tuple[str, str]]:
    """One Lookup through a real gRPC server made by ``create_server`` (the shared interceptor),
    inside a ``caller`` span; returns the metadata the server saw."""
    spy = _Spy()
    server, port, _ = create_server(
        "127.0.0.1:0", [lambda s: location_pb2_grpc.add_LocationServiceServicer_to_server(_Location(), s)],
        interceptors=[spy])
    await server.start()
    channel = client_channel(f"127.0.0.1:{port}", plaintext=True, propagate_trace=propagate)
    try:
        stub = location_pb2_grpc.LocationServiceStub(channel)  # type: ignore[no-untyped-call]
        with tracing.tracer().start_as_current_span("caller"):
            try:
                await stub.Lookup(location_pb2.LookupRequest(aor=aor), timeout=5)
            except grpc.aio.AioRpcError as exc:
                assert exc.code() is grpc.StatusCode.INVALID_ARGUMENT
    finally:
        await channel.close()
        await server.stop(0)
    return spy.seen


async def test_grpc_client_and_server_spans_share_the_trace(spans: InMemorySpanExporter) -> None:
    seen = await _lookup()
    assert [k for k, _ in seen].count("traceparent") == 1
    (caller,) = _by_name(spans, "caller")
    name = "sipsec.location.v1.LocationService/Lookup"
    client = [s for s in _by_name(spans, name) if s.kind is SpanKind.CLIENT]
    server = [s for s in _by_name(spans, name) if s.kind is SpanKind.SERVER]
    assert len(client) == 1 and len(server) == 1
    assert client[0].parent is not None and client[0].parent.span_id == caller.context.span_id
    assert server[0].parent is not None and server[0].parent.span_id == client[0].context.span_id
    assert {s.context.trace_id for s in (caller, client[0], server[0])} == {caller.context.trace_id}
    for span in (client[0], server[0]):
        attributes = dict(span.attributes or {})
        assert attributes == {"rpc.system": "grpc", "rpc.service": "sipsec.location.v1.LocationService",
                              "rpc.method": "Lookup", "rpc.grpc.status_code": 0}
        assert "alice" not in repr(attributes)


async def test_a_channel_to_another_domain_carries_no_traceparent(spans: InMemorySpanExporter) -> None:
    """PKG federation: the client span is recorded here, the peer starts its own trace."""
    seen = await _lookup(propagate=False)
    assert "traceparent" not in [k for k, _ in seen]
    (caller,) = _by_name(spans, "caller")
    lookups = {s.kind: s for s in _by_name(spans, "sipsec.location.v1.LocationService/Lookup")}
    client, server = lookups[SpanKind.CLIENT], lookups[SpanKind.SERVER]
    assert client.parent is not None and client.parent.span_id == caller.context.span_id
    assert server.parent is None and server.context.trace_id != caller.context.trace_id


async def test_a_malformed_traceparent_starts_a_new_trace(spans: InMemorySpanExporter) -> None:
    class Context:
        def code(self) -> None:
            return None

    handler = tracing.server_handler(_echo_handler, "/a.B/C", [("traceparent", "00-zz-yy-01")])
    assert await handler("request", Context()) == "request"
    (span,) = _by_name(spans, "a.B/C")
    assert span.parent is None and span.kind is SpanKind.SERVER
    assert (span.attributes or {})["rpc.grpc.status_code"] == 0


async def test_health_checks_are_not_traced(spans: InMemorySpanExporter) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    server, port, _health = create_server("127.0.0.1:0", [])
    await server.start()
    channel = client_channel(f"127.0.0.1:{port}", plaintext=True)
    try:
        await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
    finally:
        await channel.close()
        await server.stop(0)
    assert spans.get_finished_spans() == ()


async def test_while_off_no_metadata_is_added_and_no_span_recorded() -> None:
    exporter = InMemorySpanExporter()
    tracing.use_exporter(exporter)
    tracing.reset()
    seen = await _lookup()
    assert "traceparent" not in [k for k, _ in seen]
    assert exporter.get_finished_spans() == ()


async def test_an_rpc_error_marks_both_spans(spans: InMemorySpanExporter) -> None:
    await _lookup("not an aor")
    lookups = _by_name(spans, "sipsec.location.v1.LocationService/Lookup")
    assert {s.kind for s in lookups} == {SpanKind.CLIENT, SpanKind.SERVER}
    for span in lookups:
        assert span.status.status_code is StatusCode.ERROR
        assert (span.attributes or {})["rpc.grpc.status_code"] == grpc.StatusCode.INVALID_ARGUMENT.value[0]
