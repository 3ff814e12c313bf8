"""`sipsec demo`: the crypto walk-through, then real secured and plain calls across two domains in one process."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[3]
ALICE = "sip:alice@atlanta.com"
BOB = "sip:bob@biloxi.com"


def _demo_json() -> dict[str, Any]:
    proc = subprocess.run([sys.executable, "-m", "sipsec_cli", "demo", "--json", "--repeat", "1"],
                          cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return dict(json.loads(proc.stdout))


@pytest.mark.slow
def test_demo_json_runs_a_secured_and_a_plain_call_and_every_message_is_verified() -> None:
    doc = _demo_json()
    assert doc["ok"] is True and "error" not in doc
    assert [s["name"] for s in doc["steps"]][:4] == ["setup", "extract", "encapsulate", "decapsulate"]
    assert doc["calls"]["hosts"] == {"atlanta.com": "127.0.0.2", "biloxi.com": "127.0.0.3"}
    events = doc["calls"]["events"]
    assert events[0].startswith("two domains up") and any(e.startswith("federation:") for e in events)
    assert any(e.startswith(f"{ALICE} logged in") and "(1 verified)" in e for e in events)

    secured, plain = doc["calls"]["secured"], doc["calls"]["plain"]
    assert secured["answered"] is True and secured["sip_status"] == 200 and secured["secure"] is True
    assert plain["answered"] is True and plain["sip_status"] == 200 and plain["secure"] is False
    assert secured["runs"] == plain["runs"] == 5
    # sanity of the numbers: positive, secured costs more than plain, and far below the thesis' 2008 figures
    assert 0 < plain["setup_ms"] and 0 < secured["setup_ms"] < 1347
    assert secured["bytes"] > plain["bytes"] > 1000
    assert doc["calls"]["bytes_ratio"] == pytest.approx(secured["bytes"] / plain["bytes"])
    # INVITE, 100, 180, 200, ACK, BYE, 200 at alice's gateway, as the thesis counted them
    assert secured["messages"] == plain["messages"] == 7
    assert secured["caller_crypto_ms"]["seal_kem"] > 0 and secured["callee_crypto_ms"]["open_kem"] > 0
    assert plain["caller_crypto_ms"] == {} and plain["callee_crypto_ms"] == {}

    # every secured message was opened by its receiver, with the sender as the verified signer
    inner = doc["inner"]
    starts = [e["start_line"].split(" ", 1)[0] for e in inner]
    assert starts[0] == "INVITE" and "ACK" in starts and "BYE" in starts and len(inner) >= 6
    assert all(e["verified"] and e["signer"] == e["expected_signer"] for e in inner)
    assert {(e["opened_by"], e["signer"]) for e in inner} == {(BOB, ALICE), (ALICE, BOB)}
    invite = inner[0]["inner"]
    assert "From: <sip:alice@atlanta.com>" in invite and "m=audio" in invite

    # the wire: both proxies carried the call; none of them saw who calls or the session
    assert [v["proxy"] for v in doc["wire"]] == ["atlanta.com", "biloxi.com"]
    for view in doc["wire"]:
        assert view["messages"][0].startswith("INVITE sip:bob@biloxi.com SIP/2.0")
        assert any(m.startswith("BYE ") for m in view["messages"])
        for message in view["messages"]:
            assert "alice" not in message.lower() and "m=audio" not in message
            assert "sip:anonymous@anonymous.invalid" in message

    rows = {r["key"]: r for r in doc["comparison"]}
    assert rows["ibe_encrypt_ms"]["thesis"] == 90.0 and rows["ibe_decrypt_ms"]["thesis"] == 80.0
    assert rows["secured_setup_ms"]["thesis"] == 1347.0 and rows["plain_setup_ms"]["thesis"] == 182.0
    assert rows["secured_bytes"]["thesis"] == 7429 and rows["plain_bytes"]["thesis"] == 2668
    assert rows["secured_bytes"]["sipsec"] == secured["bytes"]
    assert rows["secured_setup_ms"]["sipsec"] == secured["setup_ms"]
    assert rows["invite_seal_ms"]["sipsec"] == secured["caller_crypto_ms"]["seal_kem"]
    assert all(r["sipsec"] is not None and r["sipsec"] > 0 for r in doc["comparison"])


def test_demo_tables_show_the_wire_the_inner_messages_and_the_thesis_comparison(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from sipsec_cli.demo import run_demo

    assert run_demo(json_output=False, repeat=1, call_runs=1) == 0
    out = capsys.readouterr().out
    assert "1. the wire" in out and "anonymous@anonymous.invalid" in out and "CMS" in out
    assert "2. inside" in out and "✓ sip:alice@atlanta.com" in out and "✓ sip:bob@biloxi.com" in out
    assert "Tables 1–6" in out and "~1,347 ms" in out and "7,429 B" in out


def test_demo_fails_with_a_clear_message_when_the_call_is_not_answered(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    from sipsec_cli import demo
    from sipsec_cli.topology import TwoDomainTopology

    original = TwoDomainTopology.login

    async def no_auto_answer(self: TwoDomainTopology, aor: str, **options: Any) -> Any:
        options["auto_answer"] = False
        return await original(self, aor, **options)

    monkeypatch.setattr(TwoDomainTopology, "login", no_auto_answer)
    assert demo.run_demo(json_output=True, repeat=1, call_runs=1) == 1
    captured = capsys.readouterr()
    doc = json.loads(captured.out)
    assert doc["ok"] is False and "calls" not in doc
    assert len(doc["steps"]) == 8  # the walk-through still ran and is reported
    assert "was not answered: 480" in doc["error"]
    assert "sipsec demo: step failed: DemoFailure" in captured.err


def test_demo_gives_up_after_its_time_limit_and_stops_what_it_started(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    import asyncio

    from sipsec_cli import demo
    from sipsec_cli.topology import TwoDomainTopology

    stopped: list[int] = []
    original_stop = TwoDomainTopology.stop

    async def counting_stop(self: TwoDomainTopology) -> None:
        stopped.append(len(self.domains))
        await original_stop(self)

    async def slow_login(self: TwoDomainTopology, aor: str, **options: Any) -> Any:
        await asyncio.sleep(30)

    monkeypatch.setattr(TwoDomainTopology, "stop", counting_stop)
    monkeypatch.setattr(TwoDomainTopology, "login", slow_login)
    monkeypatch.setattr(demo, "CALLS_TIMEOUT_S", 3.0)
    assert demo.run_demo(json_output=True, repeat=1, call_runs=1) == 1
    captured = capsys.readouterr()
    assert "did not finish within 3 s" in json.loads(captured.out)["error"]
    assert stopped and stopped[0] == 2  # both domains were up, and were stopped
