"""The one two-domain description (``sipsec_cli.plan``) and the wirings derived from it:
the in-process topology, ``sipsec up``'s process plan, the call benchmark and the tests' harness."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
from sipsec_cli import topology, up
from sipsec_cli.plan import PLAN, DomainPlan, Endpoints, PeerLink, TopologyPlan

from tests.integration.gateway import harness

ROOT = Path(__file__).resolve().parents[3]
ENDPOINTS = {
    "atlanta.com": Endpoints("127.0.0.1:5001", "127.0.0.2:5060", "sha256:aa"),
    "biloxi.com": Endpoints("127.0.0.1:5002", "127.0.0.3:5060", "sha256:bb"),
}


def test_the_plan_is_rfc_3665s_two_domains() -> None:
    assert PLAN.hosts == {"atlanta.com": "127.0.0.2", "biloxi.com": "127.0.0.3"}
    assert PLAN.aors == ("sip:alice@atlanta.com", "sip:bob@biloxi.com")
    assert (PLAN.caller, PLAN.callee) == ("sip:alice@atlanta.com", "sip:bob@biloxi.com")
    assert [d.name for d in PLAN.peers("atlanta.com")] == ["biloxi.com"]
    assert PLAN.domain("Biloxi.com").host == "127.0.0.3"


def test_peers_and_routes_come_from_the_endpoints() -> None:
    assert PLAN.pkg_peers("atlanta.com", ENDPOINTS) == (PeerLink("biloxi.com", "127.0.0.1:5002", "sha256:bb"),)
    assert PLAN.routes("atlanta.com", ENDPOINTS) == "biloxi.com=127.0.0.3:5060"
    assert PLAN.routes("biloxi.com", ENDPOINTS, transport="tcp") == "atlanta.com=127.0.0.2:5060;transport=tcp"
    assert PLAN.peer_domains("biloxi.com") == "atlanta.com"
    # a domain not running (no endpoints) is left out, not guessed
    assert PLAN.pkg_peers("atlanta.com", {"atlanta.com": ENDPOINTS["atlanta.com"]}) == ()
    assert PLAN.routes("atlanta.com", {}) == ""


def test_three_domains_route_to_each_other() -> None:
    plan = PLAN.with_hosts({**PLAN.hosts, "chicago.com": "127.0.0.4"})
    endpoints = {**ENDPOINTS, "chicago.com": Endpoints("127.0.0.1:5003", "127.0.0.4:5060", "sha256:cc")}
    assert plan.routes("chicago.com", endpoints) == "atlanta.com=127.0.0.2:5060,biloxi.com=127.0.0.3:5060"
    assert plan.domain("chicago.com").users == () and plan.domain("atlanta.com").users == ("alice",)
    with pytest.raises(ValueError):
        TopologyPlan((DomainPlan("atlanta.com", "127.0.0.2", ()),))


def test_every_wiring_derives_from_the_plan(monkeypatch: pytest.MonkeyPatch) -> None:
    assert up.DOMAINS == PLAN.domains
    assert dict(topology.DEFAULT_HOSTS) == PLAN.hosts and tuple(topology.DEFAULT_USERS) == PLAN.aors
    assert harness.HOSTS == PLAN.hosts
    spec = importlib.util.spec_from_file_location("call_setup_bench", ROOT / "bench" / "call_setup.py")
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, bench)  # its dataclasses look their module up
    spec.loader.exec_module(bench)
    assert (bench.ALICE, bench.BOB) == (PLAN.caller, PLAN.callee)


def test_up_wires_federation_and_routes_by_the_plan(tmp_path: Path) -> None:
    sup = up.Supervisor(up.UpOptions(state_dir=str(tmp_path)))
    topo = sup.topo
    for d in PLAN.domains:
        topo.redis_urls[d.name] = f"redis://{d.host}:6379/0"
        topo.pkg_dirs[d.name] = tmp_path / d.name
        topo.kek_files[d.name] = tmp_path / d.name / "kek"
        topo.fingerprints[d.name] = "sha256:" + d.name[0] * 64
    sup.plan()
    # proxies route to each other's TLS listener (SIP over TLS between proxies)
    endpoints = {d.name: Endpoints(topo.get(d, "pkg").addr("grpc"), topo.get(d, "proxy").addr("tls"),  # type: ignore[union-attr]
                                   topo.fingerprints[d.name]) for d in PLAN.domains}
    for d in PLAN.domains:
        proxy, pkg, gw = topo.get(d, "proxy"), topo.get(d, "pkg"), topo.get(d, "gateway")
        assert proxy and pkg and gw
        assert proxy.spec.env(topo, proxy)["SIPSEC_PROXY_ROUTES"] == PLAN.routes(d.name, endpoints, "tls")
        peers = ";".join(f"{p.domain},{p.endpoint},{p.fingerprint}" for p in PLAN.pkg_peers(d.name, endpoints))
        assert pkg.spec.env(topo, pkg)["SIPSEC_PKG_PEERS"] == peers
        assert gw.spec.env(topo, gw)["SIPSEC_GATEWAY_PEER_DOMAINS"] == PLAN.peer_domains(d.name)


def test_extra_proxy_settings_reach_every_proxy(tmp_path: Path) -> None:
    plan = TopologyPlan(PLAN.domains, proxy_settings=(("rate_limit", 0),))
    sup = up.Supervisor(up.UpOptions(state_dir=str(tmp_path)))
    sup.topo.plan = plan
    for d in plan.domains:
        sup.topo.redis_urls[d.name] = "redis://127.0.0.1:6379/0"
        sup.topo.fingerprints[d.name] = "sha256:" + "ab" * 32
    sup.plan()
    for d in plan.domains:
        proxy = sup.topo.get(d, "proxy")
        assert proxy is not None and proxy.spec.env(sup.topo, proxy)["SIPSEC_PROXY_RATE_LIMIT"] == "0"
