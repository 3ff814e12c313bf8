"""``sipsec up`` as a real process: every service answers, federation is pinned, Ctrl-C and
SIGTERM stop everything, a service that does not come up fails the command with its log, a
service that dies later is restarted."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sipsec.ibc import Purpose
from sipsec.pkgclient import PkgClient

from tests.upctl import SIPSEC, UpProcess

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def processes_in(directory: Path) -> list[int]:
    """Processes whose working directory is under ``directory`` (every child of ``up`` runs there)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cwd = os.readlink(entry / "cwd")
            except OSError:
                continue
            if cwd.startswith(str(directory)):
                found.append(int(entry.name))
    return found


def grpc_serving(target: str) -> bool:
    with grpc.insecure_channel(target) as ch:
        reply = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=5)
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


def sip_options(host: str, port: int, domain: str) -> bytes:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        s.settimeout(5)
        lp = s.getsockname()[1]
        s.sendto((f"OPTIONS sip:{domain} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{lp};branch=z9hG4bKe2eup1\r\n"
                  f"Max-Forwards: 70\r\nTo: <sip:{domain}>\r\nFrom: <sip:t@{domain}>;tag=e2e\r\n"
                  f"Call-ID: e2e-up-1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n").encode(), (host, port))
        return s.recv(65535)


def redis_ping(host: str, port: int) -> bytes:
    with socket.create_connection((host, port), timeout=5) as c:
        c.sendall(b"PING\r\n")
        return c.recv(16)


def metrics(host: str, port: int) -> str:
    with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=5) as resp:
        assert resp.status == 200
        return str(resp.read().decode())


async def _federation_and_keys(rows: list[dict[str, Any]], state: Path) -> None:
    pkg = {r["domain"]: f"{r['address']}:{r['ports']['grpc']}" for r in rows if r["service"] == "pkg"}
    biloxi_fp = json.loads((state / "biloxi.com" / "pkg" / "params.json").read_text())["fingerprint"]
    creds = json.loads((state / "credentials.json").read_text())
    async with PkgClient(pkg["atlanta.com"], plaintext=True) as client:
        # atlanta's PKG fetches biloxi's parameters over federation, checked against the pin
        params = await client.get_domain_params("biloxi.com", pinned_fingerprint=biloxi_fp)
        assert params.domain == "biloxi.com"
        # alice was provisioned: she logs in and gets a key that fits her identity
        await client.login("sip:alice@atlanta.com", creds["sip:alice@atlanta.com"])
        own = (await client.get_system_params()).params
        key = await client.get_private_key(own, Purpose.SIG)
        assert key is not None


async def test_up_serves_every_service_and_ctrl_c_stops_everything(tmp_path: Path) -> None:
    up = UpProcess("--json", "--grace", "8")
    up.wait_for("sipsec up: ready")
    doc = json.loads(up.out[0])
    state = Path(doc["state_dir"])
    rows = doc["services"]
    pids = {r["pid"] for r in rows if r["pid"]}
    try:
        by = {(r["domain"], r["service"]): r for r in rows}
        for d, host in (("atlanta.com", "127.0.0.2"), ("biloxi.com", "127.0.0.3")):
            for svc in ("redis", "pkg", "location", "proxy", "gateway"):
                assert by[(d, svc)]["health"] == "healthy"
                assert by[(d, svc)]["address"].startswith(host)
            # up, and refusing anonymous clients (services connect as their own ACL users)
            assert redis_ping(host, by[(d, "redis")]["ports"]["redis"]).startswith(b"-NOAUTH")
            for svc in ("pkg", "location"):
                assert grpc_serving(f"{host}:{by[(d, svc)]['ports']['grpc']}")
                assert "sipsec_" in metrics(host, by[(d, svc)]["ports"]["metrics"])
            assert sip_options(host, by[(d, "proxy")]["ports"]["sip"], d).startswith(b"SIP/2.0 200")
            with urllib.request.urlopen(f"http://{host}:{by[(d, 'gateway')]['ports']['http']}/healthz",
                                        timeout=5) as resp:
                health = json.loads(resp.read())
            assert (health["status"], health["domain"]) == ("ok", d)
            # the gateway's metrics on their own port; its control API token in up's state directory
            assert "sipsec_gateway_" in metrics(host, by[(d, "gateway")]["ports"]["metrics"])
            assert (state / d / "gateway" / "api-token").stat().st_mode & 0o077 == 0
        assert grpc_serving(f"127.0.0.1:{by[('shared', 'worker')]['ports']['grpc']}")
        assert (state / "atlanta.com" / "kek").stat().st_mode & 0o077 == 0
        await _federation_and_keys(rows, state)
        assert pids <= set(processes_in(state))
    finally:
        code = up.stop(signal.SIGINT)
    assert code == 0, "".join(up.err)
    assert "sipsec up: stopped" in "".join(up.err)
    assert not processes_in(state)
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert not state.exists(), "the temporary state directory was not removed"


