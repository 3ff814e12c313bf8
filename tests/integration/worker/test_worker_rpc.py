"""Each CryptoWorkerService RPC and batch over a real gRPC server, checked against sipsec.ibc in-process."""

from __future__ import annotations

from collections.abc import Callable

import grpc
import httpx
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sipsec import ibc
from sipsec.engine.wire import identity_to_proto
from sipsec.rpc._gen.sipsec.crypto.v1 import crypto_pb2 as pb
from sipsec_worker.server import SERVICE_NAME as WORKER_SERVICE

from tests.integration.worker.conftest import Material, StartWorker

MSG = b"INVITE sip:bob@biloxi.com SIP/2.0\r\nCSeq: 1 INVITE\r\n\r\n"


def _flip(data: bytes) -> bytes:
    return data[:-1] + bytes([data[-1] ^ 1])


def _details(err: grpc.aio.AioRpcError) -> dict[str, str]:
    return {k: v for k, v in (err.trailing_metadata() or ()) if k.startswith("sipsec-")}


async def _rejected(call: object, what: object = None) -> grpc.aio.AioRpcError:
    try:
        await call  # type: ignore[misc]
    except grpc.aio.AioRpcError as err:
        return err
    raise AssertionError(f"{what} was not rejected")


def _enc(m: Material, **kw: object) -> pb.EncapsulateRequest:
    fields = {"domain_params": m.params.to_bytes(), "identity": identity_to_proto(m.enc)}
    fields.update(kw)
    return pb.EncapsulateRequest(**fields)  # type: ignore[arg-type]


def _dec(m: Material, ciphertext: bytes, **kw: object) -> pb.DecapsulateRequest:
    fields = {"identity": identity_to_proto(m.enc), "private_key": m.enc_key.to_bytes(), "ciphertext": ciphertext}
    fields.update(kw)
    return pb.DecapsulateRequest(**fields)  # type: ignore[arg-type]


def _sign(m: Material, message: bytes = MSG, **kw: object) -> pb.SignRequest:
    fields = {"identity": identity_to_proto(m.sig), "private_key": m.sig_key.to_bytes(), "message": message}
    fields.update(kw)
    return pb.SignRequest(**fields)  # type: ignore[arg-type]


def _verify(m: Material, signature: bytes, message: bytes = MSG, **kw: object) -> pb.VerifyRequest:
    fields = {"domain_params": m.params.to_bytes(), "identity": identity_to_proto(m.sig),
              "message": message, "signature": signature}
    fields.update(kw)
    return pb.VerifyRequest(**fields)  # type: ignore[arg-type]


async def test_single_rpcs_agree_with_in_process(start_worker: StartWorker, material: Material) -> None:
    m = material
    w = await start_worker(metrics_port=0)

    enc = await w.stub.Encapsulate(_enc(m))
    assert len(enc.key) == 32
    assert ibc.decapsulate(m.enc_key, enc.ciphertext) == enc.key  # the worker's ciphertext opens locally

    key, ciphertext = ibc.encapsulate(m.params, m.enc)
    assert (await w.stub.Decapsulate(_dec(m, ciphertext))).key == key

    signature = (await w.stub.Sign(_sign(m))).signature
    ibc.verify(m.params, m.sig, MSG, signature)  # the worker's signature verifies locally

    local_sig = ibc.sign(m.sig_key, MSG)
    assert (await w.stub.Verify(_verify(m, local_sig))).valid is True

    # identity period length may be left to the parameters where the request has them
    bare = pb.Identity(aor=m.sig.aor, purpose=pb.PURPOSE_SIG, period=m.sig.period)
    assert (await w.stub.Verify(_verify(m, local_sig, identity=bare))).valid is True

    assert w.sample("sipsec_worker_operations_total", kind="encapsulate", outcome="ok") == 1
    assert w.sample("sipsec_worker_operations_total", kind="verify", outcome="ok") == 2
    assert w.sample("sipsec_rpc_server_handled_total", service=WORKER_SERVICE, method="Sign", code="OK") == 1
    assert w.sample("sipsec_rpc_server_handling_seconds_count", service=WORKER_SERVICE, method="Decapsulate") == 1

    # the metrics endpoint serves the same registry over HTTP
    async with httpx.AsyncClient() as http:
        text = (await http.get(f"http://127.0.0.1:{w.server.metrics_port}/metrics")).text
    assert 'sipsec_worker_operations_total{kind="sign",outcome="ok"} 1.0' in text
    assert "sipsec_worker_queue_depth 0.0" in text

    health = health_pb2_grpc.HealthStub(w.channel)
    answer = await health.Check(health_pb2.HealthCheckRequest(service="sipsec.crypto.v1.CryptoWorkerService"))
    assert answer.status == health_pb2.HealthCheckResponse.SERVING


