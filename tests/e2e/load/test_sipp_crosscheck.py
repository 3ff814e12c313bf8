"""The SIPp path beside ``sipsec load``: ``bench/load.py --sipp-check`` drives one running ``sipsec up``
with ``sipsec load`` and then with real SIPp processes fed the files ``--emit-sipp`` writes (same
population: registrations, random caller/callee pairs, Digest from the CSVs); the completed-call
counts agree and the achieved rates are within 10 %."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.sipp import sipp_available
from tests.upctl import UpProcess

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

BENCH = Path(__file__).resolve().parents[3] / "bench" / "load.py"


@pytest.mark.skipif(not sipp_available(), reason="sipp is not installed (scripts/install-system-deps.sh)")
def test_sipp_and_sipsec_load_agree(tmp_path: Path) -> None:
    up = UpProcess("--json", "--grace", "8", "--state-dir", str(tmp_path / "state"))
    try:
        (tmp_path / "up.json").write_text(json.dumps(up.ready(timeout=90)))
        proc = subprocess.run([sys.executable, str(BENCH), "--json", "--sipp-check", "--up-json",
                               str(tmp_path / "up.json"), "--users", "6", "--rate", "4", "--trial-s", "10"],
                              capture_output=True, text=True, timeout=240, check=False)
        doc = json.loads(proc.stdout.strip().splitlines()[-1])["sipp_check"]
        ours, theirs = doc["sipsec_load"], doc["sipp"]
        assert ours["completed"] == theirs["completed"] == 40, doc
        assert ours["failed"] == theirs["failed"] == 0, doc
        assert abs(ours["achieved_cps"] - theirs["achieved_cps"]) <= 0.1 * max(ours["achieved_cps"],
                                                                               theirs["achieved_cps"]), doc
        assert doc["agree"] and proc.returncode == 0, proc.stderr[-2000:]
    finally:
        assert up.stop(signal.SIGINT) == 0, "".join(up.err)
