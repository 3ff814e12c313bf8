"""Issue 18's fault table, row by row, under a steady secured call load (sipp phones at 5 calls/s
through ``sipsec up``'s processes, real Redis per domain).

Each row injects one fault, removes it, and asserts (:func:`tests.faults.harness.measure`):
calls lost ≤ calls in flight on the faulted component; every call placed while it lasted got a
final answer; recovery ≤ 10 s after it is removed; 0 user accounts, registrations or in-window
replay tokens lost; every call the callee's phone established torn down; a readiness, log or
metric signal while it lasted. The faults are on the callee's domain (biloxi.com) unless named.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable

import pytest

from tests.faults.conftest import ROWS
from tests.faults.harness import (
    BASELINE_S,
    Row,
    Stack,
    check_location_answers,
    grpc_health,
    http_json,
    measure,
    metric,
    send_signal,
    wait_until,
)
from tests.procs import alive, children_of

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(240)]

def _all(_: int) -> int:
    return _


def _none(_: int) -> int:
    return 0


class Probe:
    """The first sign of a fault: a supervision line from ``sipsec up`` about ``label``, a
    health check that stops answering SERVING / ready, or a metric that moved."""

    def __init__(self, stack: Stack, label: str | None = None, *, health: str | None = None,
                 ready_url: str | None = None, metric_url: str | None = None, metric_name: str = "",
                 **labels: str) -> None:
        self.stack, self.label = stack, label
        self.health, self.ready_url = health, ready_url
        self.metric_url, self.metric_name, self.labels = metric_url, metric_name, labels
        self.lines_at = len(stack.up.err)
        self.metric_at = metric(metric_url, metric_name, **labels) if metric_url else 0.0

    def __call__(self) -> str | None:
        if self.label is not None:
            for line in self.stack.up.err[self.lines_at:]:
                if f"{self.label} exited" in line:
                    return line.strip()
        if self.health is not None:
            status = grpc_health(self.health)
            if status != "SERVING":
                return f"gRPC health of {self.health}: {status}"
        if self.ready_url is not None:
            code, doc = _get(self.ready_url)
            if code != 200:
                return f"{self.ready_url}: {code} {doc}"
        if self.metric_url is not None:
            now = metric(self.metric_url, self.metric_name, **self.labels)
            if now > self.metric_at:
                return f"{self.metric_name}{self.labels} +{now - self.metric_at:g}"
        return None


def _get(url: str) -> tuple[int, dict[str, object]]:
    try:
        return http_json("GET", url, timeout=2)
    except OSError as exc:
        return 0, {"error": type(exc).__name__}


def _grpc_target(stack: Stack, domain: str, service: str) -> str:
    r = stack.row(domain, service)
    return f"{r['address']}:{r['ports']['grpc']}"


def _restarted(stack: Stack, label: str, since: int, timeout_s: float = 15.0) -> Callable[[], None]:
    """Wait until ``sipsec up`` says it restarted ``label`` (after line ``since``)."""
    def wait() -> None:
        assert wait_until(lambda: any(f"{label} restarted" in ln for ln in stack.up.err[since:]), timeout_s), \
            "".join(stack.up.err[-20:])
    return wait


def _redis_up(stack: Stack, domain: str) -> bool:
    try:
        return stack.inspectors[domain].run(("PING",)) == ["PONG"]
    except OSError:
        return False


def _serving(target: str, timeout_s: float = 15.0) -> None:
    assert wait_until(lambda: grpc_health(target) == "SERVING", timeout_s), f"{target} not serving again"


def _record(stack: Stack, row: Row) -> Row:
    """The row into the report; a row that did not hold fails with what it measured and, for a
    post-mortem of a run nobody can repeat (CI), the last lines of both gateways' logs and of
    ``sipsec up``."""
    ROWS.append(row)
    assert not row.failures, (row.as_dict(), stack.log_tail())
    return row


def _kill_and_restart(stack: Stack, fault: str, domain: str, service: str, *, bound: Callable[[int], int],
                      sig: int = signal.SIGKILL, fault_s: float = 4.0, expected: str | None = None,
                      extra_probe: Probe | None = None, hold_ms: int = 2000, baseline_s: float = BASELINE_S) -> Row:
    """``sig`` to ``domain/service``; ``sipsec up`` restarts it; the fault ends once it serves again."""
    label = f"{domain}/{service}"
    since = len(stack.up.err)
    probe = extra_probe or Probe(stack, label)
    target = _grpc_target(stack, domain, service) if service in ("pkg", "location", "worker") else None

    def remove() -> None:
        _restarted(stack, label, since, timeout_s=fault_s + 15)()
        if target:
            _serving(target)
        elif service == "redis":
            assert wait_until(lambda: _redis_up(stack, domain), 10), f"{label} not answering again"
        elif service == "gateway":
            assert wait_until(lambda: _get(f"{stack.api[domain]}/healthz")[0] == 200, 15), f"{label} not up again"

    row = measure(stack, fault, lambda: send_signal(stack.pid(label), sig), remove,
                  signal_probe=probe, in_flight_bound=bound, fault_s=fault_s, hold_ms=hold_ms,
                  baseline_s=baseline_s)
    row.expected_failure = expected
    return row


def test_redis_killed_and_restarted(stack: Stack) -> None:
    """A domain's Redis SIGKILLed: ``sipsec up`` restarts it from its append-only file."""
    probe = Probe(stack, "biloxi.com/redis", metric_url=stack.gw_metrics["biloxi.com"],
                  metric_name="sipsec_store_errors_total")
    time.sleep(1.5)  # the tokens written so far are past the one-second fsync window
    _record(stack, _kill_and_restart(stack, "redis SIGKILL + restart", "biloxi.com", "redis", bound=_all,
                              extra_probe=probe))


