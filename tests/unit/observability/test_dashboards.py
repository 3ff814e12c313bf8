"""deploy/grafana: the generator reproduces the committed JSON byte for byte; every panel query
selects a sipsec scrape job through the domain and instance variables, uses only metrics the
code defines, and parses as PromQL (promtool)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

from tests.unit.observability._catalog import (
    DASHBOARD_DIR,
    ROOT,
    dashboards,
    defined_metrics,
    metrics_in,
    panel_targets,
    promtool,
)

EXPECTED = {"sipsec-pkg.json", "sipsec-calls.json", "sipsec-proxy-location.json"}


def test_regenerating_gives_the_committed_bytes(tmp_path: Path) -> None:
    res = subprocess.run([sys.executable, str(ROOT / "deploy" / "grafana" / "dashboards.py"), "--out", str(tmp_path)],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    made = {p.name: p.read_bytes() for p in tmp_path.glob("*.json")}
    committed = {p.name: p.read_bytes() for p in DASHBOARD_DIR.glob("*.json")}
    assert set(made) == set(committed) == EXPECTED
    for name, data in made.items():
        assert data == committed[name], f"{name} is stale: run python deploy/grafana/dashboards.py"


def test_every_dashboard_has_the_domain_and_instance_variables() -> None:
    for name, board in dashboards().items():
        variables = {v["name"]: v for v in board["templating"]["list"]}
        assert set(variables) == {"datasource", "domain", "instance"}, name
        assert variables["datasource"]["query"] == "prometheus"
        for var in ("domain", "instance"):
            v = variables[var]
            assert v["type"] == "query" and v["includeAll"] and v["multi"] and v["allValue"] == ".*", (name, var)
            assert v["query"].startswith("label_values(up{job=~") and v["query"].endswith(f", {var})"), (name, var)
        ids = [p["id"] for p in board["panels"]]
        assert len(ids) == len(set(ids)), f"{name}: panel ids repeat"
        assert board["uid"] == name.removesuffix(".json")


def test_every_panel_query_selects_a_job_through_the_variables() -> None:
    count = 0
    for name, board in dashboards().items():
        for panel in board["panels"]:
            if panel["type"] == "row":
                continue
            assert panel.get("targets"), f"{name}: {panel['title']} has no query"
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        for title, expr in panel_targets(board):
            count += 1
            assert 'job="sipsec-' in expr, (name, title)
            assert 'domain=~"$domain' in expr and 'instance=~"$instance"' in expr, (name, title)
            for selector in expr.split("{")[1:]:
                body = selector.split("}")[0]
                if "job=" in body:
                    assert "$domain" in body and "$instance" in body, (name, title, body)
    assert count >= 40


def test_panels_use_only_metrics_the_code_defines() -> None:
    known = defined_metrics()
    for name, board in dashboards().items():
        for title, expr in panel_targets(board):
            used = metrics_in(expr)
            assert used, (name, title, expr)
            assert used <= known, f"{name}: {title}: unknown metric(s) {sorted(used - known)}"


def test_panel_queries_parse_as_promql(tmp_path: Path) -> None:
    """Each query, variables resolved as Grafana does for "All", as a recording rule: promtool parses it."""
    rules = []
    for name, board in dashboards().items():
        for i, (_, expr) in enumerate(panel_targets(board)):
            resolved = expr.replace("$__rate_interval", "1m").replace("$domain", ".*").replace("$instance", ".*")
            rules.append({"record": f"panel:{name.removesuffix('.json').replace('-', '_')}:{i}", "expr": resolved})
    path = tmp_path / "panels.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "panels", "rules": rules}]}))
    res = subprocess.run([promtool(), "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"SUCCESS: {len(rules)} rules found" in res.stdout
