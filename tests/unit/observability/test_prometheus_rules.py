"""deploy/prometheus: the rules pass `promtool check rules` and their unit tests (`promtool test
rules`, synthetic series for every burn-rate and plain alert); every alert is documented in the
SRE runbook; the scrape configuration passes `promtool check config` and its targets file
generator reads `sipsec up --json`."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from tests.unit.observability._catalog import (
    ROOT,
    RULE_TESTS,
    RULES,
    defined_metrics,
    metrics_in,
    promtool,
)

SRE_DOC = ROOT / "docs" / "sre.md"
SLOS = ("SipsecPkgAvailability", "SipsecPkgGetPrivateKeyLatency", "SipsecCallSetup")


def _rules() -> list[dict[str, Any]]:
    return [r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]


def test_promtool_check_rules() -> None:
    res = subprocess.run([promtool(), "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"SUCCESS: {len(_rules())} rules found" in res.stdout


def test_promtool_test_rules_with_synthetic_series() -> None:
    res = subprocess.run([promtool(), "test", "rules", str(RULE_TESTS)], capture_output=True, text=True,
                         timeout=120, cwd=RULE_TESTS.parent)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "SUCCESS" in res.stdout


def test_rule_tests_cover_every_alert() -> None:
    tested = {t["alertname"] for case in yaml.safe_load(RULE_TESTS.read_text())["tests"]
              for t in case.get("alert_rule_test", []) if t.get("exp_alerts")}
    alerts = {r["alert"] for r in _rules() if "alert" in r}
    assert alerts == tested, f"alerts that no test makes fire: {sorted(alerts - tested)}"


def test_burn_rate_alerts_follow_the_multiwindow_multi_burn_rate_table() -> None:
    """Google SRE workbook: 1h/5m at 14.4x and 6h/30m at 6x page; 1d/2h at 3x and 3d/6h at 1x ticket."""
    by_name = {r["alert"]: r for r in _rules() if "alert" in r}
    for slo in SLOS:
        fast, slow = by_name[f"{slo}FastBurn"], by_name[f"{slo}SlowBurn"]
        assert fast["labels"]["severity"] == "page" and slow["labels"]["severity"] == "ticket"
        for rule, pairs in ((fast, (("1h", "5m", "14.4"), ("6h", "30m", "6"))),
                            (slow, (("1d", "2h", "3"), ("3d", "6h", "1")))):
            expr = " ".join(rule["expr"].split())
            for long, short, factor in pairs:
                assert re.search(rf"ratio_rate{long} > \({factor} \* [0-9.]+\) and \S+ratio_rate{short} > \({factor} \*",
                                 expr), (rule["alert"], long, short)


def test_every_rule_uses_only_metrics_the_code_defines() -> None:
    known = defined_metrics() | {r["record"] for r in _rules() if "record" in r}
    for rule in _rules():
        used = metrics_in(rule["expr"]) | set(re.findall(r"\b(sipsec:[a-z0-9_:]+)\b", rule["expr"]))
        assert used, rule
        assert used <= known, f"{rule.get('alert') or rule.get('record')}: unknown {sorted(used - known)}"


def test_every_alert_has_a_runbook_section() -> None:
    doc = SRE_DOC.read_text()
    anchors = {re.sub(r"[^a-z0-9 -]", "", h.strip().lower()).replace(" ", "-")
               for h in re.findall(r"^#+ (.+)$", doc, flags=re.M)}
    for rule in _rules():
        if "alert" not in rule:
            continue
        assert rule["labels"]["severity"] in {"page", "ticket"}, rule["alert"]
        runbook = rule["annotations"]["runbook"]
        assert runbook.startswith("docs/sre.md#"), rule["alert"]
        assert runbook.split("#", 1)[1] in anchors, f"{rule['alert']}: no section {runbook} in docs/sre.md"
        assert rule["alert"] in doc


def test_scrape_configuration_passes_promtool(tmp_path: Path) -> None:
    folder = tmp_path / "prometheus"
    shutil.copytree(ROOT / "deploy" / "prometheus", folder)
    res = subprocess.run([promtool(), "check", "config", str(folder / "prometheus.yml")],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr
    config = yaml.safe_load((folder / "prometheus.yml").read_text())
    jobs = {c["job_name"] for c in config["scrape_configs"]}
    assert jobs == {f"sipsec-{s}" for s in ("pkg", "location", "proxy", "gateway", "worker")}


UP_JSON = {"state_dir": "/tmp/x", "services": [
    {"domain": "atlanta.com", "service": "redis", "address": "127.0.0.2:33239", "ports": {"redis": 33239}},
    {"domain": "shared", "service": "worker", "address": "127.0.0.1", "ports": {"grpc": 4, "metrics": 5}},
    {"domain": "atlanta.com", "service": "pkg", "address": "127.0.0.2", "ports": {"grpc": 6, "metrics": 7}},
    {"domain": "biloxi.com", "service": "pkg", "address": "127.0.0.3", "ports": {"grpc": 8, "metrics": 9}},
    {"domain": "biloxi.com", "service": "gateway", "address": "127.0.0.3", "ports": {"http": 10, "sip": 11}},
    {"domain": "atlanta.com", "service": "gateway", "address": "127.0.0.2", "ports": {"http": 12, "metrics": 13}},
]}


def test_up_targets_writes_one_file_per_job(tmp_path: Path) -> None:
    src = tmp_path / "up.json"
    src.write_text(json.dumps(UP_JSON) + "\nsipsec up: ready\n")
    res = subprocess.run([sys.executable, str(ROOT / "deploy" / "prometheus" / "up_targets.py"), str(src), str(tmp_path / "t")],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    got = {p.stem: json.loads(p.read_text()) for p in (tmp_path / "t").glob("*.json")}
    assert set(got) == {"pkg", "location", "proxy", "gateway", "worker"}
    assert got["pkg"] == [{"labels": {"domain": "atlanta.com"}, "targets": ["127.0.0.2:7"]},
                          {"labels": {"domain": "biloxi.com"}, "targets": ["127.0.0.3:9"]}]
    # a gateway's own metrics port when it has one, else its control API port
    assert got["gateway"] == [{"labels": {"domain": "biloxi.com"}, "targets": ["127.0.0.3:10"]},
                              {"labels": {"domain": "atlanta.com"}, "targets": ["127.0.0.2:13"]}]
    assert got["worker"] == [{"labels": {"domain": "shared"}, "targets": ["127.0.0.1:5"]}]
    assert got["location"] == []


def test_up_targets_refuses_input_that_is_not_up_json(tmp_path: Path) -> None:
    src = tmp_path / "up.json"
    src.write_text("sipsec up: ready\n")
    res = subprocess.run([sys.executable, str(ROOT / "deploy" / "prometheus" / "up_targets.py"), str(src), str(tmp_path / "t")],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 1 and "not the JSON of `sipsec up --json`" in res.stderr
