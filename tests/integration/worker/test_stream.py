"""The worker's Stream method and the remote engine's use of it, against real workers."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import grpc
import pytest
from sipsec import ibc
from sipsec.engine import EngineMetrics, RemoteEngine
from sipsec.engine.wire import identity_to_proto
from sipsec.rpc._gen.sipsec.crypto.v1 import crypto_pb2 as pb
from sipsec.rpc._gen.sipsec.crypto.v1 import crypto_pb2_grpc as pb_grpc
from sipsec_worker.server import SERVICE_NAME as WORKER_SERVICE
from sipsec_worker.service import CryptoWorkerServicer

from tests.integration.worker.conftest import Material, StartWorker, Worker

MSG = b"INVITE sip:bob@biloxi.com SIP/2.0"


def _unary_batches(w: Worker) -> float:
    return sum(w.sample("sipsec_rpc_server_handled_total", service=WORKER_SERVICE, method=m, code="OK")
               for m in ("BatchEncapsulate", "BatchDecapsulate", "BatchSign", "BatchVerify"))


def _calls(metrics: EngineMetrics, op: str, outcome: str) -> float:
    return metrics.registry.get_sample_value("sipsec_engine_remote_calls_total", {"op": op, "outcome": outcome}) or 0.0


async def _sign_and_verify(engine: RemoteEngine, m: Material, n: int) -> None:
    """``n`` concurrent signatures of distinct messages, each verified by the engine and here."""
    messages = [MSG + b" %d" % i for i in range(n)]
    signatures = await asyncio.gather(*(engine.sign(m.sig_key, msg) for msg in messages))
    for msg, signature in zip(messages, signatures, strict=True):
        ibc.verify(m.params, m.sig, msg, signature)  # each caller got its own answer
    await asyncio.gather(*(engine.verify(m.params, m.sig, msg, s) for msg, s in zip(messages, signatures, strict=True)))
    with pytest.raises(ibc.InvalidSignature):  # and a bad one is still the in-process error
        await engine.verify(m.params, m.sig, messages[0], signatures[1])


async def test_batches_travel_on_one_stream_per_worker(start_worker: StartWorker, material: Material) -> None:
    w = await start_worker()
    metrics = EngineMetrics()
    engine = RemoteEngine([w.target], plaintext=True, allow_fallback=False, metrics=metrics)
    try:
        await _sign_and_verify(engine, material, 40)
        assert len(w.server.servicer._streams) == 1  # one stream, still open for the next batch
        key, ciphertext = await engine.encapsulate(material.params, material.enc)
        assert await engine.decapsulate(material.enc_key, ciphertext) == key
    finally:
        await engine.close()
    assert _unary_batches(w) == 0
    # each batch timed and counted as a call would be, under the method Stream (the dashboards' worker latency)
    assert w.sample("sipsec_rpc_server_handled_total", service=WORKER_SERVICE, method="Stream",
                    code="OK") == engine.batch_sizes.count
    assert w.sample("sipsec_rpc_server_handling_seconds_count", service=WORKER_SERVICE,
                    method="Stream") == engine.batch_sizes.count
    assert _calls(metrics, "sign", "ok") == 40
    assert _calls(metrics, "verify", "ok") == 40
    assert _calls(metrics, "verify", "rejected") == 1
    assert w.sample("sipsec_worker_operations_total", kind="sign", outcome="ok") == 40
    assert engine.batch_sizes.largest > 1  # coalesced: fewer messages than operations


async def test_with_streaming_off_or_on_an_older_worker_batches_are_unary_calls(
    start_worker: StartWorker, material: Material, monkeypatch: pytest.MonkeyPatch
) -> None:
    w = await start_worker()
    engine = RemoteEngine([w.target], plaintext=True, allow_fallback=False, stream=False)
    try:
        await _sign_and_verify(engine, material, 8)
    finally:
        await engine.close()
    assert _unary_batches(w) > 0 and not w.server.servicer._streams

    # a worker from before the Stream method: UNIMPLEMENTED, then unary calls, nothing lost
    monkeypatch.setattr(CryptoWorkerServicer, "Stream", pb_grpc.CryptoWorkerServiceServicer.Stream)
    old = await start_worker()
    metrics = EngineMetrics()
    engine = RemoteEngine([old.target], plaintext=True, allow_fallback=False, metrics=metrics)
    try:
        await _sign_and_verify(engine, material, 8)
        await _sign_and_verify(engine, material, 8)
        assert engine._workers[0].no_stream
    finally:
        await engine.close()
    assert _unary_batches(old) > 0
    assert _calls(metrics, "sign", "ok") == 16
    assert _calls(metrics, "sign", "error") == 0


async def test_a_draining_worker_ends_its_streams_and_the_engine_moves_on(
    start_worker: StartWorker, material: Material
) -> None:
    draining = await start_worker(drain_seconds=20.0)
    spare = await start_worker()
    metrics = EngineMetrics()
    engine = RemoteEngine([draining.target, spare.target], plaintext=True, balance="round_robin",
                          allow_fallback=False, metrics=metrics)
    try:
        await _sign_and_verify(engine, material, 4)  # a stream open to each worker
        assert draining.server.servicer._streams and spare.server.servicer._streams
        start = time.monotonic()
        await draining.server.stop()  # SIGTERM's path, with a 20 s grace for what is in flight
        assert time.monotonic() - start < 5, "the open stream held the drain to its grace period"
        for _ in range(3):
            await _sign_and_verify(engine, material, 4)
    finally:
        await engine.close()
    assert _calls(metrics, "sign", "ok") == 16
    assert spare.sample("sipsec_worker_operations_total", kind="sign", outcome="ok") >= 12


async def test_the_stream_answers_each_batch_by_id_and_refusals_leave_it_open(
    start_worker: StartWorker, material: Material
) -> None:
    m = material
    w = await start_worker(max_batch=4)
    sign = pb.SignRequest(identity=identity_to_proto(m.sig), private_key=m.sig_key.to_bytes(), message=MSG)
    requests = [
        pb.StreamRequest(id=7),  # no batch
        pb.StreamRequest(id=8, timeout_s=5, sign=pb.BatchSignRequest(items=[sign] * 5)),  # over the limit
        pb.StreamRequest(id=9, timeout_s=5, sign=pb.BatchSignRequest(items=[sign] * 2)),
        pb.StreamRequest(id=10, timeout_s=5, verify=pb.BatchVerifyRequest(items=[pb.VerifyRequest(
            domain_params=m.params.to_bytes(), identity=identity_to_proto(m.sig), message=MSG,
            signature=b"\x00" * 48)])),
    ]
    call = w.stub.Stream()
    for request in requests:
        await call.write(request)
    answers = {}
    for _ in requests:
        response = await asyncio.wait_for(call.read(), 10)
        answers[response.id] = response
    await call.done_writing()
    assert await asyncio.wait_for(call.read(), 10) is grpc.aio.EOF  # ends once every batch is answered
    assert await call.code() == grpc.StatusCode.OK

    assert (answers[7].code, answers[7].reason) == (grpc.StatusCode.INVALID_ARGUMENT.value[0], "invalid-argument")
    assert (answers[8].code, answers[8].reason) == (grpc.StatusCode.INVALID_ARGUMENT.value[0], "batch-too-large")
    assert answers[9].code == 0 and len(answers[9].sign.results) == 2
    for result in answers[9].sign.results:
        assert result.status == pb.ITEM_STATUS_OK
        ibc.verify(m.params, m.sig, MSG, result.result.signature)
    assert answers[10].code == 0
    assert answers[10].verify.results[0].status == pb.ITEM_STATUS_INVALID_SIGNATURE
    assert answers[10].verify.results[0].reason == "malformed-signature"
    assert w.sample("sipsec_worker_rejections_total", reason="malformed") == 1
    assert w.sample("sipsec_worker_rejections_total", reason="batch_too_large") == 1


async def test_a_worker_that_never_answers_the_connection_times_out_the_batch(material: Material) -> None:
    """A peer that accepts TCP and says nothing (a hung worker, a black hole behind a proxy):
    the batch's timeout covers opening the stream too, so the operation falls back in time."""
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # holds the connection open, never speaks HTTP/2
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    metrics = EngineMetrics()
    engine = RemoteEngine([f"127.0.0.1:{port}"], plaintext=True, timeout_s=0.5, metrics=metrics)
    try:
        start = time.monotonic()
        signature = await asyncio.wait_for(engine.sign(material.sig_key, MSG), 10)
        assert time.monotonic() - start < 3
        ibc.verify(material.params, material.sig, MSG, signature)  # done in-process, correctly
    finally:
        await engine.close()
        server.close()
    assert _calls(metrics, "sign", "deadline_exceeded") == 1
    assert metrics.registry.get_sample_value("sipsec_engine_fallbacks_total", {"op": "sign", "reason": "failed"}) == 1


