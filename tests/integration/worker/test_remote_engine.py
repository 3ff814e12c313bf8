"""The remote engine against real workers: balancing, same errors, overload retry, fallback, deadlines."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import grpc
import pytest
from sipsec import ibc
from sipsec.engine import EngineMetrics, EngineUnavailable, InProcessEngine, RemoteEngine
from sipsec.engine.wire import identity_to_proto
from sipsec.rpc._gen.sipsec.crypto.v1 import crypto_pb2 as pb
from sipsec_worker.server import SERVICE_NAME as WORKER_SERVICE

from tests.conftest import free_port
from tests.integration.worker._certs import self_signed
from tests.integration.worker.conftest import Material, StartWorker, Worker

MSG = b"REGISTER sip:atlanta.com SIP/2.0"


def _flip(data: bytes) -> bytes:
    return data[:-1] + bytes([data[-1] ^ 1])


def _fallbacks(metrics: EngineMetrics, op: str, reason: str) -> float:
    return metrics.registry.get_sample_value("sipsec_engine_fallbacks_total", {"op": op, "reason": reason}) or 0.0


def _calls(metrics: EngineMetrics, op: str, outcome: str) -> float:
    return metrics.registry.get_sample_value("sipsec_engine_remote_calls_total", {"op": op, "outcome": outcome}) or 0.0


def _retries(metrics: EngineMetrics, op: str) -> float:
    return metrics.registry.get_sample_value("sipsec_engine_retries_total", {"op": op}) or 0.0


def _forged(m: Material) -> pb.VerifyRequest:
    """A well-formed signature on another message: the slowest verify (a worker batch that
    holds it fails, then checks each of its items alone), about 2 ms of pool time."""
    return pb.VerifyRequest(domain_params=m.params.to_bytes(), identity=identity_to_proto(m.sig),
                            message=MSG, signature=ibc.sign(m.sig_key, MSG + b" (other)"))


async def _saturate(worker: Worker, m: Material, items: int = 800) -> asyncio.Task[pb.BatchVerifyResponse]:
    """Keeps both pool processes busy for a while with one big batch; returns once it runs.

    Its items are forged (ITEM_STATUS_INVALID_SIGNATURE): valid ones are verified in
    batches, too fast to keep the pool busy."""
    request = pb.BatchVerifyRequest(items=[_forged(m)] * items)
    task = asyncio.ensure_future(worker.stub.BatchVerify(request, timeout=60))
    deadline = time.monotonic() + 10
    while worker.server.pool.in_flight < worker.server.pool.processes:
        assert time.monotonic() < deadline, "the batch never reached the pool"
        await asyncio.sleep(0.005)
    return task


async def _same_errors(engine: RemoteEngine | InProcessEngine, m: Material) -> list[type[BaseException]]:
    """The exception classes an engine raises for a fixed set of bad inputs."""
    _, ciphertext = ibc.encapsulate(m.params, m.enc)
    signature = ibc.sign(m.sig_key, MSG)
    raised: list[type[BaseException]] = []
    attempts = [
        engine.decapsulate(m.enc_key, _flip(ciphertext)),
        engine.decapsulate(m.enc_key, ciphertext[:40]),
        engine.verify(m.params, m.sig, MSG + b"!", signature),
        engine.verify(m.other, m.sig, MSG, signature),
        engine.encapsulate(m.params, m.sig),
        engine.sign(m.enc_key, MSG),
    ]
    for attempt in attempts:
        try:
            await attempt
        except ibc.IbcError as exc:
            raised.append(type(exc))
        else:
            raised.append(type(None))
    return raised


async def test_remote_engine_agrees_with_in_process_and_balances(start_worker: StartWorker, material: Material) -> None:
    m = material
    a, b = await start_worker(), await start_worker()
    metrics = EngineMetrics()
    engine = RemoteEngine([a.target, b.target], plaintext=True, balance="round_robin", metrics=metrics)
    try:
        key, ciphertext = await engine.encapsulate(m.params, m.enc)
        assert ibc.decapsulate(m.enc_key, ciphertext) == key
        local_key, local_ct = ibc.encapsulate(m.params, m.enc)
        assert await engine.decapsulate(m.enc_key, local_ct) == local_key
        signature = await engine.sign(m.sig_key, MSG)
        ibc.verify(m.params, m.sig, MSG, signature)
        await engine.verify(m.params, m.sig, MSG, ibc.sign(m.sig_key, MSG))

        # exactly the errors the in-process engine raises, class for class
        remote_errors = await _same_errors(engine, m)
        local_errors = await _same_errors(InProcessEngine(), m)
        assert remote_errors == local_errors
        assert remote_errors == [ibc.InvalidCiphertext, ibc.MalformedCiphertext, ibc.InvalidSignature,
                                 ibc.InvalidIdentity, ibc.InvalidIdentity, ibc.InvalidIdentity]
    finally:
        await engine.close()
    # round-robin: ten calls, five on each worker
    per_worker = [sum(w.sample("sipsec_worker_operations_total", kind=kind, outcome=outcome)
                      for kind in ("encapsulate", "decapsulate", "sign", "verify")
                      for outcome in ("ok", "invalid_ciphertext", "invalid_signature", "invalid_argument"))
                  for w in (a, b)]
    assert per_worker == [5, 5]
    assert _calls(metrics, "decapsulate", "ok") == 1 and _calls(metrics, "decapsulate", "rejected") == 2
    assert metrics.registry.get_sample_value("sipsec_engine_fallbacks_total", {"op": "verify", "reason": "failed"}) is None


async def test_least_outstanding_spreads_concurrent_calls(start_worker: StartWorker, material: Material) -> None:
    m = material
    a, b = await start_worker(), await start_worker()
    engine = RemoteEngine([a.target, b.target], plaintext=True, balance="least_outstanding")
    try:
        signatures = await asyncio.gather(*(engine.sign(m.sig_key, b"msg %d" % i) for i in range(12)))
    finally:
        await engine.close()
    for i, sig in enumerate(signatures):
        ibc.verify(m.params, m.sig, b"msg %d" % i, sig)
    counts = [w.sample("sipsec_worker_operations_total", kind="sign", outcome="ok") for w in (a, b)]
    assert sum(counts) == 12 and min(counts) >= 4  # all 12 start at once: they alternate


async def test_overloaded_worker_rejects_at_once_and_engine_retries_elsewhere(
    start_worker: StartWorker, material: Material
) -> None:
    m = material
    busy = await start_worker(queue=0, max_batch=2000)
    spare = await start_worker()
    batch = await _saturate(busy, m)  # 2 tasks in flight fill a capacity of 2 processes + 0 queue

    signature = ibc.sign(m.sig_key, MSG)
    flood_request = pb.VerifyRequest(domain_params=m.params.to_bytes(), identity=identity_to_proto(m.sig),
                                     message=MSG, signature=signature)
    flood = await asyncio.gather(*(busy.stub.Verify(flood_request, timeout=30) for _ in range(12)),
                                 return_exceptions=True)
    for err in flood:
        assert isinstance(err, grpc.aio.AioRpcError)
        assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert ("sipsec-reason", "queue-full") in tuple(err.trailing_metadata() or ())
    assert busy.sample("sipsec_worker_rejections_total", reason="queue_full") == 12
    assert await busy.settled("sipsec_rpc_server_handled_total", 12, service=WORKER_SERVICE, method="Verify",
                              code="RESOURCE_EXHAUSTED") == 12

    # the engine, busy worker first in its round-robin: rejected there, retried on the spare
    metrics = EngineMetrics()
    engine = RemoteEngine([busy.target, spare.target], plaintext=True, balance="round_robin", metrics=metrics)
    try:
        assert not batch.done(), "the saturating batch finished too early"
        await engine.verify(m.params, m.sig, MSG, signature)
        sig = await engine.sign(m.sig_key, MSG)  # next one round-robins to the spare directly
    finally:
        await engine.close()
    ibc.verify(m.params, m.sig, MSG, sig)
    assert _calls(metrics, "verify", "resource_exhausted") == 1
    assert _retries(metrics, "verify") == 1
    assert _calls(metrics, "verify", "ok") == 1
    assert _fallbacks(metrics, "verify", "failed") == 0
    assert spare.sample("sipsec_worker_operations_total", kind="verify", outcome="ok") == 1

    result = await batch  # the saturating batch was not disturbed
    assert len(result.results) == 800
    assert all(r.status == pb.ITEM_STATUS_INVALID_SIGNATURE for r in result.results)


async def test_all_workers_down_fall_back_in_process_and_count_it(start_worker: StartWorker, material: Material) -> None:
    m = material
    metrics = EngineMetrics()
    engine = RemoteEngine([f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"], plaintext=True,
                          metrics=metrics, timeout_s=2.0)
    try:
        key, ciphertext = await engine.encapsulate(m.params, m.enc)  # both tried, both refused
        assert ibc.decapsulate(m.enc_key, ciphertext) == key
        assert await engine.decapsulate(m.enc_key, ciphertext) == key  # both ejected now
        signature = await engine.sign(m.sig_key, MSG)
        await engine.verify(m.params, m.sig, MSG, signature)
        with pytest.raises(ibc.InvalidCiphertext):  # the fallback raises the same errors
            await engine.decapsulate(m.enc_key, _flip(ciphertext))
    finally:
        await engine.close()
    assert _calls(metrics, "encapsulate", "unavailable") == 2
    assert _retries(metrics, "encapsulate") == 1
    assert _fallbacks(metrics, "encapsulate", "failed") == 1
    assert _fallbacks(metrics, "decapsulate", "no_worker") == 2
    assert _fallbacks(metrics, "sign", "no_worker") == 1
    assert _fallbacks(metrics, "verify", "no_worker") == 1

    # a worker that goes away mid-life: the next call falls back, and without fallback it raises
    w = await start_worker()
    metrics = EngineMetrics()
    engine = RemoteEngine([w.target], plaintext=True, metrics=metrics)
    strict = RemoteEngine([w.target], plaintext=True, allow_fallback=False, eject_s=0.01)
    try:
        await engine.sign(m.sig_key, MSG)
        await strict.sign(m.sig_key, MSG)
        await w.server.stop(0)
        ibc.verify(m.params, m.sig, MSG, await engine.sign(m.sig_key, MSG))
        with pytest.raises(EngineUnavailable):
            await strict.sign(m.sig_key, MSG)
    finally:
        await engine.close()
        await strict.close()
    assert _calls(metrics, "sign", "ok") == 1
    assert _calls(metrics, "sign", "unavailable") == 1
    assert _fallbacks(metrics, "sign", "failed") == 1


async def test_deadline_is_honoured(start_worker: StartWorker, material: Material) -> None:
    m = material
    w = await start_worker(queue=8, max_batch=2000)
    batch = await _saturate(w, m)
    signature = ibc.sign(m.sig_key, MSG)
    late = pb.VerifyRequest(domain_params=m.params.to_bytes(), identity=identity_to_proto(m.sig),
                            message=MSG, signature=signature)
    start = time.monotonic()
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await w.stub.Verify(late, timeout=0.2)
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert time.monotonic() - start < 2.0

    # the engine: the only worker times out, so the call runs in-process, counted
    metrics = EngineMetrics()
    engine = RemoteEngine([w.target], plaintext=True, timeout_s=0.2, metrics=metrics)
    try:
        await engine.verify(m.params, m.sig, MSG, signature)
    finally:
        await engine.close()
    assert _calls(metrics, "verify", "deadline_exceeded") == 1
    assert _fallbacks(metrics, "verify", "failed") == 1

    assert len((await batch).results) == 800
    # the late requests never ran: only the batch's (forged) verifies ran on the worker
    for _ in range(200):
        if w.server.pool.in_flight == 0:
            break
        await asyncio.sleep(0.01)
    assert w.sample("sipsec_worker_operations_total", kind="verify", outcome="invalid_signature") == 800
    assert w.sample("sipsec_worker_operations_total", kind="verify", outcome="ok") == 0
    assert w.sample("sipsec_worker_rejections_total", reason="deadline_exceeded") == 2

    # a batch whose deadline passes part-way stops starting items and answers DEADLINE_EXCEEDED
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await w.stub.BatchVerify(pb.BatchVerifyRequest(items=[_forged(m)] * 1500), timeout=0.3)
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    for _ in range(300):
        if w.server.pool.in_flight == 0:
            break
        await asyncio.sleep(0.01)
    assert w.server.pool.in_flight == 0  # the pool stopped working on it well before 1500 verifies
    assert w.sample("sipsec_worker_operations_total", kind="verify", outcome="invalid_signature") < 800 + 1500


async def test_tls_worker_and_engine(start_worker: StartWorker, material: Material, tmp_path: Path) -> None:
    m = material
    cert, key = self_signed(tmp_path)
    w = await start_worker(plaintext=False, tls_cert=str(cert), tls_key=str(key))
    metrics = EngineMetrics()
    engine = RemoteEngine([f"localhost:{w.port}"], root_certificates=cert.read_bytes(), metrics=metrics)
    plain = RemoteEngine([f"127.0.0.1:{w.port}"], plaintext=True, allow_fallback=False)
    try:
        signature = await engine.sign(m.sig_key, MSG)
        ibc.verify(m.params, m.sig, MSG, signature)
        await engine.verify(m.params, m.sig, MSG, signature)
        with pytest.raises(EngineUnavailable):  # a plaintext client gets nothing from a TLS worker
            await plain.sign(m.sig_key, MSG)
    finally:
        await engine.close()
        await plain.close()
    assert _calls(metrics, "sign", "ok") == 1 and _calls(metrics, "verify", "ok") == 1
    assert w.sample("sipsec_worker_operations_total", kind="sign", outcome="ok") == 1


class _GatedEngine(InProcessEngine):
    """The in-process engine, each signature held until ``gate`` opens (to fill the fallback)."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.started = 0

    async def sign(self, key: ibc.PrivateKey, message: bytes) -> bytes:
        self.started += 1
        await self.gate.wait()
        return await super().sign(key, message)


