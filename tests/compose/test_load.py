"""``sipsec load --gateway`` against the two-domain compose deployment on a real Docker engine.

Builds the images (kept when current), brings docker-compose.yml up, imports a population of
``USERS`` users per domain into each PKG with ``sipsec-pkg user import`` inside the PKG
container, then runs ``sipsec load`` on the host: its phones bind the host's side of each
domain's phones network (the ``SOURCE`` of ``--gateway``; the gateway must reach them there),
log the users in through each gateway's control API (``POST /v1/users/bulk``), and place
``CALLS`` secured calls between random caller/callee pairs across the domains. The report must
show data and ≥ 99 % of the calls completed. Writes build/compose-load-report.json (the
report's figures) and prints them; tears the project down, also on failure.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.compose.harness import DOMAINS, ROOT, Deployment, run
from tests.upctl import SIPSEC

REPORT = ROOT / "build" / "compose-load-report.json"
USERS = 20  # per domain
RATE = 4.0  # calls/s (a 2-core machine shared with the whole deployment)
DURATION_S = 75.0
CALLS = int(RATE * DURATION_S)  # 300


def _import_users(dep: Deployment, domain: str, users: list[tuple[str, str]]) -> float:
    """``sipsec-pkg user import -`` inside the domain's PKG container; seconds it took."""
    start = time.monotonic()
    lines = "".join(f"{aor}:{password}\n" for aor, password in users)
    run(["docker", "exec", "-i", dep.container(f"pkg-{domain}"), "sipsec-pkg", "user", "import", "-"],
        stdin=lines, timeout=600)
    return time.monotonic() - start


def _load(args: list[str], timeout: float) -> tuple[int, dict[str, Any], str]:
    proc = subprocess.run([SIPSEC, "load", "--json", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, check=False)
    try:
        doc = json.loads(proc.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        pytest.fail(f"sipsec load printed no JSON report (exit {proc.returncode}):\n{proc.stdout[-2000:]}\n"
                    f"{proc.stderr[-4000:]}")
    return proc.returncode, doc, proc.stderr


@pytest.mark.compose
def test_sipsec_load_drives_the_compose_deployment(engine: None, tmp_path: Path) -> None:
    out: dict[str, Any] = {}
    start = time.monotonic()
    run([str(ROOT / "scripts/build-images.sh"), "--offline"], timeout=1800)
    out["build_s"] = round(time.monotonic() - start, 1)
    dep = Deployment(tmp_path)
    run([str(ROOT / "scripts/compose-secrets.sh"), str(dep.secrets)])
    doc: dict[str, Any] = {}
    try:
        out["up_s"] = round(dep.up(), 1)
        users_file = tmp_path / "users.txt"
        lines: list[str] = []
        gateways: list[str] = []
        out["import_s"] = {}
        for domain, name in DOMAINS.items():
            users = [(f"sip:ld{i:04d}@{name}", secrets.token_urlsafe(12)) for i in range(1, USERS + 1)]
            out["import_s"][domain] = round(_import_users(dep, domain, users), 1)
            lines += [f"{aor}:{password}" for aor, password in users]
            phones_net = f"{domain}-phones"
            gw_ip = dep.ip_of(f"gateway-{domain}", phones_net)
            api = f"http://127.0.0.1:{dep.ports[f'SIPSEC_{domain.upper()}_API_PORT']}"
            token = dep.secrets / f"{domain}_gateway_api_token"
            # the phones bind the host's address on the domain's phones network, where the gateway reaches them
            gateways += ["--gateway", f"{name}={gw_ip}:5080,{api},{token},{dep.gateway_ip(phones_net)}"]
        users_file.write_text("\n".join(lines) + "\n", encoding="utf-8")
        users_file.chmod(0o600)
        report_dir = tmp_path / "report"
        code, doc, err = _load([*gateways, "--users-file", str(users_file), "--users", str(USERS),
                                "--rate", str(RATE), "--duration", str(DURATION_S), "--report", str(report_dir),
                                "--threshold", "failed<1%"], timeout=DURATION_S + 600)
        out.update(exit=code, html_bytes=(report_dir / "report.html").stat().st_size)
    except BaseException:
        out["logs"] = dep.logs(80)
        raise
    finally:
        dep.down()
        out["figures"] = {k: doc.get(k) for k in ("offered", "started", "completed", "failed", "answered",
                                                   "completed_ratio", "offered_cps", "achieved_cps", "setup_ms",
                                                   "failures", "concurrent_calls_held", "provision_s", "run_s")}
        REPORT.parent.mkdir(exist_ok=True)
        REPORT.write_text(json.dumps(out, indent=2) + "\n")
        print(f"\ncompose load report: {REPORT}\n{json.dumps(out['figures'])}")
    assert doc["target"] == "addresses" and set(doc["domains"]) == set(DOMAINS.values())
    assert doc["offered"] == CALLS and doc["started"] == CALLS, doc["failures"]
    assert doc["completed_ratio"] >= 0.99, (doc["completed"], doc["failures"])
    assert doc["answered"] >= doc["completed"]  # the callee phones answered every completed call
    assert doc["setup_ms"]["p50"] is not None and 0 < doc["setup_ms"]["p50"] <= doc["setup_ms"]["p99"]
    assert sum(r["completed"] for r in doc["timeline"]) == doc["completed"]
    assert doc["processes"] and all(s["processes"] for s in doc["processes"])  # the generator, sampled
    assert [(v["threshold"], v["ok"]) for v in doc["thresholds"]] == [("failed<1%", True)], doc["thresholds"]
    assert code == 0 and out["html_bytes"] > 0
