"""The `sipsec demo` walk-through and the bench/ibc.py benchmark, run with one repetition."""

from __future__ import annotations

import importlib.util
import json
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
