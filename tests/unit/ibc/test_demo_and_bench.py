"""The `sipsec demo` walk-through and the bench/ibc.py benchmark, run with one repetition."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
from sipsec import ibc

ROOT = Path(__file__).resolve().parents[3]


def test_demo_json(capsys: pytest.CaptureFixture[str]) -> None:
    from sipsec_cli.demo import run_demo

    assert run_demo(json_output=True, repeat=1) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["ok"] is True and doc["suite_id"] == ibc.SUITE_ID.decode()
    names = [s["name"] for s in doc["steps"]]
    assert names == [
        "setup",
        "extract",
        "encapsulate",
        "decapsulate",
        "sign",
        "verify",
        "tamper",
        "threshold",
    ]
    enc = next(s for s in doc["steps"] if s["name"] == "encapsulate")
    assert enc["thesis_ms"] == 90.0 and enc["median_ms"] > 0 and enc["ciphertext_bytes"] == 187


def test_demo_tables(capsys: pytest.CaptureFixture[str]) -> None:
    from sipsec_cli.demo import run_demo

    assert run_demo(json_output=False, repeat=1) == 0
    out = capsys.readouterr().out
    assert "decapsulate" in out and "~80 ms" in out and "sip:bob@biloxi.com" in out


def test_demo_fails_loudly(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from sipsec_cli import demo

    monkeypatch.setattr(demo.ibc, "decapsulate", lambda key, ct: b"\x00" * 32)
    assert demo.run_demo(json_output=True, repeat=1) == 1
    captured = capsys.readouterr()
    assert json.loads(captured.out)["ok"] is False
    assert "different key" in captured.err


def test_bench_reports_every_median() -> None:
    spec = importlib.util.spec_from_file_location("bench_ibc", ROOT / "bench" / "ibc.py")
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    results = bench.run(repeat=1)
    for key in (
        "setup_ms",
        "extract_ms",
        "encapsulate_ms",
        "decapsulate_ms",
        "sign_ms",
        "verify_ms",
        "threshold_combine_ms",
    ):
        assert isinstance(results[key], float) and results[key] > 0


def test_caches_bench_reports_cpu_and_hit_ratios(capsys: pytest.CaptureFixture[str],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    spec = importlib.util.spec_from_file_location("bench_caches", ROOT / "bench" / "caches.py")
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "bench_caches", bench)  # its dataclass looks itself up there
    spec.loader.exec_module(bench)
    try:
        assert bench.main(["--json", "--users", "1,3", "--calls", "4", "--warm", "4", "--round", "2",
                           "--repeat", "1"]) == 0
    finally:
        ibc.configure_tables()
    doc = json.loads(capsys.readouterr().out)
    assert set(doc["table_costs"]) == {"g1", "signers", "gt"}
    assert all(row["build_ms"] > 0 and row["bytes"] > 0 for row in doc["table_costs"].values())
    assert set(doc["populations"]) == {"one_pair", "3_per_domain"}
    for rows in doc["populations"].values():
        assert set(rows) == {"engine", "worker"}
        for by_policy in rows.values():
            assert set(by_policy) == {"off", "second-use", "frequency"}
            for result in by_policy.values():
                assert result["cpu_ms_per_call"] > 0 and len(result["cpu_ms_samples"]) == 1
                assert {"g1", "signers", "gt", "hash_to_g1"} <= set(result["caches"])
    one_pair = doc["populations"]["one_pair"]["engine"]
    assert one_pair["off"]["caches"]["signers"]["hits"] == 0
    assert one_pair["second-use"]["caches"]["signers"]["hit_ratio"] == 1.0  # warm: every signature
