"""The telemetry tests' location service: ``sipsec-location serve`` as a process, one traced Lookup."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import grpc
from sipsec.rpc._gen.sipsec.location.v1 import location_pb2, location_pb2_grpc

TRACE_ID = "ab" * 16
PARENT_ID = "cd" * 8
LOCATION = str(Path(sys.executable).with_name("sipsec-location"))


async def serve_and_look_up(env: dict[str, str]) -> list[dict[str, Any]]:
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
