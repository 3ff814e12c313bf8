"""The shared server interceptor (sipsec.rpc.interceptor) on the three real gRPC services.

Each service runs for real on a loopback port 0; raw bytes that are not the method's protobuf
message reach every unary method through a generic ``unary_unary`` with no serializer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import CollectorRegistry
from sipsec.rpc import REQUEST_ID_KEY, RpcServerMetrics, client_channel, create_server
from sipsec.rpc._gen.sipsec.crypto.v1 import crypto_pb2
from sipsec.rpc._gen.sipsec.location.v1 import location_pb2
from sipsec.rpc._gen.sipsec.pkg.v1 import pkg_pb2
from sipsec_location.config import LocationConfig
from sipsec_location.server import create_location_server
from sipsec_pkg.material import init_domain
from sipsec_pkg.node import PkgNode
from sipsec_pkg.passwords import ScryptParams
from sipsec_worker.config import WorkerConfig
from sipsec_worker.server import create_worker_server

# Field 0 does not exist and wire type 7 is not a wire type: no message decodes these bytes.
GARBAGE = (b"\xff\xff\xff\xff", b"\x07", b"\x0a\xff\xff\xff\xff\x0f")
INTERNALS = ("Traceback", "Error", "Exception", "decode", "Decode", "File \"", "line ", "Unexpected")


@dataclass
class Running:
    service: str  # fully qualified gRPC service name
    methods: list[str]
    registry: CollectorRegistry
    channel: grpc.aio.Channel


def _methods(descriptor: object, name: str) -> tuple[str, list[str]]:
    svc = descriptor.services_by_name[name]  # type: ignore[attr-defined]
    unary = [m.name for m in svc.methods if not m.client_streaming and not m.server_streaming]
    return svc.full_name, unary


@pytest.fixture(params=["pkg", "location", "crypto-worker"])
async def running(request: pytest.FixtureRequest) -> AsyncIterator[Running]:
    kind = request.param
    if kind == "pkg":
        node = PkgNode.in_memory(init_domain("atlanta.com").material(), scrypt=ScryptParams(n=16, r=1, p=1))
        await node.start()
        port, registry = node.port, node.metrics.registry
        full, methods = _methods(pkg_pb2.DESCRIPTOR, "KeyGeneratorService")

        async def stop() -> None:
            await node.stop(grace=0)
    elif kind == "location":
        loc, port = create_location_server(LocationConfig(
            listen="127.0.0.1:0", store="memory", metrics_port=-1, drain_seconds=0.1))
        await loc.start()
        registry = loc.metrics.registry
        full, methods = _methods(location_pb2.DESCRIPTOR, "LocationService")

        async def stop() -> None:
            await loc.stop(0)
    else:
        worker, port = create_worker_server(WorkerConfig(
            listen="127.0.0.1:0", processes=1, queue=4, plaintext=True, metrics_port=-1, drain_seconds=0.1))
        await worker.start()
        registry = worker.metrics.registry
        full, methods = _methods(crypto_pb2.DESCRIPTOR, "CryptoWorkerService")

        async def stop() -> None:
            await worker.stop(0)
    channel = client_channel(f"127.0.0.1:{port}", plaintext=True)
    try:
        yield Running(full, methods, registry, channel)
    finally:
        await channel.close()
        await stop()


def _count(r: Running, method: str, code: str) -> float:
    value = r.registry.get_sample_value(
        "sipsec_rpc_server_handled_total", {"service": r.service, "method": method, "code": code})
    return 0.0 if value is None else value


async def test_malformed_bytes_are_invalid_argument_without_internals(running: Running) -> None:
    assert len(running.methods) >= 3
    for method in running.methods:
        raw = running.channel.unary_unary(f"/{running.service}/{method}")
        for garbage in GARBAGE:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await raw(garbage, timeout=10)
            assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT, (method, garbage)
            details = err.value.details() or ""
            assert details == "malformed request message"
            assert not any(word in details for word in INTERNALS)
            reason = dict(err.value.trailing_metadata() or ())["sipsec-reason"]
            assert reason in ("malformed_request", "malformed-request")
        assert _count(running, method, "INVALID_ARGUMENT") == len(GARBAGE)
    # still serving
    status = await health_pb2_grpc.HealthStub(running.channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
    assert status.status == health_pb2.HealthCheckResponse.SERVING


async def test_health_checks_stay_out_of_the_method_metrics(running: Running) -> None:
    health = health_pb2_grpc.HealthStub(running.channel)
    for name in ("", running.service):
        for _ in range(3):
            await health.Check(health_pb2.HealthCheckRequest(service=name), timeout=10)
    with pytest.raises(grpc.aio.AioRpcError) as err:  # a malformed Check: refused the same way
        await running.channel.unary_unary("/grpc.health.v1.Health/Check")(b"\xff\xff", timeout=10)
    assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    samples = [s for metric in running.registry.collect()
               if metric.name.startswith("sipsec_rpc_server_") for s in metric.samples]
    assert all(s.labels.get("service") != "grpc.health.v1.Health" for s in samples)
    assert not any("Health" in str(s.labels) for s in samples)
    # while a method call is observed
    raw = running.channel.unary_unary(f"/{running.service}/{running.methods[0]}")
    with pytest.raises(grpc.aio.AioRpcError):
        await raw(GARBAGE[0], timeout=10)
    hist = running.registry.get_sample_value(
        "sipsec_rpc_server_handling_seconds_count", {"service": running.service, "method": running.methods[0]})
    assert hist == 1.0


Handler = Callable[[bytes, grpc.aio.ServicerContext], Awaitable[bytes]]


@dataclass
class Probe:
    """A bare server from ``create_server`` with a ``test.v1.Probe`` service of raw-bytes methods."""

    port: int
    registry: CollectorRegistry
    channel: grpc.aio.Channel

    def call(self, method: str) -> grpc.aio.UnaryUnaryMultiCallable:
        return self.channel.unary_unary(f"/test.v1.Probe/{method}")

    def handled(self, method: str, code: str) -> float | None:
        labels = {"service": "test.v1.Probe", "method": method, "code": code}
        return self.registry.get_sample_value("sipsec_rpc_server_handled_total", labels)


@contextlib.asynccontextmanager
async def probe(methods: dict[str, Handler]) -> AsyncIterator[Probe]:
    handler = grpc.method_handlers_generic_handler(
        "test.v1.Probe", {name: grpc.unary_unary_rpc_method_handler(fn) for name, fn in methods.items()})
    registry = CollectorRegistry()
    server, port, _ = create_server(
        "127.0.0.1:0", [lambda s: s.add_generic_rpc_handlers((handler,))], metrics=RpcServerMetrics(registry))
    await server.start()
    channel = client_channel(f"127.0.0.1:{port}", plaintext=True)
    try:
        yield Probe(port, registry, channel)
    finally:
        await channel.close()
        await server.stop(0)


async def test_unexpected_handler_error_is_internal_with_a_request_id(caplog: pytest.LogCaptureFixture) -> None:
    secret = "hunter2-very-secret"

    async def boom(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        raise RuntimeError(f"the database said {secret}")

    async def echo(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        return request

    async with probe({"Boom": boom, "Echo": echo}) as p:
        with caplog.at_level(logging.ERROR, logger="sipsec.rpc"), pytest.raises(grpc.aio.AioRpcError) as err:
            await p.call("Boom")(b"x", timeout=10)
        assert err.value.code() is grpc.StatusCode.INTERNAL
        details = err.value.details() or ""
        assert secret not in details and "RuntimeError" not in details and "Traceback" not in details
        trailing = dict(err.value.trailing_metadata() or ())
        request_id = trailing[REQUEST_ID_KEY]
        assert trailing["sipsec-reason"] == "internal"
        assert details == f"internal error (request id {request_id})"
        logged = [rec.getMessage() for rec in caplog.records if request_id in rec.getMessage()]
        assert logged and "RuntimeError" in logged[0] and "boom" in logged[0]  # type and frames
        assert secret not in caplog.text  # never the message
        assert await p.call("Echo")(b"ping", timeout=10) == b"ping"
        assert p.handled("Boom", "INTERNAL") == 1.0
        assert p.handled("Echo", "OK") == 1.0


async def test_a_request_past_its_deadline_is_not_executed() -> None:
    """A request that is picked up after its deadline passed never reaches the handler."""
    ran: list[bytes] = []

    async def block(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        time.sleep(0.8)  # blocks the server's event loop: the next request waits past its deadline
        return request

    async def work(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        ran.append(request)
        return request

    async with probe({"Block": block, "Work": work}) as p:
        sync_channel = grpc.insecure_channel(f"127.0.0.1:{p.port}")  # a client outside the server's loop

        def late() -> grpc.StatusCode:
            time.sleep(0.2)  # sent while Block holds the server's loop; the client gives up at 0.4 s
            try:
                sync_channel.unary_unary("/test.v1.Probe/Work")(b"late", timeout=0.2)
            except grpc.RpcError as exc:
                return exc.code()  # type: ignore[no-any-return,attr-defined]
            return grpc.StatusCode.OK

        try:
            blocked = asyncio.ensure_future(
                asyncio.to_thread(sync_channel.unary_unary("/test.v1.Probe/Block"), b"b", timeout=10))
            late_code = asyncio.ensure_future(asyncio.to_thread(late))
            assert await blocked == b"b"
            assert await late_code is grpc.StatusCode.DEADLINE_EXCEEDED
            await asyncio.sleep(0.3)
            assert ran == []  # the late request reached the server after its deadline: never executed
            assert await p.call("Work")(b"on time", timeout=10) == b"on time"
            assert ran == [b"on time"]
            assert p.handled("Work", "OK") == 1.0
        finally:
            sync_channel.close()
