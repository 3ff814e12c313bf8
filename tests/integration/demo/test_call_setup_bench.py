"""bench/call_setup.py, run small: every figure it reports is present and consistent."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]


@pytest.mark.slow
def test_call_setup_bench_reports_latency_bytes_and_throughput() -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "call_setup.py"), "--json", "--calls", "8", "--warmup", "1",
         "--start-rate", "5", "--max-rate", "10", "--trial-s", "1", "--budget-s", "3",
         "--users", "12"],  # random pairs of a small population (the headline's path, not its size)
        cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout)
    assert result["calls"] == 8 and result["signing"] == "every-message"
    # the default: each domain in its own process, the gateways' verification window
    assert result["processes"] == 2 and result["verify_window_ms"] == 16.0 and result["verify_busy_cpu"] == 0.7
    assert result["secured_failed"] == 0 and result["plain_failed"] == 0
    assert 0 < result["plain_p50_ms"] <= result["plain_p95_ms"]
    assert 0 < result["secured_p50_ms"] <= result["secured_p95_ms"]
    assert result["ratio"] == pytest.approx(result["secured_p50_ms"] / result["plain_p50_ms"], rel=1e-2)
    assert result["overhead_ms"] == pytest.approx(result["secured_p50_ms"] - result["plain_p50_ms"], abs=1e-2)
    assert result["secured_bytes"] > result["plain_bytes"] > 1000
    # every message of a secured call is signed and verified: INVITE, 180, 200, ACK, BYE, 200
    assert result["signatures_per_secured_call"] == 6 and result["verifications_per_secured_call"] == 6
    crypto = result["crypto_ms_per_secured_call"]
    assert set(crypto) == {"encapsulate", "decapsulate", "sign", "verify"} and all(v > 0 for v in crypto.values())
    # (the crypto figures are wall-clock time inside the calls and the CPU figure is process time: comparing
    # the two depends on how busy the machine is, so the bench reports both and no test compares them)
    assert result["cpu_ms_per_secured_call"] > result["cpu_ms_per_plain_call"] > 0
    trials = result["trials"]
    assert trials and trials[0]["rate"] == 5 and trials[0]["attempted"] == 5
    assert result["secured_cps"] in [t["rate"] for t in trials if t["passed"]] + [0.0]
    # CPU per call of both processes, and the verification batches, per trial
    assert all(t["cpu_ms_per_call"] > 0 and t["verify_batch_mean"] >= 1 for t in trials if t["answered"])
    # every attempted call was answered or failed for a stated reason
    assert all(t["answered"] + sum(t["failures"].values()) == t["attempted"] for t in trials)
    # ... and split by process: the two add up to the whole
    for t in (t for t in trials if t["answered"]):
        assert set(t["cpu_ms_per_call_by_process"]) == {"atlanta.com + calls", "biloxi.com"}
        assert sum(t["cpu_ms_per_call_by_process"].values()) == pytest.approx(t["cpu_ms_per_call"], abs=0.05)
    held = result["setup_only_trials"]
    assert held and held[0]["rate"] == 5 and held[0]["attempted"] == 5
    assert result["secured_setup_only_cps"] in [t["rate"] for t in held if t["passed"]] + [None]
    assert set(result["bars"]) == {"secured_p50_ms<=25", "overhead_ms<=20", "secured_cps>=100"}


@pytest.mark.slow
def test_call_setup_bench_runs_services_and_gateways_in_four_processes() -> None:
    """``--processes 4``: each domain's services, biloxi.com's gateway, and atlanta.com's gateway
    (with the calls) in processes of their own; the secured calls still go through."""
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "call_setup.py"), "--json", "--processes", "4", "--calls", "3",
         "--warmup", "1", "--start-rate", "5", "--max-rate", "5", "--trial-s", "1", "--budget-s", "2",
         "--no-setup-only", "--one-pair"],
        cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout)
    assert result["processes"] == 4 and result["secured_failed"] == 0 and result["plain_failed"] == 0
    assert result["verifications_per_secured_call"] == 6
    trial = result["trials"][0]
    assert trial["answered"] == trial["attempted"] == 5
    assert set(trial["cpu_ms_per_call_by_process"]) == {
        "atlanta.com gateway + calls", "atlanta.com services", "biloxi.com services", "biloxi.com gateway"}
