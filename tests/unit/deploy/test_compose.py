"""docker-compose.yml, checked without a Docker engine: structure, commands, variables, wiring."""

from __future__ import annotations

import re
from typing import Any

import pytest
import yaml
from sipsec_cli.up import DOMAINS

from tests.unit.deploy._catalog import (
    ROOT,
    Service,
    check_help,
    dockerfile_command,
    parse_pkg_argv,
    script_invocations,
    service_for_dockerfile,
    subcommands,
)

FAKE_FINGERPRINT = "sha256:" + "ab" * 32


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert isinstance(data, dict)
    return data


def _sipsec(compose: dict[str, Any]) -> dict[str, tuple[dict[str, Any], Service]]:
    return {name: (spec, service_for_dockerfile(spec["build"]["dockerfile"]))
            for name, spec in compose["services"].items() if "build" in spec}


def _argv(spec: dict[str, Any], svc: Service) -> list[str]:
    entry, cmd = dockerfile_command(svc)
    if "entrypoint" in spec:  # compose: a new entrypoint also clears the image's CMD
        return list(spec["entrypoint"]) + list(spec.get("command", []))
    return entry + list(spec.get("command", cmd))


def _env(spec: dict[str, Any]) -> dict[str, str]:
    """The service's environment, plus variables its shell command exports (command
    substitutions stand in as a well-formed fingerprint, the only thing they produce)."""
    env = {k: str(v) for k, v in (spec.get("environment") or {}).items()}
    script = " ".join(str(c) for c in spec.get("command", []) if isinstance(c, str))
    for name, value in re.findall(r'export (\w+)="([^"]*)"', script):
        env[name] = re.sub(r"\$\$\([^)]*\)", FAKE_FINGERPRINT, value)
    return env


def test_top_level_shape(compose: dict[str, Any]) -> None:
    assert set(compose) >= {"services", "volumes", "secrets", "networks"}
    sipsec = _sipsec(compose)
    assert sipsec, "no service is built from the repository"
    for name, (spec, svc) in sipsec.items():
        assert spec["build"]["context"] == ".", name
        assert svc.dockerfile.exists(), f"{name}: {svc.dockerfile} is missing"


def test_topology_matches_sipsec_up(compose: dict[str, Any]) -> None:
    """Both domains of `sipsec up` exist, each with redis, init, pkg, location and proxy."""
    names = set(compose["services"])
    assert "worker" in names
    for d in DOMAINS:
        short = d.name.split(".")[0]
        for base in ("redis", "pkg-init", "pkg", "location", "proxy", "gateway"):
            assert f"{base}-{short}" in names
        env = _env(compose["services"][f"pkg-{short}"])
        assert env["SIPSEC_PKG_DOMAIN"] == d.name
        assert env["SIPSEC_REDIS_URL"] == f"redis://pkg@redis-{short}:6379/0"  # its own ACL user
        for peer in DOMAINS:
            if peer is not d:
                assert f"{peer.name},pkg-{peer.name.split('.')[0]}:50051," in env["SIPSEC_PKG_PEERS"]
        proxy = _env(compose["services"][f"proxy-{short}"])
        assert proxy["SIPSEC_PROXY_DOMAINS"] == d.name
        assert proxy["SIPSEC_PROXY_PKG_TARGET"] == f"pkg-{short}:50051"
        assert proxy["SIPSEC_PROXY_PKG_FINGERPRINT"] == FAKE_FINGERPRINT  # pinned from pkg-init's output
        gw = _env(compose["services"][f"gateway-{short}"])
        assert gw["SIPSEC_GATEWAY_DOMAIN"] == d.name
        # the proxy's SIP-over-TLS listener (RFC 3261 §26.2)
        assert (gw["SIPSEC_GATEWAY_PKG"], gw["SIPSEC_GATEWAY_PROXY"]) == (f"pkg-{short}:50051", f"proxy-{short}:5061")
        assert gw["SIPSEC_GATEWAY_PKG_FINGERPRINT"] == FAKE_FINGERPRINT  # pinned from pkg-init's output
        init = " ".join(compose["services"][f"pkg-init-{short}"]["command"])
        for user in d.users:
            assert f"user add sip:{user}@{d.name}" in init


