"""bench/envelope.py runs, emits every promised figure as JSON, and dumps parseable secured messages."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from sipsec.envelope import is_secured
from sipsec.sip import parse_message

ROOT = Path(__file__).resolve().parents[3]


def test_bench_json_and_dump(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "envelope.py"), "--json", "--rounds", "2",
         "--dump", str(tmp_path)],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr
    figures = json.loads(proc.stdout)
    for key in ("seal_first_ms", "open_first_ms", "seal_dialog_ms", "open_dialog_ms"):
        assert figures[key] > 0
    assert figures["secured_bytes"] > figures["plain_bytes"] > 2000
    assert figures["bytes_ratio"] == round(figures["secured_bytes"] / figures["plain_bytes"], 3)
    assert figures["outer_header_bytes"] + figures["cms_bytes"] == figures["secured_bytes"]
    assert figures["bytes_ratio_dialog_establishing"] < figures["bytes_ratio"]
    # the bar, every message signed (default policy), and what compression buys
    assert figures["bytes_ratio"] <= 2.2
    assert figures["bytes_ratio_uncompressed"] > figures["bytes_ratio"]
    files = sorted(tmp_path.iterdir())
    assert [f.name for f in files] == ["01-INVITE.sip", "02-100.sip", "03-180.sip", "04-200.sip",
                                       "05-ACK.sip", "06-BYE.sip", "07-200-BYE.sip"]
    assert sum(f.stat().st_size for f in files) == figures["secured_bytes"]
    for f in files:
        assert is_secured(parse_message(f.read_bytes()))
