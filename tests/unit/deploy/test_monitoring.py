"""Monitoring as shipped in docker-compose.yml, checked without a Docker engine: Prometheus scrapes
every service at its real metrics port over a network they share (never a data network), with
the rules mounted read-only; one Redis exporter per domain, connecting as a least-privilege ACL
user whose rules work on a real redis-server as the compose Redis builds them; Grafana's
provisioning names the data source the dashboards resolve to and the folder their JSON is in.
tests/compose runs the same file on a real engine and checks the targets, rules and queries live.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.exceptions
import yaml

from tests.conftest import free_port
from tests.unit.deploy.test_redis_access import COMPOSE_EXTRA
from tests.unit.observability._catalog import RULES, dashboards, promtool

ROOT = Path(__file__).resolve().parents[3]
PROMETHEUS_CONFIG = ROOT / "deploy" / "prometheus" / "compose.yml"
UP_CONFIG = ROOT / "deploy" / "prometheus" / "prometheus.yml"
PROVISIONING = ROOT / "deploy" / "grafana" / "provisioning"
DOMAINS = {"atlanta": "atlanta.com", "biloxi": "biloxi.com"}
#: the environment variable that sets each sipsec service's metrics port
METRICS_PORT = {"pkg": "SIPSEC_PKG_METRICS_PORT", "location": "SIPSEC_LOCATION_METRICS_PORT",
                "proxy": "SIPSEC_PROXY_METRICS_PORT", "gateway": "SIPSEC_GATEWAY_METRICS_PORT",
                "worker": "SIPSEC_WORKER_METRICS_PORT"}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="module")
def config() -> dict[str, Any]:
    data = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    assert isinstance(data, dict)
    return data


def _mounts(spec: dict[str, Any]) -> dict[str, str]:
    """container path -> the volume entry that mounts it"""
    return {str(v).split(":")[1]: str(v) for v in spec.get("volumes", [])}


def _targets(config: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """``host:port`` -> (job, domain label) over every static target of the configuration"""
    out: dict[str, tuple[str, str]] = {}
    for job in config["scrape_configs"]:
        for group in job["static_configs"]:
            for target in group["targets"]:
                assert target not in out, f"{target} scraped twice"
                out[target] = (job["job_name"], group["labels"]["domain"])
    return out


def test_prometheus_config_is_valid_and_loads_the_rules(config: dict[str, Any], tmp_path: Path) -> None:
    """promtool accepts the configuration (with its rules at the path compose mounts them)."""
    (tmp_path / "rules").mkdir()
    shutil.copy(RULES, tmp_path / "rules" / RULES.name)
    local = dict(config, rule_files=[str(tmp_path / "rules" / "*.yml")])
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(local))
    res = subprocess.run([promtool(), "check", "config", str(tmp_path / "prometheus.yml")],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "SUCCESS: 1 rule files found" in res.stdout + res.stderr
    assert config["rule_files"] == ["/etc/prometheus/rules/*.yml"]


def test_every_service_is_scraped_at_its_metrics_port_with_its_domain(compose: dict[str, Any],
                                                                      config: dict[str, Any]) -> None:
    """Each long-running sipsec service and each exporter is a target exactly once, under the job
    name the rules and dashboards (and `sipsec up`'s configuration) use, at the port it serves
    /metrics on, labelled with its domain; nothing else is a target."""
    services = compose["services"]
    targets = _targets(config)
    expected: dict[str, tuple[str, str]] = {}
    for name, spec in services.items():
        target = (spec.get("build") or {}).get("target")
        if target in METRICS_PORT and spec.get("restart") != "no":
            port = spec["environment"][METRICS_PORT[target]]
            short = name.rsplit("-", 1)[1]
            expected[f"{name}:{port}"] = (f"sipsec-{target}", DOMAINS.get(short, "shared"))
        elif name.startswith("redis-exporter-"):
            listen = next(a for a in spec["command"] if a.startswith("--web.listen-address="))
            expected[f"{name}:{listen.rsplit(':', 1)[1]}"] = ("sipsec-redis", DOMAINS[name.rsplit("-", 1)[1]])
    assert len(expected) == 2 * 4 + 2 + 2  # 4 services per domain, 2 workers, 2 exporters
    assert targets == expected
    up_jobs = {j["job_name"] for j in yaml.safe_load(UP_CONFIG.read_text())["scrape_configs"]}
    assert {j for j, _ in targets.values()} == up_jobs | {"sipsec-redis"}


def test_prometheus_reaches_every_target_and_no_redis(compose: dict[str, Any], config: dict[str, Any]) -> None:
    services = compose["services"]
    prometheus = services["prometheus"]
    nets = set(prometheus["networks"])
    assert not [n for n in nets if n.endswith("-data")], "Prometheus on a data network could reach a Redis"
    for target in _targets(config):
        host = target.rsplit(":", 1)[0]
        assert nets & set(services[host]["networks"]), f"Prometheus shares no network with {host}"
    for name, spec in services.items():
        if name.startswith("redis-") and not name.startswith("redis-exporter-"):
            assert not nets & set(spec["networks"]), f"Prometheus can reach {name}"
    # the monitoring network: Prometheus, the exporters and Grafana, no sipsec service
    on_monitoring = {n for n, s in services.items() if "monitoring" in s.get("networks", [])}
    assert on_monitoring == {"prometheus", "grafana", "redis-exporter-atlanta", "redis-exporter-biloxi"}
    for short in DOMAINS:
        assert set(services[f"redis-exporter-{short}"]["networks"]) == {f"{short}-data", "monitoring"}


def test_prometheus_mounts_its_configuration_and_rules_read_only(compose: dict[str, Any]) -> None:
    spec = compose["services"]["prometheus"]
    mounts = _mounts(spec)
    assert mounts["/etc/prometheus/prometheus.yml"] == "./deploy/prometheus/compose.yml:/etc/prometheus/prometheus.yml:ro"
    assert mounts["/etc/prometheus/rules"] == "./deploy/prometheus/rules:/etc/prometheus/rules:ro"
    assert mounts["/prometheus"] == "prometheus-data:/prometheus"  # its time series on a named volume
    assert "--config.file=/etc/prometheus/prometheus.yml" in spec["command"]
    assert "--storage.tsdb.path=/prometheus" in spec["command"]
    assert spec["ports"] == ["127.0.0.1:${SIPSEC_PROMETHEUS_PORT:-9090}:9090"]


def test_grafana_runs_only_under_its_profile_without_anonymous_access(compose: dict[str, Any]) -> None:
    spec = compose["services"]["grafana"]
    assert spec["profiles"] == ["grafana"]
    assert not any("profiles" in s for n, s in compose["services"].items() if n != "grafana")
    env = spec["environment"]
    assert env["GF_AUTH_ANONYMOUS_ENABLED"] == "false" and env["GF_USERS_ALLOW_SIGN_UP"] == "false"
    assert env["GF_SECURITY_ADMIN_PASSWORD__FILE"] == "/run/secrets/grafana_admin_password"
    assert "GF_SECURITY_ADMIN_PASSWORD" not in env
    assert spec["secrets"] == ["grafana_admin_password"]
    assert spec["depends_on"] == {"prometheus": {"condition": "service_healthy"}}
    assert spec["ports"] == ["127.0.0.1:${SIPSEC_GRAFANA_PORT:-3000}:3000"]


def test_grafana_provisioning_names_the_datasource_the_dashboards_use(compose: dict[str, Any]) -> None:
    """The dashboards select their data source through the variable ``datasource`` of type
    prometheus, which starts on the default data source: the provisioning's only default must
    be a Prometheus, at the compose Prometheus's name and port, on a network Grafana shares."""
    spec = compose["services"]["grafana"]
    mounts = _mounts(spec)
    assert mounts[env_dir := spec["environment"]["GF_PATHS_PROVISIONING"]] == \
        f"./deploy/grafana/provisioning:{env_dir}:ro"
    sources = [d for f in sorted((PROVISIONING / "datasources").glob("*.yml"))
               for d in yaml.safe_load(f.read_text())["datasources"]]
    (default,) = [d for d in sources if d.get("isDefault")]
    assert default["type"] == "prometheus" and default["access"] == "proxy" and default["editable"] is False
    host, port = re.fullmatch(r"http://([a-z0-9-]+):(\d+)", default["url"]).groups()  # type: ignore[union-attr]
    prometheus = compose["services"][host]
    assert f"--web.listen-address=:{port}" in prometheus["command"]
    assert set(spec["networks"]) & set(prometheus["networks"])
    assert default["jsonData"]["timeInterval"] == yaml.safe_load(PROMETHEUS_CONFIG.read_text())["global"]["scrape_interval"]
    for name, board in dashboards().items():
        (var,) = [v for v in board["templating"]["list"] if v["type"] == "datasource"]
        assert var["query"] == default["type"], name
        refs = {(t["datasource"]["type"], t["datasource"]["uid"]) for p in board["panels"] for t in p.get("targets") or []}
        assert refs == {(default["type"], "${" + var["name"] + "}")}, name


def test_grafana_provisioning_loads_the_dashboards_folder(compose: dict[str, Any]) -> None:
    spec = compose["services"]["grafana"]
    (provider,) = [p for f in sorted((PROVISIONING / "dashboards").glob("*.yml"))
                   for p in yaml.safe_load(f.read_text())["providers"]]
    path = provider["options"]["path"]
    assert _mounts(spec)[path] == f"./deploy/grafana/dashboards:{path}:ro"
    assert list((ROOT / "deploy" / "grafana" / "dashboards").glob("*.json"))
    assert provider["type"] == "file" and provider["allowUiUpdates"] is False
    # the same folder as the Kubernetes ConfigMap's, for the Grafana sidecar
    k8s = yaml.safe_load((ROOT / "k8s" / "components" / "monitoring" / "kustomization.yaml").read_text())
    (cm,) = k8s["configMapGenerator"]
    assert provider["folder"] == cm["options"]["annotations"]["grafana_folder"]


# --------------------------------------------------------------------------- the ACL users, live


def _compose_redis(compose: dict[str, Any], tmp: Path) -> tuple[subprocess.Popen[bytes], int, dict[str, str]]:
    """The compose Redis's own start script, run for real on a free loopback port (its secrets
    and /data under ``tmp``): the ACL file it writes is the one the test connects through."""
    spec = compose["services"]["redis-atlanta"]
    secrets, data = tmp / "secrets", tmp / "data"
    secrets.mkdir()
    data.mkdir()
    passwords = {u: os.urandom(24).hex() for u in ("pkg", "location", "gateway", *COMPOSE_EXTRA)}
    for user, password in passwords.items():
        (secrets / f"atlanta_redis_{user}_password").write_text(password + "\n")
    port = free_port()
    script = (spec["command"][0].replace("$$", "$").replace("/run/secrets", str(secrets)).replace("/data", str(data))
              .replace("exec redis-server", f"exec redis-server --port {port} --bind 127.0.0.1"))
    env = {"PATH": os.environ["PATH"], **{k: str(v) for k, v in spec["environment"].items()}}
    proc = subprocess.Popen(["/bin/sh", "-ec", script], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 15
    while True:
        try:
            redis.Redis(port=port, username="pkg", password=passwords["pkg"], socket_timeout=1).ping()
            return proc, port, passwords
        except redis.exceptions.ConnectionError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"the compose Redis script did not start redis-server (exit {proc.poll()})")
            time.sleep(0.1)


def test_exporter_and_inspect_users_do_their_job_and_nothing_else(compose: dict[str, Any], tmp_path: Path) -> None:
    """What redis_exporter 1.45 runs per scrape works as ``exporter`` (but SLOWLOG GET), and no key
    or value is within its reach; ``inspect`` counts keys and reads none."""
    proc, port, passwords = _compose_redis(compose, tmp_path)
    try:
        pkg = redis.Redis(port=port, username="pkg", password=passwords["pkg"], decode_responses=True)
        pkg.hset("sipsec:pkg:atlanta.com:users", "sip:alice@atlanta.com", '{"verifier": "scrypt$x"}')
        pkg.set("sipsec:pkg:atlanta.com:session:t1", "s", px=60_000)
        exporter = redis.Redis(port=port, username="exporter", password=passwords["exporter"], decode_responses=True)
        assert exporter.ping()
        exporter.client_setname("redis_exporter")
        assert "redis_version" in exporter.info("all") and exporter.info()["db0"]["keys"] == 2
        assert exporter.config_get("*")["maxmemory"] == str(256 * 1024 * 1024)
        exporter.execute_command("LATENCY", "LATEST")
        assert exporter.slowlog_len() >= 0
        for denied in (("SLOWLOG", "GET", "1"), ("GET", "sipsec:pkg:atlanta.com:session:t1"),
                       ("HGETALL", "sipsec:pkg:atlanta.com:users"), ("SCAN", "0"), ("KEYS", "*"),
                       ("CONFIG", "SET", "maxmemory", "1"), ("CLIENT", "LIST"), ("ACL", "LIST"), ("MONITOR",),
                       ("SET", "sipsec:pkg:x", "y"), ("FLUSHALL",)):
            with pytest.raises(redis.exceptions.NoPermissionError):
                exporter.execute_command(*denied)
        inspect = redis.Redis(port=port, username="inspect", password=passwords["inspect"], decode_responses=True)
        assert inspect.hlen("sipsec:pkg:atlanta.com:users") == 1
        assert list(inspect.scan_iter("sipsec:pkg:*")) and inspect.pttl("sipsec:pkg:atlanta.com:session:t1") > 0
        for denied in (("GET", "sipsec:pkg:atlanta.com:session:t1"), ("HGETALL", "sipsec:pkg:atlanta.com:users"),
                       ("HGET", "sipsec:pkg:atlanta.com:users", "sip:alice@atlanta.com"), ("DEL", "sipsec:pkg:x"),
                       ("CONFIG", "GET", "*"), ("SLOWLOG", "GET", "1")):
            with pytest.raises(redis.exceptions.NoPermissionError):
                inspect.execute_command(*denied)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
