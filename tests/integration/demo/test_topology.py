"""The in-process two-domain topology: services, federation, signed registration, calls, clean stop."""

from __future__ import annotations

import socket

import pytest
from sipsec_cli.topology import DEFAULT_HOSTS, TopologyError, TwoDomainTopology
from sipsec_gateway.calls import CallState

ALICE = "sip:alice@atlanta.com"
BOB = "sip:bob@biloxi.com"


async def test_topology_calls_across_domains_and_releases_its_ports_on_stop() -> None:
    topo = TwoDomainTopology(trace_calls=0, tap=True)
    await topo.start()
    try:
        assert set(topo.domains) == set(DEFAULT_HOSTS)
        for name, stack in topo.domains.items():
            assert stack.proxy_address[0] == DEFAULT_HOSTS[name]
            assert stack.gateway.sip_address[0] == DEFAULT_HOSTS[name]
        await topo.login(ALICE)
        await topo.login(BOB, auto_answer=True)
        # each proxy accepted exactly one identity-signed REGISTER
        assert topo.atlanta.verifier.verified == 1 and topo.biloxi.verifier.verified == 1
        # the PKGs federated: each gateway holds the other domain's parameters, fetched via its own PKG
        peer = topo.atlanta.gateway.directory.get("biloxi.com")
        assert peer is not None and peer == topo.biloxi.init.params
        topo.clear_taps()
        call = await topo.gateway_for(ALICE).place_call(ALICE, BOB, secure=True, timeout=10.0)
        assert call.state is CallState.ESTABLISHED and call.secure
        assert await topo.gateway_for(ALICE).hangup(call.id) == 200
        for tap in topo.taps:
            assert tap.records and all(b"alice" not in data for _, data in tap.records)
        ports = [(s.host, s.proxy_address[1]) for s in topo.domains.values()]
    finally:
        await topo.stop()
    assert topo.domains == {}
    for host, port in ports:  # the proxies' UDP ports are free again
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind((host, port))


async def test_topology_refuses_bad_credentials_and_foreign_users() -> None:
    async with TwoDomainTopology(tap=False) as topo:
        with pytest.raises(TopologyError, match="401"):
            await topo.login(ALICE, password="not the password")
        with pytest.raises(TopologyError, match="no domain"):
            await topo.login("sip:eve@example.com")
        with pytest.raises(TopologyError, match="not a SIP address"):
            await topo.login("not an address")
        await topo.provision("sip:carol@atlanta.com", "carol's own password")
        settings = await topo.login("sip:carol@atlanta.com", password="carol's own password")
        assert settings.aor == "sip:carol@atlanta.com" and settings.registered


@pytest.mark.slow
async def test_topology_with_a_crypto_worker_runs_every_pairing_there() -> None:
    from sipsec.engine import CryptoEngine, RemoteEngine

    seen: dict[str, CryptoEngine] = {}

    def keep(domain: str, engine: CryptoEngine) -> CryptoEngine:
        seen[domain] = engine
        return engine

    async with TwoDomainTopology(tap=False, workers=1, engine_factory=keep,
                                 gateway_overrides={"workers_local_sign": True}) as topo:
        assert set(seen) == set(DEFAULT_HOSTS) and all(isinstance(e, RemoteEngine) for e in seen.values())
        assert topo.worker is not None
        await topo.login(ALICE)
        await topo.login(BOB, auto_answer=True)
        call = await topo.gateway_for(ALICE).place_call(ALICE, BOB, secure=True, timeout=10.0)
        assert call.state is CallState.ESTABLISHED and call.secure
        assert await topo.gateway_for(ALICE).hangup(call.id) == 200
        registry = topo.worker.metrics.registry
        ops = {s.labels["kind"]: s.value for m in registry.collect() for s in m.samples
               if s.name == "sipsec_worker_operations_total" and s.labels.get("outcome") == "ok"}
        assert ops.get("encapsulate") == 1 and ops.get("decapsulate") == 1
        assert ops.get("verify", 0) >= 6  # the call's messages (+ REGISTERs)
        assert ops.get("sign", 0) == 0  # signatures are made in the gateways (workers_local_sign)
        local = sum(e.metrics.registry.get_sample_value("sipsec_engine_local_ops_total", {"op": "sign"}) or 0
                    for e in seen.values() if isinstance(e, RemoteEngine))
        assert local >= 6
    assert topo.worker is None


