"""``sipsec up``'s service table against the services: scripts, subcommands, documented variables
that parse; the port plan; the call summary; the README shorthand the checks rely on."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from sipsec_cli.__main__ import build_parser
from sipsec_cli.up import (
    DOMAINS,
    SERVICES,
    Health,
    ServiceSpec,
    Supervisor,
    Topology,
    UpError,
    UpOptions,
    free_port,
    redis_db_url,
    summarize_calls,
)

from tests.unit.deploy._catalog import SERVICES as CATALOG
from tests.unit.deploy._catalog import check_help, documented_names

FINGERPRINT = "sha256:" + "cd" * 32


def _topology(tmp_path: Path) -> Topology:
    sup = Supervisor(UpOptions(state_dir=str(tmp_path)))
    topo = sup.topo
    for d in DOMAINS:
        topo.redis_urls[d.name] = f"redis://{d.host}:6379/0"
        topo.pkg_dirs[d.name] = tmp_path / d.name / "pkg"
        topo.kek_files[d.name] = tmp_path / d.name / "kek"
        topo.fingerprints[d.name] = FINGERPRINT
    sup.plan()
    return topo


def test_every_service_of_the_table_is_known_to_the_deployment_checks() -> None:
    assert [s.name for s in SERVICES] == ["worker", "pkg", "location", "proxy", "gateway"]
    for spec in SERVICES:
        assert CATALOG[spec.name].script == spec.script
        assert bool(spec.args) == CATALOG[spec.name].has_subcommands


def test_commands_are_real_subcommands() -> None:
    results = check_help({(s.script, *s.args) for s in SERVICES})
    for call, (code, out) in results.items():
        assert code == 0 and "usage" in out.lower(), f"{' '.join(call)} --help:\n{out}"


def test_help_check_fails_for_an_unknown_subcommand() -> None:
    results = check_help({("sipsec-pkg", "bogus"), ("sipsec-gateway", "bogus")})
    assert all(code != 0 for code, _ in results.values())


def test_environment_of_every_instance_is_documented_and_parses(tmp_path: Path) -> None:
    topo = _topology(tmp_path)
    assert {(k[0], k[1]) for k in topo.instances} == (
        {("shared", "worker")} | {(d.name, s) for d in DOMAINS for s in ("pkg", "location", "proxy", "gateway")})
    for inst in topo.instances.values():
        env = inst.spec.env(topo, inst)
        svc = CATALOG[inst.spec.name]
        undocumented = [v for v in env if not svc.documented(v)]
        assert not undocumented, f"{inst.label}: {undocumented} not in {svc.readme}"
        svc.parse_env(env)


def test_instances_point_at_each_other(tmp_path: Path) -> None:
    topo = _topology(tmp_path)
    atl, bil = DOMAINS
    pkg_a = topo.get(atl, "pkg")
    pkg_b = topo.get(bil, "pkg")
    proxy_a = topo.get(atl, "proxy")
    proxy_b = topo.get(bil, "proxy")
    gw_a = topo.get(atl, "gateway")
    assert pkg_a and pkg_b and proxy_a and proxy_b and gw_a
    env = pkg_a.spec.env(topo, pkg_a)
    assert env["SIPSEC_PKG_PEERS"] == f"biloxi.com,{pkg_b.addr('grpc')},{FINGERPRINT}"
    assert env["SIPSEC_PKG_LISTEN"].startswith("127.0.0.2:")
    env = proxy_a.spec.env(topo, proxy_a)
    # proxy to proxy and gateway to proxy over TLS, verified against the run's CA
    assert env["SIPSEC_PROXY_ROUTES"] == f"biloxi.com={proxy_b.addr('tls')};transport=tls"
    assert env["SIPSEC_PROXY_TLS_LISTEN"] == proxy_a.addr("tls")
    tls = tmp_path / "tls"
    assert (env["SIPSEC_PROXY_TLS_CERT"], env["SIPSEC_PROXY_TLS_KEY"], env["SIPSEC_PROXY_TLS_CA"]) == (
        str(tls / "proxy-atlanta.com.pem"), str(tls / "proxy-atlanta.com.key"), str(tls / "ca.pem"))
    assert (env["SIPSEC_PROXY_PKG_TARGET"], env["SIPSEC_PROXY_PKG_FINGERPRINT"]) == (pkg_a.addr("grpc"), FINGERPRINT)
    assert env["SIPSEC_PROXY_LOCATION"] == topo.get(atl, "location").addr("grpc")  # type: ignore[union-attr]
    env = gw_a.spec.env(topo, gw_a)
    assert env["SIPSEC_GATEWAY_PKG"] == pkg_a.addr("grpc")
    assert env["SIPSEC_GATEWAY_PROXY"] == proxy_a.addr("tls") and env["SIPSEC_GATEWAY_TRANSPORT"] == "tls"
    assert (env["SIPSEC_GATEWAY_TLS_CERT"], env["SIPSEC_GATEWAY_TLS_KEY"], env["SIPSEC_GATEWAY_TLS_CA"]) == (
        str(tls / "gateway-atlanta.com.pem"), str(tls / "gateway-atlanta.com.key"), str(tls / "ca.pem"))
    assert env["SIPSEC_GATEWAY_WORKERS"] == topo.get(None, "worker").addr("grpc")  # type: ignore[union-attr]


def test_port_plan_has_no_collisions(tmp_path: Path) -> None:
    topo = _topology(tmp_path)
    seen: set[tuple[str, int]] = set()
    for inst in topo.instances.values():
        for port in inst.ports.values():
            assert (inst.host, port) not in seen
            seen.add((inst.host, port))


def test_free_port_with_udp_is_free_for_both() -> None:
    port = free_port("127.0.0.2", udp=True)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
        t.bind(("127.0.0.2", port))
        u.bind(("127.0.0.2", port))


def test_only_restricts_the_plan(tmp_path: Path) -> None:
    sup = Supervisor(UpOptions(state_dir=str(tmp_path), only=("pkg",)))
    sup.plan()
    assert {k[1] for k in sup.topo.instances} == {"pkg"}


def test_cli_registers_up() -> None:
    args = build_parser().parse_args(["up", "--calls", "3", "--json", "--grace", "2"])
    assert (args.command, args.calls, args.json, args.grace) == ("up", 3, True, 2.0)
    assert build_parser().parse_args(["demo"]).command == "demo"


def _call(state: str, setup: float | None, wire: int, crypto: dict[str, tuple[int, float]]) -> dict[str, object]:
    return {"id": "x", "state": state, "setup_ms": setup, "wire": {"bytes_total": wire},
            "crypto": {op: {"count": c, "total_ms": c * m, "mean_ms": m} for op, (c, m) in crypto.items()},
            "sip_status": 200 if state != "failed" else 480, "reason": None if state != "failed" else "unavailable"}


def test_summary_of_calls() -> None:
    calls = [_call("ended", float(ms), 7000 + ms, {"seal_kem": (1, 10.0 + ms / 100), "sign": (2, 1.0)})
             for ms in range(10, 110, 10)]
    calls.append(_call("failed", None, 0, {}))
    s = summarize_calls(calls)
    assert (s["calls"], s["succeeded"], s["failed"]) == (11, 10, 1)
    assert s["setup_ms_p50"] == pytest.approx(55.0)
    assert s["setup_ms_p95"] == pytest.approx(95.5)
    assert s["bytes_per_call_mean"] == pytest.approx(7055.0)
    assert s["crypto_ms_per_op_median"]["sign"] == 1.0
    assert s["crypto_ops"] == {"seal_kem": 10, "sign": 20}
    assert s["failures"] == [{"state": "failed", "sip_status": 480, "reason": "unavailable"}]


def test_readme_shorthand_names_are_understood() -> None:
    text = ("| `SIPSEC_X_METRICS_HOST` / `_METRICS_PORT` | ... |\n"
            "| `SIPSEC_X_MIN_EXPIRES` / `_MAX_EXPIRES` / `_DEFAULT_EXPIRES` | ... |\n"
            "Set SIPSEC_X_WORKERS=N to fork.\n")
    names = documented_names(text)
    assert {"SIPSEC_X_METRICS_HOST", "SIPSEC_X_METRICS_PORT", "SIPSEC_X_MIN_EXPIRES",
            "SIPSEC_X_MAX_EXPIRES", "SIPSEC_X_DEFAULT_EXPIRES", "SIPSEC_X_WORKERS"} <= names
    assert "SIPSEC_X_PORT" not in names and "SIPSEC_X_MAX" not in names


def test_shared_redis_gives_each_domain_its_own_database() -> None:
    assert redis_db_url("redis://127.0.0.1:6379/0", 1) == "redis://127.0.0.1:6379/1"
    assert redis_db_url("redis://:pw@r:6380/4", 1) == "redis://:pw@r:6380/5"
    assert redis_db_url("redis://r", 0) == "redis://r/0"
    with pytest.raises(UpError):
        redis_db_url("http://r/0", 0)
    with pytest.raises(UpError):
        redis_db_url("redis://r/x", 0)


def test_a_missing_service_command_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A service whose console script is not installed stops ``sipsec up`` before anything starts."""
    import io

    import sipsec_cli.up as up

    ghost = ServiceSpec("ghost", "sipsec-ghost-not-installed", ("serve",), True, ("grpc",),
                        Health("grpc", "grpc"), lambda topo, inst: {})
    monkeypatch.setattr(up, "SERVICES", (*SERVICES, ghost))
    state = tmp_path / "state"
    out, err = io.StringIO(), io.StringIO()
    assert up.run_up(UpOptions(state_dir=str(state)), out, err) == 1
    assert "sipsec-ghost-not-installed" in err.getvalue() and "not installed" in err.getvalue()
    assert not state.exists()  # nothing was started, not even the state directory
