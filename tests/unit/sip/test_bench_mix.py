"""The parse benchmark's workload, checked without a clock: the timed bar itself is
``bench/sip_parse.py --check`` (a timed assertion does not belong in the test suite)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from sipsec.sip import parse_message

BENCH = Path(__file__).resolve().parents[3] / "bench" / "sip_parse.py"


def test_the_benchmark_mix_round_trips_and_its_calls_are_distinct() -> None:
    spec = importlib.util.spec_from_file_location("sip_parse_bench", BENCH)
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    messages = bench.calls(3)
    assert len(messages) == 3 * len(bench.MIX) and bench.BAR == 20_000
    for data in messages:
        assert parse_message(data).to_bytes() == data
    call_ids = {parse_message(data).call_id for data in messages}
    assert len(call_ids) == 3  # every call of the run has its own Call-ID (no cache replay)
