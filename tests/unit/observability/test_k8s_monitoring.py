"""k8s/components/monitoring: PodMonitors for every service (job names and the domain label the
rules and dashboards select on, ports that exist), a PrometheusRule carrying exactly the rule
groups of deploy/prometheus (promtool-checked), and the dashboards as a ConfigMap for the Grafana
sidecar; the generated copies are current."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.unit.observability._catalog import DASHBOARD_DIR, ROOT, RULES, promtool

KUBECTL = shutil.which("kubectl") or "/usr/bin/kubectl"
COMPONENT = ROOT / "k8s" / "components" / "monitoring"
SERVICES = ("pkg", "location", "proxy", "gateway", "worker")
#: job sipsec-<name> -> the workload whose pods serve its /metrics
SCRAPED = {**{s: s for s in SERVICES}, "redis": "redis-exporter"}


@cache
def build(overlay: str) -> tuple[dict[str, Any], ...]:
    res = subprocess.run([KUBECTL, "kustomize", str(ROOT / "k8s" / "overlays" / overlay)],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    return tuple(d for d in yaml.safe_load_all(res.stdout) if d)


def test_generated_copies_are_current(tmp_path: Path) -> None:
    res = subprocess.run([sys.executable, str(ROOT / "deploy" / "sync_k8s.py"), "--out", str(tmp_path)],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    for path in [tmp_path / "prometheus-rule.yaml", *sorted((tmp_path / "dashboards").glob("*.json"))]:
        committed = COMPONENT / path.relative_to(tmp_path)
        assert committed.read_bytes() == path.read_bytes(), f"{committed} is stale: run python deploy/sync_k8s.py"
    assert {p.name for p in (COMPONENT / "dashboards").glob("*.json")} == {p.name for p in DASHBOARD_DIR.glob("*.json")}


@pytest.mark.parametrize("overlay", ["atlanta", "biloxi"])
def test_pod_monitors_scrape_every_service_with_job_and_domain(overlay: str) -> None:
    docs = build(overlay)
    deployments = {d["metadata"]["name"]: d for d in docs if d["kind"] in ("Deployment", "StatefulSet")}
    monitors = {d["metadata"]["name"]: d for d in docs if d["kind"] == "PodMonitor"}
    assert set(monitors) == {f"sipsec-{s}" for s in SCRAPED}
    for service, workload in SCRAPED.items():
        mon = monitors[f"sipsec-{service}"]
        assert mon["apiVersion"] == "monitoring.coreos.com/v1"
        assert mon["metadata"]["namespace"] == f"sipsec-{overlay}"
        dep = deployments[workload]
        pod_labels = dep["spec"]["template"]["metadata"]["labels"]
        assert all(pod_labels.get(k) == v for k, v in mon["spec"]["selector"]["matchLabels"].items()), service
        assert pod_labels["sipsec.io/domain"] == f"{overlay}.com"
        (endpoint,) = mon["spec"]["podMetricsEndpoints"]
        ports = {p["name"] for p in dep["spec"]["template"]["spec"]["containers"][0]["ports"]}
        assert endpoint["port"] == "metrics" and "metrics" in ports, service
        assert endpoint["path"] == "/metrics"
        relabel = {r["targetLabel"]: r for r in endpoint["relabelings"]}
        assert relabel["job"]["replacement"] == f"sipsec-{service}"
        assert relabel["domain"]["sourceLabels"] == ["__meta_kubernetes_pod_label_sipsec_io_domain"]


def test_prometheus_rule_carries_the_rule_groups(tmp_path: Path) -> None:
    docs = build("atlanta")
    (rule,) = [d for d in docs if d["kind"] == "PrometheusRule"]
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["spec"]["groups"] == yaml.safe_load(RULES.read_text())["groups"]
    path = tmp_path / "from-k8s.yml"
    path.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    res = subprocess.run([promtool(), "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr


def test_dashboards_config_map_is_labelled_for_the_grafana_sidecar() -> None:
    docs = build("biloxi")
    (cm,) = [d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "sipsec-grafana-dashboards"]
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert set(cm["data"]) == {p.name for p in DASHBOARD_DIR.glob("*.json")}
    for name, text in cm["data"].items():
        assert json.loads(text) == json.loads((DASHBOARD_DIR / name).read_text())
