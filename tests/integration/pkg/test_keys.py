"""GetPrivateKey: own AOR only, periods, the keys really work, every extraction audited."""

from __future__ import annotations

import base64
import json

import grpc
import pytest
from sipsec.ibc import Purpose, decapsulate, encapsulate, sign, verify
from sipsec.pkgclient import PkgRpcError
from sipsec.rpc._gen.sipsec.pkg.v1 import pkg_pb2, pkg_pb2_grpc
from sipsec_pkg.grpc_api import SERVICE_NAME

from tests.integration.pkg.conftest import PASSWORD


async def _logged_in(make_node, connect, material, **kw):
    node = await make_node(material, **kw)
    await node.add_user("sip:alice@atlanta.com", PASSWORD)
    await node.add_user("sip:bob@atlanta.com", PASSWORD)
    client = connect(node)
    await client.login("sip:alice@atlanta.com", PASSWORD)
    return node, client


async def test_extracted_keys_open_and_sign_for_that_identity(atlanta, make_node, connect, clock, store_kind):
    node, client = await _logged_in(make_node, connect, atlanta.material(), store=store_kind)
    params = (await client.get_system_params()).params
    assert params.to_bytes() == atlanta.params.to_bytes()
    enc = await client.get_private_key(params, Purpose.ENC)
    period = params.policy.current(clock())
    assert enc.identity == params.identity("sip:alice@atlanta.com", Purpose.ENC, period)
    cek, ct = encapsulate(params, params.identity("sip:alice@atlanta.com", Purpose.ENC, period))
    assert decapsulate(enc, ct) == cek
    # bob's ciphertext does not open with alice's key
    _, bob_ct = encapsulate(params, params.identity("sip:bob@atlanta.com", Purpose.ENC, period))
    with pytest.raises(Exception):  # noqa: B017 - InvalidCiphertext
        decapsulate(enc, bob_ct)
    sig = await client.get_private_key(params, Purpose.SIG)
    verify(params, sig.identity, b"INVITE", sign(sig, b"INVITE"))
    assert node.metrics.extractions.labels("enc", "full", "current")._value.get() == 1
    assert node.metrics.extractions.labels("sig", "full", "current")._value.get() == 1


async def test_periods_current_next_explicit_and_far_future(atlanta, make_node, connect, clock):
    _, client = await _logged_in(make_node, connect, atlanta.material())
    policy = atlanta.params.policy
    current = policy.current(clock())
    assert (await client.fetch_key(Purpose.ENC)).period == current
    nxt = await client.fetch_key(Purpose.ENC, next_period=True)
    assert nxt.period == current + 1
    assert (nxt.not_before, nxt.not_after) == policy.bounds(current + 1)
    assert (await client.fetch_key(Purpose.ENC, period=current + 1)).period == current + 1
    for bad in (current + 2, current + 1000, current - 1, 2**63):
        with pytest.raises(PkgRpcError) as err:
            await client.fetch_key(Purpose.ENC, period=bad)
        assert err.value.code is grpc.StatusCode.INVALID_ARGUMENT
        assert err.value.reason == "period_not_allowed"
        assert err.value.details["current_period"] == str(current)


async def test_keys_only_for_own_aor(atlanta, make_node, connect):
    node, client = await _logged_in(make_node, connect, atlanta.material())
    stub = pkg_pb2_grpc.KeyGeneratorServiceStub(client._channel)
    token = client.session.token
    for other in ("sip:bob@atlanta.com", "sip:alice@biloxi.com"):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.GetPrivateKey(pkg_pb2.GetPrivateKeyRequest(
                session_token=token, purpose=pkg_pb2.KEY_PURPOSE_ENC, aor=other))
        assert err.value.code() is grpc.StatusCode.PERMISSION_DENIED
    ok = await stub.GetPrivateKey(pkg_pb2.GetPrivateKeyRequest(
        session_token=token, purpose=pkg_pb2.KEY_PURPOSE_ENC, aor="sip:alice@ATLANTA.COM:5061;transport=tcp"))
    assert ok.aor == "sip:alice@atlanta.com" and len(ok.private_key) == 48
    for purpose in (pkg_pb2.KEY_PURPOSE_UNSPECIFIED, 7):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.GetPrivateKey(pkg_pb2.GetPrivateKeyRequest(session_token=token, purpose=purpose))
        assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.GetPrivateKey(pkg_pb2.GetPrivateKeyRequest(
            session_token=token, purpose=pkg_pb2.KEY_PURPOSE_ENC, period_selector=9))
    assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.aio.AioRpcError) as err:  # no token at all
        await stub.GetPrivateKey(pkg_pb2.GetPrivateKeyRequest(purpose=pkg_pb2.KEY_PURPOSE_ENC))
    assert err.value.code() is grpc.StatusCode.UNAUTHENTICATED
    assert node.metrics.rpc.handled.labels(SERVICE_NAME, "GetPrivateKey", "PERMISSION_DENIED")._value.get() == 2


async def test_every_extraction_is_audited_without_key_material(atlanta, make_node, connect, tmp_path, clock):
    path = tmp_path / "audit.jsonl"
    _, client = await _logged_in(make_node, connect, atlanta.material(), audit_path=str(path))
    a = await client.fetch_key(Purpose.ENC)
    b = await client.fetch_key(Purpose.SIG, next_period=True)
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    extracts = [line for line in lines if line["event"] == "extract"]
    assert [(e["aor"], e["purpose"], e["period"]) for e in extracts] == [
        ("sip:alice@atlanta.com", "enc", a.period), ("sip:alice@atlanta.com", "sig", b.period)]
    for e in extracts:
        assert e["peer"].startswith("ipv4:127.0.0.1:")
        assert abs(e["ts"] - clock()) < 1 and e["time"].endswith("+00:00")
    text = path.read_text()
    for key in (a.private_key, b.private_key):
        assert key.hex() not in text and base64.b64encode(key).decode() not in text
    assert PASSWORD not in text and client.session.token not in text
    assert any(line["event"] == "login" for line in lines)


async def test_malformed_request_bytes_are_invalid_argument(atlanta, make_node, connect):
    node = await make_node(atlanta.material())
    client = connect(node)
    raw = client._channel.unary_unary("/sipsec.pkg.v1.KeyGeneratorService/Login")
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await raw(b"\xff\xff\xff\xff")
    assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert dict(err.value.trailing_metadata())["sipsec-reason"] == "malformed_request"
    assert node.metrics.rpc.handled.labels(SERVICE_NAME, "Login", "INVALID_ARGUMENT")._value.get() == 1
    # the server is still fine
    assert (await client.get_system_params()).params.domain == "atlanta.com"


async def test_no_secret_in_logs(atlanta, make_node, connect, caplog):
    caplog.set_level("DEBUG")
    node, client = await _logged_in(make_node, connect, atlanta.material(), backoff_free_failures=0)
    key = await client.fetch_key(Purpose.SIG)
    with pytest.raises(PkgRpcError):
        await connect(node).login("sip:bob@atlanta.com", "wrong")  # triggers a back-off warning
    text = caplog.text + repr(node.material) + repr(node.service.material)
    master = atlanta.master.to_bytes()
    for secret in (master.hex(), base64.b64encode(master).decode(), key.private_key.hex(), PASSWORD,
                   client.session.token):
        assert secret not in text
    assert "back-off" in caplog.text