async def test_in_process_fallback_is_bounded(material: Material) -> None:
    m = material
    metrics = EngineMetrics()
    fallback = _GatedEngine()
    engine = RemoteEngine([f"127.0.0.1:{free_port()}"], plaintext=True, metrics=metrics,
                          fallback=fallback, max_fallback=2, eject_s=30.0)
    try:
        held = [asyncio.ensure_future(engine.sign(m.sig_key, MSG)) for _ in range(2)]
        for _ in range(200):  # both reach the fallback (the worker refuses the connection)
            if fallback.started == 2:
                break
            await asyncio.sleep(0.01)
        assert fallback.started == 2 and engine.fallback_in_flight == 2
        with pytest.raises(EngineUnavailable, match="fallback is full"):
            await engine.sign(m.sig_key, MSG)
        assert fallback.started == 2  # the refused one never ran
        fallback.gate.set()
        for signature in await asyncio.gather(*held):
            ibc.verify(m.params, m.sig, MSG, signature)
        assert engine.fallback_in_flight == 0
        ibc.verify(m.params, m.sig, MSG, await engine.sign(m.sig_key, MSG))  # room again
    finally:
        await engine.close()
        await fallback.close()
    assert _fallbacks(metrics, "sign", "fallback_full") == 1
    assert _fallbacks(metrics, "sign", "failed") + _fallbacks(metrics, "sign", "no_worker") == 3
    with pytest.raises(ValueError):
        RemoteEngine(["127.0.0.1:1"], max_fallback=-1)


