"""bench/flood.py, run small against ``sipsec up``: the JSON it reports is complete and
consistent, and a legitimate UA's signed REGISTERs are answered while the flood runs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[3]
RATE, DURATION_S, SOURCES = 300, 3, 16


def test_a_short_flood_reports_latency_responses_and_memory() -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "flood.py"), "--json", "--rate", str(RATE),
         "--duration-s", str(DURATION_S), "--sources", str(SOURCES), "--settle-s", "4", "--baseline-s", "1"],
        cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    assert len(lines) == 1, "--json prints one JSON object"
    r = json.loads(lines[0])
    assert (r["rate"], r["duration_s"], r["sources"]) == (RATE, DURATION_S, SOURCES)
    # the flood went out, paced: every message of the plan, from loopback only
    assert r["flood_sent"] == RATE * DURATION_S and r["flood_send_errors"] == 0
    assert r["target"].startswith("127.0.0.2:")
    # the legitimate UA registered during the flood, and every REGISTER was answered 2xx
    assert r["legit_registers"] >= 20
    assert r["legit_answered"] == r["legit_registers"] and r["legit_failures"] == 0, r["legit"]
    assert 0 < r["legit_p50_ms"] <= r["legit_p99_ms"]
    assert r["legit"]["before_flood"]["registers"] >= 5
    # responses at the spoofed Via sink, per INVITE, and how they add up
    flood = r["flood"]
    assert r["via_responses"] == sum(flood["via_responses_at"].values())
    assert r["via_responses_per_invite"] == pytest.approx(r["via_responses"] / r["flood_sent"], abs=1e-3)
    assert flood["invites_answered_at_via"] <= r["flood_sent"]
    assert sum(flood["statuses"].values()) == r["via_responses"] + flood["responses_at_sources"] - flood["not_sip"]
    assert flood["proxy_cpu_s_during_flood"] > 0
    # the proxy's memory: before <= peak, after measured, the 1.2x verdict matches the ratio
    rss = r["proxy_rss_mib"]
    assert 0 < rss["before"] <= rss["peak"] and 0 < rss["after"] <= rss["peak"]
    assert r["rss_after_over_before"] == pytest.approx(rss["after"] / rss["before"], abs=0.01)
    assert r["rss_after_within_1_2x"] == (r["rss_after_over_before"] <= 1.2)
    assert r["proxy_alive"] and r["sipsec_up_alive"]


def test_the_flood_is_bounded_and_loopback_only() -> None:
    for args, message in ((["--rate", "50000"], "--rate must be in"),
                          (["--duration-s", "1000"], "--duration-s must be in"),
                          (["--sink-host", "192.0.2.1"], "is not a 127.0.0.0/8 address"),
                          (["--source-base", "127.255.255.250", "--sources", "64"], "is not a 127.0.0.0/8 address")):
        proc = subprocess.run([sys.executable, str(ROOT / "bench" / "flood.py"), *args],
                              cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert proc.returncode == 2 and message in proc.stderr, (args, proc.stderr)