def test_redis_stopped_cleanly_and_restarted(stack: Stack) -> None:
    _record(stack, _kill_and_restart(stack, "redis SIGTERM + restart", "biloxi.com", "redis", bound=_all,
                              sig=signal.SIGTERM))


def test_callee_proxy_down_12s(stack: Stack) -> None:
    """The callee's proxy SIGKILLed and kept down 12 s (``sipsec up`` held with SIGSTOP meanwhile,
    so it does not restart it): every call placed meanwhile gets a final answer (503), none hangs."""
    label = "biloxi.com/proxy"
    since = len(stack.up.err)

    def inject() -> None:
        send_signal(stack.up_pid(), signal.SIGSTOP)
        send_signal(stack.pid(label), signal.SIGKILL)

    def remove() -> None:
        send_signal(stack.up_pid(), signal.SIGCONT)
        _restarted(stack, label, since)()
        time.sleep(1.0)  # listening again

    probe = Probe(stack, label, metric_url=stack.gw_metrics["atlanta.com"],
                  metric_name="sipsec_gateway_call_setups_total", outcome="failed")
    try:
        row = measure(stack, "callee proxy down 12 s", inject, remove, signal_probe=probe,
                      in_flight_bound=_all, fault_s=12.0)
    finally:
        send_signal(stack.up_pid(), signal.SIGCONT)
    _record(stack, row)


def _location_errors(stack: Stack) -> float:
    """The callee's proxy's own 503s for a location failure (``rejections_total{location-error}``)."""
    r = stack.row("biloxi.com", "proxy")
    return metric(f"http://{r['address']}:{r['ports']['metrics']}/metrics", "sipsec_proxy_rejections_total",
                  reason="location-error")


def test_location_killed(stack: Stack) -> None:
    """location SIGKILLed: INVITEs meanwhile get 503 + Retry-After at the callee's proxy; none in
    flight lost."""
    errors_before = _location_errors(stack)
    row = _kill_and_restart(stack, "location SIGKILL", "biloxi.com", "location", bound=_none)
    check_location_answers(row, _location_errors(stack) - errors_before)
    _record(stack, row)