async def test_concurrent_operations_travel_as_one_batch_and_each_caller_gets_its_own_answer(
    start_worker: StartWorker, material: Material,
) -> None:
    m = material
    w = await start_worker()
    metrics = EngineMetrics()
    engine = RemoteEngine([w.target], plaintext=True, metrics=metrics, allow_fallback=False)
    messages = [b"msg %d" % i for i in range(10)]
    signatures = [ibc.sign(m.sig_key, msg) for msg in messages]
    signatures[3] = ibc.sign(m.sig_key, b"another message")  # a forgery among them
    try:
        results = await asyncio.gather(
            *(engine.verify(m.params, m.sig, msg, sig) for msg, sig in zip(messages, signatures, strict=True)),
            return_exceptions=True)
        assert engine.batch_sizes.count == 1 and engine.batch_sizes.items == 10
        assert isinstance(results[3], ibc.InvalidSignature)
        assert [r for i, r in enumerate(results) if i != 3] == [None] * 9
        made = await asyncio.gather(*(engine.sign(m.sig_key, msg) for msg in messages))
        assert engine.batch_sizes.count == 2 and engine.batch_sizes.largest == 10
        for msg, sig in zip(messages, made, strict=True):
            ibc.verify(m.params, m.sig, msg, sig)
        # a lone operation is sent at once, as a batch of one
        ibc.verify(m.params, m.sig, b"alone", await engine.sign(m.sig_key, b"alone"))
        assert engine.batch_sizes.count == 3
    finally:
        await engine.close()
    assert w.sample("sipsec_worker_operations_total", kind="verify", outcome="ok") == 9
    assert w.sample("sipsec_worker_operations_total", kind="verify", outcome="invalid_signature") == 1
    assert _calls(metrics, "verify", "ok") == 9 and _calls(metrics, "verify", "rejected") == 1
    assert _calls(metrics, "sign", "ok") == 11

    plain = RemoteEngine([w.target], plaintext=True, coalesce=False, allow_fallback=False)
    try:  # unary RPCs, one per operation, the same answers
        ibc.verify(m.params, m.sig, b"x", await plain.sign(m.sig_key, b"x"))
        with pytest.raises(ibc.InvalidSignature):
            await plain.verify(m.params, m.sig, b"x", signatures[3])
        assert plain.batch_sizes.count == 0
    finally:
        await plain.close()