def test_commands_are_real_console_scripts_and_subcommands(compose: dict[str, Any]) -> None:
    calls: set[tuple[str, ...]] = set()
    for name, (spec, svc) in _sipsec(compose).items():
        invocations = script_invocations(_argv(spec, svc))
        assert invocations, f"{name} runs no sipsec console script: {_argv(spec, svc)}"
        for call in invocations:
            assert call[0] == svc.script, f"{name} runs {call[0]} from the {svc.folder} image"
            assert bool(subcommands(call)) == svc.has_subcommands, call
            calls.add((call[0], *subcommands(call)))
            if call[0] == "sipsec-pkg":
                parse_pkg_argv(call)  # SystemExit on an unknown subcommand or flag
    results = check_help(calls)
    for call, (code, out) in results.items():
        assert code == 0 and "usage" in out.lower(), f"{' '.join(call)} --help failed:\n{out}"
    assert ("sipsec-pkg", "init") in calls and ("sipsec-pkg", "serve") in calls


def test_every_variable_is_documented_and_parses(compose: dict[str, Any]) -> None:
    for name, (spec, svc) in _sipsec(compose).items():
        env = _env(spec)
        undocumented = [v for v in env if not svc.documented(v)]
        assert not undocumented, f"{name}: {undocumented} not in {svc.readme.relative_to(ROOT)}"
        svc.parse_env(env)  # raises on a malformed value