def test_location_stopped(stack: Stack) -> None:
    """location SIGSTOPped 6 s, then SIGCONT: lookups past their deadline become 503, nothing hangs."""
    label = "biloxi.com/location"
    target = _grpc_target(stack, "biloxi.com", "location")
    pid = stack.pid(label)
    errors_before = _location_errors(stack)
    row = measure(stack, "location SIGSTOP 6 s", lambda: send_signal(pid, signal.SIGSTOP),
                  lambda: send_signal(pid, signal.SIGCONT), signal_probe=Probe(stack, health=target),
                  in_flight_bound=_none, fault_s=6.0)
    check_location_answers(row, _location_errors(stack) - errors_before)
    _record(stack, row)


def test_worker_killed_leaves_no_pool_process(stack: Stack) -> None:
    """The crypto-worker SIGKILLed: the gateways fall back in-process (no call lost) and none of
    its pool processes outlives it."""
    pool = children_of(stack.pid("shared/worker"))
    row = _kill_and_restart(stack, "worker SIGKILL", "shared", "worker", bound=_none)
    orphans = {p for p in pool if alive(p)}
    if not pool:
        row.failures.append("the worker had no pool processes to check")
    if orphans:
        row.failures.append(f"pool processes outlived the worker: {sorted(orphans)}")
    _record(stack, row)


def test_pkg_killed(stack: Stack) -> None:
    """The callee's PKG SIGKILLed: calls need no PKG once keys are fetched; none is lost."""
    _record(stack, _kill_and_restart(stack, "pkg SIGKILL", "biloxi.com", "pkg", bound=_none,
                              extra_probe=Probe(stack, "biloxi.com/pkg")))


def test_clock_skew_on_one_domain(stack: Stack) -> None:
    """The callee's gateway clock +400 s (past the 300 s signing-time window): its calls fail
    with 403 and the reason says clock skew (``stale``), then recover once the clock is right.
    A 200 the skewed gateway signed as its clock jumped is refused by the caller's gateway
    (403 Clock Skew to the caller), which still ACKs it and ends its session with a signed BYE
    (RFC 3261 §13.2.2.4), sent again until the skewed gateway takes it: bob's phone gets its BYE."""
    gw = stack.gw_metrics["biloxi.com"]
    probe = Probe(stack, metric_url=gw, metric_name="sipsec_gateway_envelope_rejections_total", reason="stale")
    row = measure(stack, "clock skew +400 s (biloxi gateway)", lambda: stack.set_skew(400),
                  lambda: stack.set_skew(0), signal_probe=probe, in_flight_bound=_all, fault_s=6.0)
    bad = {s: n for s, n in row.refused_statuses.items() if s != "403"}
    if bad:
        row.failures.append(f"skewed calls refused with {bad}, not 403")
    _record(stack, row)


def test_gateway_killed_with_30_live_calls(stack: Stack) -> None:
    """The callee's gateway SIGKILLed with ~30 calls up (each held 6 s at 5/s): after its restart
    every call can still be torn down and both phones get their BYEs."""
    ready = f"{stack.api['biloxi.com']}/readyz"
    row = _kill_and_restart(stack, "gateway SIGKILL, 30 live calls", "biloxi.com", "gateway", bound=_all,
                            hold_ms=6000, baseline_s=6.5, extra_probe=Probe(stack, "biloxi.com/gateway", ready_url=ready))
    _record(stack, row)


def test_gateway_sigterm_drains(stack: Stack) -> None:
    """The callee's gateway SIGTERMed: it stops taking new calls, lets the established ones end,
    then exits; ``sipsec up`` restarts it."""
    for domain, user in (("atlanta.com", "alice"), ("biloxi.com", "bob")):
        stack.login(domain, f"sip:{user}@{domain}")  # whatever the previous row left
    ready = f"{stack.api['biloxi.com']}/readyz"
    row = _kill_and_restart(stack, "gateway SIGTERM drain", "biloxi.com", "gateway", bound=_none,
                            sig=signal.SIGTERM, fault_s=8.0,
                            extra_probe=Probe(stack, "biloxi.com/gateway", ready_url=ready))
    _record(stack, row)
