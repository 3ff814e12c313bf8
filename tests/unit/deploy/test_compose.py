"""docker-compose.yml, the Dockerfile and the image build, checked without a Docker engine:
structure, commands, variables, wiring, secrets, pins, routing by name, hardening.
tests/compose runs the same file on a real engine (``make compose-test``)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from sipsec_cli.up import DOMAINS
from sipsec_cli.up.supervise import AOF_DEFAULT_USER

from tests.unit.deploy._catalog import (
    ROOT,
    SERVICES,
    Service,
    check_help,
    dockerfile_command,
    dockerfile_stage,
    parse_pkg_argv,
    script_invocations,
    service_for_target,
    subcommands,
)

FAKE_FINGERPRINT = "sha256:" + "ab" * 32
PIN_DIR = "/var/lib/sipsec-federation"
#: the services that run someone else's official image (pinned; an offline equivalent is made
#: from Debian's packages by scripts/make-base-image.sh): image variable and default
THIRD_PARTY = {
    "redis-exporter-atlanta": ("SIPSEC_REDIS_EXPORTER_IMAGE", "oliver006/redis_exporter:v1.45.0"),
    "redis-exporter-biloxi": ("SIPSEC_REDIS_EXPORTER_IMAGE", "oliver006/redis_exporter:v1.45.0"),
    "prometheus": ("SIPSEC_PROMETHEUS_IMAGE", "prom/prometheus:v2.42.0"),
    "grafana": ("SIPSEC_GRAFANA_IMAGE", "grafana/grafana-oss:10.4.2"),
}
#: Prometheus runs as its image's own non-root user (nobody), which owns its data directory
USERS = {"prometheus": "65534:65534"}
#: the official exporter image is FROM scratch: nothing to run a healthcheck with (Prometheus's
#: `up{job="sipsec-redis"}` and the exporter's `redis_up` are its health)
NO_HEALTHCHECK = {"redis-exporter-atlanta", "redis-exporter-biloxi"}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert isinstance(data, dict)
    return data


def _sipsec(compose: dict[str, Any]) -> dict[str, tuple[dict[str, Any], Service]]:
    return {name: (spec, service_for_target(spec["build"]["target"]))
            for name, spec in compose["services"].items() if "build" in spec and spec["build"]["target"] != "redis"}


def _argv(spec: dict[str, Any], svc: Service) -> list[str]:
    entry, cmd = dockerfile_command(svc)
    if "entrypoint" in spec:  # compose: a new entrypoint also clears the image's CMD
        return list(spec["entrypoint"]) + list(spec.get("command", []))
    return entry + list(spec.get("command", cmd))


def _env(spec: dict[str, Any]) -> dict[str, str]:
    """The service's environment, plus variables its shell command exports (a pin read from
    the pins volume stands in as a well-formed fingerprint, the only thing it yields)."""
    env = {k: str(v) for k, v in (spec.get("environment") or {}).items()}
    script = " ".join(str(c) for c in spec.get("command", []) if isinstance(c, str))
    assigned = set(re.findall(r'(\w+)="\$\$\(pin [^)]*\)"', script))
    for name, value in re.findall(r'export (\w+)="([^"]*)"', script):
        for var in assigned:
            value = value.replace(f"$${var}", FAKE_FINGERPRINT)
        env[name] = value
    return env


def _shell(spec: dict[str, Any]) -> str | None:
    if spec.get("entrypoint") == ["/bin/sh", "-c"]:
        return str(spec["command"][0])
    return None


def test_top_level_shape(compose: dict[str, Any]) -> None:
    assert set(compose) >= {"services", "volumes", "secrets", "networks"}
    sipsec = _sipsec(compose)
    assert {svc.target for _, svc in sipsec.values()} == {s.target for s in SERVICES.values()}
    assert {n for n, spec in compose["services"].items() if "build" not in spec} == set(THIRD_PARTY)
    for name, spec in compose["services"].items():
        if name in THIRD_PARTY:
            continue
        assert spec["build"]["context"] == ".", name
        assert "dockerfile" not in spec["build"], f"{name}: one Dockerfile, a target per service"
        assert spec["build"]["args"]["BASE"] == "${SIPSEC_BASE_IMAGE:-python:3.11-slim-bookworm}"


def test_topology_matches_sipsec_up(compose: dict[str, Any]) -> None:
    """Both domains of `sipsec up` exist, each with redis, init, pkg, location, proxy, gateway."""
    names = set(compose["services"])
    assert {"worker-1", "worker-2"} <= names
    for d in DOMAINS:
        short = d.name.split(".")[0]
        for base in ("redis", "pkg-init", "pkg", "location", "proxy", "gateway"):
            assert f"{base}-{short}" in names
        env = _env(compose["services"][f"pkg-{short}"])
        assert env["SIPSEC_PKG_DOMAIN"] == d.name
        assert env["SIPSEC_REDIS_URL"] == f"redis://pkg@redis-{short}:6379/0"  # its own ACL user
        for peer in DOMAINS:
            if peer is not d:
                assert env["SIPSEC_PKG_PEERS"] == f"{peer.name},pkg-{peer.name.split('.')[0]}:50051,{FAKE_FINGERPRINT}"
        proxy = _env(compose["services"][f"proxy-{short}"])
        assert proxy["SIPSEC_PROXY_DOMAINS"] == d.name
        assert proxy["SIPSEC_PROXY_PKG_TARGET"] == f"pkg-{short}:50051"
        assert proxy["SIPSEC_PROXY_PKG_FINGERPRINT"] == FAKE_FINGERPRINT  # pinned from pkg-init's output
        gw = _env(compose["services"][f"gateway-{short}"])
        assert gw["SIPSEC_GATEWAY_DOMAIN"] == d.name
        assert (gw["SIPSEC_GATEWAY_PKG"], gw["SIPSEC_GATEWAY_PROXY"]) == (f"pkg-{short}:50051", f"proxy-{short}:5061")
        assert gw["SIPSEC_GATEWAY_PKG_FINGERPRINT"] == FAKE_FINGERPRINT
        # every worker replica by its own name: the engine balances, ejects and retries across them
        workers = sorted(n for n in names if n.startswith("worker-"))
        assert gw["SIPSEC_GATEWAY_WORKERS"] == ",".join(f"{w}:50053" for w in workers)
        init = _shell(compose["services"][f"pkg-init-{short}"]) or ""
        for user in d.users[:1]:
            assert f"user add sip:{user}@{d.name} --password-stdin" in init


def test_commands_are_real_console_scripts_and_subcommands(compose: dict[str, Any]) -> None:
    calls: set[tuple[str, ...]] = set()
    for name, (spec, svc) in _sipsec(compose).items():
        invocations = script_invocations(_argv(spec, svc))
        assert invocations, f"{name} runs no sipsec console script: {_argv(spec, svc)}"
        for call in invocations:
            assert call[0] == svc.script, f"{name} runs {call[0]} from the {svc.target} image"
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
        env = {k: re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", v) for k, v in _env(spec).items()}
        undocumented = [v for v in env if not svc.documented(v)]
        assert not undocumented, f"{name}: {undocumented} not in {svc.readme.relative_to(ROOT)}"
        svc.parse_env(env)  # raises on a malformed value


def test_depends_on_targets_exist_with_sensible_conditions(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name, spec in services.items():
        deps = spec.get("depends_on") or {}
        assert isinstance(deps, dict), f"{name}: depends_on without conditions"
        for target, cond in deps.items():
            assert target in services, f"{name} depends on unknown {target}"
            condition = cond.get("condition", "service_started")
            if condition == "service_healthy":
                assert "healthcheck" in services[target], f"{target} has no healthcheck for {name}"
            elif condition == "service_completed_successfully":
                assert services[target].get("restart") == "no", f"{target} is not a one-shot"
            else:
                assert condition == "service_started", condition


def test_every_service_is_hardened_and_long_running_ones_check_their_real_health(compose: dict[str, Any]) -> None:
    """Read-only root, no capabilities, uid 10001 (Prometheus: its image's nobody), and a
    healthcheck on the service's own readiness endpoint: gRPC health for gRPC services, HTTP
    /readyz for the proxy and the gateway, Prometheus's and Grafana's own."""
    expected = {"pkg": ["grpc", "127.0.0.1:50051"], "location": ["grpc", "127.0.0.1:50052"],
                "worker": ["grpc", "127.0.0.1:50053"], "proxy": ["http", "http://127.0.0.1:9463/readyz"],
                "gateway": ["http", "http://127.0.0.1:8080/readyz"]}
    monitoring = {"prometheus": "http://127.0.0.1:9090/-/ready", "grafana": "http://127.0.0.1:3000/api/health"}
    for name, spec in compose["services"].items():
        assert spec.get("read_only") is True, name
        assert spec.get("cap_drop") == ["ALL"], name
        assert "no-new-privileges:true" in spec.get("security_opt", []), name
        assert spec.get("user") == USERS.get(name, "10001:10001"), name
        if name in NO_HEALTHCHECK:
            assert "healthcheck" not in spec and spec.get("restart") == "unless-stopped", name
            continue
        if spec.get("restart") == "no":
            continue
        test = spec.get("healthcheck", {}).get("test")
        assert test and test[0] in ("CMD", "CMD-SHELL"), f"{name} has no healthcheck"
        if name in monitoring:  # busybox's wget in the official images, GNU wget offline
            assert test == ["CMD", "wget", "-q", "-O", "/dev/null", monitoring[name]], name
            continue
        target = spec["build"]["target"]
        if target != "redis":
            assert test == ["CMD", "sipsec-probe", *expected[target]], name


def _host_ports(spec: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    out = []
    for entry in spec.get("ports", []):
        text, _, proto = str(entry).partition("/")
        # Prometheus and Grafana (no authentication of their own here): loopback, whatever SIPSEC_BIND says
        loopback_only = str(spec.get("image", "")).startswith(("${SIPSEC_PROMETHEUS_IMAGE", "${SIPSEC_GRAFANA_IMAGE"))
        bind = r"127\.0\.0\.1" if loopback_only else r"\$\{SIPSEC_BIND:-127\.0\.0\.1\}"
        m = re.fullmatch(rf"({bind}):(\$\{{SIPSEC_\w+:-(\d+)\}}):(\d+)", text)
        assert m, f"publish {entry!r} as ${{SIPSEC_BIND}}:${{SIPSEC_<DOMAIN>_<WHAT>_PORT:-n}}:port"
        out.append((m.group(3), proto or "tcp", m.group(2), m.group(4)))
    return out


def test_published_ports_do_not_collide_and_the_edges_are_published(compose: dict[str, Any]) -> None:
    """Each domain's SIP edge (UDP, TCP, TLS), its phones' side and
    its control API are published (loopback by default), with no two on one host port."""
    seen: dict[tuple[str, str], str] = {}
    variables: dict[str, str] = {}
    for name, spec in compose["services"].items():
        for port, proto, var, container in _host_ports(spec):
            assert (port, proto) not in seen, f"{name} and {seen[(port, proto)]} both publish {port}/{proto}"
            seen[(port, proto)] = name
            assert variables.setdefault(var, container) == container, f"{var} names two container ports"
    for d in DOMAINS:
        short = d.name.split(".")[0]
        published = {(container, proto) for _, proto, _, container in _host_ports(compose["services"][f"proxy-{short}"])}
        assert published == {("5060", "udp"), ("5060", "tcp"), ("5061", "tcp")}
        gw = {(container, proto) for _, proto, _, container in _host_ports(compose["services"][f"gateway-{short}"])}
        assert gw == {("8080", "tcp"), ("5080", "udp")}
        assert _env(compose["services"][f"gateway-{short}"])["SIPSEC_GATEWAY_PLAIN_LISTEN"] == "0.0.0.0:5080"


def test_volumes_secrets_and_networks_are_declared_and_used(compose: dict[str, Any]) -> None:
    used_volumes, used_secrets, used_networks = set(), set(), set()
    for name, spec in compose["services"].items():
        for v in spec.get("volumes", []):
            source = str(v).split(":")[0]
            if source.startswith((".", "/")):
                # state lives in named volumes; only the repository's monitoring configuration
                # (Prometheus's scrape configuration and rules, Grafana's provisioning and
                # dashboards) is bind-mounted, read-only (docker-compose 1.29 has no `configs:`)
                assert source.startswith(("./deploy/prometheus/", "./deploy/grafana/")), f"{name}: bind mount {v}"
                assert str(v).endswith(":ro") and (ROOT / source).exists(), f"{name}: {v}"
                continue
            assert source in compose["volumes"], f"{name}: undeclared volume {source}"
            used_volumes.add(source)
        for s in spec.get("secrets", []):
            assert s in compose["secrets"], f"{name}: undeclared secret {s}"
            used_secrets.add(s)
        for n in spec.get("networks", []):
            assert n in compose["networks"], f"{name}: undeclared network {n}"
            used_networks.add(n)
        text = " ".join(map(str, spec.get("command", []))) + " " + " ".join(
            map(str, (spec.get("environment") or {}).values()))
        for secret in re.findall(r"/run/secrets/([\w-]+)", text):
            assert secret in spec.get("secrets", []), f"{name} reads /run/secrets/{secret} it does not mount"
    assert used_volumes == set(compose["volumes"])
    assert used_secrets == set(compose["secrets"])
    assert used_networks == set(compose["networks"])


def test_secrets_are_files_never_environment(compose: dict[str, Any]) -> None:
    """A secret sourced from `environment:` is written into the container's (read-only)
    root file system by Compose; every secret here is a file, and no key sits in a variable."""
    for name, secret in compose["secrets"].items():
        assert set(secret) == {"file"}, f"secret {name} is not a file: {secret}"
        assert secret["file"].startswith("${SIPSEC_COMPOSE_SECRETS:-./deploy/compose/secrets}/"), name
    for name, spec in compose["services"].items():
        for var, value in (spec.get("environment") or {}).items():
            if re.search(r"KEK|PASSWORD|SEALING|TOKEN|SECRET", var) and not var.endswith("_FILE"):
                assert str(value).startswith("/run/secrets/"), f"{name}: {var} holds a value, not a file"


def test_the_secrets_script_writes_every_secret_the_file_names(compose: dict[str, Any], tmp_path: Path) -> None:
    out = subprocess.run([str(ROOT / "scripts/compose-secrets.sh"), str(tmp_path / "s")], capture_output=True,
                         text=True, timeout=120, env={**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"})
    assert out.returncode == 0, out.stderr
    for name, secret in compose["secrets"].items():
        path = tmp_path / "s" / secret["file"].rsplit("/", 1)[1]
        assert path.is_file() and path.stat().st_size > 0, name
        if os.geteuid() == 0:
            assert path.stat().st_mode & 0o777 == 0o440 and path.stat().st_gid == 10001, name
    again = subprocess.run([str(ROOT / "scripts/compose-secrets.sh"), str(tmp_path / "s")], capture_output=True,
                           text=True, timeout=120)
    assert again.returncode == 0, again.stderr  # kept, not replaced (a new KEK would orphan the material)


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
        for target in set(re.findall(r"([a-z][a-z0-9-]*):\d+", text)) | set(
                re.findall(r"^([a-z][a-z0-9-]*)$", _env(spec).get("SIPSEC_PROXY_PEERS", ""))):
            if target not in services or target == name:
                continue
            shared = set(spec.get("networks", [])) & set(services[target].get("networks", []))
            assert shared, f"{name} talks to {target} but they share no network"


def test_federation_network_carries_only_pkgs_and_proxies(compose: dict[str, Any]) -> None:
    on = {n for n, s in compose["services"].items() if "federation" in s.get("networks", [])}
    assert on == {f"{b}-{d.name.split('.')[0]}" for b in ("pkg", "proxy") for d in DOMAINS}


# --------------------------------------------------------------------------- pins


def _pin_consumers(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {n: s for n, s in compose["services"].items()
            if any(str(v).startswith("federation-pins:") and str(v).endswith(":ro") for v in s.get("volumes", []))}


def test_pins_live_on_a_persistent_volume_and_consumers_wait_for_both_inits(compose: dict[str, Any]) -> None:
    assert compose["volumes"]["federation-pins"] in ({}, None), "pins on tmpfs vanish when no container holds them"
    consumers = _pin_consumers(compose)
    assert set(consumers) == {f"{b}-{d.name.split('.')[0]}" for b in ("pkg", "proxy", "gateway") for d in DOMAINS}
    for name, spec in consumers.items():
        deps = spec["depends_on"]
        waits = {t for t, c in deps.items() if c.get("condition") == "service_completed_successfully"}
        # pkg reads the peer's pin; proxy/gateway read their own, through pkg's or directly
        inits = {"pkg-init-atlanta", "pkg-init-biloxi"}
        assert inits <= waits or any(inits <= {t for t, c in compose["services"][d].get("depends_on", {}).items()
                                               if c.get("condition") == "service_completed_successfully"}
                                     for d in deps), name


def test_every_shell_command_fails_on_the_first_error(compose: dict[str, Any]) -> None:
    for name, spec in compose["services"].items():
        script = _shell(spec)
        if script is None:
            continue
        assert script.startswith("set -eu;"), f"{name}: its script does not start with `set -eu`"
        # `export X="$(cmd)"` hides cmd's failure: assignments first, then export
        assert not re.search(r"export \w+=\"[^\"]*\$\$\(", script), f"{name}: command substitution in export"


def _run_consumer(spec: dict[str, Any], pins: Path) -> subprocess.CompletedProcess[str]:
    script = _shell(spec)
    assert script is not None
    script = script.replace("$$", "$").replace(PIN_DIR, str(pins))
    script = re.sub(r"exec (sipsec-\w+) serve", r'echo "ready"; env | grep -E "FINGERPRINT|PEERS"', script)
    return subprocess.run(["/bin/sh", "-c", script], capture_output=True, text=True, timeout=30,
                          env={"PATH": os.environ["PATH"]})


@pytest.mark.parametrize("pin", [None, "", "sha256:", "sha256:" + "0" * 10, "garbage\n"])
def test_a_consumer_refuses_a_missing_empty_or_malformed_pin(compose: dict[str, Any], tmp_path: Path,
                                                              pin: str | None) -> None:
    for name, spec in _pin_consumers(compose).items():
        for d in DOMAINS:
            (tmp_path / d.name).unlink(missing_ok=True)
            if pin is not None:
                (tmp_path / d.name).write_text(pin)
        out = _run_consumer(spec, tmp_path)
        assert out.returncode != 0 and "ready" not in out.stdout, (name, pin, out.stdout)
        assert "federation pin" in out.stderr, (name, out.stderr)


def test_a_consumer_starts_with_well_formed_pins(compose: dict[str, Any], tmp_path: Path) -> None:
    pins = {d.name: "sha256:" + format(i + 1, "x") * 64 for i, d in enumerate(DOMAINS)}
    for domain, value in pins.items():
        (tmp_path / domain).write_text(value + "\n")
    for name, spec in _pin_consumers(compose).items():
        out = _run_consumer(spec, tmp_path)
        assert out.returncode == 0 and "ready" in out.stdout, (name, out.stderr)
        short = name.rsplit("-", 1)[1]
        own = next(d.name for d in DOMAINS if d.name.startswith(short))
        peer = next(d.name for d in DOMAINS if d.name != own)
        expected = pins[peer] if name.startswith("pkg-") else pins[own]
        assert expected in out.stdout, (name, out.stdout)


def test_the_init_publishes_the_pin_atomically_after_checking_it(compose: dict[str, Any]) -> None:
    for d in DOMAINS:
        script = _shell(compose["services"][f"pkg-init-{d.name.split('.')[0]}"]) or ""
        write = script.index(f"> {PIN_DIR}/.{d.name}.tmp")
        assert script.index('case "$$pin" in sha256:*') < write < script.index(f"mv -f {PIN_DIR}/.{d.name}.tmp")


# --------------------------------------------------------------------------- routing by name


def test_each_proxy_routes_to_the_names_compose_gives_its_gateway_and_peer(compose: dict[str, Any]) -> None:
    """The gateway registers with Contacts naming `gateway-<domain>` and the route table
    names `proxy-<peer>`; the proxy built from the compose environment must route to both names,
    and to no other name."""
    from sipsec.aio.transport import Peer
    from sipsec_proxy.locator import Contact
    from sipsec_proxy.routing import RoutingPolicy, contact_target

    for d in DOMAINS:
        short = d.name.split(".")[0]
        svc = SERVICES["proxy"]
        config = svc.parse_env(_env(compose["services"][f"proxy-{short}"]))
        gw = _env(compose["services"][f"gateway-{short}"])
        policy = RoutingPolicy.build(config, [("0.0.0.0", 5060), (config.advertise, 5061)], ["UDP", "TCP", "TLS"],
                                     route_key=b"k" * 32)
        port = gw["SIPSEC_GATEWAY_SIP_LISTEN"].rsplit(":", 1)[1]
        contact = Contact(f"sip:u@{gw['SIPSEC_GATEWAY_ADVERTISE']}:{port};transport=tls", 1000, 60)
        target = contact_target(policy, contact)
        assert target is not None and target.hop == Peer("TLS", f"gateway-{short}", int(port)), d.name
        assert contact_target(policy, Contact(f"sip:u@somewhere-else:{port}", 1000, 60)) is None
        for peer in DOMAINS:
            if peer is not d:
                route = policy.routes[peer.name]
                assert (route.host, route.port, route.transport) == (f"proxy-{peer.name.split('.')[0]}", 5061, "TLS")


# --------------------------------------------------------------------------- Redis: durable


def test_redis_is_durable_on_a_named_volume(compose: dict[str, Any]) -> None:
    for d in DOMAINS:
        short = d.name.split(".")[0]
        redis = compose["services"][f"redis-{short}"]
        script = _shell(redis) or ""
        for flag in ("--appendonly yes", "--appendfsync everysec", "--dir /data", "--maxmemory "):
            assert flag in script, flag
        assert f"redis-{short}-data:/data" in redis["volumes"]
        assert "tmpfs" not in redis or "/data" not in redis["tmpfs"]
        assert redis["environment"]["ACL_DEFAULT"] == AOF_DEFAULT_USER


# --------------------------------------------------------------------------- images


@pytest.fixture(scope="module")
def dockerfile() -> str:
    return (ROOT / "Dockerfile").read_text()


def test_one_dockerfile_with_a_target_per_service_and_no_others(dockerfile: str) -> None:
    assert not list((ROOT / "services").glob("*/Dockerfile")), "the per-service Dockerfiles are gone"
    stages = re.findall(r"(?im)^FROM\s+(\S+)\s+AS\s+(\S+)\s*$", dockerfile)
    assert {t for _, t in stages} == {"deps", "runtime", "redis", *(s.target for s in SERVICES.values())}
    assert re.search(r"(?m)^ARG BASE=python:3\.11-slim-bookworm$", dockerfile), "default base: the official image"


@pytest.mark.parametrize("target", [s.target for s in SERVICES.values()])
def test_each_service_image_is_non_root_healthchecked_and_holds_only_its_own_package(target: str) -> None:
    svc = service_for_target(target)
    stage = dockerfile_stage(svc)
    assert stage.startswith("FROM runtime AS "), target
    runtime = re.split(r"(?m)^(?=FROM )", (ROOT / "Dockerfile").read_text())
    [shared] = [st for st in runtime if re.match(r"FROM \S+ AS runtime\s", st)]
    assert re.findall(r"(?m)^USER (\S+)", shared)[-1:] == ["10001:10001"], "runtime ends as uid 10001"
    assert not re.search(r"(?m)^(USER|RUN) ", stage), f"{target}: runs as root again"
    assert re.search(r'(?m)^HEALTHCHECK .*CMD \["sipsec-probe", "(grpc|http)", ', stage), target
    copied = re.findall(r"(?m)^COPY (\S+) ", stage)
    assert copied == [f"services/{svc.folder}/sipsec_{svc.target}".replace("sipsec_gateway", "sipsec_gateway")
                      if svc.target != "gateway" else "services/ua-gateway/sipsec_gateway"], copied
    assert dockerfile_command(svc) == ([svc.script], ["serve"])


def test_dependencies_come_from_the_lock_before_any_source(dockerfile: str) -> None:
    assert dockerfile.index("COPY requirements/lock.txt") < dockerfile.index("COPY libs/sipsec")
    assert "--no-index" in dockerfile and "build/wheelhouse" in dockerfile
    assert "pip install ." not in dockerfile and "pip install -e" not in dockerfile


def test_the_lock_file_is_current() -> None:
    out = subprocess.run([sys.executable, str(ROOT / "scripts/lock-deps.py"), "--check"], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    pins = [ln for ln in (ROOT / "requirements/lock.txt").read_text().splitlines() if ln and not ln.startswith("#")]
    assert pins and all(re.fullmatch(r"[a-z0-9][a-z0-9._-]*==[0-9][^ ]*", p) for p in pins), pins


def test_the_build_context_is_an_allow_list() -> None:
    lines = [ln.strip() for ln in (ROOT / ".dockerignore").read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    assert lines[0] == "*", "everything out, then what the build needs back in"
    allowed = [ln[1:] for ln in lines if ln.startswith("!")]
    for needed in ("requirements/lock.txt", "libs/sipsec", "deploy/docker/probe.py"):
        assert needed in allowed
    assert not [a for a in allowed if a.startswith((".venv", ".git", "deploy/compose/secrets", "dev-certs"))]


def test_image_names_are_local_and_overridable(compose: dict[str, Any]) -> None:
    for name, spec in compose["services"].items():
        if name in THIRD_PARTY:  # the official image, pinned, overridable (offline: a Debian-built one)
            var, default = THIRD_PARTY[name]
            assert spec["image"] == f"${{{var}:-{default}}}", name
            assert re.fullmatch(r"[a-z0-9_/-]+:v?\d+\.\d+\.\d+", default), f"{name}: {default} is not pinned"
            continue
        target = spec["build"]["target"]
        assert spec["image"] == f"${{SIPSEC_IMAGE_PREFIX:-sipsec-}}{target}:${{SIPSEC_IMAGE_TAG:-dev}}", name


def test_docs_exec_with_password_stdin_keeps_stdin_open() -> None:
    """`docker exec` without -i gives the command no stdin: --password-stdin reads nothing."""
    for doc in (ROOT / "README.md", ROOT / "docs/containers.md"):
        for line in doc.read_text().splitlines():
            if "--password-stdin" in line and re.search(r"\b(docker|kubectl) exec\b", line):
                assert re.search(r"\bexec\s+(-\w*i\w*\b|--interactive)", line), f"{doc.name}: {line}"
