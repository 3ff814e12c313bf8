"""A real Prometheus (Debian's server, started here) scrapes a live ``sipsec up`` with the
committed scrape configuration and rules while calls are placed: every target is up, every
query of every dashboard panel returns data, every rule group evaluates without error; then a
PKG that stops answering fires ``SipsecPkgDown`` (its ``for:`` shortened) for its domain only.
Last, every line the services printed during the run is a JSON log object of the one schema
(:mod:`sipsec.telemetry.logs`) and none holds a password, token or key of the run.

Besides secured calls, the test causes the events whose counters only appear when they happen
(bad logins up to a back-off, federation hits and an unknown peer domain, an unsecured INVITE
refused by a secure-only policy, a malformed datagram at a proxy), so that every panel is shown
with data from the services themselves.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml
from sipsec.pkgclient import PkgClient
from sipsec.pkgclient.errors import PkgClientError
from sipsec.telemetry.logs import FIELDS

from tests.conftest import free_port
from tests.unit.observability._catalog import ROOT, dashboards, panel_targets
from tests.upctl import UpProcess

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
SCRAPE_S = 2  # scrape and rule-evaluation interval (and scrape timeout) of the test's Prometheus
RATE = "15s"  # what the test substitutes for Grafana's $__rate_interval


def _http_json(method: str, url: str, body: dict[str, Any] | None = None, timeout: float = 20,
               token: str = "") -> dict[str, Any]:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(url, data=json.dumps(body).encode() if body is not None else None,
                                 method=method, headers=headers)
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return dict(json.loads(resp.read() or b"{}"))


def _start_prometheus(tmp: Path, up_json: Path) -> tuple[subprocess.Popen[bytes], str]:
    """The committed configuration and rules, targets from up's JSON, 1 s intervals."""
    folder = tmp / "prometheus"
    shutil.copytree(ROOT / "deploy" / "prometheus", folder, ignore=shutil.ignore_patterns("tests", "__pycache__"))
    config = yaml.safe_load((folder / "prometheus.yml").read_text())
    config["global"].update(scrape_interval=f"{SCRAPE_S}s", evaluation_interval=f"{SCRAPE_S}s",
                            scrape_timeout=f"{SCRAPE_S}s")
    (folder / "prometheus.yml").write_text(yaml.safe_dump(config))
    # the PKG-down alert's `for:` shortened from 1m, so that the test can see it fire
    rules_path = folder / "rules" / "sipsec.rules.yml"
    rules = yaml.safe_load(rules_path.read_text())
    (down,) = [r for g in rules["groups"] for r in g["rules"] if r.get("alert") == "SipsecPkgDown"]
    assert down["for"] == "1m"
    down["for"] = f"{3 * SCRAPE_S}s"  # three scrapes in a row, not one slow one
    rules_path.write_text(yaml.safe_dump(rules, sort_keys=False))
    res = subprocess.run([sys.executable, str(folder / "up_targets.py"), str(up_json), str(folder / "targets")],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    port = free_port()
    log = (tmp / "prometheus.log").open("wb")
    proc = subprocess.Popen(
        [PROMETHEUS, f"--config.file={folder / 'prometheus.yml'}", f"--storage.tsdb.path={tmp / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}", "--storage.tsdb.retention.time=1h", "--log.level=warn"],
        stdout=log, stderr=subprocess.STDOUT, cwd=tmp,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(f"{base}/-/ready", timeout=2) as resp:
                if resp.status == 200:
                    return proc, base
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"prometheus did not start: {(tmp / 'prometheus.log').read_text()[-3000:]}")
        time.sleep(0.2)


def _control_token(state: Path, domain: str) -> str:
    """The control-API bearer token a gateway generated at its first start (``api-token`` in its
    state directory, under up's state directory), or "" for a gateway without one."""
    found = sorted(p for p in state.rglob("api-token") if domain in str(p.relative_to(state)))
    return found[0].read_text().strip() if found else ""


#: The plain-text lines a service command prints for its operator, not log records: where it
#: listens (stdout; the PKG's on stderr) and, for a gateway's first start, where its generated
#: control-API token file is (stderr). Everything else is JSON.
ANNOUNCEMENT = re.compile(r"^sipsec-(pkg|location|proxy|worker|gateway)(: | listening on )")


def _secrets(state: Path, creds: dict[str, str]) -> set[str]:
    """Every secret of the run: user passwords, control-API tokens, KEKs, Redis ACL passwords."""
    found = {v for v in creds.values() if len(v) >= 6}
    for path in state.rglob("*"):
        if path.is_file() and re.search(r"(kek|password|api-token|token)$", path.name) and path.stat().st_size < 4096:
            value = path.read_text(errors="replace").strip()
            if len(value) >= 8:
                found.add(value)
    return found


def _check_logs(state: Path, secrets: set[str]) -> int:
    """Every line each service printed is a JSON object of the one schema (or its announcement),
    and none holds a secret of the run. Returns the number of JSON lines seen."""
    logs = sorted(p for p in (state / "logs").glob("*.log") if not p.name.endswith("-redis.log"))
    services = {p.name for p in logs}
    assert any("pkg" in n for n in services) and any("gateway" in n for n in services), services
    seen = 0
    for path in logs:
        text = path.read_text(errors="replace")
        leaked = [s[:4] + "…" for s in secrets if s in text]
        assert not leaked, f"{path.name} holds secrets of the run: {leaked}"
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip() or ANNOUNCEMENT.match(line):
                continue
            try:
                obj = json.loads(line)
            except ValueError:
                pytest.fail(f"{path.name}:{number} is not JSON: {line[:200]!r}")
            assert isinstance(obj, dict) and set(FIELDS) <= set(obj), (path.name, number, obj)
            assert obj["service"] and obj["service"] in path.name, (path.name, obj)
            seen += 1
    return seen


def _query(base: str, expr: str) -> list[dict[str, Any]]:
    doc = _http_json("GET", f"{base}/api/v1/query?{urllib.parse.urlencode({'query': expr})}")
    assert doc["status"] == "success", (expr, doc)
    return list(doc["data"]["result"])


def _resolve(expr: str) -> str:
    """Grafana's substitutions with every domain and instance selected ("All": ``.*``)."""
    return expr.replace("$__rate_interval", RATE).replace("$domain", ".*").replace("$instance", ".*")


async def _pkg_events(pkg: dict[str, str], biloxi_fp: str) -> None:
    """Federation hits and an unknown peer; failed logins up to a back-off and a throttled attempt."""
    async with PkgClient(pkg["atlanta.com"], plaintext=True) as client:
        for _ in range(2):
            await client.get_domain_params("biloxi.com", pinned_fingerprint=biloxi_fp)
        with pytest.raises(PkgClientError):
            await client.get_domain_params("unknown.example")
        for _ in range(6):
            with pytest.raises(PkgClientError):
                await client.login("sip:mallory@atlanta.com", "not-the-password")


def _plain_invite(host: str, port: int, callee: str, ca: Path) -> bytes:
    """An unsecured INVITE straight at a gateway's secured side (bob's policy is secure-only),
    over the TLS that side speaks under ``sipsec up`` (its certificate from the run's CA ``ca``)."""
    ctx = ssl.create_default_context(cafile=str(ca))
    with socket.create_connection((host, port), timeout=5) as raw, ctx.wrap_socket(raw, server_hostname=host) as s:
        lp = s.getsockname()[1]
        s.sendall((f"INVITE {callee} SIP/2.0\r\nVia: SIP/2.0/TLS 127.0.0.1:{lp};branch=z9hG4bKobs1\r\n"
                   f"Max-Forwards: 70\r\nTo: <{callee}>\r\nFrom: <sip:eve@atlanta.com>;tag=obs\r\n"
                   f"Call-ID: e2e-observability-1\r\nCSeq: 1 INVITE\r\nContact: <sip:eve@127.0.0.1:{lp};transport=tls>\r\n"
                   f"Content-Length: 0\r\n\r\n").encode())
        got = b""
        while b"SIP/2.0 404" not in got:  # a 100 Trying may come first
            chunk = s.recv(65535)
            if not chunk:
                break
            got += chunk
        return got


def test_prometheus_scrapes_up_and_every_panel_and_rule_has_data(tmp_path: Path) -> None:
    t0 = time.monotonic()
    up = UpProcess("--json", "--grace", "8", "--state-dir", str(tmp_path / "state"))
    prom: subprocess.Popen[bytes] | None = None
    try:
        doc = up.ready(60.0)
        up_json = tmp_path / "up.json"
        up_json.write_text(up.out[0])
        prom, base = _start_prometheus(tmp_path, up_json)
        rows = doc["services"]
        by = {(r["domain"], r["service"]): r for r in rows}
        state = Path(doc["state_dir"])
        creds = json.loads((state / "credentials.json").read_text())

        # calls alice@atlanta.com -> bob@biloxi.com through the gateways' control API
        api = {d: f"http://{by[(d, 'gateway')]['address']}:{by[(d, 'gateway')]['ports']['http']}"
               for d in ("atlanta.com", "biloxi.com")}
        tok = {d: _control_token(state, d) for d in api}
        _http_json("POST", f"{api['biloxi.com']}/v1/users", {"aor": "sip:bob@biloxi.com", "auto_answer": True,
                                                            "password": creds["sip:bob@biloxi.com"]},
                   token=tok["biloxi.com"])
        _http_json("POST", f"{api['atlanta.com']}/v1/users", {"aor": "sip:alice@atlanta.com",
                                                             "password": creds["sip:alice@atlanta.com"]},
                   token=tok["atlanta.com"])
        for _ in range(4):
            call = _http_json("POST", f"{api['atlanta.com']}/v1/calls",
                              {"from": "sip:alice@atlanta.com", "to": "sip:bob@biloxi.com", "secure": True,
                               "wait": True}, token=tok["atlanta.com"])
            assert call["state"] == "established", call
            _http_json("DELETE", f"{api['atlanta.com']}/v1/calls/{call['id']}", token=tok["atlanta.com"])
            time.sleep(0.5)

        pkg = {d: f"{by[(d, 'pkg')]['address']}:{by[(d, 'pkg')]['ports']['grpc']}" for d in ("atlanta.com", "biloxi.com")}
        biloxi_fp = json.loads((state / "biloxi.com" / "pkg" / "params.json").read_text())["fingerprint"]
        asyncio.run(_pkg_events(pkg, biloxi_fp))
        gw_sip = by[("biloxi.com", "gateway")]
        assert b"SIP/2.0 404" in _plain_invite(gw_sip["address"], gw_sip["ports"]["sip"], "sip:bob@biloxi.com",
                                           state / "tls" / "ca.pem")
        proxy = by[("atlanta.com", "proxy")]
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.sendto(b"\x00\x01 this is not SIP\r\n\r\n", (proxy["address"], proxy["ports"]["sip"]))

        # every panel query returns data once Prometheus has scraped what happened
        queries = [(name, title, _resolve(expr)) for name, board in dashboards().items()
                   for title, expr in panel_targets(board)]
        assert len(queries) >= 40
        deadline = time.monotonic() + 40
        while True:
            empty = [(n, t, e) for n, t, e in queries if not _query(base, e)]
            if not empty or time.monotonic() > deadline:
                break
            time.sleep(2)
        assert not empty, "panel queries without data:\n" + "\n".join(f"{n}: {t}: {e}" for n, t, e in empty)

        # the dashboards' variables: label_values(<match>, <label>) as Grafana asks Prometheus for them
        for name, board in dashboards().items():
            for var in board["templating"]["list"]:
                if var["type"] != "query":
                    continue
                match, label = var["query"].removeprefix("label_values(").removesuffix(")").rsplit(", ", 1)
                match = match.replace("$domain", ".*")
                url = f"{base}/api/v1/label/{label}/values?{urllib.parse.urlencode({'match[]': match})}"
                values = set(_http_json("GET", url)["data"])
                if label == "domain":
                    assert values == {"atlanta.com", "biloxi.com", "shared"}, (name, values)
                else:
                    assert values and all(v.startswith("127.0.0.") for v in values), (name, label, values)

        targets = _http_json("GET", f"{base}/api/v1/targets")["data"]["activeTargets"]
        jobs = {(t["labels"]["job"], t["labels"]["domain"]) for t in targets}
        assert {("sipsec-pkg", "atlanta.com"), ("sipsec-pkg", "biloxi.com"), ("sipsec-gateway", "biloxi.com"),
                ("sipsec-proxy", "atlanta.com"), ("sipsec-location", "biloxi.com"), ("sipsec-worker", "shared")} <= jobs
        assert len(targets) == 9 and all(t["health"] == "up" for t in targets), targets

        # every rule group evaluated, every rule healthy; the SLO recordings have samples
        groups = _http_json("GET", f"{base}/api/v1/rules")["data"]["groups"]
        expected = {g["name"] for g in yaml.safe_load((ROOT / "deploy/prometheus/rules/sipsec.rules.yml").read_text())["groups"]}
        assert {g["name"] for g in groups} == expected
        for group in groups:
            for rule in group["rules"]:
                assert rule["health"] == "ok" and not rule.get("lastError"), (group["name"], rule)
                assert not rule["lastEvaluation"].startswith("0001-"), (group["name"], rule["name"])
        records = ("sipsec:pkg_getprivatekey_slow:ratio_rate5m", "sipsec:call_setup_failures:ratio_rate5m",
                   "sipsec:pkg_rpc_requests:rate5m", "sipsec:worker_utilisation:ratio")
        deadline = time.monotonic() + 15  # the groups evaluate every SCRAPE_S, each on its own schedule
        while (missing := [r for r in records if not _query(base, r)]) and time.monotonic() < deadline:
            time.sleep(1)
        assert not missing, f"recording rules without samples: {missing}"
        firing = [a for a in _http_json("GET", f"{base}/api/v1/alerts")["data"]["alerts"] if a["state"] == "firing"]
        assert not firing, firing

        # a PKG that stops answering (SIGSTOP: `sipsec up` would stop everything if one exited):
        # its scrapes time out, and SipsecPkgDown fires for that domain only
        victim = by[("biloxi.com", "pkg")]["pid"]
        os.kill(victim, signal.SIGSTOP)
        try:
            deadline = time.monotonic() + 30
            while True:
                firing = [a["labels"] for a in _http_json("GET", f"{base}/api/v1/alerts")["data"]["alerts"]
                          if a["state"] == "firing" and a["labels"]["alertname"] == "SipsecPkgDown"]
                if firing or time.monotonic() > deadline:
                    break
                time.sleep(1)
        finally:
            os.kill(victim, signal.SIGCONT)
        assert [(a["domain"], a["job"], a["severity"]) for a in firing] == [("biloxi.com", "sipsec-pkg", "page")]
    finally:
        if prom is not None:
            prom.terminate()
            try:
                prom.wait(20)
            except subprocess.TimeoutExpired:
                prom.kill()
                prom.wait()
        code = up.stop()
    assert code == 0, "".join(up.err)
    # the services' own lines, from start to drain, calls included: JSON of the one schema, no secret
    assert _check_logs(state, _secrets(state, creds) | {t for t in tok.values() if t}) > 20
    assert time.monotonic() - t0 < 90, "the test is meant to stay under 90 s"
