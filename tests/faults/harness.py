"""The fault suite's harness: ``sipsec up`` with two sipp phones, a steady call load, the
faults, the measures and the report.

* :class:`Stack` — a running ``sipsec up`` (real Redis per domain, every service a process),
  alice and bob logged in on their gateways, bob's phone (a sipp UAS on 127.0.0.3) registered
  with the biloxi gateway's plain side.
* :class:`Load` — alice's phone (a sipp UAC on 127.0.0.2) placing secured calls alice → bob at
  a steady rate through the atlanta gateway; each call is logged by sipp with its clock tick
  (``start``, ``answered``, ``ok`` or ``failed <status>``), so every call's outcome and start
  time are known; a call with neither ``ok`` nor ``failed`` got no final answer.
* :class:`Inventory` — what must survive a fault, counted in each domain's Redis as the
  read-only ``inspect`` user that ``sipsec up`` creates: PKG user accounts, registrations,
  replay tokens still inside their window.
* :func:`measure` — one fault's row: calls in flight when it was injected, calls lost, calls
  refused while it lasted (each with a final answer), recovery time after it was removed,
  data lost, calls left up on a phone, and the signal that showed it.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import signal
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from prometheus_client.parser import text_string_to_metric_families

from tests.sipp import Sipp
from tests.upctl import UpProcess

__all__ = ["BASELINE_S", "CALLEE", "CALLER", "Call", "CalleePhone", "Inventory", "Load", "Row", "Stack", "Target",
           "check_location_answers", "measure"]

HERE = Path(__file__).parent
SCENARIOS = HERE / "scenarios"
REGISTER_SCENARIO = HERE.parent / "e2e" / "gateway" / "scenarios" / "phone_register.xml"
CALLER, CALLEE = "sip:alice@atlanta.com", "sip:bob@biloxi.com"
#: The steady load: calls per second placed by alice's phone.
RATE = 5.0
#: How long the load runs before the fault is injected: half-way between two calls' starts (the
#: calls start every 1/RATE = 0.2 s, the first ~0.2 s after the load), so that no call's INVITE
#: is on its way to the faulted component when the fault is injected. At a multiple of 0.2 s a
#: call started a few ms before the fault (in flight, by its start time) reached the component
#: after it, and was lost or refused as chance had it.
BASELINE_S = float(os.environ.get("SIPSEC_FAULT_BASELINE_S", "2.1"))
#: bob's phone registers with ``Expires: 600`` (the scenario); like a real phone it registers again
#: once half of that has passed (checked before each row: a slow run outlives one registration)
PHONE_REFRESH_S = 300.0
#: How long after the load ends a call may still be up on bob's phone before it counts as left up.
TEARDOWN_GRACE_S = float(os.environ.get("SIPSEC_FAULT_TEARDOWN_GRACE_S", "5"))
#: A call that got no final answer within this long is unanswered (sipp's per-receive timeout):
#: past Timer B (32 s), so that a transaction that ends by its timer counts as answered (408).
RECV_TIMEOUT_MS = 36_000


def http_json(method: str, url: str, token: str | None = None, body: dict[str, Any] | None = None,
              timeout: float = 10.0) -> tuple[int, dict[str, Any]]:
    """One JSON request; (status, document) for 2xx and HTTP errors alike."""
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(url, data=json.dumps(body).encode() if body is not None else None,
                                 method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            raw = resp.read()
            return int(resp.status), dict(json.loads(raw)) if raw else {}
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        try:
            return int(exc.code), dict(json.loads(raw)) if raw else {}
        except ValueError:
            return int(exc.code), {"raw": raw.decode(errors="replace")}


def metric(url: str, name: str, **labels: str) -> float:
    """The sum of the samples ``name`` with ``labels`` at a /metrics URL (0 when absent; NaN when
    the endpoint does not answer)."""
    try:
        with urllib.request.urlopen(url, timeout=3) as resp:
            text = resp.read().decode()
    except OSError:
        return math.nan
    total = 0.0
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                total += float(s.value)
    return total


# -- Redis, as the read-only inspect user ------------------------------------------------------

class RedisInspector:
    """A minimal RESP client for one domain's Redis, authenticated as ``inspect``."""

    def __init__(self, host: str, port: int, password: str) -> None:
        self.host, self.port, self.password = host, port, password

    def _command(self, sock: socket.socket, *parts: str) -> Any:
        out = f"*{len(parts)}\r\n" + "".join(f"${len(p.encode())}\r\n{p}\r\n" for p in parts)
        sock.sendall(out.encode())
        return self._read(sock.makefile("rb"))

    def _read(self, f: Any) -> Any:
        line = f.readline()
        if not line:
            raise OSError("connection closed")
        kind, rest = line[:1], line[1:-2]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            raise OSError(rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            if n < 0:
                return None
            data = f.read(n + 2)[:-2]
            return data.decode()
        if kind == b"*":
            return [self._read(f) for _ in range(int(rest))]
        raise OSError(f"unexpected reply {line!r}")

    def run(self, *commands: tuple[str, ...]) -> list[Any]:
        """Each command's reply, on one authenticated connection."""
        with socket.create_connection((self.host, self.port), timeout=5) as sock:
            self._command(sock, "AUTH", "inspect", self.password)
            return [self._command(sock, *c) for c in commands]

    def scan(self, pattern: str) -> list[str]:
        """Every key matching ``pattern`` (SCAN, so no KEYS right is needed)."""
        keys: list[str] = []
        cursor = "0"
        with socket.create_connection((self.host, self.port), timeout=5) as sock:
            self._command(sock, "AUTH", "inspect", self.password)
            while True:
                cursor, batch = self._command(sock, "SCAN", cursor, "MATCH", pattern, "COUNT", "1000")
                keys.extend(batch)
                if cursor == "0":
                    return keys

    def pttls(self, keys: list[str]) -> dict[str, int]:
        if not keys:
            return {}
        return dict(zip(keys, self.run(*(("PTTL", k) for k in keys)), strict=True))


@dataclass(frozen=True)
class Inventory:
    """What must survive: PKG accounts, registrations and in-window replay tokens of every domain
    (``tokens`` maps each replay token key to the unix time it leaves its window)."""

    accounts: dict[str, int]
    registrations: dict[str, int]
    tokens: dict[str, float]

    @classmethod
    def take(cls, inspectors: dict[str, RedisInspector]) -> Inventory:
        accounts, registrations, tokens = {}, {}, {}
        for domain, r in inspectors.items():
            accounts[domain] = int(r.run(("HLEN", f"sipsec:pkg:{domain}:users"))[0])
            registrations[domain] = len(r.scan("sipsec:loc:*:b:*"))
            now = time.time()
            for key, ttl in r.pttls(r.scan("sipsec:envelope:nonce:*")).items():
                if ttl > 0:
                    tokens[f"{domain}/{key}"] = now + ttl / 1000
        return cls(accounts, registrations, tokens)

    def lost_since(self, before: Inventory, *, margin_s: float = 3.0) -> dict[str, int]:
        """What ``before`` had that this one lacks: accounts and registrations per domain, and
        replay tokens that should still be inside their window (``margin_s`` before their end)."""
        now = time.time()
        lost = {
            "accounts": sum(max(0, n - self.accounts.get(d, 0)) for d, n in before.accounts.items()),
            "registrations": sum(max(0, n - self.registrations.get(d, 0)) for d, n in before.registrations.items()),
            "replay_tokens": sum(1 for k, end in before.tokens.items() if end > now + margin_s and k not in self.tokens),
        }
        return lost


# -- the deployment ----------------------------------------------------------------------------

class Target(Protocol):
    """What :func:`measure` needs of a deployment: ``sipsec up`` here (:class:`Stack`), the compose
    deployment in the container test (``tests.compose.harness.ComposeTarget``)."""

    #: each domain's gateway, its phones' side: (host, port)
    plain: dict[str, tuple[str, int]]
    #: the phone passwords the logins returned, by user
    phone_pw: dict[str, str]
    #: the address alice's phone (the load's sipp UAC) binds
    alice_host: str
    #: bob's phone (see :class:`CalleePhone`)
    uas: Sipp

    def inventory(self) -> Inventory: ...

    def keep_registered(self) -> None:
        """bob's phone registers again when its registration is :data:`PHONE_REFRESH_S` old."""

    def open_phone_calls(self) -> set[str]: ...

    def debug_logs(self, out: Path, name: str) -> None: ...


class CalleePhone:
    """bob's phone's log (``uas`` runs ``scenarios/phone_uas.xml`` with ``-log_file uas-log.txt``)."""

    uas: Sipp

    def uas_log(self) -> list[tuple[str, str, float]]:
        """bob's phone's lines: (event, Call-ID, clock tick in s)."""
        path = self.uas.workdir / "uas-log.txt"
        events = []
        with_errors = path.read_text(errors="replace") if path.exists() else ""
        for line in with_errors.splitlines():
            parts = line.split()
            if len(parts) == 3 and parts[0] in ("est", "bye"):
                events.append((parts[0], parts[1], int(parts[2]) / 1000))
        return events

    def open_phone_calls(self) -> set[str]:
        """Call-IDs bob's phone established and nobody tore down yet."""
        est: set[str] = set()
        bye: set[str] = set()
        for kind, call_id, _ in self.uas_log():
            (est if kind == "est" else bye).add(call_id)
        return est - bye


class Stack(CalleePhone):
    """``sipsec up`` with both users logged in and bob's phone registered (see the module docstring)."""

    def __init__(self, state: Path, skew_file: Path) -> None:
        self.state = state
        self.skew_file = skew_file
        self.registered_at = 0.0  # bob's phone: not yet
        skew_file.write_text("0\n")
        env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(HERE / "clockshim"), os.environ.get("PYTHONPATH")])),
               "FAULTSUITE_SKEW_FILE": str(skew_file), "FAULTSUITE_SKEW_DOMAIN": "biloxi.com"}
        saved = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        try:
            self.up = UpProcess("--json", "--grace", "8", "--state-dir", str(state))
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
        self.ready = self.up.ready(120)
        self.rows = self.ready["services"]
        gw = {r["domain"]: r for r in self.rows if r["service"] == "gateway"}
        self.api = {d: f"http://{r['address']}:{r['ports']['http']}" for d, r in gw.items()}
        self.gw_metrics = {d: f"http://{r['address']}:{r['ports']['metrics']}/metrics" for d, r in gw.items()}
        self.plain = {d: (r["address"], int(r["ports"]["plain"])) for d, r in gw.items()}
        self.tokens = {d: Path(p).read_text().strip() for d, p in self.ready["api_tokens"].items()}
        self.creds = json.loads((state / "credentials.json").read_text())
        self.inspectors = {
            r["domain"]: RedisInspector(r["address"].rsplit(":", 1)[0], int(r["ports"]["redis"]),
                                        (state / r["domain"] / "redis" / "inspect.password").read_text().strip())
            for r in self.rows if r["service"] == "redis"}
        self.phone_pw: dict[str, str] = {}
        self.alice_host = "127.0.0.2"
        self.uas = Sipp(str(SCENARIOS / "phone_uas.xml"), local_host="127.0.0.3", calls=1_000_000,
                        timeout_s=3600, trace_msg=False,
                        extra_args=["-trace_logs", "-log_file", "uas-log.txt"])

    def row(self, domain: str, service: str) -> dict[str, Any]:
        return next(r for r in self.rows if r["domain"] == domain and r["service"] == service)

    def pid(self, label: str) -> int:
        """The current pid of ``domain/service`` (the last restart line's, else the ready table's)."""
        pattern = re.compile(rf"{re.escape(label)} restarted \(pid (\d+)")
        for line in reversed(list(self.up.err)):
            m = pattern.search(line)
            if m:
                return int(m.group(1))
        domain, service = label.split("/")
        return int(self.row(domain, service)["pid"])

    def up_pid(self) -> int:
        return self.up.proc.pid

    def login(self, domain: str, aor: str, auto_answer: bool = False) -> tuple[int, dict[str, Any]]:
        body: dict[str, Any] = {"aor": aor, "password": self.creds[aor]}
        if auto_answer:
            body["auto_answer"] = True
        return http_json("POST", f"{self.api[domain]}/v1/users", self.tokens[domain], body, timeout=30)

    def start(self) -> None:
        """Log both users in, start bob's phone and register it."""
        for domain, user in (("atlanta.com", "alice"), ("biloxi.com", "bob")):
            status, doc = self.login(domain, f"sip:{user}@{domain}")
            assert status == 201, (status, doc)
            self.phone_pw[user] = doc["phone_password"]
        self.uas.start()
        self.register_phone()

    def register_phone(self) -> None:
        reg = Sipp(str(REGISTER_SCENARIO), remote=self.plain["biloxi.com"], local_host="127.0.0.3", calls=1,
                   timeout_s=10, extra_args=["-key", "user", "bob", "-key", "contact_port", str(self.uas.local_port),
                                             "-au", "bob", "-ap", self.phone_pw["bob"]])
        reg.start()
        reg.wait().assert_ok(calls=1)
        reg.cleanup()
        self.registered_at = time.monotonic()

    def keep_registered(self) -> None:
        if time.monotonic() - self.registered_at > PHONE_REFRESH_S:
            self.register_phone()

    def inventory(self) -> Inventory:
        return Inventory.take(self.inspectors)

    def log_tail(self, lines: int = 40) -> str:
        """The last ``lines`` of each gateway's log and of ``sipsec up``'s, for a failed row's message."""
        parts = [f"-- sipsec up\n{''.join(list(self.up.err)[-lines:])}"]
        for log in sorted((self.state / "logs").glob("*gateway*")):
            parts.append(f"-- {log.name}\n" + "\n".join(log.read_text(errors="replace").splitlines()[-lines:]))
        return "\n".join(parts)

    def debug_logs(self, out: Path, name: str) -> None:
        """``sipsec up``'s lines and the gateways' logs, for a row's post-mortem."""
        (out / f"{name}.up.txt").write_text("".join(self.up.err))
        for log in (self.state / "logs").glob("*gateway*"):
            shutil.copy(log, out / f"{name}.{log.name}")

    def set_skew(self, seconds: float) -> None:
        self.skew_file.write_text(f"{seconds}\n")

    def close(self) -> int:
        self.uas.stop()
        code = self.up.stop(signal.SIGINT)
        self.uas.cleanup(keep_failed=False)
        return code