async def test_a_client_that_does_not_read_its_answers_is_not_read_without_bound() -> None:
    """Batches read and not yet answered on the wire are bounded per stream: past the window
    the worker stops reading the stream (gRPC's flow control then holds the client back)
    instead of buffering answers without end; every batch read is answered, in the end all."""
    from sipsec_worker.metrics import WorkerMetrics
    from sipsec_worker.pool import CryptoPool

    servicer = CryptoWorkerServicer(CryptoPool(1, 3), WorkerMetrics())  # no process: refusals only
    pulled = 0

    async def requests() -> AsyncIterator[pb.StreamRequest]:
        nonlocal pulled
        for i in range(200):
            pulled += 1
            yield pb.StreamRequest(id=i)  # no batch: answered INVALID_ARGUMENT at once

    answers = servicer.Stream(requests(), None)  # type: ignore[arg-type]
    first = await answers.__anext__()
    await asyncio.sleep(0.2)  # time enough to read all 200, were reading not held back
    assert servicer.stream_window == 8
    assert pulled <= servicer.stream_window + 2, pulled
    ids = [first.id] + [a.id async for a in answers]
    assert sorted(ids) == list(range(200))
    assert pulled == 200


async def test_with_local_sign_signatures_are_made_here_and_the_rest_goes_to_the_worker(
    start_worker: StartWorker, material: Material
) -> None:
    """``local_sign``: no signature reaches the worker (nor its signing key), each is valid and
    counted as a local operation; verifications and the KEM still go to the worker."""
    m = material
    w = await start_worker()
    metrics = EngineMetrics()
    engine = RemoteEngine([w.target], plaintext=True, allow_fallback=False, metrics=metrics, local_sign=True)
    try:
        await _sign_and_verify(engine, m, 12)
        key, ciphertext = await engine.encapsulate(m.params, m.enc)
        assert await engine.decapsulate(m.enc_key, ciphertext) == key
    finally:
        await engine.close()
    local = metrics.registry.get_sample_value("sipsec_engine_local_ops_total", {"op": "sign"})
    assert local == 12
    assert _calls(metrics, "sign", "ok") == 0
    assert w.sample("sipsec_worker_operations_total", kind="sign", outcome="ok") in (None, 0)
    assert w.sample("sipsec_worker_operations_total", kind="verify", outcome="ok") == 12
    assert w.sample("sipsec_worker_operations_total", kind="decapsulate", outcome="ok") == 1