async def test_tampering_is_invalid_argument_with_reason(start_worker: StartWorker, material: Material) -> None:
    m = material
    w = await start_worker()
    _, ciphertext = ibc.encapsulate(m.params, m.enc)
    signature = ibc.sign(m.sig_key, MSG)

    err = await _rejected(w.stub.Decapsulate(_dec(m, _flip(ciphertext))))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert _details(err) == {"sipsec-reason": "invalid-ciphertext", "sipsec-field": "ciphertext"}

    err = await _rejected(w.stub.Decapsulate(_dec(m, ciphertext[:20])))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert _details(err)["sipsec-reason"] == "malformed-ciphertext"

    err = await _rejected(w.stub.Verify(_verify(m, signature, message=MSG + b"x")))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert _details(err) == {"sipsec-reason": "invalid-signature", "sipsec-field": "signature"}

    err = await _rejected(w.stub.Verify(_verify(m, _flip(signature))))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert _details(err)["sipsec-reason"] in ("invalid-signature", "malformed-signature")

    assert w.sample("sipsec_worker_operations_total", kind="decapsulate", outcome="invalid_ciphertext") == 2
    assert w.sample("sipsec_worker_operations_total", kind="verify", outcome="invalid_signature") == 2
    assert await w.settled("sipsec_rpc_server_handled_total", 2, service=WORKER_SERVICE, method="Verify", code="INVALID_ARGUMENT") == 2


async def test_malformed_requests_name_reason_and_field(start_worker: StartWorker, material: Material) -> None:
    m = material
    w = await start_worker()
    _, ciphertext = ibc.encapsulate(m.params, m.enc)
    signature = ibc.sign(m.sig_key, MSG)
    key_bytes = m.enc_key.to_bytes()
    cases: list[tuple[Callable[[], object], str, str]] = [  # one at a time: queue of 8
        (lambda: w.stub.Encapsulate(_enc(m, domain_params=b"garbage")), "invalid-encoding", "domain_params"),
        (lambda: w.stub.Encapsulate(_enc(m, domain_params=b"")), "invalid-encoding", "domain_params"),
        (lambda: w.stub.Verify(_verify(m, signature, domain_params=m.params.to_bytes()[:-3])), "invalid-encoding", "domain_params"),
        (lambda: w.stub.Decapsulate(_dec(m, ciphertext, private_key=key_bytes[:-1])), "invalid-encoding", "private_key"),
        (lambda: w.stub.Decapsulate(_dec(m, ciphertext, private_key=b"\xff" * 48)), "invalid-encoding", "private_key"),
        (lambda: w.stub.Sign(_sign(m, private_key=b"")), "invalid-encoding", "private_key"),
        (lambda: w.stub.Encapsulate(_enc(m, identity=pb.Identity(aor="sip:alice@ATLANTA.com", purpose=pb.PURPOSE_ENC, period=1))),
         "invalid-identity", "identity"),
        (lambda: w.stub.Encapsulate(_enc(m, identity=pb.Identity(aor="sip:alice@atlanta.com", period=1))),
         "invalid-identity", "identity"),
        # a SIG identity cannot be encrypted to; an identity of another domain does not fit the params
        (lambda: w.stub.Encapsulate(_enc(m, identity=identity_to_proto(m.sig))), "invalid-identity", "identity"),
        (lambda: w.stub.Encapsulate(_enc(m, domain_params=m.other.to_bytes())), "invalid-identity", "identity"),
        (lambda: w.stub.Sign(_sign(m, identity=pb.Identity(aor=m.sig.aor, purpose=pb.PURPOSE_SIG, period=1))),
         "invalid-identity", "identity"),  # no period length and no params to take it from
    ]
    for call, reason, field in cases:
        err = await _rejected(call(), (reason, field))
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, (reason, field)
        assert _details(err) == {"sipsec-reason": reason, "sipsec-field": field}
        assert "\\x" not in (err.details() or "")  # no bytes echoed back
    assert w.sample("sipsec_worker_operations_total", kind="encapsulate", outcome="invalid_argument") == 6
    # the worker is still healthy after all that
    assert (await w.stub.Sign(_sign(m))).signature


