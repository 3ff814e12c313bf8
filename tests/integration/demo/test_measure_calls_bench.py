"""bench/measure_calls.py, run small: sequential and concurrent modes print their figures."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(ROOT / "bench" / "measure_calls.py"), *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)


@pytest.mark.slow
def test_measure_calls_sequential_and_concurrent() -> None:
    proc = _run("3", "dialog-establishing")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "signing policy: dialog-establishing" in proc.stdout
    lines = [ln for ln in proc.stdout.splitlines() if re.match(r"(secured|plain  ): n=3 setup p50=", ln)]
    assert [ln.split(":")[0] for ln in lines] == ["plain  ", "secured", "plain  ", "secured"]
    secured = [int(re.search(r"bytes/call=(\d+)", ln).group(1)) for ln in lines if ln.startswith("secured")]  # type: ignore[union-attr]
    plain = [int(re.search(r"bytes/call=(\d+)", ln).group(1)) for ln in lines if ln.startswith("plain")]  # type: ignore[union-attr]
    assert min(secured) > max(plain) > 0  # the envelope costs bytes
    proc = _run("4", "every-message", "2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert re.search(r"secured, 2 at a time: 4 calls \(setup \+ BYE\) in [\d.]+ s = [\d.]+ calls/s", proc.stdout)


def test_measure_calls_usage_error() -> None:
    proc = _run("3", "sign-nothing")
    assert proc.returncode == 2 and "measure_calls.py" in proc.stderr
