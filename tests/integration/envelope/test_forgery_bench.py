"""bench/forgery.py, run small: every figure it reports is present and consistent, progress on stderr."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def test_forgery_bench_json_shape() -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "forgery.py"), "--json", "--genuine", "6", "--forged", "1,3",
         "--rounds", "1"],
        capture_output=True, text=True, timeout=180, cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr
    figures = json.loads(proc.stdout)  # stdout is exactly the JSON object
    assert "round 1/1" in proc.stderr and "forged" in proc.stderr
    assert figures["genuine"] == 6 and figures["rounds"] == 1 and figures["bar_ratio_2"] == 1.2
    assert "max_batch=16" in figures["engine"]
    for n in (0, 1, 3):
        assert figures[f"cpu_ms_{n}_forged"] > 0
        assert abs(figures[f"cpu_ms_per_genuine_{n}_forged"] - figures[f"cpu_ms_{n}_forged"] / 6) < 0.01
        assert abs(figures[f"ratio_{n}"] - figures[f"cpu_ms_{n}_forged"] / figures["cpu_ms_0_forged"]) < 0.01
        batches = figures[f"batches_{n}_forged"]  # every verification went through the lane's batches
        assert batches["count"] >= 1 and 1 <= batches["largest"] <= 16
        assert abs(batches["mean"] * batches["count"] - (6 + n)) < 0.1
    assert figures["ratio_0"] == 1.0
