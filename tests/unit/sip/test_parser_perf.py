"""The DESIGN performance bar: parse + serialise >= 20,000 messages per CPU-second."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[3] / "bench" / "sip_parse.py"


@pytest.mark.slow
def test_parse_serialise_rate_meets_the_bar() -> None:
    spec = importlib.util.spec_from_file_location("sip_parse_bench", BENCH)
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    per_cpu_second, _wall = bench.run(1.5)
    assert per_cpu_second >= 20_000, per_cpu_second
