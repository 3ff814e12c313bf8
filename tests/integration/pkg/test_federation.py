"""Federation: a peer's parameters fetched over gRPC, pinned, verified, cached (memory and Redis)."""

from __future__ import annotations

import dataclasses

import grpc
import pytest
from sipsec.pkgclient import PkgRpcError, fingerprint
from sipsec.rpc._gen.sipsec.pkg.v1 import pkg_pb2
from sipsec.stores.pkg import MemoryPkgStore, RedisPkgStore
from sipsec_pkg.config import Peer
from sipsec_pkg.material import DomainMaterial, init_domain

from tests.conftest import free_port


def _peers(domain, port, fp):
    return {domain: Peer(domain, f"127.0.0.1:{port}", fp)}


async def _atlanta(make_node, atlanta, peers, store_kind, **kw):
    return await make_node(atlanta.material(), store=store_kind, peers=peers, peer_plaintext=True,
                           fed_ttl_s=3600, fed_refresh_s=600, fed_timeout_s=1, **kw)


async def test_peer_params_fetched_verified_then_cached(atlanta, biloxi, make_node, connect, store_kind):
    bob_pkg = await make_node(biloxi.material())
    alice_pkg = await _atlanta(make_node, atlanta, _peers("biloxi.com", bob_pkg.port, biloxi.signed.fingerprint), store_kind)
    client = connect(alice_pkg)
    params = await client.get_domain_params("Biloxi.COM", pinned_fingerprint=biloxi.signed.fingerprint)
    assert params.to_bytes() == biloxi.params.to_bytes()
    again = await client._stub.GetDomainParams(pkg_pb2.GetDomainParamsRequest(domain="biloxi.com"))
    assert again.from_cache and again.params.params == biloxi.signed.params
    m = alice_pkg.metrics
    assert m.fed_misses._value.get() == 1 and m.fed_hits._value.get() == 1
    # own domain is answered without a peer
    assert (await client.get_domain_params("atlanta.com")).to_bytes() == atlanta.params.to_bytes()


async def test_unknown_domain_is_not_found(atlanta, make_node, connect):
    node = await _atlanta(make_node, atlanta, {}, "memory")
    client = connect(node)
    with pytest.raises(PkgRpcError) as err:
        await client.get_domain_params("chicago.com")
    assert err.value.code is grpc.StatusCode.NOT_FOUND
    assert err.value.reason == "unknown_domain"
    with pytest.raises(PkgRpcError) as err:
        await client.get_domain_params("bad domain!")
    assert err.value.code is grpc.StatusCode.INVALID_ARGUMENT
    assert node.metrics.fed_errors.labels("unknown_domain")._value.get() == 1


async def _cached(node, domain):
    return await node.store.get_peer_params(domain)


async def test_bad_signature_refused_and_not_cached(atlanta, biloxi, make_node, connect, store_kind):
    good = biloxi.signed
    forged = dataclasses.replace(good, signature=bytes([good.signature[0] ^ 1]) + good.signature[1:])
    liar = await make_node(DomainMaterial(biloxi.params, forged, master=biloxi.master))
    node = await _atlanta(make_node, atlanta, _peers("biloxi.com", liar.port, good.fingerprint), store_kind)
    client = connect(node)
    with pytest.raises(PkgRpcError) as err:
        await client.get_domain_params("biloxi.com")
    assert err.value.code is grpc.StatusCode.UNAVAILABLE
    assert err.value.reason == "bad_signature"
    assert await _cached(node, "biloxi.com") is None
    assert node.metrics.fed_errors.labels("bad_signature")._value.get() == 1


async def test_pin_mismatch_refused_and_not_cached(atlanta, biloxi, make_node, connect, store_kind):
    impostor = init_domain("biloxi.com")  # valid, self-consistent, but not the pinned key
    fake = await make_node(impostor.material())
    node = await _atlanta(make_node, atlanta, _peers("biloxi.com", fake.port, biloxi.signed.fingerprint), store_kind)
    client = connect(node)
    with pytest.raises(PkgRpcError) as err:
        await client.get_domain_params("biloxi.com")
    assert err.value.code is grpc.StatusCode.UNAVAILABLE
    assert err.value.reason == "pin_mismatch"
    assert await _cached(node, "biloxi.com") is None
    assert impostor.signed.fingerprint != biloxi.signed.fingerprint == fingerprint(biloxi.signed.signer_public_key)


