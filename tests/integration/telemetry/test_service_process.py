"""A service started as its command turns tracing on from the OpenTelemetry variables alone: the
location service with ``OTEL_TRACES_EXPORTER=console`` continues the trace of a ``traceparent``
sent in the gRPC metadata and prints the server span as one JSON line on stderr (next to its
JSON log lines); without the variable it prints no span."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import grpc
import pytest
from sipsec.rpc._gen.sipsec.location.v1 import location_pb2, location_pb2_grpc

TRACE_ID = "ab" * 16
PARENT_ID = "cd" * 8
LOCATION = str(Path(sys.executable).with_name("sipsec-location"))


async def _serve_and_look_up(env: dict[str, str]) -> list[dict[str, Any]]:
    """Runs ``sipsec-location serve`` on a free loopback port, sends one Lookup with a
    ``traceparent``, stops it (SIGTERM) and returns every stderr line, parsed as JSON."""
    proc = subprocess.Popen(
        [LOCATION, "serve", "--listen", "127.0.0.1:0", "--metrics-port", "-1", "--drain-seconds", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # "sipsec-location listening on port N"
        port = int(line.split("port ")[1].split()[0])
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = location_pb2_grpc.LocationServiceStub(channel)  # type: ignore[no-untyped-call]
            await stub.Lookup(location_pb2.LookupRequest(aor="sip:alice@atlanta.com"), timeout=5,
                              metadata=[("traceparent", f"00-{TRACE_ID}-{PARENT_ID}-01")])
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    return [json.loads(line) for line in err.splitlines() if line.strip()]  # every line is JSON


@pytest.mark.skipif(not Path(LOCATION).exists(), reason="the sipsec-location command is not installed")
async def test_the_console_exporter_prints_the_continued_server_span() -> None:
    base = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    lines = await _serve_and_look_up({**base, "OTEL_TRACES_EXPORTER": "console", "SIPSEC_LOG_FORMAT": "json"})
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

    quiet = await _serve_and_look_up({**base, "SIPSEC_LOG_FORMAT": "json"})  # off: the default
    assert [line for line in quiet if "context" in line] == []
