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
- faults: issue 18's table on the containers, row by row, each under a steady secured call load
  (alice's sipp phone at 5 calls/s) and measured as the process suite measures it
  (:func:`tests.faults.harness.measure`): Redis SIGKILLed, and SIGTERMed, then restarted by its
  restart policy; the callee's proxy down 12 s; location SIGKILLed, and SIGSTOPped 6 s; both
  crypto-worker replicas SIGKILLed; the PKG SIGKILLed; the callee gateway's clock +400 s (the
  test layers tests/compose/faultsuite.yml over the shipped file for that alone); the gateway
  SIGKILLed with ~30 calls up, and SIGTERMed (drained); the callee's proxy cut off the
  federation network; a rolling restart of the worker replicas. Each row asserts: calls lost
  ≤ calls in flight on the faulted component, every call answered, recovery ≤ 10 s after the
  fault is removed, 0 user accounts, registrations or in-window replay tokens lost (both
  domains' Redis counted before and after), every call bob's phone established torn down, and
  a signal while it lasted (a gateway's /readyz, a metric of a service that stayed up, a gRPC
  health check, or docker's view of the faulted container).

Writes build/compose-report.json (the steady phase, the monitoring checks, one row per fault:
calls, in flight, lost, refused, unanswered, left up, recovery seconds, data lost, signal),
prints a summary, and tears the project down, also on failure. Run with ``make compose-test``.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.compose.harness import (
    ROOT,
    ComposeError,
    ComposeTarget,
    ContainerInspector,
    Deployment,
    capture,
    capture_text,
    run,
)
from tests.faults.harness import (
    BASELINE_S,
    RATE,
    Row,
    check_location_answers,
    grpc_health,
    http_json,
    measure,
    metric,
    wait_until,
)
from tests.unit.observability._catalog import dashboards, panel_targets

REPORT = ROOT / "build" / "compose-report.json"
LOGS = ROOT / "build" / "compose-logs.txt"  # every container's last lines, written before teardown
STEADY_CALLS = 50
#: the bar: every call succeeds again at most this long after the fault is removed (the container
#: serving again, the network reconnected, the clock right)
RECOVERY_BAR_S = 10.0
#: the fault rows _fault_rows measures
ROWS = 12
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


# -- the fault rows (tests.faults.harness.measure, on the containers) ---------------------------

#: gRPC services: the port the host checks their health on (their container's address on the
#: domain network, a bridge the host is on)
GRPC_PORTS = {"pkg": 50051, "location": 50052, "worker": 50053}


def _all(n: int) -> int:
    return n


def _none(_: int) -> int:
    return 0


def _network(dep: Deployment, service: str) -> str:
    """A network of ``service`` that the host reaches (not an internal data network)."""
    nets = dep.inspect(dep.container(service))["NetworkSettings"]["Networks"]
    for name in ("biloxi", "atlanta", "federation"):
        if f"{dep.project}_{name}" in nets:
            return name
    raise ComposeError(f"{service} is on no network the host reaches: {sorted(nets)}")


def _metrics_url(dep: Deployment, service: str) -> str:
    kind = service.split("-")[0]
    port = {"gateway": 9466, "proxy": 9463, "location": 9462, "pkg": 9464, "worker": 9465}[kind]
    return f"http://{dep.ip_of(service, _network(dep, service))}:{port}/metrics"


def _readyz(dep: Deployment, domain: str) -> tuple[int, dict[str, Any]]:
    url = f"http://127.0.0.1:{dep.ports[f'SIPSEC_{domain.upper()}_API_PORT']}/readyz"
    try:
        return http_json("GET", url, timeout=2)
    except OSError as exc:
        return 0, {"error": type(exc).__name__}


def _serving(dep: Deployment, service: str) -> bool:
    """Whether ``service`` does its job again, by its own readiness: Redis answers PING, a gRPC
    service's health says SERVING, the proxy accepts connections, the gateway's /readyz is 200."""
    kind, _, domain = service.partition("-")
    try:
        if kind == "redis":
            return ContainerInspector(dep, domain).run(("PING",)) == ["PONG"]
        if kind == "gateway":
            return _readyz(dep, domain)[0] == 200
        address = dep.ip_of(service, _network(dep, service))
        if kind == "proxy":
            with socket.create_connection((address, 5060), timeout=1):
                return True
        return grpc_health(f"{address}:{GRPC_PORTS[kind]}") == "SERVING"
    except (OSError, ComposeError, KeyError, AssertionError):
        return False


def _up_again(dep: Deployment, service: str, old_pid: int | None, timeout_s: float = 60.0) -> None:
    """Wait until ``service`` runs again (a new process, when ``old_pid``) and serves."""
    def back() -> bool:
        state = dep.inspect(dep.container(service))["State"]
        return bool(state.get("Running")) and not state.get("Paused") and state.get("Pid") != old_pid \
            and _serving(dep, service)
    if not wait_until(back, timeout_s, step_s=0.25):
        raise ComposeError(f"{service} not serving {timeout_s:.0f}s after the fault\n{dep.logs(30)}")


class Probe:
    """The first sign of a fault, as an operator sees it: a gateway's readiness turning red, a
    metric of a service that stayed up moving, a gRPC health check failing, or docker's view
    of the faulted containers (not running, restarting, unhealthy)."""

    def __init__(self, dep: Deployment, services: tuple[str, ...] = (), *, ready: str | None = None,
                 metric_of: str | None = None, name: str = "", above: float | None = None, grpc: str | None = None,
                 **labels: str) -> None:
        self.dep, self.services, self.ready, self.grpc = dep, services, ready, grpc
        self.url = _metrics_url(dep, metric_of) if metric_of else None
        self.name, self.labels = name, labels
        # a counter: any increase; a gauge: past ``above``
        self.at = above if above is not None else metric(self.url, name, **labels) if self.url else 0.0
        self.grpc_target = (f"{dep.ip_of(grpc, _network(dep, grpc))}:{GRPC_PORTS[grpc.split('-')[0]]}"
                            if grpc else None)

    def __call__(self) -> str | None:
        if self.ready is not None:
            code, doc = _readyz(self.dep, self.ready)
            if code != 200:
                return f"gateway {self.ready} /readyz: {code} {doc}"
        if self.url is not None:
            now = metric(self.url, self.name, **self.labels)
            if now > self.at:
                return f"{self.name}{self.labels} {now:g} (was {self.at:g})"
        if self.grpc_target is not None and (status := grpc_health(self.grpc_target)) != "SERVING":
            return f"gRPC health of {self.grpc}: {status}"
        for service in self.services:
            health = self.dep.health(self.dep.container(service))
            if health not in ("healthy", "running"):
                return f"docker: {service} {health}"
        return None


def _crash(dep: Deployment, target: ComposeTarget, fault: str, services: tuple[str, ...], *,
           bound: Callable[[int], int], sig: int = signal.SIGKILL, fault_s: float = 4.0,
           probe: Probe | None = None, hold_ms: int = 2000, baseline_s: float = BASELINE_S) -> Row:
    """``sig`` to each of ``services``' container process, as a crash (or the orchestrator's
    SIGTERM) would hit it; docker's restart policy starts it again (compose's
    ``restart: unless-stopped``); the fault ends once each serves again."""
    pids: dict[str, int] = {}

    def inject() -> None:
        for service in services:
            pids[service] = dep.pid(service)
        for service in services:
            os.kill(pids[service], sig)

    def remove() -> None:
        for service in services:
            _up_again(dep, service, pids[service])

    return measure(target, fault, inject, remove, signal_probe=probe or Probe(dep, services), in_flight_bound=bound,
                   fault_s=fault_s, hold_ms=hold_ms, baseline_s=baseline_s)


def _location_errors(dep: Deployment) -> float:
    return metric(_metrics_url(dep, "proxy-biloxi"), "sipsec_proxy_rejections_total", reason="location-error")


def _fault_rows(dep: Deployment, target: ComposeTarget) -> Iterator[Row]:
    """Issue 18's table on the containers, under alice's steady call load, each row as the process
    suite (tests/faults/test_faults.py) measures it; biloxi.com is the faulted domain."""
    time.sleep(1.5)  # the replay tokens of the calls so far are past Redis's one-second fsync
    yield _crash(dep, target, "redis SIGKILL + restart", ("redis-biloxi",), bound=_all,
                 probe=Probe(dep, ("redis-biloxi",), ready="biloxi", metric_of="gateway-biloxi",
                             name="sipsec_store_errors_total"))
    time.sleep(1.5)
    yield _crash(dep, target, "redis SIGTERM + restart", ("redis-biloxi",), bound=_all, sig=signal.SIGTERM,
                 probe=Probe(dep, ("redis-biloxi",), ready="biloxi"))

    proxy = dep.container("proxy-biloxi")
    net = f"{dep.project}_federation"

    def docker(*argv: str) -> Callable[[], None]:
        def call() -> None:
            run(["docker", *argv])
        return call

    def start_proxy() -> None:
        run(["docker", "start", proxy])
        _up_again(dep, "proxy-biloxi", None)

    # `docker kill`: stopped by hand, so its restart policy leaves it down until `docker start`
    rejected = Probe(dep, ("proxy-biloxi",), metric_of="gateway-atlanta", name="sipsec_gateway_call_setups_total",
                     outcome="failed")
    yield measure(target, "callee proxy down 12 s", docker("kill", proxy), start_proxy,
                  signal_probe=rejected, in_flight_bound=_all, fault_s=12.0)

    before = _location_errors(dep)
    row = _crash(dep, target, "location SIGKILL", ("location-biloxi",), bound=_none,
                 probe=Probe(dep, ("location-biloxi",), grpc="location-biloxi"))
    check_location_answers(row, _location_errors(dep) - before)
    yield row

    before = _location_errors(dep)
    pid = dep.pid("location-biloxi")
    row = measure(target, "location SIGSTOP 6 s", lambda: os.kill(pid, signal.SIGSTOP),
                  lambda: os.kill(pid, signal.SIGCONT), signal_probe=Probe(dep, grpc="location-biloxi"),
                  in_flight_bound=_none, fault_s=6.0)
    check_location_answers(row, _location_errors(dep) - before)
    yield row

    yield _crash(dep, target, "worker SIGKILL (both replicas)", WORKERS, bound=_none,
                 probe=Probe(dep, WORKERS, metric_of="gateway-biloxi", name="sipsec_engine_fallbacks_total"))
    yield _crash(dep, target, "pkg SIGKILL", ("pkg-biloxi",), bound=_none,
                 probe=Probe(dep, ("pkg-biloxi",), grpc="pkg-biloxi"))

    row = measure(target, "clock skew +400 s (biloxi gateway)", lambda: dep.set_skew(400), lambda: dep.set_skew(0),
                  signal_probe=Probe(dep, metric_of="gateway-biloxi", name="sipsec_gateway_envelope_rejections_total",
                                     reason="stale"),
                  in_flight_bound=_all, fault_s=6.0)
    if bad := {s: n for s, n in row.refused_statuses.items() if s != "403"}:
        row.failures.append(f"skewed calls refused with {bad}, not 403")
    yield row

    yield _crash(dep, target, "gateway SIGKILL, 30 live calls", ("gateway-biloxi",), bound=_all, hold_ms=6000,
                 baseline_s=6.5, probe=Probe(dep, ("gateway-biloxi",), ready="biloxi"))
    target.refresh()
    yield _crash(dep, target, "gateway SIGTERM drain", ("gateway-biloxi",), bound=_none, sig=signal.SIGTERM,
                 fault_s=8.0, probe=Probe(dep, ("gateway-biloxi",), ready="biloxi"))
    target.refresh()

    yield measure(target, "partition proxy-biloxi from federation", docker("network", "disconnect", net, proxy),
                  docker("network", "connect", "--alias", "proxy-biloxi", net, proxy),
                  # INVITEs waiting at the caller's proxy for the unreachable next hop (at 5 calls/s
                  # about 1 is open at a time; 6 s cut off holds ~30)
                  signal_probe=Probe(dep, metric_of="proxy-atlanta", name="sipsec_proxy_active_transactions",
                                     above=10),
                  in_flight_bound=_all, fault_s=6.0)

    def rolling() -> None:
        for worker in WORKERS:
            run(["docker", "restart", "-t", "10", dep.container(worker)], timeout=120)
            _up_again(dep, worker, None)

    yield measure(target, "rolling restart of 2 worker replicas", rolling, lambda: None,
                  signal_probe=Probe(dep, WORKERS, metric_of="gateway-atlanta", name="sipsec_engine_fallbacks_total"),
                  in_flight_bound=_none, fault_s=0.0)


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


def _steady(dep: Deployment, target: ComposeTarget, report: dict[str, Any], tmp: Path) -> None:
    pcap = tmp / "federation.pcap"
    with capture(dep.bridge("federation"), pcap):
        ok, bad = target.calls(STEADY_CALLS, rate=2, limit=4, timeout_s=240)
    packets, text = capture_text(pcap)
    leaks = [w for w in ("alice@atlanta.com", "sip:alice", "m=audio", "v=0\r")
             if w.encode() in text]
    report["phases"]["steady"] = {"calls_ok": ok, "calls_failed": bad, "federation_packets": packets,
                                  "federation_leaks": leaks}


@pytest.mark.compose
def test_two_domains_carry_secured_calls_and_recover_from_faults(engine: None, tmp_path: Path) -> None:
    report: dict[str, Any] = {"phases": {}, "faults": []}
    _build(report)
    dep = Deployment(tmp_path, faultsuite=True)
    run([str(ROOT / "scripts/compose-secrets.sh"), str(dep.secrets)])
    # the shipped file as docker-compose reads it, with and without Grafana's profile; then the
    # test's own layering (the clock-skew injection)
    for profile in ([], ["--profile", "grafana"]):
        run(["docker-compose", *profile, "config", "-q"], env=dep.env)
    dep.compose("config", "-q")
    target: ComposeTarget | None = None
    try:
        report["up_s"] = round(dep.up(), 1)
        alice_pw = dep.provision("atlanta", "alice")
        bob_pw = dep.provision("biloxi", "bob")
        target = ComposeTarget(dep, alice_pw, bob_pw)
        target.start_bob()
        _steady(dep, target, report, tmp_path)
        report["monitoring"] = _monitoring(dep)
        inventory = dep.inventory()
        report["inventory_before_faults"] = {"accounts": inventory.accounts, "registrations": inventory.registrations,
                                             "replay_tokens": len(inventory.tokens)}
        for row in _fault_rows(dep, target):
            report["faults"].append(row.as_dict())
            print(_row_line(row), flush=True)
    except BaseException:
        report["logs"] = dep.logs(80)
        raise
    finally:
        if target is not None:
            target.stop()
            report["failed_sipp_runs"] = target.failed_runs  # their message logs, kept
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
    counted = report["inventory_before_faults"]
    assert all(n > 0 for n in counted["accounts"].values()) and sum(counted["registrations"].values()) > 0 \
        and counted["replay_tokens"] > 0, counted
    assert len(report["faults"]) == ROWS, [f["fault"] for f in report["faults"]]
    failed = [f for f in report["faults"] if f["failures"]]
    assert not failed, json.dumps(failed, indent=1)
    for fault in report["faults"]:
        assert fault["calls"] > 0 and fault["recovery_s"] is not None and fault["recovery_s"] <= RECOVERY_BAR_S, fault


def _row_line(r: Row) -> str:
    return (f"  {r.fault:<38} lost {r.calls_lost}/{r.calls_in_flight} in flight, refused "
            f"{r.calls_refused_during_fault} {r.refused_statuses}, recovery {r.recovery_s} s, data lost "
            f"{sum(r.data_lost.values())}, left up {r.left_up_on_phone}, unanswered {r.unanswered}, signal "
            f"{r.signal!r}" + (f"  FAILED: {r.failures}" if r.failures else ""))


def _print_summary(report: dict[str, Any]) -> None:
    """The figures, one line per phase and fault (the JSON report has the rest)."""
    steady = report.get("phases", {}).get("steady", {})
    print(f"up {report.get('up_s')} s; steady calls {steady.get('calls_ok')} ok / {steady.get('calls_failed')} failed")
    if mon := report.get("monitoring"):
        print(f"monitoring: {mon['targets']} targets ({len(mon['targets_down'])} down), {mon['rules']} rules "
              f"({len(mon['rules_unhealthy'])} unhealthy), redis_up {mon['redis_up']}, core panel queries "
              f"{mon['core_panel_queries'] - len(mon['core_panel_queries_empty'])}/{mon['core_panel_queries']} "
              f"with data, all panel queries {mon['panel_queries_with_data']}/{mon['panel_queries']}")
    if counted := report.get("inventory_before_faults"):
        print(f"before the faults: accounts {counted['accounts']}, registrations {counted['registrations']}, "
              f"replay tokens {counted['replay_tokens']}")
    print(f"fault rows ({len(report.get('faults', []))}, {RATE:g} calls/s steady load):")
    for f in report.get("faults", []):
        print(_row_line(Row(**f)))