def test_depends_on_targets_exist_with_sensible_conditions(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name, spec in services.items():
        deps = spec.get("depends_on") or {}
        for target, cond in (deps.items() if isinstance(deps, dict) else ((d, {}) for d in deps)):
            assert target in services, f"{name} depends on unknown {target}"
            condition = cond.get("condition", "service_started")
            if condition == "service_healthy":
                assert "healthcheck" in services[target], f"{target} has no healthcheck for {name}"
            elif condition == "service_completed_successfully":
                assert services[target].get("restart") == "no", f"{target} is not a one-shot"
            else:
                assert condition == "service_started", condition


def test_long_running_services_have_healthchecks_and_hardening(compose: dict[str, Any]) -> None:
    for name, spec in compose["services"].items():
        assert spec.get("read_only") is True, name
        assert spec.get("cap_drop") == ["ALL"], name
        assert "no-new-privileges:true" in spec.get("security_opt", []), name
        if spec.get("restart") != "no":
            test = spec.get("healthcheck", {}).get("test")
            assert test and test[0] in ("CMD", "CMD-SHELL"), f"{name} has no healthcheck"


def _host_ports(spec: dict[str, Any]) -> list[tuple[str, int, str]]:
    out = []
    for entry in spec.get("ports", []):
        text, _, proto = str(entry).partition("/")
        parts = text.split(":")
        assert len(parts) == 3, f"publish {entry!r} with an explicit host address"
        out.append((parts[0], int(parts[1]), proto or "tcp"))
    return out


def test_published_ports_do_not_collide(compose: dict[str, Any]) -> None:
    seen: dict[tuple[str, int, str], str] = {}
    for name, spec in compose["services"].items():
        for key in _host_ports(spec):
            assert key not in seen, f"{name} and {seen[key]} both publish {key}"
            assert key[0] == "127.0.0.1", f"{name} publishes beyond loopback: {key}"
            seen[key] = name
    assert seen


def test_volumes_secrets_and_networks_are_declared_and_used(compose: dict[str, Any]) -> None:
    used_volumes, used_secrets, used_networks = set(), set(), set()
    for name, spec in compose["services"].items():
        for v in spec.get("volumes", []):
            source = str(v).split(":")[0]
            assert not source.startswith((".", "/")), f"{name}: bind mount {v}; use a named volume"
            assert source in compose["volumes"], f"{name}: undeclared volume {source}"
            used_volumes.add(source)
        for s in spec.get("secrets", []):
            assert s in compose["secrets"], f"{name}: undeclared secret {s}"
            used_secrets.add(s)
        for n in spec.get("networks", []):
            assert n in compose["networks"], f"{name}: undeclared network {n}"
            used_networks.add(n)
        # every /run/secrets path a service reads is a secret it mounts
        text = " ".join(map(str, spec.get("command", []))) + " " + " ".join(
            map(str, (spec.get("environment") or {}).values()))
        for secret in re.findall(r"/run/secrets/([\w-]+)", text):
            assert secret in spec.get("secrets", []), f"{name} reads /run/secrets/{secret} it does not mount"
    assert used_volumes == set(compose["volumes"])
    assert used_secrets == set(compose["secrets"])
    assert used_networks == set(compose["networks"])


def test_kek_is_a_secret_and_material_is_a_named_volume(compose: dict[str, Any]) -> None:
    for name, (spec, svc) in _sipsec(compose).items():
        if svc.script != "sipsec-pkg":
            continue
        env = _env(spec)
        assert "SIPSEC_PKG_KEK" not in env, f"{name}: the KEK belongs in a secret"
        assert env["SIPSEC_PKG_KEK_FILE"].startswith("/run/secrets/")
        mounts = {str(v).split(":")[1]: str(v) for v in spec["volumes"]}
        assert env["SIPSEC_PKG_DATA_DIR"] in mounts
        if spec.get("restart") != "no":  # the server only reads its sealed material
            assert mounts[env["SIPSEC_PKG_DATA_DIR"]].endswith(":ro"), name


def test_service_addresses_resolve_on_a_shared_network(compose: dict[str, Any]) -> None:
    """Every ``<service>:<port>`` a service is configured with is reachable: they share a network."""
    services = compose["services"]
    for name, spec in services.items():
        text = " ".join(_env(spec).values())
        for target in set(re.findall(r"([a-z][a-z0-9-]*):\d+", text)):
            if target not in services or target == name:
                continue
            shared = set(spec.get("networks", [])) & set(services[target].get("networks", []))
            assert shared, f"{name} talks to {target} but they share no network"


def test_sip_over_tls_certificates_are_file_secrets_of_the_dev_certs_directory(compose: dict[str, Any]) -> None:
    """Gateway↔proxy and proxy↔proxy SIP is TLS: each proxy and gateway reads its certificate,
    key and the CA as compose secrets made by scripts/make_dev_certs.py (its default parties),
    routes name the peer proxy's TLS port, and each side verifies the names it connects to."""
    from scripts.make_dev_certs import COMPOSE_PARTIES

    secrets = compose["secrets"]
    for d in DOMAINS:
        short = d.name.split(".")[0]
        proxy_spec, gw_spec = compose["services"][f"proxy-{short}"], compose["services"][f"gateway-{short}"]
        proxy, gw = _env(proxy_spec), _env(gw_spec)
        assert gw["SIPSEC_GATEWAY_TRANSPORT"] == "tls"
        assert proxy["SIPSEC_PROXY_TLS_LISTEN"] == "0.0.0.0:5061"
        peers = [p.name for p in DOMAINS if p is not d]
        assert proxy["SIPSEC_PROXY_ROUTES"] == ",".join(
            f"{p}=proxy-{p.split('.')[0]}:5061;transport=tls" for p in peers)
        for spec, env, prefix, party in ((proxy_spec, proxy, "SIPSEC_PROXY_", f"proxy-{short}"),
                                         (gw_spec, gw, "SIPSEC_GATEWAY_", f"gateway-{short}")):
            assert party in COMPOSE_PARTIES and COMPOSE_PARTIES[party] == (party,)  # the name others dial
            for var, suffix in (("TLS_CERT", f"{party}.pem"), ("TLS_KEY", f"{party}.key"), ("TLS_CA", "ca.pem")):
                path = env[prefix + var]
                assert path.startswith("/run/secrets/"), (party, var)
                name = path.removeprefix("/run/secrets/")
                assert name in spec["secrets"], (party, name)
                assert secrets[name] == {"file": "${SIPSEC_DEV_CERTS:-./dev-certs}/" + suffix}, name
        # the gateway dials its proxy by the name the proxy's certificate carries
        assert gw["SIPSEC_GATEWAY_PROXY"].split(":")[0] in COMPOSE_PARTIES[f"proxy-{short}"]
        assert "SIPSEC_GATEWAY_TLS_SERVER_NAME" not in gw  # default: the host of SIPSEC_GATEWAY_PROXY
