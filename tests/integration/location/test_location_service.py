"""The location service over a real gRPC server on port 0, with the in-memory store and real Redis."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sipsec.rpc import client_channel
from sipsec.rpc._gen.sipsec.location.v1 import location_pb2 as pb
from sipsec.rpc._gen.sipsec.location.v1 import location_pb2_grpc as pb_grpc
from sipsec.stores.location import (
    InvalidBinding,
    MemoryLocationStore,
    StaleCSeq,
    canonical_aor,
    new_binding,
)
from sipsec_location.config import LocationConfig, parse_args
from sipsec_location.server import create_location_server

from tests.conftest import free_port

ALICE = "sip:alice@atlanta.com"


def _config(store: str, redis_url: str = "", **kw: object) -> LocationConfig:
    return LocationConfig(listen="127.0.0.1:0", store=store, redis_url=redis_url or "redis://x",
                          metrics_host="127.0.0.1", metrics_port=0, drain_seconds=0.5, **kw)  # type: ignore[arg-type]


class Running:
    def __init__(self, server: object, stub: pb_grpc.LocationServiceStub, channel: grpc.aio.Channel) -> None:
        self.server = server
        self.stub = stub
        self.channel = channel


async def _start(config: LocationConfig) -> Running:
    server, port = create_location_server(config)
    await server.start()
    channel = client_channel(f"127.0.0.1:{port}", plaintext=True)
    return Running(server, pb_grpc.LocationServiceStub(channel), channel)


async def _stop(r: Running) -> None:
    await r.channel.close()
    await r.server.stop(0)  # type: ignore[attr-defined]


@pytest.fixture(params=["memory", "redis"])
async def loc(request: pytest.FixtureRequest) -> AsyncIterator[Running]:
    redis_url = request.getfixturevalue("redis_url") if request.param == "redis" else ""
    r = await _start(_config(request.param, redis_url, max_contacts=3, max_expires=3600))
    try:
        yield r
    finally:
        await _stop(r)


async def _code(call: object) -> tuple[grpc.StatusCode, str]:
    try:
        await call  # type: ignore[misc]
    except grpc.aio.AioRpcError as exc:
        reason = dict(exc.trailing_metadata() or ()).get("sipsec-reason", "")
        return exc.code(), str(reason)
    raise AssertionError("the call succeeded")


async def test_bind_lookup_orders_by_q_and_refreshes(loc: Running) -> None:
    await loc.stub.Bind(pb.BindRequest(aor=ALICE, contact="sip:alice@10.0.0.1:5060", expires_seconds=600, q_milli=500))
    await loc.stub.Bind(pb.BindRequest(aor=ALICE, contact="sip:alice@10.0.0.2:5060", expires_seconds=600, q_milli=900))
    resp = await loc.stub.Bind(pb.BindRequest(aor="SIP:alice@ATLANTA.com", contact="sip:alice@10.0.0.3", expires_seconds=600))
    assert [b.contact for b in resp.bindings] == [
        "sip:alice@10.0.0.3", "sip:alice@10.0.0.2:5060", "sip:alice@10.0.0.1:5060"]
    assert resp.bindings[0].q_milli == 1000 and resp.bindings[0].aor == ALICE
    # refresh of an existing contact replaces it (no duplicate), new expiry and q
    await loc.stub.Bind(pb.BindRequest(aor=ALICE, contact="sip:alice@10.0.0.1:5060", expires_seconds=30, q_milli=1000,
                                       call_id="c1", cseq=2))
    found = (await loc.stub.Lookup(pb.LookupRequest(aor=ALICE))).bindings
    assert len(found) == 3
    refreshed = [b for b in found if b.contact == "sip:alice@10.0.0.1:5060"][0]
    assert refreshed.q_milli == 1000 and 28 <= refreshed.expires_seconds <= 30 and refreshed.cseq == 2
    assert (await loc.stub.Lookup(pb.LookupRequest(aor="sip:bob@biloxi.com"))).bindings == []


async def test_unbind_one_and_all(loc: Running) -> None:
    for i in range(3):
        await loc.stub.Bind(pb.BindRequest(aor=ALICE, contact=f"sip:alice@10.0.0.{i}", expires_seconds=60))
    r = await loc.stub.Unbind(pb.UnbindRequest(aor=ALICE, scope=pb.UNBIND_SCOPE_ONE, contact="sip:alice@10.0.0.1"))
    assert r.removed == 1 and sorted(b.contact for b in r.bindings) == ["sip:alice@10.0.0.0", "sip:alice@10.0.0.2"]
    r = await loc.stub.Unbind(pb.UnbindRequest(aor=ALICE, scope=pb.UNBIND_SCOPE_ONE, contact="sip:alice@10.0.0.9"))
    assert r.removed == 0
    r = await loc.stub.Unbind(pb.UnbindRequest(aor=ALICE, scope=pb.UNBIND_SCOPE_ALL))
    assert r.removed == 2 and list(r.bindings) == []
    assert list((await loc.stub.Lookup(pb.LookupRequest(aor=ALICE))).bindings) == []


async def test_instance_id_identifies_binding(loc: Running) -> None:
    inst = "<urn:uuid:00000000-0000-1000-8000-000A95A0E128>"
    await loc.stub.Bind(pb.BindRequest(aor=ALICE, contact="sip:alice@10.0.0.1", expires_seconds=60, instance_id=inst, reg_id=1))
    r = await loc.stub.Bind(pb.BindRequest(aor=ALICE, contact="sip:alice@10.0.0.7", expires_seconds=60, instance_id=inst, reg_id=1))
    assert [b.contact for b in r.bindings] == ["sip:alice@10.0.0.7"]
    r2 = await loc.stub.Unbind(pb.UnbindRequest(aor=ALICE, scope=pb.UNBIND_SCOPE_ONE, instance_id=inst, reg_id=1))
    assert r2.removed == 1


@pytest.mark.parametrize(("request_", "reason"), [
    (pb.BindRequest(aor="alice@atlanta.com", contact="sip:a@h", expires_seconds=60), "bad-aor"),
    (pb.BindRequest(aor="sip:alice@atlanta.com:5060", contact="sip:a@h", expires_seconds=60), "bad-aor"),
    (pb.BindRequest(aor=ALICE, contact="http://x", expires_seconds=60), "bad-contact"),
    (pb.BindRequest(aor=ALICE, contact="sip:a b@h", expires_seconds=60), "bad-contact"),
    (pb.BindRequest(aor=ALICE, contact="sip:a@h", expires_seconds=0), "bad-expiry"),
    (pb.BindRequest(aor=ALICE, contact="sip:a@h", expires_seconds=3601), "bad-expiry"),
    (pb.BindRequest(aor=ALICE, contact="sip:a@h", expires_seconds=60, q_milli=1001), "bad-q"),
    (pb.BindRequest(aor=ALICE, contact="sip:a@h", expires_seconds=60, reg_id=1), "bad-instance"),
])
async def test_bad_bind_is_invalid_argument(loc: Running, request_: pb.BindRequest, reason: str) -> None:
    assert await _code(loc.stub.Bind(request_)) == (grpc.StatusCode.INVALID_ARGUMENT, reason)


async def test_bad_unbind_and_lookup(loc: Running) -> None:
    assert await _code(loc.stub.Unbind(pb.UnbindRequest(aor=ALICE))) == (grpc.StatusCode.INVALID_ARGUMENT, "bad-scope")
    assert await _code(loc.stub.Unbind(pb.UnbindRequest(aor=ALICE, scope=pb.UNBIND_SCOPE_ONE))) == (
        grpc.StatusCode.INVALID_ARGUMENT, "bad-scope")
    assert await _code(loc.stub.Lookup(pb.LookupRequest(aor=""))) == (grpc.StatusCode.INVALID_ARGUMENT, "bad-aor")


async def test_stale_cseq_and_contact_limit(loc: Running) -> None:
    await loc.stub.Bind(pb.BindRequest(aor=ALICE, contact="sip:a@h1", expires_seconds=60, call_id="cid", cseq=5))
    assert await _code(loc.stub.Bind(pb.BindRequest(aor=ALICE, contact="sip:a@h1", expires_seconds=60, call_id="cid", cseq=5))) == (
        grpc.StatusCode.FAILED_PRECONDITION, "stale-cseq")
    assert await _code(loc.stub.Unbind(pb.UnbindRequest(aor=ALICE, scope=pb.UNBIND_SCOPE_ALL, call_id="cid", cseq=4))) == (
        grpc.StatusCode.FAILED_PRECONDITION, "stale-cseq")
    await loc.stub.Bind(pb.BindRequest(aor=ALICE, contact="sip:a@h1", expires_seconds=60, call_id="cid", cseq=6))
    await loc.stub.Bind(pb.BindRequest(aor=ALICE, contact="sip:a@h2", expires_seconds=60))
    await loc.stub.Bind(pb.BindRequest(aor=ALICE, contact="sip:a@h3", expires_seconds=60))
    assert await _code(loc.stub.Bind(pb.BindRequest(aor=ALICE, contact="sip:a@h4", expires_seconds=60))) == (
        grpc.StatusCode.RESOURCE_EXHAUSTED, "too-many-contacts")


async def test_ttl_expiry(loc: Running) -> None:
    await loc.stub.Bind(pb.BindRequest(aor=ALICE, contact="sip:a@short", expires_seconds=1))
    await loc.stub.Bind(pb.BindRequest(aor=ALICE, contact="sip:a@long", expires_seconds=60))
    assert len((await loc.stub.Lookup(pb.LookupRequest(aor=ALICE))).bindings) == 2
    await asyncio.sleep(1.2)
    assert [b.contact for b in (await loc.stub.Lookup(pb.LookupRequest(aor=ALICE))).bindings] == ["sip:a@long"]


async def test_health_and_metrics(loc: Running) -> None:
    health = health_pb2_grpc.HealthStub(loc.channel)
    for name in ("", "sipsec.location.v1.LocationService"):
        resp = await health.Check(health_pb2.HealthCheckRequest(service=name))
        assert resp.status == health_pb2.HealthCheckResponse.SERVING
    await loc.stub.Bind(pb.BindRequest(aor=ALICE, contact="sip:a@h", expires_seconds=60))
    await _code(loc.stub.Bind(pb.BindRequest(aor="bad", contact="sip:a@h", expires_seconds=60)))
    await loc.server.refresh_gauges()  # type: ignore[attr-defined]
    port = loc.server.metrics_port  # type: ignore[attr-defined]
    async with httpx.AsyncClient() as client:
        text = (await client.get(f"http://127.0.0.1:{port}/metrics")).text
    service = 'service="sipsec.location.v1.LocationService"'
    assert f'sipsec_rpc_server_handled_total{{code="OK",method="Bind",{service}}} 1.0' in text
    assert f'sipsec_rpc_server_handled_total{{code="INVALID_ARGUMENT",method="Bind",{service}}} 1.0' in text
    assert "sipsec_location_bindings 1.0" in text
    assert f'sipsec_rpc_server_handling_seconds_count{{method="Bind",{service}}} 2.0' in text
    assert "alice" not in text  # never an AOR as a label


async def test_redis_bindings_survive_restart_and_carry_ttl(redis_url: str) -> None:
    import redis.asyncio as aioredis

    first = await _start(_config("redis", redis_url))
    await first.stub.Bind(pb.BindRequest(aor=ALICE, contact="sip:alice@10.0.0.1", expires_seconds=120, q_milli=700))
    await _stop(first)
    client = aioredis.from_url(redis_url)
    keys = [k async for k in client.scan_iter("sipsec:loc:*:b:*")]
    assert len(keys) == 1 and 110_000 < await client.pttl(keys[0]) <= 120_000
    await client.aclose()
    second = await _start(_config("redis", redis_url))
    try:
        found = (await second.stub.Lookup(pb.LookupRequest(aor=ALICE))).bindings
        assert [(b.contact, b.q_milli) for b in found] == [("sip:alice@10.0.0.1", 700)]
        assert 110 <= found[0].expires_seconds <= 120
        await second.server.refresh_gauges()  # type: ignore[attr-defined]
        assert second.server.metrics.bindings._value.get() == 1  # type: ignore[attr-defined]
    finally:
        await _stop(second)


async def test_redis_down_is_unavailable() -> None:
    r = await _start(_config("redis", f"redis://127.0.0.1:{free_port()}/0"))
    try:
        assert await _code(r.stub.Lookup(pb.LookupRequest(aor=ALICE))) == (
            grpc.StatusCode.UNAVAILABLE, "store-unavailable")
    finally:
        await _stop(r)


async def test_memory_store_expiry_with_injected_clock() -> None:
    now = [1000.0]
    store = MemoryLocationStore(clock=lambda: now[0])
    b = new_binding(ALICE, "sip:a@h", 10, now[0], max_expires=60, call_id="x", cseq=1)
    await store.bind(b, 4)
    assert await store.count() == 1
    with pytest.raises(StaleCSeq):
        await store.bind(b, 4)
    now[0] += 10.0
    assert await store.lookup(ALICE) == [] and await store.count() == 0
    with pytest.raises(InvalidBinding):
        canonical_aor("sip:alice@atlanta.com;transport=udp")


def test_config_env_and_flags() -> None:
    cfg = parse_args(["--max-contacts", "7"], {"SIPSEC_LOCATION_STORE": "redis",
                                                "SIPSEC_LOCATION_LISTEN": "127.0.0.1:1234"})
    assert (cfg.store, cfg.listen, cfg.max_contacts, cfg.max_expires) == ("redis", "127.0.0.1:1234", 7, 86400)
    with pytest.raises(ValueError):
        LocationConfig(store="disk")


def test_console_script_help_and_sigterm_drain() -> None:
    exe = os.path.join(os.path.dirname(sys.executable), "sipsec-location")
    out = subprocess.run([exe, "serve", "--help"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0 and "SIPSEC_LOCATION_LISTEN" in out.stdout
    port = free_port()
    env = {**os.environ, "SIPSEC_LOCATION_LISTEN": f"127.0.0.1:{port}", "SIPSEC_LOCATION_METRICS_PORT": "-1",
           "SIPSEC_LOCATION_DRAIN_SECONDS": "1"}
    proc = subprocess.Popen([exe, "serve"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert f"port {port}" in line
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        stub = pb_grpc.LocationServiceStub(channel)
        resp = stub.Bind(pb.BindRequest(aor=ALICE, contact="sip:a@h", expires_seconds=60), timeout=5)
        assert len(resp.bindings) == 1
        channel.close()
        start = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0 and time.monotonic() - start < 5
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
