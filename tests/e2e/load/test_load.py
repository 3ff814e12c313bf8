"""``sipsec load`` as a real command: against the embedded topology (one and two generator
processes) and against a running ``sipsec up`` (Redis stores, crypto-worker, the control API's bulk
logins, ``sipsec-pkg user import``); the report's data, thresholds as the exit status, and the HTML
page rendered by headless Chromium."""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.upctl import SIPSEC, UpProcess

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def load(*args: str, timeout: float = 85.0) -> tuple[int, dict[str, Any], str]:
    proc = subprocess.run([SIPSEC, "load", "--json", *args], capture_output=True, text=True, timeout=timeout,
                          check=False)
    try:
        doc = json.loads(proc.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        pytest.fail(f"no JSON report (exit {proc.returncode}):\n{proc.stdout}\n{proc.stderr[-3000:]}")
    return proc.returncode, doc, proc.stderr


def assert_calls_went_through(doc: dict[str, Any], calls: int) -> None:
    assert doc["offered"] == doc["started"] == calls, doc["failures"]
    assert doc["completed"] == calls and doc["failed"] == 0, doc["failures"]
    assert doc["answered"] == calls  # every callee phone answered
    assert doc["setup_ms"]["p50"] is not None and 0 < doc["setup_ms"]["p50"] <= doc["setup_ms"]["p99"]
    assert sum(r["completed"] for r in doc["timeline"]) == calls
    assert doc["processes"] and all(s["processes"] for s in doc["processes"])


def render(html: Path) -> str:
    """The DOM of the page after headless Chromium ran its scripts."""
    assert CHROMIUM is not None
    proc = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom",
                           "--virtual-time-budget=15000", html.as_uri()],
                          capture_output=True, text=True, timeout=60, check=False)
    return proc.stdout


def test_embedded_topology_random_pairs_report_and_thresholds(tmp_path: Path) -> None:
    # 100 calls between random pairs of 8 users per domain (rates sized for a shared 2-core machine);
    # one threshold met, one not: exit 1
    code, doc, err = load("--users", "8", "--rate", "4", "--duration", "25", "--report", str(tmp_path),
                          "--threshold", "failed<1%", "--threshold", "p99<0.01ms")
    assert_calls_went_through(doc, 100)
    assert doc["target"] == "embedded" and doc["pairs"] == "random caller/callee pairs"
    assert [(v["threshold"], v["ok"]) for v in doc["thresholds"]] == [("failed<1%", True), ("p99<0.01ms", False)]
    assert code == 1 and not doc["ok"], err
    assert json.loads((tmp_path / "report.json").read_text())["completed"] == 100
    if CHROMIUM is None:
        pytest.skip("chromium is not installed (scripts/install-system-deps.sh installs it)")
    dom = render(tmp_path / "report.html")
    assert re.search(r"<td id=\"completed\">100</td>", dom)
    assert dom.count('class="main-svg"') >= 1
    # the plots drew lines with data: at least one per plot with more than one point
    lines = re.findall(r'class="js-line"[^>]* d="M([^"]+)"', dom)
    assert sum(1 for d in lines if "L" in d) >= 6, f"{len(lines)} lines drawn"


def test_two_generator_processes(tmp_path: Path) -> None:
    code, doc, err = load("--users", "6", "--procs", "2", "--rate", "2", "--duration", "25",
                          "--threshold", "failed<=0")
    assert code == 0, err
    assert_calls_went_through(doc, 50)
    assert {"generator 0", "generator 1"} <= {label for s in doc["processes"] for label in s["processes"]}


def test_sipsec_up_held_calls(tmp_path: Path) -> None:
    """Against a running ``sipsec up`` (given by the JSON its --json printed): users provisioned with
    ``sipsec-pkg user import``, logged in with ``POST /v1/users/bulk``; calls held 2 s each, at most 8 at once."""
    up = UpProcess("--json", "--grace", "8", "--state-dir", str(tmp_path / "state"))
    try:
        ready = up.ready(timeout=90)
        (tmp_path / "up.json").write_text(json.dumps(ready))
        code, doc, err = load("--up-json", str(tmp_path / "up.json"), "--users", "6", "--profile", "hold",
                              "--concurrent", "8", "--hold", "2", "--rate", "4", "--duration", "12",
                              "--threshold", "failed<=0", timeout=150)
        assert code == 0, err
        assert doc["target"] == "up" and doc["failed"] == 0, doc["failures"]
        assert doc["completed"] >= 20  # up to 8 held at a time, each 2 s + setup, for 12 s
        assert 4 <= doc["concurrent_calls_held"] <= 8
        assert set(doc["rss_kib_per_held_call"]) >= {"atlanta.com/gateway", "biloxi.com/proxy"}
    finally:
        assert up.stop(signal.SIGINT) == 0, "".join(up.err)