async def test_answers_carry_the_workers_queue_depth(start_worker: StartWorker, material: Material) -> None:
    m = material
    w = await start_worker(max_batch=1000)
    metrics = EngineMetrics()
    engine = RemoteEngine([w.target], plaintext=True, metrics=metrics, allow_fallback=False, timeout_s=60)
    try:
        await w.server.pool.warm_up()
        await engine.sign(m.sig_key, MSG)
        assert engine.queue_depth == 0  # an idle worker
        busy = await _saturate(w, m)  # both pool processes busy
        signing = asyncio.ensure_future(engine.sign(m.sig_key, MSG))  # waits behind them
        while w.server.pool.in_flight < 3:
            await asyncio.sleep(0.005)
        behind = [asyncio.ensure_future(w.stub.BatchVerify(pb.BatchVerifyRequest(items=[_forged(m)] * 16), timeout=60))
                  for _ in range(2)]  # queued after the signature
        ibc.verify(m.params, m.sig, MSG, await signing)
        assert engine.queue_depth >= 1  # the answer said others wait there
        assert metrics.registry.get_sample_value("sipsec_engine_worker_queue_depth") == engine.queue_depth
        await asyncio.gather(busy, *behind)
        await engine.sign(m.sig_key, MSG)
        assert engine.queue_depth == 0
    finally:
        await engine.close()