# -- the load ----------------------------------------------------------------------------------

@dataclass
class Call:
    """One call of alice's phone: start and end times (monotonic s) and its outcome: ``ok``,
    ``failed`` (a final answer other than 2xx, ``status``), ``broken`` (answered but its BYE
    got no 200) or ``unanswered`` (no final answer)."""

    number: int
    start: float
    end: float | None = None
    answered: float | None = None
    outcome: str = "unanswered"
    status: int | None = None


class Load:
    """alice's phone placing calls at ``rate`` per second, each held ``hold_ms``."""

    def __init__(self, stack: Target, *, rate: float = RATE, hold_ms: int = 2000, max_s: float = 120) -> None:
        self.stack = stack
        self.sipp = Sipp(str(SCENARIOS / "phone_uac.xml"), remote=stack.plain["atlanta.com"], local_host=stack.alice_host,
                         calls=int(rate * max_s), rate=rate, limit=200, timeout_s=max_s + 60, trace_msg=False,
                         extra_args=["-key", "user", "alice", "-key", "callee", "bob@biloxi.com",
                                     "-d", str(hold_ms), "-au", "alice", "-ap", stack.phone_pw["alice"],
                                     "-recv_timeout", str(RECV_TIMEOUT_MS), "-trace_logs", "-log_file", "uac-log.txt"])
        self.t0 = 0.0
        self.wall_to_monotonic = 0.0

    def start(self) -> Load:
        self.t0 = time.monotonic()
        self.wall_to_monotonic = self.t0 - time.time()
        self.sipp.start()
        return self

    def finish(self, timeout_s: float = 50.0) -> None:
        """Stop placing calls (sipp's SIGUSR1: a soft exit) and wait for the calls in progress."""
        assert self.sipp.proc is not None
        if self.sipp.proc.poll() is None:
            os.killpg(self.sipp.proc.pid, signal.SIGUSR1)
        self.sipp.wait(timeout_s)

    def calls(self) -> list[Call]:
        path = self.sipp.workdir / "uac-log.txt"
        text = path.read_text(errors="replace") if path.exists() else ""
        calls: dict[int, Call] = {}
        for line in text.splitlines():
            parts = line.split()
            if len(parts) < 3 or not parts[1].isdigit() or not parts[2].isdigit():
                continue
            n, t = int(parts[1]), self._when(parts)
            if parts[0] == "start":
                calls[n] = Call(n, t)
            elif n in calls and parts[0] == "answered":
                calls[n].answered = t
                calls[n].outcome = "broken"
            elif n in calls and parts[0] == "ok":
                calls[n].end, calls[n].outcome = t, "ok"
            elif n in calls and parts[0] == "failed":
                calls[n].end, calls[n].outcome = t, "failed"
                calls[n].status = int(parts[3]) if len(parts) > 3 and parts[3].isdigit() else None
        return sorted(calls.values(), key=lambda c: c.start)

    def _when(self, parts: list[str]) -> float:
        """A log line's time (monotonic s): its wall clock (gettimeofday's s and us, the last
        two fields), else sipp's clock tick from ``t0`` (off by sipp's start-up, tens of ms)."""
        if len(parts) >= (6 if parts[0] == "failed" else 5):
            try:
                return float(parts[-2]) + float(parts[-1]) / 1e6 + self.wall_to_monotonic
            except ValueError:
                pass
        return self.t0 + int(parts[2]) / 1000

    def in_flight(self, at: float) -> int:
        """Calls started and not yet ended at ``at`` (monotonic s)."""
        return sum(1 for c in self.calls() if c.start <= at and (c.end is None or c.end > at))

    def cleanup(self) -> None:
        self.sipp.cleanup(keep_failed=False)


