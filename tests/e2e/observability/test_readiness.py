"""Readiness tells the truth: with the domain's real redis-server paused (SIGSTOP), the PKG and
the location service turn NOT_SERVING on gRPC health (overall and per service) and ``/readyz``
answers 503 within 5 s — and the proxy, whose location service is no longer ready, too — while
liveness stays green; after SIGCONT every one recovers. Each live ``/metrics`` passes
``promtool check metrics``."""

from __future__ import annotations

import asyncio
import json
import signal
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sipsec.stores.location import RedisLocationStore
from sipsec.stores.pkg import RedisPkgStore
from sipsec.telemetry.health import LIVENESS_SERVICE
from sipsec_location.config import LocationConfig
from sipsec_location.server import SERVICE_NAME as LOCATION_SERVICE
from sipsec_location.server import LocationServer
from sipsec_pkg.grpc_api import SERVICE_NAME as PKG_SERVICE
from sipsec_pkg.material import init_domain
from sipsec_pkg.node import PkgNode
from sipsec_proxy.config import ProxyConfig
from sipsec_proxy.server import ProxyServer

from tests.conftest import RedisServer, free_port
from tests.unit.observability.test_metric_names import promtool_problems

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@dataclass
class Deployment:
    redis: RedisServer
    pkg: PkgNode
    location: LocationServer
    proxy: ProxyServer


@pytest.fixture
async def deployment() -> AsyncIterator[Deployment]:
    redis = RedisServer()
    material = init_domain("atlanta.com").material()
    pkg = PkgNode.in_memory(material, store=RedisPkgStore(redis.url, "atlanta.com"), metrics_port=0)
    location = LocationServer(LocationConfig.from_env({}, listen="127.0.0.1:0", store="redis",
                                                      redis_url=redis.url, metrics_port=0, metrics_host="127.0.0.1"),
                              RedisLocationStore(redis.url, prefix="sipsec:loc:test:"))
    started: list[Callable[[], object]] = []
    try:
        await pkg.start()
        started.append(pkg.stop)
        await location.start()
        started.append(lambda: location.stop(0))
        proxy = ProxyServer(ProxyConfig.from_env(
            {}, domains="atlanta.com", listen=f"127.0.0.1:{free_port()}", location=f"127.0.0.1:{location.port}",
            metrics_port=0, metrics_host="127.0.0.1", drain_seconds=0))
        await proxy.start()
        started.append(proxy.stop)
        yield Deployment(redis, pkg, location, proxy)
    finally:
        if redis.proc.poll() is None:
            redis.proc.send_signal(signal.SIGCONT)
        for stop in reversed(started):
            await stop()  # type: ignore[misc]
        await pkg.store.close()
        redis.stop()


async def _status(port: int, service: str) -> int:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        reply = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=2)
        return int(reply.status)


def _http(port: int, path: str) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=3) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def _get(port: int, path: str) -> bytes:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=3) as resp:
        return bytes(resp.read())


async def _view(d: Deployment) -> dict[str, object]:
    """Every health signal at once: gRPC statuses, HTTP codes."""
    assert d.pkg.metrics_port is not None and d.location.metrics_port is not None
    assert d.proxy.metrics_port is not None
    return {
        "pkg": await _status(d.pkg.port, ""),
        "pkg_service": await _status(d.pkg.port, PKG_SERVICE),
        "pkg_live": await _status(d.pkg.port, LIVENESS_SERVICE),
        "location": await _status(d.location.port, ""),
        "location_service": await _status(d.location.port, LOCATION_SERVICE),
        "location_live": await _status(d.location.port, LIVENESS_SERVICE),
        "pkg_readyz": (await asyncio.to_thread(_http, d.pkg.metrics_port, "/readyz"))[0],
        "location_readyz": (await asyncio.to_thread(_http, d.location.metrics_port, "/readyz"))[0],
        "proxy_readyz": (await asyncio.to_thread(_http, d.proxy.metrics_port, "/readyz"))[0],
        "proxy_livez": (await asyncio.to_thread(_http, d.proxy.metrics_port, "/livez"))[0],
    }


READY = {"pkg": SERVING, "pkg_service": SERVING, "pkg_live": SERVING, "location": SERVING,
         "location_service": SERVING, "location_live": SERVING, "pkg_readyz": 200, "location_readyz": 200,
         "proxy_readyz": 200, "proxy_livez": 200}
STALLED = {"pkg": NOT_SERVING, "pkg_service": NOT_SERVING, "pkg_live": SERVING, "location": NOT_SERVING,
           "location_service": NOT_SERVING, "location_live": SERVING, "pkg_readyz": 503, "location_readyz": 503,
           "proxy_readyz": 503, "proxy_livez": 200}


async def _until(d: Deployment, want: dict[str, object], within_s: float) -> float:
    """Seconds until every signal is ``want``; fails with the last view past ``within_s``."""
    start = time.monotonic()
    view: dict[str, object] = {}
    while time.monotonic() - start < within_s:
        view = await _view(d)
        if view == want:
            return time.monotonic() - start
        await asyncio.sleep(0.2)
    pytest.fail(f"not {want} within {within_s} s: {view}")


async def test_a_paused_redis_turns_readiness_red_within_5_s_and_it_recovers(deployment: Deployment) -> None:
    d = deployment
    await _until(d, READY, 5)
    _, body = await asyncio.to_thread(_http, d.pkg.metrics_port or 0, "/readyz")
    assert body["ready"] is True and set(body["checks"].values()) == {"ok"}
    assert {"store", "key_material"} <= set(body["checks"])
    metrics = d.pkg.metrics.render().decode()
    assert "sipsec_ready 1.0" in metrics
    assert 'sipsec_pkg_key_material_checks_total{result="ok"} 1.0' in metrics

    for name, port in (("pkg", d.pkg.metrics_port), ("location", d.location.metrics_port),
                       ("proxy", d.proxy.metrics_port)):
        exposition = await asyncio.to_thread(_get, port or 0, "/metrics")
        assert promtool_problems(exposition) == "", name
        assert f'service="{name}"' in exposition.decode() and b"sipsec_ready 1.0" in exposition, name
    assert b"sipsec_store_operation_seconds_count" in await asyncio.to_thread(_get, d.pkg.metrics_port or 0,
                                                                              "/metrics")

    d.redis.proc.send_signal(signal.SIGSTOP)
    took = await _until(d, STALLED, 5)
    print(f"readiness red {took:.2f} s after SIGSTOP")
    _, body = await asyncio.to_thread(_http, d.pkg.metrics_port or 0, "/readyz")
    assert body["ready"] is False and body["checks"]["store"] == "failing"
    assert body["checks"]["key_material"] == "ok"
    _, body = await asyncio.to_thread(_http, d.proxy.metrics_port or 0, "/readyz")
    assert body == {"ready": False, "checks": {"location": "failing"}}
    assert 'sipsec_readiness_check_ok{check="store"} 0.0' in d.pkg.metrics.render().decode()

    d.redis.proc.send_signal(signal.SIGCONT)
    took = await _until(d, READY, 10)
    print(f"ready again {took:.2f} s after SIGCONT")