async def test_peer_serving_another_domain_is_refused(atlanta, biloxi, make_node, connect):
    # atlanta's real PKG answering where biloxi's was expected (pinning atlanta's key)
    other = await make_node(atlanta.material())
    node = await _atlanta(make_node, atlanta, _peers("biloxi.com", other.port, atlanta.signed.fingerprint), "memory")
    with pytest.raises(PkgRpcError) as err:
        await connect(node).get_domain_params("biloxi.com")
    assert err.value.reason == "wrong_domain"


async def test_peer_down_serves_cached_copy_while_valid(atlanta, biloxi, make_node, connect, clock, store_kind):
    bob_pkg = await make_node(biloxi.material())
    node = await _atlanta(make_node, atlanta, _peers("biloxi.com", bob_pkg.port, biloxi.signed.fingerprint), store_kind)
    client = connect(node)
    await client.get_domain_params("biloxi.com")
    await bob_pkg.stop(grace=0)
    clock.advance(601)  # past refresh: tries the peer, which is down, serves the cached copy
    assert (await client.get_domain_params("biloxi.com")).to_bytes() == biloxi.params.to_bytes()
    assert node.metrics.fed_stale._value.get() == 1
    assert node.metrics.fed_errors.labels("unavailable")._value.get() == 1
    clock.advance(3000)  # past the TTL: nothing valid is left
    with pytest.raises(PkgRpcError) as err:
        await client.get_domain_params("biloxi.com")
    assert err.value.code is grpc.StatusCode.UNAVAILABLE
    assert err.value.reason == "peer_unavailable"


async def test_peer_never_reached_is_unavailable(atlanta, make_node, connect):
    fp = "sha256:" + "00" * 32
    node = await _atlanta(make_node, atlanta, _peers("biloxi.com", free_port(), fp), "memory")
    with pytest.raises(PkgRpcError) as err:
        await connect(node).get_domain_params("biloxi.com")
    assert err.value.code is grpc.StatusCode.UNAVAILABLE


async def test_tampered_cache_entry_is_ignored(atlanta, biloxi, make_node, connect, store_kind):
    bob_pkg = await make_node(biloxi.material())
    node = await _atlanta(make_node, atlanta, _peers("biloxi.com", bob_pkg.port, biloxi.signed.fingerprint), store_kind)
    client = connect(node)
    await client.get_domain_params("biloxi.com")
    cached = await node.store.get_peer_params("biloxi.com")
    evil = init_domain("biloxi.com")
    await node.store.put_peer_params(dataclasses.replace(
        cached, params=evil.signed.params, signature=evil.signed.signature,
        signer_public_key=evil.signed.signer_public_key), 3600)
    assert isinstance(node.store, (MemoryPkgStore, RedisPkgStore))
    params = await client.get_domain_params("biloxi.com")
    assert params.to_bytes() == biloxi.params.to_bytes()  # refetched from the real peer
    assert node.metrics.fed_errors.labels("bad_cache")._value.get() == 1


async def test_federation_over_tls_needs_the_peer_ca(atlanta, biloxi, make_node, connect, tmp_path):
    from tests.integration.pkg.certs import make_pki

    pki = make_pki()
    paths = pki.write(tmp_path)
    bob_pkg = await make_node(biloxi.material(), plaintext=False, tls_cert=paths["server_cert"], tls_key=paths["server_key"])
    peers = _peers("biloxi.com", bob_pkg.port, biloxi.signed.fingerprint)
    trusting = await make_node(atlanta.material(), peers=peers, peer_ca=paths["ca"], fed_timeout_s=2)
    blind = await make_node(atlanta.material(), peers=peers, fed_timeout_s=2)  # system roots only
    assert (await connect(trusting).get_domain_params("biloxi.com")).to_bytes() == biloxi.params.to_bytes()
    with pytest.raises(PkgRpcError) as err:
        await connect(blind).get_domain_params("biloxi.com")
    assert err.value.code is grpc.StatusCode.UNAVAILABLE and err.value.reason == "peer_unavailable"