# -- one fault's row ---------------------------------------------------------------------------

@dataclass
class Row:
    """One row of the report (see the module docstring); ``failures`` lists what did not hold."""

    fault: str
    calls: int = 0
    calls_in_flight: int = 0
    calls_lost: int = 0
    calls_refused_during_fault: int = 0
    refused_statuses: dict[str, int] = field(default_factory=dict)
    unanswered: int = 0
    left_up_on_phone: int = 0
    recovery_s: float | None = None
    data_lost: dict[str, int] = field(default_factory=dict)
    signal: str | None = None
    fault_s: float = 0.0
    expected_failure: str | None = None
    failures: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def recovery_after(calls: list[Call], removed_at: float) -> float | None:
    """Seconds from ``removed_at`` to the start of the first call after which every call placed
    succeeded (None: never)."""
    later = [c for c in calls if c.start >= removed_at]
    if not later or later[-1].outcome != "ok":
        return None
    first_good = len(later)
    for i in range(len(later) - 1, -1, -1):
        if later[i].outcome != "ok":
            break
        first_good = i
    return round(max(0.0, later[first_good].start - removed_at), 2)


def _poll(row: Row, probe: Callable[[], str | None], until: float) -> None:
    """Wait until ``until`` (monotonic), recording the first signal ``probe`` reports."""
    while time.monotonic() < until:
        if row.signal is None:
            row.signal = probe()
        time.sleep(0.2)


