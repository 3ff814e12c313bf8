"""The crypto-worker as an operator runs it: configuration, --help, the console script, SIGTERM drain."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time

import grpc
import pytest
from sipsec import ibc
from sipsec.engine.wire import identity_to_proto
from sipsec.rpc import client_channel
from sipsec.rpc._gen.sipsec.crypto.v1 import crypto_pb2 as pb
from sipsec.rpc._gen.sipsec.crypto.v1 import crypto_pb2_grpc as pb_grpc
from sipsec_worker.config import ENV, WorkerConfig, parse_args

from tests.integration.worker.conftest import Material, StartWorker


def test_environment_then_flags() -> None:
    env = {"SIPSEC_WORKER_LISTEN": "127.0.0.1:6000", "SIPSEC_WORKER_PROCESSES": "3",
           "SIPSEC_WORKER_QUEUE": "5", "SIPSEC_WORKER_METRICS_PORT": "9999", "SIPSEC_WORKER_PLAINTEXT": "yes"}
    config = parse_args([], env)
    assert (config.listen, config.processes, config.queue, config.metrics_port, config.plaintext) == (
        "127.0.0.1:6000", 3, 5, 9999, True)
    config = parse_args(["--queue", "0", "--processes", "1", "--listen", "127.0.0.1:0"], env)
    assert (config.queue, config.processes, config.listen) == (0, 1, "127.0.0.1:0")
    assert config.pool_processes == 1
    assert WorkerConfig(plaintext=True).pool_processes == (os.cpu_count() or 1)
    defaults = WorkerConfig.from_env({"SIPSEC_WORKER_PLAINTEXT": "1"})
    assert (defaults.listen, defaults.queue, defaults.metrics_port) == ("0.0.0.0:50053", 64, 9465)


def test_plaintext_must_be_asked_for_and_bad_values_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        parse_args([], {})
    assert info.value.code == 2
    assert "SIPSEC_WORKER_PLAINTEXT" in capsys.readouterr().err
    for bad in (["--plaintext", "--queue", "-1"], ["--plaintext", "--tls-cert", "c.pem"],
                ["--plaintext", "--max-batch", "0"]):
        with pytest.raises(SystemExit):
            parse_args(bad, {})
    with pytest.raises(ValueError):
        WorkerConfig.from_env({"SIPSEC_WORKER_PLAINTEXT": "maybe"})


def test_help_lists_every_variable(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        parse_args(["--help"], {})
    assert info.value.code == 0
    out = capsys.readouterr().out
    for var, _, _ in ENV.values():
        assert var in out


async def test_stop_drains_in_flight_work(start_worker: StartWorker, material: Material) -> None:
    m = material
    w = await start_worker()
    request = pb.BatchSignRequest(items=[
        pb.SignRequest(identity=identity_to_proto(m.sig), private_key=m.sig_key.to_bytes(), message=b"%d" % i)
        for i in range(200)
    ])
    call = asyncio.ensure_future(w.stub.BatchSign(request, timeout=30))
    while w.server.pool.in_flight == 0:
        await asyncio.sleep(0.005)
    await w.server.stop(grace=10)
    response = await call  # finished during the drain
    assert [r.status for r in response.results] == [pb.ITEM_STATUS_OK] * 200
    ibc.verify(m.params, m.sig, b"199", response.results[199].result.signature)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await w.stub.Sign(request.items[0], timeout=2)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE


@pytest.mark.slow
async def test_console_script_serves_and_drains_on_sigterm(material: Material) -> None:
    m = material
    env = {**os.environ, "SIPSEC_WORKER_PLAINTEXT": "true", "SIPSEC_WORKER_PROCESSES": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "sipsec_worker", "serve", "--listen", "127.0.0.1:0", "--metrics-port", "0",
         "--metrics-host", "127.0.0.1", "--drain-seconds", "2"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), timeout=30)
        assert line.startswith("sipsec-worker listening on port "), line
        port = int(line.split()[4])
        channel = client_channel(f"127.0.0.1:{port}", plaintext=True)
        try:
            stub = pb_grpc.CryptoWorkerServiceStub(channel)
            enc = await stub.Encapsulate(pb.EncapsulateRequest(
                domain_params=m.params.to_bytes(), identity=identity_to_proto(m.enc)), timeout=10)
            assert ibc.decapsulate(m.enc_key, enc.ciphertext) == enc.key
        finally:
            await channel.close()
        start = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(proc.wait, 20)
        assert code == 0
        assert time.monotonic() - start < 15
        _, err = proc.communicate(timeout=5)
        assert "draining" in err
        assert m.enc_key.to_bytes().hex() not in err  # never logs key material
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)


async def test_a_dead_pool_process_is_replaced(start_worker: StartWorker, material: Material) -> None:
    m = material
    w = await start_worker(max_batch=2000)
    sign = pb.SignRequest(identity=identity_to_proto(m.sig), private_key=m.sig_key.to_bytes(), message=b"x")
    call = asyncio.ensure_future(w.stub.BatchSign(pb.BatchSignRequest(items=[sign] * 1500), timeout=30))
    while w.server.pool.in_flight < 2:
        await asyncio.sleep(0.005)
    victim = w.server.pool.pids[0]  # a pool process this test started
    os.kill(victim, signal.SIGKILL)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    assert ("sipsec-reason", "pool-broken") in tuple(info.value.trailing_metadata() or ())
    assert w.sample("sipsec_worker_rejections_total", reason="pool_broken") == 1
    # the pool was rebuilt: the next request is served
    response = await w.stub.Sign(sign, timeout=30)
    ibc.verify(m.params, m.sig, b"x", response.signature)
    for _ in range(600):  # its replacement starts in the background (the other process served meanwhile)
        if len(w.server.pool.pids) == w.server.pool.processes:
            break
        await asyncio.sleep(0.05)
    assert victim not in w.server.pool.pids and len(w.server.pool.pids) == w.server.pool.processes
