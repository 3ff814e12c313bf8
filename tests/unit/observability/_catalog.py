"""What the observability tests know: the metric names the code defines, promtool, the panels."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

__all__ = ["DASHBOARD_DIR", "PROMTOOL", "ROOT", "RULES", "RULE_TESTS", "dashboards", "defined_metrics",
           "metrics_in", "panel_targets", "promtool"]

ROOT = Path(__file__).resolve().parents[3]
RULES = ROOT / "deploy" / "prometheus" / "rules" / "sipsec.rules.yml"
RULE_TESTS = ROOT / "deploy" / "prometheus" / "tests" / "sipsec.rules.test.yml"
DASHBOARD_DIR = ROOT / "deploy" / "grafana" / "dashboards"
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"

_DEFINED = re.compile(r'"(sipsec_[a-z0-9_]+)"')
_HISTOGRAM_SUFFIXES = ("_bucket", "_count", "_sum")


def promtool() -> str:
    """The promtool executable (Debian's ``prometheus`` package; ``make install`` adds it)."""
    if not Path(PROMTOOL).exists():
        raise RuntimeError("promtool is not installed (run `make install`: Debian package prometheus)")
    return PROMTOOL


@cache
def defined_metrics() -> frozenset[str]:
    """Every metric family name the library and services define, with histogram series names."""
    names: set[str] = set()
    for folder in ("libs/sipsec", "services"):
        for path in (ROOT / folder).rglob("*.py"):
            if "_gen" in path.parts:
                continue
            names.update(_DEFINED.findall(path.read_text()))
    return frozenset(names | {n + s for n in names for s in _HISTOGRAM_SUFFIXES} | {"up"})


def metrics_in(expr: str) -> set[str]:
    """Metric names selected by a PromQL expression (names followed by a selector or a range)."""
    return set(re.findall(r"\b(sipsec_[a-z0-9_]+)\s*[{\[]", expr)) | (
        {"up"} if re.search(r"\bup\s*\{", expr) else set())


def panel_targets(board: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """``(panel title, expr)`` for every target of every panel of a dashboard JSON model."""
    for panel in board["panels"]:
        for target in panel.get("targets") or []:
            yield panel["title"], target["expr"]


def dashboards() -> dict[str, dict[str, Any]]:
    """The committed dashboards, by file name."""
    return {p.name: json.loads(p.read_text()) for p in sorted(DASHBOARD_DIR.glob("*.json"))}