def test_sigterm_stops_a_partial_topology_and_keeps_a_given_state_dir(tmp_path: Path) -> None:
    state = tmp_path / "state"
    up = UpProcess("--only", "pkg", "--state-dir", str(state), "--grace", "8")
    up.wait_for("sipsec up: ready")
    assert processes_in(state)
    code = up.stop(signal.SIGTERM)
    assert code == 0, "".join(up.err)
    assert not processes_in(state)
    assert (state / "atlanta.com" / "pkg" / "params.json").exists()
    logs = {p.name for p in (state / "logs").iterdir()}
    assert {"atlanta.com-pkg.log", "biloxi.com-pkg.log", "atlanta.com-redis.log"} <= logs
    assert "atlanta.com-location.log" not in logs
    # a kept state directory is reused: same material, same federation fingerprint
    params = json.loads((state / "biloxi.com" / "pkg" / "params.json").read_text())
    again = UpProcess("--only", "pkg", "--state-dir", str(state), "--grace", "8")
    again.wait_for("sipsec up: ready")
    assert again.stop(signal.SIGINT) == 0, "".join(again.err)
    assert json.loads((state / "biloxi.com" / "pkg" / "params.json").read_text()) == params
    assert not processes_in(state)


def test_unknown_service_name_is_refused() -> None:
    res = subprocess.run([SIPSEC, "up", "--only", "pbx"], capture_output=True, text=True, timeout=60)
    assert res.returncode == 2 and "unknown service(s) pbx" in res.stderr


def test_a_service_that_is_not_healthy_in_time_fails_with_its_log(tmp_path: Path) -> None:
    state = tmp_path / "state"
    up = UpProcess("--state-dir", str(state), "--start-timeout", "0.2", "--grace", "5")
    code = up.proc.wait(120)
    up.stop(signal.SIGTERM)  # joins the output readers
    err = "".join(up.err)
    assert code == 1
    assert "not healthy after" in err and "log tail" in err
    assert not processes_in(state)


def test_calls_through_the_gateways_report_setup_time_bytes_and_crypto(tmp_path: Path) -> None:
    state = tmp_path / "state"
    res = subprocess.run([SIPSEC, "up", "--calls", "3", "--json", "--grace", "8", "--state-dir", str(state)],
                         capture_output=True, text=True, timeout=240,
                         env={k: v for k, v in os.environ.items() if k != "SIPSEC_REDIS_URL"})
    assert res.returncode == 0, res.stdout + res.stderr
    lines = [ln for ln in res.stdout.splitlines() if ln.strip()]
    assert len(lines) == 1, "--json prints one JSON object"
    doc = json.loads(lines[0])
    calls = doc["calls"]
    assert (calls["calls"], calls["succeeded"], calls["failed"]) == (3, 3, 0), calls
    assert 0 < calls["setup_ms_p50"] <= calls["setup_ms_p95"]
    assert calls["bytes_per_call_mean"] > 1000
    assert any("kem" in op for op in calls["crypto_ms_per_op_median"]), calls
    assert all(ms > 0 for ms in calls["crypto_ms_per_op_median"].values())
    # both sides, from the gateways' metrics: the caller seals to bob's identity, bob opens it
    sides = calls["crypto_ms_mean_by_domain"]
    assert sides["atlanta.com"]["seal_kem"] > 0 and sides["biloxi.com"]["open_kem"] > 0
    assert {r["service"] for r in doc["services"]} >= {"redis", "pkg", "location", "proxy", "gateway", "worker"}
    assert not processes_in(state)


def test_a_service_that_dies_is_restarted_and_logged_the_rest_keep_running(tmp_path: Path) -> None:
    state = tmp_path / "state"
    up = UpProcess("--only", "location", "--json", "--state-dir", str(state), "--grace", "5")
    up.wait_for("sipsec up: ready")
    rows = json.loads(up.out[0])["services"]
    victim = next(r for r in rows if r["domain"] == "biloxi.com" and r["service"] == "location")
    os.kill(victim["pid"], signal.SIGKILL)
    up.wait_for("biloxi.com/location restarted", 30)
    try:
        err = "".join(up.err)
        assert "biloxi.com/location exited with status -9 (SIGKILL); restart 1 in 0.5 s" in err
        assert up.proc.poll() is None, "one dead service does not stop the others"
        for r in rows:
            if r is not victim:
                os.kill(r["pid"], 0)  # still the same processes
    finally:
        code = up.stop(signal.SIGTERM)
    assert code == 0, "".join(up.err)
    assert not processes_in(state)


def test_a_given_redis_is_shared_one_database_per_domain(tmp_path: Path, redis_url: str) -> None:
    import redis

    state = tmp_path / "state"
    up = UpProcess("--redis", redis_url, "--only", "pkg", "--state-dir", str(state), "--grace", "5")
    up.wait_for("sipsec up: ready")
    try:
        base = redis_url.rsplit("/", 1)[0]
        atlanta = redis.Redis.from_url(f"{base}/0").keys("sipsec:pkg:*")
        biloxi = redis.Redis.from_url(f"{base}/1").keys("sipsec:pkg:*")
        assert atlanta and all(b"atlanta.com" in k for k in atlanta)
        assert biloxi and all(b"biloxi.com" in k for k in biloxi)
        assert not list((state / "logs").glob("*redis*")), "no redis-server of its own"
    finally:
        assert up.stop(signal.SIGINT) == 0, "".join(up.err)
    assert not processes_in(state)


def test_children_do_not_outlive_a_killed_sipsec_up(tmp_path: Path) -> None:
    """Even SIGKILL (no cleanup code runs): each child gets SIGTERM from the kernel (PDEATHSIG)."""
    state = tmp_path / "state"
    up = UpProcess("--only", "location", "--state-dir", str(state))
    up.wait_for("sipsec up: ready")
    assert processes_in(state)
    up.stop(signal.SIGKILL)
    deadline = time.monotonic() + 20
    while processes_in(state) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not processes_in(state)
