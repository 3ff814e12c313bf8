"""The two-domain compose deployment on a real Docker engine, as a provider runs it.

Builds the images (the offline base image first, when missing), generates the secrets, brings
docker-compose.yml up (two crypto-worker replicas), provisions users (PKG admin CLI inside
the PKG container, logins through each gateway's control API), then:

- steady: 50 secured calls from alice's sipp phone to bob's sipp phone, every one completed,
  while tcpdump captures the federation network: no caller AOR, no SDP on it;
- monitoring: the compose Prometheus scrapes every target (each service, both Redis exporters)
  and they are all up, every rule group of deploy/prometheus/rules is loaded and every rule
  evaluates with health "ok", both exporters say ``redis_up`` 1, and the dashboards' core panel
  queries (deploy/grafana/dashboards) return data;
- faults: each service container in turn (PKG, location, proxy, gateway, crypto-worker, Redis)
  killed and started again, the time until a call completes again measured, then a batch that
  must complete entirely; a partition between the domains (the peer proxy disconnected from
  the federation network, then reconnected), measured likewise; every recovery within 10 s
  (from the kill, or from the reconnect). Around each fault both
  domains' Redis are counted (PKG user accounts, registrations, replay tokens inside their
  window, as the fault suite counts them): nothing may be lost;
- a rolling restart of the crypto-worker replicas under load with no failed call.

Writes build/compose-report.json (calls ok/failed per phase, recovery seconds and data lost per
fault, the monitoring checks), prints a summary, and tears the project down, also on failure.
Run with ``make compose-test``.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.compose.harness import ROOT, ComposeError, Deployment, Phones, capture, capture_text, run
from tests.unit.observability._catalog import dashboards, panel_targets

REPORT = ROOT / "build" / "compose-report.json"
LOGS = ROOT / "build" / "compose-logs.txt"  # every container's last lines, written before teardown
STEADY_CALLS = 50
BATCH = 5  # calls after each recovery, all of which must complete
RECOVERY_LIMIT_S = 180.0
#: the bar: a call completes again at most this long after the fault is removed (the container
#: started again, the network reconnected)
RECOVERY_BAR_S = 10.0
#: service -> how it is faulted: killed (SIGKILL) and started again
KILLED = (("pkg-atlanta",), ("location-biloxi",), ("proxy-atlanta",), ("gateway-biloxi",),
          ("worker-1", "worker-2"), ("redis-biloxi",))
WORKERS = ("worker-1", "worker-2")
#: every compose scrape target: 4 services per domain, 2 crypto-workers, 2 Redis exporters
TARGETS = 12
#: what Grafana makes of $__rate_interval with the compose Prometheus (4 x the 15 s scrape interval)
RATE_INTERVAL = "1m"
#: dashboard panels (file, title) whose every query must return data after the steady calls
CORE_PANELS = (
    ("sipsec-calls.json", "Call setups per second by outcome"),
    ("sipsec-calls.json", "Setup latency, secured vs plain (p50/p95)"),
    ("sipsec-calls.json", "Crypto-worker calls by outcome"),
    ("sipsec-calls.json", "Worker operations by kind and outcome"),
    ("sipsec-calls.json", "Pool tasks"),
    ("sipsec-pkg.json", "Request rate by RPC"),
    ("sipsec-pkg.json", "Latency by RPC (p50/p95/p99)"),
    ("sipsec-pkg.json", "PKG nodes up"),
    ("sipsec-pkg.json", "Readiness by check"),
    ("sipsec-proxy-location.json", "Requests by method and final status class"),
    ("sipsec-proxy-location.json", "Transaction latency (p50/p95)"),
    ("sipsec-proxy-location.json", "Location RPCs by method and status"),
    ("sipsec-proxy-location.json", "Bindings"),
)
MONITORING_WAIT_S = 120.0  # a few scrape and evaluation intervals (15 s each)


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


def _data(before: Any, after: Any) -> dict[str, Any]:
    """What the row reports of the two inventories: the counts, and what was lost between them."""
    return {"data_before": {"accounts": before.accounts, "registrations": before.registrations,
                            "replay_tokens": len(before.tokens)},
            "data_after": {"accounts": after.accounts, "registrations": after.registrations,
                           "replay_tokens": len(after.tokens)},
            "data_lost": after.lost_since(before)}


def _kill_and_restart(dep: Deployment, phones: Phones, services: tuple[str, ...]) -> dict[str, Any]:
    containers = [c for s in services for c in dep.containers(s)]
    before = dep.inventory()
    started = time.monotonic()
    run(["docker", "kill", *containers])
    run(["docker", "start", *containers], timeout=120)
    recovery, failed = _until_a_call_completes(phones, started)
    healthy = dep.wait_healthy(list(services))
    ok, bad = phones.calls(BATCH, rate=2, limit=2)
    return {"fault": f"kill+start {'+'.join(services)}", "containers": len(containers), "recovery_s": round(recovery, 2),
            "healthy_after_s": round(healthy, 2), "failed_attempts_during_recovery": failed,
            "calls_ok": ok, "calls_failed": bad, **_data(before, dep.inventory())}


def _partition(dep: Deployment, phones: Phones) -> dict[str, Any]:
    """proxy-biloxi off the federation network: calls fail; back on: measured recovery."""
    container = dep.container("proxy-biloxi")
    net = f"{dep.project}_federation"
    before = dep.inventory()
    run(["docker", "network", "disconnect", net, container])
    during_ok, during_failed = phones.calls(2, rate=1, limit=1, timeout_s=40)
    started = time.monotonic()
    run(["docker", "network", "connect", "--alias", "proxy-biloxi", net, container])
    recovery, failed = _until_a_call_completes(phones, started)
    ok, bad = phones.calls(BATCH, rate=2, limit=2)
    return {"fault": "partition proxy-biloxi from federation", "calls_during_partition_ok": during_ok,
            "calls_during_partition_failed": during_failed, "recovery_s": round(recovery, 2),
            "failed_attempts_during_recovery": failed, "calls_ok": ok, "calls_failed": bad,
            **_data(before, dep.inventory())}


def _monitoring(dep: Deployment) -> dict[str, Any]:
    """The compose Prometheus's view after the steady calls (polled until complete, bounded):
    targets and their health, rule groups and their rules' health, redis_up per domain, and
    which dashboard queries return data (every one of CORE_PANELS must)."""
    expected_groups = {g["name"] for g in yaml.safe_load((ROOT / "deploy/prometheus/rules/sipsec.rules.yml")
                                                         .read_text())["groups"]}
    queries = [(name, title, expr.replace("$__rate_interval", RATE_INTERVAL).replace("$domain", ".*")
                .replace("$instance", ".*"))
               for name, board in dashboards().items() for title, expr in panel_targets(board)]
    core = [q for q in queries if (q[0], q[1]) in CORE_PANELS]
    assert {(n, t) for n, t, _ in core} == set(CORE_PANELS), "a core panel is gone from the dashboards"
    deadline = time.monotonic() + MONITORING_WAIT_S
    while True:
        targets = dep.prometheus("/api/v1/targets")["activeTargets"]
        down = sorted(f"{t['labels']['job']} {t['scrapeUrl']}: {t['health']} {t['lastError']}"
                      for t in targets if t["health"] != "up")
        groups = dep.prometheus("/api/v1/rules")["groups"]
        unhealthy = sorted(f"{g['name']}/{r['name']}: {r['health']} {r.get('lastError', '')}"
                           for g in groups for r in g["rules"]
                           if r["health"] != "ok" or r["lastEvaluation"].startswith("0001-"))
        redis_up = {s["metric"]["domain"]: s["value"][1] for s in dep.query("redis_up")}
        empty = [f"{n}: {t}" for n, t, e in core if not dep.query(e)]
        if (len(targets) == TARGETS and not down and {g["name"] for g in groups} == expected_groups
                and not unhealthy and redis_up == {"atlanta.com": "1", "biloxi.com": "1"} and not empty) \
                or time.monotonic() > deadline:
            break
        time.sleep(3)
    with_data = sum(1 for _, _, e in queries if dep.query(e))
    return {"targets": len(targets), "targets_down": down,
            "jobs": sorted({t["labels"]["job"] for t in targets}),
            "rule_groups": sorted(g["name"] for g in groups), "rules": sum(len(g["rules"]) for g in groups),
            "rules_unhealthy": unhealthy, "redis_up": redis_up,
            "core_panel_queries": len(core), "core_panel_queries_empty": empty,
            "panel_queries": len(queries), "panel_queries_with_data": with_data}


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
    # the file as docker-compose reads it, with and without Grafana's profile
    for profile in ([], ["--profile", "grafana"]):
        dep.compose(*profile, "config", "-q")
    phones: Phones | None = None
    try:
        report["up_s"] = round(dep.up(), 1)
        alice_pw = dep.provision("atlanta", "alice")
        bob_pw = dep.provision("biloxi", "bob")
        phones = Phones(dep, alice_pw, bob_pw)
        phones.start_bob()
        _steady(dep, phones, report, tmp_path)
        report["monitoring"] = _monitoring(dep)
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
        _print_summary(report)
    steady = report["phases"]["steady"]
    assert (steady["calls_ok"], steady["calls_failed"]) == (STEADY_CALLS, 0), steady
    assert steady["federation_packets"] > 0 and steady["federation_leaks"] == [], steady
    mon = report["monitoring"]
    assert mon["targets"] == TARGETS and mon["targets_down"] == [], mon
    assert mon["rules"] > 0 and mon["rules_unhealthy"] == [], mon
    assert mon["redis_up"] == {"atlanta.com": "1", "biloxi.com": "1"}, mon
    assert mon["core_panel_queries_empty"] == [], mon
    assert report["faults"][0]["data_before"]["replay_tokens"] > 0, "no replay token counted after the steady calls"
    for fault in report["faults"]:
        assert (fault["calls_ok"], fault["calls_failed"]) == (BATCH, 0), fault
        before = fault["data_before"]
        assert all(n > 0 for n in before["accounts"].values()) and sum(before["registrations"].values()) > 0, fault
        assert fault["data_lost"] == {"accounts": 0, "registrations": 0, "replay_tokens": 0}, fault
        assert fault["recovery_s"] <= RECOVERY_BAR_S, fault
    rolling = report["phases"]["rolling_restart"]
    assert rolling["calls_failed"] == 0 and rolling["calls_ok"] > 0, rolling


def _print_summary(report: dict[str, Any]) -> None:
    """The figures, one line per phase and fault (the JSON report has the rest)."""
    steady = report.get("phases", {}).get("steady", {})
    print(f"up {report.get('up_s')} s; steady calls {steady.get('calls_ok')} ok / {steady.get('calls_failed')} failed")
    if mon := report.get("monitoring"):
        print(f"monitoring: {mon['targets']} targets ({len(mon['targets_down'])} down), {mon['rules']} rules "
              f"({len(mon['rules_unhealthy'])} unhealthy), redis_up {mon['redis_up']}, core panel queries "
              f"{mon['core_panel_queries'] - len(mon['core_panel_queries_empty'])}/{mon['core_panel_queries']} "
              f"with data, all panel queries {mon['panel_queries_with_data']}/{mon['panel_queries']}")
    for f in report.get("faults", []):
        before, lost = f.get("data_before", {}), f.get("data_lost", {})
        print(f"{f['fault']}: recovery {f['recovery_s']} s, calls {f['calls_ok']}/{f['calls_ok'] + f['calls_failed']}; "
              f"accounts {before.get('accounts')}, registrations {before.get('registrations')}, "
              f"replay tokens {before.get('replay_tokens')}; lost {lost}")
    if rolling := report.get("phases", {}).get("rolling_restart"):
        print(f"{rolling['fault']}: calls {rolling['calls_ok']} ok / {rolling['calls_failed']} failed")
