"""Threshold 3-of-5: nodes down, a lying node named, partials verified by pairing and combined."""

from __future__ import annotations

import grpc
import pytest
from prometheus_client import CollectorRegistry
from sipsec.ibc import Purpose, decapsulate, encapsulate, sign, verify
from sipsec.pkgclient import (
    PkgClient,
    PkgClientMetrics,
    PkgRpcError,
    ThresholdKeyError,
    ThresholdPkgClient,
)
from sipsec.stores.pkg import RedisPkgStore
from sipsec_pkg.material import DomainMaterial, init_domain
from sipsec_pkg.node import PkgNode

from tests.conftest import free_port
from tests.integration.pkg.conftest import PASSWORD


@pytest.fixture(scope="module")
def chicago():
    return init_domain("chicago.com", threshold=3, nodes=5)


async def _cluster(make_node, chicago, *, down=(), liars=(), store="memory"):
    """Five node endpoints; ``down`` indexes have nothing listening, ``liars`` hold a wrong share."""
    impostor = init_domain("chicago.com", threshold=3, nodes=5)
    targets = []
    for i in range(1, 6):
        if i in down:
            targets.append(f"127.0.0.1:{free_port()}")
            continue
        material = chicago.material(i)
        if i in liars:
            material = DomainMaterial(chicago.params, chicago.signed, share=impostor.material(i).share)
        node: PkgNode = await make_node(material, store=store)
        if store == "memory" or i == min(set(range(1, 6)) - set(down)):
            await node.add_user("sip:carol@chicago.com", PASSWORD)
        targets.append(f"127.0.0.1:{node.port}")
    return targets


def _client(targets, metrics=None):
    return ThresholdPkgClient([PkgClient(t, plaintext=True, timeout_s=2) for t in targets], metrics=metrics)


async def _check(params, tk, aor="sip:carol@chicago.com"):
    ident = tk.key.identity
    assert str(ident.aor) == aor
    if ident.purpose is Purpose.ENC:
        cek, ct = encapsulate(params, ident)
        assert decapsulate(tk.key, ct) == cek
    else:
        verify(params, ident, b"m", sign(tk.key, b"m"))


async def test_3_of_5_with_two_nodes_down(chicago, make_node, store_kind):
    targets = await _cluster(make_node, chicago, down=(2, 4), store=store_kind)
    client = _client(targets)
    try:
        failed = await client.login("sip:carol@chicago.com", PASSWORD)
        assert sorted(failed) == sorted([targets[1], targets[3]])
        params = await client.get_system_params(pinned_fingerprint=chicago.signed.fingerprint)
        assert params.threshold == 3 and len(params.public_shares) == 5
        for purpose in (Purpose.ENC, Purpose.SIG):
            tk = await client.get_private_key(params, purpose)
            assert tk.used_nodes == (1, 3, 5) and tk.bad_nodes == ()
            await _check(params, tk)
    finally:
        await client.close()


async def test_one_lying_node_is_named_and_outvoted(chicago, make_node):
    targets = await _cluster(make_node, chicago, liars=(4,))
    metrics = PkgClientMetrics(CollectorRegistry())
    client = _client(targets, metrics)
    try:
        await client.login("sip:carol@chicago.com", PASSWORD)
        params = await client.get_system_params()
        tk = await client.get_private_key(params, Purpose.ENC)
        assert [(b.index, b.target) for b in tk.bad_nodes] == [(4, targets[3])]
        assert 4 not in tk.used_nodes and len(tk.used_nodes) == 3
        await _check(params, tk)
        assert metrics.bad_shares.labels(targets[3])._value.get() == 1  # named by its connection
    finally:
        await client.close()


async def test_too_few_honest_nodes_raises_naming_the_liar(chicago, make_node):
    targets = await _cluster(make_node, chicago, down=(1, 2), liars=(5,))
    client = _client(targets)
    try:
        await client.login("sip:carol@chicago.com", PASSWORD)
        params = await client.get_system_params()
        with pytest.raises(ThresholdKeyError) as err:
            await client.get_private_key(params, Purpose.SIG)
        assert [b.index for b in err.value.bad_nodes] == [5]
        assert err.value.valid == 2 and err.value.threshold == 3
        assert "node 5" in str(err.value)
    finally:
        await client.close()


async def test_a_threshold_node_returns_only_its_partial(chicago, make_node, connect):
    node = await make_node(chicago.material(2))
    await node.add_user("sip:carol@chicago.com", PASSWORD)
    c = connect(node)
    await c.login("sip:carol@chicago.com", PASSWORD)
    resp = await c.fetch_key(Purpose.ENC)
    assert resp.private_key is None and resp.partial is not None and resp.partial.index == 2
    assert (await c.get_system_params()).node_index == 2
    assert node.metrics.extractions.labels("enc", "partial", "current")._value.get() == 1


