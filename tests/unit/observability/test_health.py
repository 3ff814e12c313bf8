"""Readiness as a verdict of checks within a deadline (:mod:`sipsec.telemetry.health`), published
on gRPC health (liveness apart) and on HTTP ``/livez`` and ``/readyz``; build information."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from grpc_health.v1 import health, health_pb2
from prometheus_client import CollectorRegistry, generate_latest
from sipsec.telemetry.health import LIVENESS_SERVICE, Readiness, build_info, build_revision
from sipsec.telemetry.http import health_app

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class Switch:
    """A dependency the test makes fine, failing or hanging."""

    def __init__(self) -> None:
        self.mode = "ok"

    async def __call__(self) -> None:
        if self.mode == "hang":
            await asyncio.sleep(3600)
        if self.mode == "fail":
            raise ConnectionError("refused")


async def _status(servicer: health.aio.HealthServicer, service: str) -> int:
    reply = await servicer.Check(health_pb2.HealthCheckRequest(service=service), None)
    return int(reply.status)


async def test_a_failing_or_hanging_check_makes_the_service_not_ready_and_liveness_stays() -> None:
    store, material = Switch(), Switch()
    registry = CollectorRegistry()
    readiness = Readiness({"store": store, "key_material": material}, registry=registry, deadline_s=0.1)
    servicer = health.aio.HealthServicer()
    readiness.attach(servicer, ["sipsec.pkg.v1.KeyGeneratorService"])
    assert not readiness.ready and readiness.report()["checks"] == {"store": "unknown", "key_material": "unknown"}

    assert await readiness.check_once() is True
    assert await _status(servicer, "") == SERVING
    assert await _status(servicer, "sipsec.pkg.v1.KeyGeneratorService") == SERVING
    assert await _status(servicer, LIVENESS_SERVICE) == SERVING
    assert b"sipsec_ready 1.0" in generate_latest(registry)

    for mode in ("fail", "hang"):
        store.mode = mode
        loop = asyncio.get_running_loop()
        started = loop.time()
        assert await readiness.check_once() is False
        assert loop.time() - started < 1.0  # a hanging store costs the deadline, no more
        assert readiness.report() == {"ready": False, "checks": {"store": "failing", "key_material": "ok"}}
        assert await _status(servicer, "") == NOT_SERVING
        assert await _status(servicer, "sipsec.pkg.v1.KeyGeneratorService") == NOT_SERVING
        assert await _status(servicer, LIVENESS_SERVICE) == SERVING
        text = generate_latest(registry).decode()
        assert "sipsec_ready 0.0" in text and 'sipsec_readiness_check_ok{check="store"} 0.0' in text

    store.mode = "ok"
    assert await readiness.check_once() is True
    assert await _status(servicer, "") == SERVING


async def test_the_loop_follows_changes_and_stop_reports_not_ready() -> None:
    store = Switch()
    readiness = Readiness({"store": store}, deadline_s=0.1, interval_s=0.05)
    servicer = health.aio.HealthServicer()
    readiness.attach(servicer, ["svc"])
    await readiness.start()
    assert readiness.ready
    store.mode = "fail"
    for _ in range(100):
        if not readiness.ready:
            break
        await asyncio.sleep(0.02)
    assert not readiness.ready
    store.mode = "ok"
    for _ in range(100):
        if readiness.ready:
            break
        await asyncio.sleep(0.02)
    assert readiness.ready
    await readiness.stop()
    assert not readiness.ready
    assert await _status(servicer, "") == NOT_SERVING and await _status(servicer, "svc") == NOT_SERVING


async def test_a_stale_verdict_is_not_ready() -> None:
    readiness = Readiness({}, deadline_s=0.01, interval_s=0.01)
    assert await readiness.check_once() is True
    assert readiness.report()["ready"] is True
    await asyncio.sleep(0.1)  # the loop did not run again: an event loop that stalled
    assert readiness.report()["ready"] is False


def _call(app: Any, path: str) -> tuple[str, bytes]:
    seen: dict[str, str] = {}

    def start(status: str, headers: list[tuple[str, str]]) -> None:
        seen["status"] = status

    body = b"".join(app({"PATH_INFO": path, "REQUEST_METHOD": "GET"}, start))
    return seen["status"], body


async def test_http_livez_readyz_and_metrics_pass_through() -> None:
    store = Switch()
    readiness = Readiness({"store": store}, deadline_s=0.1)

    def metrics(environ: dict[str, Any], start: Any) -> list[bytes]:
        start("200 OK", [])
        return [b"metrics"]

    app = health_app(metrics, readiness)
    await readiness.check_once()
    assert _call(app, "/readyz") == ("200 OK", b'{"checks": {"store": "ok"}, "ready": true}')
    store.mode = "fail"
    await readiness.check_once()
    status, body = _call(app, "/readyz")
    assert status.startswith("503") and json.loads(body) == {"ready": False, "checks": {"store": "failing"}}
    assert _call(app, "/livez") == ("200 OK", b'{"live": true}')
    assert _call(app, "/metrics") == ("200 OK", b"metrics")
    assert _call(health_app(metrics, None), "/readyz")[0] == "200 OK"


def test_build_info_is_one_series_of_bounded_labels(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIPSEC_BUILD_REVISION", "d8919a8")
    registry = CollectorRegistry()
    build_info(registry, "pkg")
    text = generate_latest(registry).decode()
    assert 'revision="d8919a8"' in text and 'service="pkg"' in text and text.count("sipsec_build_info{") == 1
    monkeypatch.setenv("SIPSEC_BUILD_REVISION", 'x"} 1\nsipsec_evil 1')
    assert build_revision() == "unknown"
    monkeypatch.delenv("SIPSEC_BUILD_REVISION")
    assert build_revision() == "unknown"
