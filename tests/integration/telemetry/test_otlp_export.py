"""A service started with ``OTEL_TRACES_EXPORTER=otlp`` ships its spans over OTLP/gRPC: the
location service, pointed at an OTLP trace receiver (a gRPC server on port 0 speaking the
collector's ``opentelemetry.proto.collector.trace.v1.TraceService``; no OpenTelemetry Collector
is packaged for this machine), exports the server span of one Lookup that continues the caller's
``traceparent``, with the service's resource, and the span reaches the receiver by the time the
process has exited on SIGTERM (the batch exporter is flushed at shutdown, not dropped)."""

from __future__ import annotations

import os
import threading
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from tests.integration.telemetry._location import LOCATION, PARENT_ID, TRACE_ID, serve_and_look_up


class Receiver(trace_service_pb2_grpc.TraceServiceServicer):
    """Keeps every ExportTraceServiceRequest it is sent, and the metadata that came with it."""

    def __init__(self) -> None:
        self.requests: list[trace_service_pb2.ExportTraceServiceRequest] = []
        self.metadata: list[dict[str, str]] = []
        self.lock = threading.Lock()

    def Export(self, request: Any, context: Any) -> Any:  # noqa: N802 (the protocol's name)
        with self.lock:
            self.requests.append(request)
            self.metadata.append({k: v for k, v in context.invocation_metadata() if isinstance(v, str)})
        return trace_service_pb2.ExportTraceServiceResponse()

    def spans(self) -> list[tuple[dict[str, Any], Any]]:
        """(resource attributes, span) for every span received."""
        out = []
        with self.lock:
            for request in self.requests:
                for rs in request.resource_spans:
                    resource = {a.key: a.value.string_value for a in rs.resource.attributes}
                    for ss in rs.scope_spans:
                        out.extend((resource, span) for span in ss.spans)
        return out


@pytest.fixture
def receiver() -> Any:
    servicer = Receiver()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield servicer, port
    finally:
        server.stop(grace=None)


@pytest.mark.skipif(not Path(LOCATION).exists(), reason="the sipsec-location command is not installed")
async def test_the_otlp_exporter_ships_the_server_span_to_a_trace_receiver(receiver: Any) -> None:
    servicer, port = receiver
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env.update({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}",
                "OTEL_EXPORTER_OTLP_INSECURE": "true", "SIPSEC_LOG_FORMAT": "json"})
    lines = await serve_and_look_up(env)  # SIGTERM, then waited: the batch is flushed at exit
    err = "\n".join(map(str, lines))
    spans = servicer.spans()
    assert [span.name for _, span in spans] == ["sipsec.location.v1.LocationService/Lookup"], err
    ((resource, span),) = spans
    assert resource["service.name"] == "sipsec-location"
    assert span.trace_id.hex() == TRACE_ID and span.parent_span_id.hex() == PARENT_ID
    assert span.kind == span.SPAN_KIND_SERVER
    attributes = {a.key: a.value for a in span.attributes}
    assert attributes["rpc.method"].string_value == "Lookup"
    assert attributes["rpc.grpc.status_code"].int_value == 0
    # the AOR looked up is in no attribute and no resource value
    assert "alice" not in repr(span) and not any("alice" in v for v in resource.values())