async def test_split_topology_runs_each_domain_on_its_own_and_calls_across() -> None:
    """Two topology objects, each owning one domain and naming the other ``remote`` (as the
    benchmark's two processes do): federation, signed registration and a secured call still work."""
    from sipsec_cli.topology import RemoteDomain, pick_ports
    from sipsec_pkg.material import init_domain

    with pytest.raises(TopologyError, match="some, not all"):
        TwoDomainTopology(remote={n: RemoteDomain(init_domain(n).params, "00" * 32, 1, 1) for n in DEFAULT_HOSTS})
    materials = {n: init_domain(n) for n in DEFAULT_HOSTS}
    ports = {n: pick_ports(h) for n, h in DEFAULT_HOSTS.items()}
    public = {n: RemoteDomain(m.params, m.signed.fingerprint, *ports[n]) for n, m in materials.items()}
    sides = {n: TwoDomainTopology(tap=False, trace_calls=0, materials={n: materials[n]}, ports={n: ports[n]},
                                  remote={o: public[o] for o in DEFAULT_HOSTS if o != n})
             for n in DEFAULT_HOSTS}
    try:
        for topo in sides.values():
            await topo.start()
        atlanta, biloxi = sides["atlanta.com"], sides["biloxi.com"]
        assert atlanta.local == ["atlanta.com"] and set(atlanta.domains) == {"atlanta.com"}
        assert biloxi.public("biloxi.com") == public["biloxi.com"]
        with pytest.raises(TopologyError, match="no domain"):
            await atlanta.login(BOB)  # bob's domain is not served by this side
        await biloxi.login(BOB, auto_answer=True)
        await atlanta.login(ALICE)
        call = await atlanta.gateway_for(ALICE).place_call(ALICE, BOB, secure=True, timeout=10.0)
        assert call.state is CallState.ESTABLISHED and call.secure
        assert await atlanta.gateway_for(ALICE).hangup(call.id) == 200
        # federation went across the sides: atlanta's gateway holds biloxi's parameters
        assert atlanta.atlanta.gateway.directory.get("biloxi.com") == materials["biloxi.com"].params
    finally:
        for topo in sides.values():
            await topo.stop()


async def test_parts_run_a_domains_services_and_its_gateway_apart() -> None:
    """Four topology objects: each domain's services in one, each gateway in another (as the
    benchmark's ``--processes 4``); registration, federation and a secured call still work."""
    from sipsec_cli.topology import RemoteDomain, pick_ports
    from sipsec_pkg.material import init_domain

    materials = {n: init_domain(n) for n in DEFAULT_HOSTS}
    ports = {n: pick_ports(h) for n, h in DEFAULT_HOSTS.items()}
    public = {n: RemoteDomain(m.params, m.signed.fingerprint, *ports[n]) for n, m in materials.items()}
    with pytest.raises(TopologyError, match="must be remote"):
        TwoDomainTopology(parts={"atlanta.com": "gateway"})  # its services would have to run elsewhere
    with pytest.raises(TopologyError, match="one of all, services, gateway"):
        TwoDomainTopology(parts={"atlanta.com": "proxy"})
    password = "same-everywhere"
    services = {n: TwoDomainTopology(tap=False, trace_calls=0, password=password, materials={n: materials[n]},
                                     ports={n: ports[n]}, parts={n: "services"},
                                     remote={o: public[o] for o in DEFAULT_HOSTS if o != n})
                for n in DEFAULT_HOSTS}
    gateways = {n: TwoDomainTopology(tap=False, trace_calls=0, password=password, remote=public,
                                     parts={n: "gateway"})
                for n in DEFAULT_HOSTS}
    started: list[TwoDomainTopology] = []
    try:
        for topo in [*services.values(), *gateways.values()]:
            await topo.start()
            started.append(topo)
        atlanta_services = services["atlanta.com"]
        assert set(atlanta_services.services) == {"atlanta.com"} and not atlanta_services.gateways
        assert atlanta_services.public("atlanta.com") == public["atlanta.com"]
        with pytest.raises(TopologyError, match="no domain whose gateway runs here"):
            atlanta_services.gateway_for(ALICE)
        assert set(gateways["biloxi.com"].gateways) == {"biloxi.com"} and not gateways["biloxi.com"].services
        with pytest.raises(TopologyError, match="runs no PKG"):
            await gateways["biloxi.com"].provision("sip:carol@biloxi.com")
        await gateways["biloxi.com"].login(BOB, auto_answer=True)
        await gateways["atlanta.com"].login(ALICE)
        alice = gateways["atlanta.com"].gateway_for(ALICE)
        call = await alice.place_call(ALICE, BOB, secure=True, timeout=10.0)
        assert call.state is CallState.ESTABLISHED and call.secure
        assert await alice.hangup(call.id) == 200
        # the REGISTERs were verified by the proxies in the services' topologies
        assert services["atlanta.com"].services["atlanta.com"].verifier.verified >= 1
        assert services["biloxi.com"].services["biloxi.com"].verifier.verified >= 1
    finally:
        for topo in reversed(started):
            await topo.stop()