def _count(row: Row, calls: list[Call], injected_at: float, removed_at: float) -> None:
    """The row's call counts from alice's phone's log."""
    row.calls = len(calls)
    row.calls_in_flight = sum(1 for c in calls if c.start <= injected_at and (c.end is None or c.end > injected_at))
    during = [c for c in calls if injected_at < c.start < removed_at and c.outcome == "failed"]
    row.calls_refused_during_fault = len(during)
    for c in during:
        row.refused_statuses[str(c.status)] = row.refused_statuses.get(str(c.status), 0) + 1
    row.calls_lost = sum(1 for c in calls if c.outcome != "ok" and c not in during and c.start < removed_at)
    row.unanswered = sum(1 for c in calls if c.outcome == "unanswered")
    row.recovery_s = recovery_after(calls, removed_at)


def _judge(row: Row, bound: int) -> None:
    """What did not hold, in ``row.failures`` (see the module docstring)."""
    checks = [
        (row.calls_lost > bound, f"{row.calls_lost} calls lost > {bound} in flight on the faulted component"),
        (row.recovery_s is None or row.recovery_s > 10, f"recovery {row.recovery_s} s > 10 s"),
        (any(row.data_lost.values()), f"data lost: {row.data_lost}"),
        (row.unanswered > 0, f"{row.unanswered} calls got no final answer"),
        (row.left_up_on_phone > 0, f"{row.left_up_on_phone} calls left up on bob's phone"),
        (row.signal is None, "no readiness or metric signal during the fault"),
    ]
    row.failures.extend(text for failed, text in checks if failed)