async def test_nodes_share_sessions_through_redis(chicago, make_node, redis_url, clock):
    a = await make_node(chicago.material(1), store="redis")
    b = await make_node(chicago.material(2), store="redis")
    await a.add_user("sip:carol@chicago.com", PASSWORD)
    ca = PkgClient(f"127.0.0.1:{a.port}", plaintext=True)
    cb = PkgClient(f"127.0.0.1:{b.port}", plaintext=True)
    try:
        await ca.login("sip:carol@chicago.com", PASSWORD)
        cb.session = ca.session  # one login, a session valid on every node of the domain
        assert (await cb.fetch_key(Purpose.SIG)).partial.index == 2
        await ca.logout()
        with pytest.raises(PkgRpcError) as err:
            await cb.fetch_key(Purpose.SIG)
        assert err.value.code is grpc.StatusCode.UNAUTHENTICATED
    finally:
        await ca.close()
        await cb.close()
    assert isinstance(a.store, RedisPkgStore)


async def _nodes(make_node, materials):
    """One node per material, in order; carol provisioned on each; returns their targets."""
    targets = []
    for material in materials:
        node: PkgNode = await make_node(material)
        await node.add_user("sip:carol@chicago.com", PASSWORD)
        targets.append(f"127.0.0.1:{node.port}")
    return targets


def _shares(registry: CollectorRegistry) -> dict[str, float]:
    return {s.labels["node"]: s.value for m in registry.collect() for s in m.samples
            if s.name == "sipsec_pkgclient_bad_threshold_shares_total"}


async def test_a_liar_claiming_another_index_is_blamed_by_its_connection(chicago, make_node):
    impostor = init_domain("chicago.com", threshold=3, nodes=5)
    materials = [chicago.material(i) for i in range(1, 6)]
    # the node asked through connection 4 answers with junk it claims is node 2's
    materials[3] = DomainMaterial(chicago.params, chicago.signed, share=impostor.material(2).share)
    targets = await _nodes(make_node, materials)
    registry = CollectorRegistry()
    client = _client(targets, PkgClientMetrics(registry))
    try:
        await client.login("sip:carol@chicago.com", PASSWORD)
        params = await client.get_system_params()
        tk = await client.get_private_key(params, Purpose.SIG)
        assert [(b.target, b.index, b.reason) for b in tk.bad_nodes] == [(targets[3], 2, "bad_partial")]
        assert tk.used_nodes == (1, 2, 3)  # the honest node 2 was used, not blamed
        await _check(params, tk)
        assert _shares(registry) == {targets[3]: 1.0}
    finally:
        await client.close()


async def test_a_partial_for_another_index_than_the_connection_serves_is_invalid(chicago, make_node):
    materials = [chicago.material(i) for i in range(1, 6)]
    materials[3] = chicago.material(2)  # connection 4 answers with node 2's genuine partial
    targets = await _nodes(make_node, materials)
    registry = CollectorRegistry()
    clients = [PkgClient(t, plaintext=True, timeout_s=2, node_index=i) for i, t in enumerate(targets, 1)]
    client = ThresholdPkgClient(clients, metrics=PkgClientMetrics(registry))
    try:
        await client.login("sip:carol@chicago.com", PASSWORD)
        params = await client.get_system_params()
        tk = await client.get_private_key(params, Purpose.ENC)
        assert [(b.target, b.index, b.reason) for b in tk.bad_nodes] == [(targets[3], 2, "index_mismatch")]
        assert _shares(registry) == {targets[3]: 1.0}
        await _check(params, tk)
    finally:
        await client.close()


async def test_claimed_indexes_never_become_metric_labels(chicago, make_node):
    from sipsec.ibc import MasterShare

    materials = [chicago.material(i) for i in range(1, 6)]
    for pos, claimed in ((3, 1000), (4, 0xFFFF)):  # out-of-range claims, each fetch a new label before
        materials[pos] = DomainMaterial(chicago.params, chicago.signed, share=MasterShare(claimed, 12345 + pos))
    targets = await _nodes(make_node, materials)
    registry = CollectorRegistry()
    client = _client(targets, PkgClientMetrics(registry))
    try:
        await client.login("sip:carol@chicago.com", PASSWORD)
        params = await client.get_system_params()
        for purpose in (Purpose.SIG, Purpose.ENC, Purpose.SIG):
            tk = await client.get_private_key(params, purpose)
            assert {b.target for b in tk.bad_nodes} == {targets[3], targets[4]}
        labels = _shares(registry)
        assert set(labels) <= set(targets)
        assert labels == {targets[3]: 3.0, targets[4]: 3.0}
    finally:
        await client.close()
