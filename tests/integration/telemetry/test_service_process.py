"""A service started as its command turns tracing on from the OpenTelemetry variables alone: the
location service with ``OTEL_TRACES_EXPORTER=console`` continues the trace of a ``traceparent``
sent in the gRPC metadata and prints the server span as one JSON line on stderr (next to its
JSON log lines); without the variable it prints no span."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.integration.telemetry._location import LOCATION, PARENT_ID, TRACE_ID, serve_and_look_up


@pytest.mark.skipif(not Path(LOCATION).exists(), reason="the sipsec-location command is not installed")
async def test_the_console_exporter_prints_the_continued_server_span() -> None:
    base = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    lines = await serve_and_look_up({**base, "OTEL_TRACES_EXPORTER": "console", "SIPSEC_LOG_FORMAT": "json"})
    spans = [line for line in lines if "context" in line]
    assert [s["name"] for s in spans] == ["sipsec.location.v1.LocationService/Lookup"]
    (span,) = spans
    assert span["context"]["trace_id"] == f"0x{TRACE_ID}" and span["parent_id"] == f"0x{PARENT_ID}"
    assert span["kind"] == "SpanKind.SERVER"
    assert span["resource"]["attributes"]["service.name"] == "sipsec-location"
    assert span["attributes"] == {"rpc.system": "grpc", "rpc.service": "sipsec.location.v1.LocationService",
                                  "rpc.method": "Lookup", "rpc.grpc.status_code": 0}
    assert "alice" not in json.dumps(span)
    assert any(line.get("service") == "location" for line in lines)  # the log lines beside it

    quiet = await serve_and_look_up({**base, "SIPSEC_LOG_FORMAT": "json"})  # off: the default
    assert [line for line in quiet if "context" in line] == []