def check_location_answers(row: Row, answered: float) -> None:
    """A location row's answers: every call refused while location was out got 503 from the
    callee's proxy (``answered``: its ``sipsec_proxy_rejections_total{reason="location-error"}``
    over the row), which the caller's proxy passes on as 500 (RFC 3261 §16.7 step 6: a proxy
    does not forward a 503 upstream): the phone sees 500 or 503, never silence."""
    bad = {s: n for s, n in row.refused_statuses.items() if s not in ("500", "503")}
    if bad:
        row.failures.append(f"calls refused with {bad}, not 503 (or its §16.7 500)")
    if answered < row.calls_refused_during_fault:
        row.failures.append(f"the callee's proxy answered {answered:g} location failures with 503, "
                            f"{row.calls_refused_during_fault} calls were refused")


def measure(stack: Target, fault: str, inject: Callable[[], None], remove: Callable[[], None], *,
            signal_probe: Callable[[], str | None], in_flight_bound: Callable[[int], int],
            fault_s: float, hold_ms: int = 2000, settle_s: float = 8.0, baseline_s: float = BASELINE_S) -> Row:
    """Run the load, inject the fault after ``baseline_s``, hold it ``fault_s`` (polling
    ``signal_probe`` for the first sign of it), remove it, keep the load ``settle_s`` more, and
    measure the row. ``in_flight_bound`` maps the calls in flight at injection to how many
    may be lost (the calls on the faulted component)."""
    row = Row(fault)
    stack.keep_registered()
    before = stack.inventory()
    left_before = stack.open_phone_calls()
    load = Load(stack, hold_ms=hold_ms).start()
    try:
        time.sleep(baseline_s)
        injected_at = time.monotonic()
        inject()
        _poll(row, signal_probe, injected_at + fault_s)
        remove()
        removed_at = time.monotonic()
        row.fault_s = round(removed_at - injected_at, 2)
        _poll(row, signal_probe, removed_at + settle_s)
        load.finish()
        _count(row, load.calls(), injected_at, removed_at)
        # every call the callee's phone saw established in this row is torn down (its BYE)
        grace_end = time.monotonic() + TEARDOWN_GRACE_S
        while stack.open_phone_calls() - left_before and time.monotonic() < grace_end:
            time.sleep(0.2)
        row.left_up_on_phone = len(stack.open_phone_calls() - left_before)
        row.data_lost = stack.inventory().lost_since(before)
        _judge(row, in_flight_bound(row.calls_in_flight))
        _debug_dump(stack, row, load, injected_at, removed_at)
        return row
    finally:
        load.cleanup()


