"""The gateway's crypto on a crypto-worker pool: every worker down (in-process fallback), one overloaded."""

from __future__ import annotations

import asyncio
import time

import pytest
from sipsec import ibc
from sipsec.engine import EngineMetrics, RemoteEngine
from sipsec.engine.wire import identity_to_proto
from sipsec.rpc import client_channel
from sipsec.rpc._gen.sipsec.crypto.v1 import crypto_pb2 as pb
from sipsec.rpc._gen.sipsec.crypto.v1 import crypto_pb2_grpc as pb_grpc
from sipsec_worker.config import WorkerConfig
from sipsec_worker.server import create_worker_server

from tests.conftest import free_port
from tests.integration.gateway.harness import TwoDomains, call, login

ALICE = "sip:alice@atlanta.com"
BOB = "sip:bob@biloxi.com"


def _engine(targets: list[str], metrics: EngineMetrics) -> RemoteEngine:
    return RemoteEngine(targets, plaintext=True, balance="round_robin", metrics=metrics, timeout_s=5.0)


def _sum(metrics: EngineMetrics, name: str, **labels: str) -> float:
    total = 0.0
    for metric in metrics.registry.collect():
        for sample in metric.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


async def test_all_workers_down_falls_back_in_process_and_counts_it() -> None:
    metrics = EngineMetrics()
    dead = [f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"]
    engine = _engine(dead, metrics)
    async with TwoDomains(gateway_kwargs={"atlanta.com": {"engine": engine}}) as net:
        await login(net.atlanta, "alice")
        await login(net.biloxi, "bob", auto_answer=True)
        placed = await call(net.atlanta, ALICE, BOB)
        assert placed["state"] == "established" and placed["secure"]
    # seal (sign + encapsulate) and open (verify) all ran in-process, each counted
    assert _sum(metrics, "sipsec_engine_fallbacks_total", op="encapsulate") == 1
    assert _sum(metrics, "sipsec_engine_fallbacks_total", op="sign") >= 2
    assert _sum(metrics, "sipsec_engine_fallbacks_total", op="verify") >= 2
    assert _sum(metrics, "sipsec_engine_remote_calls_total", outcome="ok") == 0


async def _saturate(stub: pb_grpc.CryptoWorkerServiceStub, server: object, m: tuple) -> asyncio.Task:
    params, ident, key = m
    msg = b"saturate"
    signature = ibc.sign(key, msg)
    request = pb.BatchVerifyRequest(items=[
        pb.VerifyRequest(domain_params=params.to_bytes(), identity=identity_to_proto(ident),
                         message=msg, signature=signature)] * 1500)
    task = asyncio.ensure_future(stub.BatchVerify(request, timeout=60))
    pool = server.pool  # type: ignore[attr-defined]
    deadline = time.monotonic() + 10
    while pool.in_flight < pool.processes:
        assert time.monotonic() < deadline, "the batch never reached the pool"
        await asyncio.sleep(0.005)
    return task


@pytest.mark.slow
async def test_overloaded_worker_is_retried_on_another() -> None:
    common = {"listen": "127.0.0.1:0", "processes": 1, "plaintext": True, "metrics_port": -1,
              "drain_seconds": 0.5, "metrics_host": "127.0.0.1"}
    busy, busy_port = create_worker_server(WorkerConfig(**common, queue=0, max_batch=2000))  # type: ignore[arg-type]
    spare, spare_port = create_worker_server(WorkerConfig(**common, queue=16))  # type: ignore[arg-type]
    await busy.start()
    await spare.start()
    channel = client_channel(f"127.0.0.1:{busy_port}", plaintext=True)
    metrics = EngineMetrics()
    engine = _engine([f"127.0.0.1:{busy_port}", f"127.0.0.1:{spare_port}"], metrics)
    try:
        master, params = ibc.setup("load.example")
        ident = params.identity("sip:load@load.example", ibc.Purpose.SIG, 1)
        key = ibc.extract(master, params, ident)
        async with TwoDomains(gateway_kwargs={"atlanta.com": {"engine": engine}}) as net:
            await login(net.atlanta, "alice")
            await login(net.biloxi, "bob", auto_answer=True)
            batch = await _saturate(pb_grpc.CryptoWorkerServiceStub(channel), busy, (params, ident, key))
            placed = await call(net.atlanta, ALICE, BOB)
            assert placed["state"] == "established" and placed["secure"]
            assert not batch.done(), "the saturating batch ended before the call: nothing was tested"
            batch.cancel()
        assert _sum(metrics, "sipsec_engine_remote_calls_total", outcome="resource_exhausted") >= 1
        assert _sum(metrics, "sipsec_engine_retries_total") >= 1
        assert _sum(metrics, "sipsec_engine_fallbacks_total") == 0
        assert _sum(metrics, "sipsec_engine_remote_calls_total", outcome="ok") >= 3
    finally:
        await channel.close()
        await busy.stop(0)
        await spare.stop(0)
