"""bench/scan.py against ``sipsec up``: what the Debian sipvicious tools learn as an attacker.

The SIP edge must not tell which users exist (svwar finds nobody on the proxies or on the
gateways' phone sides, whatever the method), and guessing a phone password must be throttled
(svcrack, 50 guesses with the real password last, does not crack it and meets the throttle).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[3]


@pytest.mark.timeout(600)
def test_sipvicious_finds_no_user_and_svcrack_is_throttled() -> None:
    assert shutil.which("svwar") and shutil.which("svcrack"), "install sipvicious: scripts/install-system-deps.sh"
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "scan.py"), "--json"],
                          cwd=ROOT, capture_output=True, text=True, timeout=560)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = json.loads(proc.stdout)
    runs = r["svwar"]
    # the instrument itself: every target and method was scanned to the end
    assert {(x["target"], x["domain"], x["method"]) for x in runs} == {
        (t, d, m) for t in ("proxy", "phone") for d in ("atlanta.com", "biloxi.com")
        for m in ("REGISTER", "OPTIONS", "INVITE")}
    assert all(x["completed"] for x in runs), [(x["target"], x["method"], x["exit"]) for x in runs if not x["completed"]]
    assert r["sipsec_up_alive"]
    # no user found on any target, by any method (the answers each name got, when one was)
    found = {f"{x['target']}/{x['domain']}/{x['method']}": x["answers"] for x in runs if x["users_found"]}
    assert not r["users_found"], f"svwar found {r['users_found']}; answers: {found}"
    # svcrack guessed alice's phone password and was throttled before it could get it
    crack = r["svcrack"]
    assert crack["guesses_sent"] + crack["unauthenticated_requests"] > 0, crack
    assert not crack["cracked"], crack
    assert crack["throttled"] > 0, crack
    assert r["passed"] == {"every_svwar_run_completed": True, "no_user_found": True,
                           "svcrack_not_cracked": True, "svcrack_throttled": True}