def _debug_dump(stack: Target, row: Row, load: Load, injected_at: float, removed_at: float) -> None:
    """With ``SIPSEC_FAULT_DEBUG_DIR``: each call's times (s after the injection), both phones'
    logs and the deployment's own (:meth:`Target.debug_logs`), for a row's post-mortem."""
    where = os.environ.get("SIPSEC_FAULT_DEBUG_DIR")
    if not where:
        return
    out = Path(where)
    out.mkdir(parents=True, exist_ok=True)
    name = re.sub(r"[^a-z0-9]+", "-", row.fault.lower()).strip("-")
    lines = [f"injected_at {injected_at - load.wall_to_monotonic:.3f} (wall), removed_at {removed_at - injected_at:.3f}"]
    for c in load.calls():
        rel = [None if t is None else round(t - injected_at, 3) for t in (c.start, c.answered, c.end)]
        lines.append(f"{c.number} start {rel[0]} answered {rel[1]} end {rel[2]} {c.outcome} {c.status}")
    (out / f"{name}.calls.txt").write_text("\n".join(lines) + "\n")
    for path in (load.sipp.workdir / "uac-log.txt", stack.uas.workdir / "uas-log.txt"):
        if path.exists():
            shutil.copy(path, out / f"{name}.{path.name}")
    stack.debug_logs(out, name)


def wait_until(predicate: Callable[[], bool], timeout_s: float, step_s: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step_s)
    return predicate()


def grpc_health(target: str) -> str:
    """The gRPC health status of ``target`` (``SERVING``…) or ``unreachable``."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    try:
        with grpc.insecure_channel(target) as channel:
            resp = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=1.0)
            return str(health_pb2.HealthCheckResponse.ServingStatus.Name(resp.status))
    except grpc.RpcError:
        return "unreachable"


def send_signal(pid: int, sig: int) -> None:
    os.kill(pid, sig)