async def test_batches_answer_each_item_in_order(start_worker: StartWorker, material: Material) -> None:
    m = material
    w = await start_worker()

    enc = await w.stub.BatchEncapsulate(pb.BatchEncapsulateRequest(
        items=[_enc(m), _enc(m), _enc(m, domain_params=b"bad"), _enc(m), _enc(m)]))
    statuses = [r.status for r in enc.results]
    assert statuses == [pb.ITEM_STATUS_OK] * 2 + [pb.ITEM_STATUS_INVALID_ARGUMENT] + [pb.ITEM_STATUS_OK] * 2
    assert enc.results[2].reason == "invalid-encoding" and enc.results[2].error
    assert not enc.results[2].HasField("result")
    ok = [r.result for r in enc.results if r.status == pb.ITEM_STATUS_OK]
    for r in ok:
        assert ibc.decapsulate(m.enc_key, r.ciphertext) == r.key
    assert len({r.key for r in ok}) == 4  # fresh keys

    cts = [r.ciphertext for r in ok]
    dec = await w.stub.BatchDecapsulate(pb.BatchDecapsulateRequest(
        items=[_dec(m, cts[0]), _dec(m, _flip(cts[1])), _dec(m, cts[2]), _dec(m, cts[3][:30])]))
    assert [r.status for r in dec.results] == [
        pb.ITEM_STATUS_OK, pb.ITEM_STATUS_INVALID_CIPHERTEXT, pb.ITEM_STATUS_OK, pb.ITEM_STATUS_INVALID_CIPHERTEXT]
    assert dec.results[0].result.key == ok[0].key and dec.results[2].result.key == ok[2].key
    assert dec.results[1].reason == "invalid-ciphertext" and dec.results[3].reason == "malformed-ciphertext"

    messages = [b"m%d" % i for i in range(7)]
    signed = await w.stub.BatchSign(pb.BatchSignRequest(items=[_sign(m, msg) for msg in messages]))
    assert all(r.status == pb.ITEM_STATUS_OK for r in signed.results)
    sigs = [r.result.signature for r in signed.results]
    for msg, sig in zip(messages, sigs, strict=True):
        ibc.verify(m.params, m.sig, msg, sig)

    checks = [_verify(m, sig, msg) for msg, sig in zip(messages, sigs, strict=True)]
    checks[3] = _verify(m, sigs[3], b"other message")
    checks.append(_verify(m, sigs[0], messages[0], identity=identity_to_proto(m.enc)))
    ver = await w.stub.BatchVerify(pb.BatchVerifyRequest(items=checks))
    assert [r.status for r in ver.results] == (
        [pb.ITEM_STATUS_OK] * 3 + [pb.ITEM_STATUS_INVALID_SIGNATURE] + [pb.ITEM_STATUS_OK] * 3
        + [pb.ITEM_STATUS_INVALID_ARGUMENT])
    assert ver.results[3].reason == "invalid-signature"
    assert ver.results[7].reason == "invalid-identity"

    empty = await w.stub.BatchVerify(pb.BatchVerifyRequest())
    assert list(empty.results) == []

    assert w.sample("sipsec_worker_operations_total", kind="sign", outcome="ok") == 7
    assert w.sample("sipsec_worker_operations_total", kind="verify", outcome="ok") == 6
    assert w.sample("sipsec_worker_operations_total", kind="verify", outcome="invalid_signature") == 1


async def test_batch_over_the_limit_is_refused(start_worker: StartWorker, material: Material) -> None:
    w = await start_worker(max_batch=3)
    err = await _rejected(w.stub.BatchSign(pb.BatchSignRequest(items=[_sign(material)] * 4)))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert _details(err) == {"sipsec-reason": "batch-too-large"}
    assert w.sample("sipsec_worker_rejections_total", reason="batch_too_large") == 1
    assert len((await w.stub.BatchSign(pb.BatchSignRequest(items=[_sign(material)] * 3))).results) == 3
