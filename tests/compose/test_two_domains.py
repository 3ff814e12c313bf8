"""The two-domain compose deployment on a real Docker engine, as a provider runs it.

Builds the images (the offline base image first, when missing), generates the secrets, brings
docker-compose.yml up (two crypto-worker replicas), provisions users (PKG admin CLI inside
the PKG container, logins through each gateway's control API), then:

- steady: 50 secured calls from alice's sipp phone to bob's sipp phone, every one completed,
  while tcpdump captures the federation network: no caller AOR, no SDP on it;
- faults: each service container in turn (PKG, location, proxy, gateway, crypto-worker, Redis)
  killed and started again, the time until a call completes again measured, then a batch that
  must complete entirely; a partition between the domains (the peer proxy disconnected from
  the federation network, then reconnected), measured likewise;
- a rolling restart of the crypto-worker replicas under load with no failed call.

Writes build/compose-report.json (calls ok/failed per phase, recovery seconds per fault) and
tears the project down, also on failure. Run with ``make compose-test``.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tests.compose.harness import ROOT, ComposeError, Deployment, Phones, capture, capture_text, run

REPORT = ROOT / "build" / "compose-report.json"
LOGS = ROOT / "build" / "compose-logs.txt"  # every container's last lines, written before teardown
STEADY_CALLS = 50
BATCH = 5  # calls after each recovery, all of which must complete
RECOVERY_LIMIT_S = 180.0
#: service -> how it is faulted: killed (SIGKILL) and started again
KILLED = (("pkg-atlanta",), ("location-biloxi",), ("proxy-atlanta",), ("gateway-biloxi",),
          ("worker-1", "worker-2"), ("redis-biloxi",))
WORKERS = ("worker-1", "worker-2")


def _build(report: dict[str, Any]) -> None:
    start = time.monotonic()
    base_present = run(["docker", "image", "inspect", "sipsec-base:bookworm"], check=False).returncode == 0
    out = run([str(ROOT / "scripts/build-images.sh"), "--offline"], timeout=1800)
    report["build"] = {"seconds": round(time.monotonic() - start, 1), "base_image_was_present": base_present,
                       "log": out.stdout.strip().splitlines()}


def _until_a_call_completes(phones: Phones, started: float) -> tuple[float, int]:
    """Seconds from ``started`` until one call completes; the failed attempts on the way."""
    failed = 0
    while True:
        ok, _ = phones.calls(1, rate=1, limit=1, timeout_s=20)
        if ok == 1:
            return time.monotonic() - started, failed
        failed += 1
        if time.monotonic() - started > RECOVERY_LIMIT_S:
            raise ComposeError(f"no call completed {RECOVERY_LIMIT_S:.0f}s after the fault")
        time.sleep(1.0)


def _kill_and_restart(dep: Deployment, phones: Phones, services: tuple[str, ...]) -> dict[str, Any]:
    containers = [c for s in services for c in dep.containers(s)]
    started = time.monotonic()
    run(["docker", "kill", *containers])
    run(["docker", "start", *containers], timeout=120)
    recovery, failed = _until_a_call_completes(phones, started)
    healthy = dep.wait_healthy(list(services))
    ok, bad = phones.calls(BATCH, rate=2, limit=2)
    return {"fault": f"kill+start {'+'.join(services)}", "containers": len(containers), "recovery_s": round(recovery, 2),
            "healthy_after_s": round(healthy, 2), "failed_attempts_during_recovery": failed,
            "calls_ok": ok, "calls_failed": bad}


def _partition(dep: Deployment, phones: Phones) -> dict[str, Any]:
    """proxy-biloxi off the federation network: calls fail; back on: measured recovery."""
    container = dep.container("proxy-biloxi")
    net = f"{dep.project}_federation"
    run(["docker", "network", "disconnect", net, container])
    during_ok, during_failed = phones.calls(2, rate=1, limit=1, timeout_s=40)
    started = time.monotonic()
    run(["docker", "network", "connect", "--alias", "proxy-biloxi", net, container])
    recovery, failed = _until_a_call_completes(phones, started)
    ok, bad = phones.calls(BATCH, rate=2, limit=2)
    return {"fault": "partition proxy-biloxi from federation", "calls_during_partition_ok": during_ok,
            "calls_during_partition_failed": during_failed, "recovery_s": round(recovery, 2),
            "failed_attempts_during_recovery": failed, "calls_ok": ok, "calls_failed": bad}


def _rolling_restart(dep: Deployment, phones: Phones) -> dict[str, Any]:
    """Restart each crypto-worker replica in turn (waiting for it to be healthy) under load."""
    replicas = [dep.container(w) for w in WORKERS]
    result: dict[str, tuple[int, int]] = {}
    calls = 40
    thread = threading.Thread(target=lambda: result.setdefault("calls", phones.calls(calls, rate=2, limit=4,
                                                                                      timeout_s=240)))
    thread.start()
    start = time.monotonic()
    time.sleep(3.0)
    for c in replicas:
        run(["docker", "restart", "-t", "10", c], timeout=120)
        while dep.health(c) != "healthy":
            time.sleep(0.5)
    restarted = time.monotonic() - start
    thread.join(timeout=300)
    ok, bad = result.get("calls", (0, calls))
    return {"fault": f"rolling restart of {len(replicas)} worker replicas", "restart_s": round(restarted, 2),
            "calls_ok": ok, "calls_failed": bad}


def _steady(dep: Deployment, phones: Phones, report: dict[str, Any], tmp: Path) -> None:
    pcap = tmp / "federation.pcap"
    with capture(dep.bridge("federation"), pcap):
        ok, bad = phones.calls(STEADY_CALLS, rate=2, limit=4, timeout_s=240)
    packets, text = capture_text(pcap)
    leaks = [w for w in ("alice@atlanta.com", "sip:alice", "m=audio", "v=0\r")
             if w.encode() in text]
    report["phases"]["steady"] = {"calls_ok": ok, "calls_failed": bad, "federation_packets": packets,
                                  "federation_leaks": leaks}


@pytest.mark.compose
def test_two_domains_carry_secured_calls_and_recover_from_faults(engine: None, tmp_path: Path) -> None:
    report: dict[str, Any] = {"phases": {}, "faults": []}
    _build(report)
    dep = Deployment(tmp_path)
    run([str(ROOT / "scripts/compose-secrets.sh"), str(dep.secrets)])
    phones: Phones | None = None
    try:
        report["up_s"] = round(dep.up(), 1)
        alice_pw = dep.provision("atlanta", "alice")
        bob_pw = dep.provision("biloxi", "bob")
        phones = Phones(dep, alice_pw, bob_pw)
        phones.start_bob()
        _steady(dep, phones, report, tmp_path)
        for services in KILLED:
            report["faults"].append(_kill_and_restart(dep, phones, services))
        report["faults"].append(_partition(dep, phones))
        report["phases"]["rolling_restart"] = _rolling_restart(dep, phones)
    except BaseException:
        report["logs"] = dep.logs(80)
        raise
    finally:
        if phones is not None:
            phones.stop()
            report["failed_sipp_runs"] = phones.failed_runs  # their message logs, kept
        LOGS.parent.mkdir(exist_ok=True)
        LOGS.write_text(dep.logs(400))
        dep.down()
        REPORT.parent.mkdir(exist_ok=True)
        REPORT.write_text(json.dumps(report, indent=2) + "\n")
        print(f"\ncompose report: {REPORT}")
    steady = report["phases"]["steady"]
    assert (steady["calls_ok"], steady["calls_failed"]) == (STEADY_CALLS, 0), steady
    assert steady["federation_packets"] > 0 and steady["federation_leaks"] == [], steady
    for fault in report["faults"]:
        assert (fault["calls_ok"], fault["calls_failed"]) == (BATCH, 0), fault
    rolling = report["phases"]["rolling_restart"]
    assert rolling["calls_failed"] == 0 and rolling["calls_ok"] > 0, rolling
