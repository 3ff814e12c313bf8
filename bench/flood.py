"""Benchmark: a bounded INVITE flood at ``sipsec up``'s proxy while a legitimate UA keeps registering.

What an attacker on the proxy's network can do with UDP alone, measured against the real
processes of ``sipsec up`` (one per service, a real ``redis-server`` per domain), loopback only:

* **the flood**: unique INVITEs (fresh Call-ID, branch, From tag and Request-URI user each,
  none of them a registered user) at ``--rate`` messages/s for ``--duration-s`` seconds, sent
  round-robin from ``--sources`` UDP sockets each bound to its own loopback address
  (127.0.0.10, 127.0.0.11, ...), paced by a 2 ms loop on uvloop. Each INVITE's top Via names
  a *sink* (``--sink-host``, a port of its own, no ``rport``) instead of its source: the
  address a spoofed Via would aim the proxy's answers at (RFC 3261 §18.2.2). Since a server
  stamps ``received`` when the Via host is not the packet's source (§18.2.1) and then answers
  to that address at the Via's port, the sink listens on the Via port of the sink host *and*
  of every source address; everything that arrives there is counted, per INVITE (Call-ID)
  and per status code. Whatever comes back to the sending sockets themselves is counted apart.
* **the legitimate UA**: alice@atlanta.com, in a process of its own (so that the flood
  generator's event loop does not skew its clock), logs in to her PKG like a ua-gateway,
  fetches her keys and sends a fresh *signed* REGISTER (``sipsec.envelope.sign_register``, as
  the gateway registers; RFC 3261 §10.2 with a CMS SignedData body) over UDP from 127.0.0.4
  every ``1 / --legit-rate`` seconds, retransmitting per Timer E (§17.1.2.2) until a final
  response or ``--legit-timeout-s``; first for ``--baseline-s`` seconds alone, then during
  the whole flood. Latency is send → final response; a non-2xx answer or no answer is a failure.
* **the proxy's memory**: VmRSS (``/proc/PID/status``) of the proxy process and its children,
  before the flood, sampled every 0.25 s for the peak, and after a settle time
  (``--settle-s``, default 40 s: longer than Timer H, 32 s, plus Timer I) in which nothing is sent;
  and the CPU seconds that atlanta.com's proxy, location service and Redis, and this process,
  spent during the flood (``/proc/PID/stat``), to show where a flood's cost lands.

    .venv/bin/python bench/flood.py                 # a summary table
    .venv/bin/python bench/flood.py --json          # one JSON object on stdout
    .venv/bin/python bench/flood.py --json --rate 300 --duration-s 3 --settle-s 5

Progress goes to stderr. Bounded: at most ``MAX_RATE`` messages/s, ``MAX_DURATION_S`` seconds of
flood and ``MAX_SETTLE_S`` of settling, loopback addresses only; the tool stops by itself and
stops ``sipsec up`` (SIGINT, then SIGKILL). The bar (the SIP edge's flood goal): legitimate
REGISTERs keep being answered, and the proxy's RSS after the flood is at most 1.2 × before.
``--check`` makes the exit status say whether both held (1 when not); without it the exit
status is 0 whenever the measurement itself completed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import json
import multiprocessing
import os
import queue
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "MAX_DURATION_S",
    "MAX_RATE",
    "MAX_SETTLE_S",
    "RssSampler",
    "SipsecUp",
    "SipsecUpError",
    "log",
    "loopback",
    "main",
    "percentile",
    "process_tree",
    "rss_mib",
    "run_reported",
]

ROOT = Path(__file__).resolve().parent.parent
MAX_RATE = 20_000
MAX_DURATION_S = 120.0
MAX_SETTLE_S = 300.0
MAX_SOURCES = 200
RSS_BAR = 1.2
DOMAIN = "atlanta.com"
USER = "alice"
TICK_S = 0.002
T1, T2 = 0.5, 4.0  # RFC 3261 §17.1.1.1 / §17.1.2.2


def log(msg: str) -> None:
    """Progress, on stderr (stdout carries only the result)."""
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def loopback(addr: str) -> str:
    """``addr`` if it is an IPv4 loopback address (127.0.0.0/8); ValueError otherwise."""
    ip = ipaddress.ip_address(addr)
    if not (isinstance(ip, ipaddress.IPv4Address) and ip.is_loopback):
        raise ValueError(f"{addr} is not a 127.0.0.0/8 address: this tool sends to and from loopback only")
    return addr


def percentile(values: list[float], q: float) -> float | None:
    """The ``q``-th percentile (inclusive method), None for no values."""
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[min(98, max(0, round(q) - 1))]


# --------------------------------------------------------------------------- sipsec up


class SipsecUpError(Exception):
    """``sipsec up`` did not come up (the message carries its output)."""


def run_reported(name: str, run: Callable[[], dict[str, Any]]) -> dict[str, Any] | None:
    """``run()``'s result, or None after printing ``<name>: <why>`` when ``sipsec up`` did not
    come up, a tool failed or the machine refused (the bench then exits 1)."""
    try:
        return run()
    except (SipsecUpError, RuntimeError, OSError) as exc:
        print(f"{name}: {exc}", file=sys.stderr)
        return None


class SipsecUp:
    """A running ``sipsec up --json``: its service rows, state directory and credentials.

    Started with a state directory of its own (removed on :meth:`stop`); SIGINT stops it,
    SIGKILL after ``grace_s`` more. Its stderr is kept (the last lines go into errors).
    """

    def __init__(self, *, start_timeout_s: float = 120.0, grace_s: float = 8.0) -> None:
        self.grace_s = grace_s
        self._tmp = tempfile.mkdtemp(prefix="sipsec-attack-")
        self.state_dir = Path(self._tmp) / "state"
        exe = Path(sys.executable).parent / "sipsec"
        env = {k: v for k, v in os.environ.items() if k != "SIPSEC_REDIS_URL"}
        self.proc = subprocess.Popen(
            [str(exe), "up", "--json", "--grace", str(grace_s), "--state-dir", str(self.state_dir)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True, env=env)
        self._lines: queue.Queue[str] = queue.Queue()
        self.err: list[str] = []
        threading.Thread(target=self._pump_out, daemon=True).start()
        threading.Thread(target=self._pump_err, daemon=True).start()
        try:
            self.doc = self._ready(start_timeout_s)
        except BaseException:
            self.stop()
            raise
        self.rows: list[dict[str, Any]] = list(self.doc["services"])

    def _pump_out(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line)

    def _pump_err(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.err.append(line)

    def _ready(self, timeout_s: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                line = self._lines.get(timeout=0.2)
            except queue.Empty:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise SipsecUpError(f"sipsec up did not come up (exit {self.proc.poll()}):\n"
                                        + "".join(self.err[-30:])) from None
                continue
            if line.strip().startswith("{"):
                doc: dict[str, Any] = json.loads(line)
                return doc

    def row(self, domain: str, service: str) -> dict[str, Any]:
        for r in self.rows:
            if r["domain"] == domain and r["service"] == service:
                return r
        raise SipsecUpError(f"sipsec up runs no {domain}/{service}")

    def address(self, domain: str, service: str, port: str) -> tuple[str, int]:
        r = self.row(domain, service)
        return str(r["address"]).split(":")[0], int(r["ports"][port])

    def credentials(self) -> dict[str, str]:
        creds: dict[str, str] = json.loads((self.state_dir / "credentials.json").read_text())
        return creds

    def api_token(self, domain: str) -> str:
        """The bearer token the domain's gateway generated for its control API (scopes calls, users, read)."""
        return (self.state_dir / domain / "gateway" / "api-token").read_text().strip()

    def fingerprint(self, domain: str) -> str:
        doc = json.loads((self.state_dir / domain / "pkg" / "params.json").read_text())
        return str(doc["fingerprint"])

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> int | None:
        """SIGINT, wait, SIGKILL; remove the state directory. The exit status (None if killed)."""
        code: int | None = None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            code = self.proc.wait(self.grace_s + 30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        else:
            code = self.proc.returncode
        import shutil

        shutil.rmtree(self._tmp, ignore_errors=True)
        return code

    def __enter__(self) -> SipsecUp:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# --------------------------------------------------------------------------- memory


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants (from /proc/PID/task/TID/children)."""
    seen: list[int] = []
    todo = [pid]
    while todo:
        p = todo.pop()
        if p in seen:
            continue
        seen.append(p)
        with contextlib.suppress(OSError):
            for task in Path(f"/proc/{p}/task").iterdir():
                with contextlib.suppress(OSError):
                    todo.extend(int(c) for c in (task / "children").read_text().split())
    return seen


def rss_mib(pid: int) -> float:
    """VmRSS of ``pid`` and its descendants, MiB (0 for processes that are gone)."""
    total_kib = 0
    for p in process_tree(pid):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total_kib += int(line.split()[1])
                    break
    return total_kib / 1024.0


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of ``pid`` and its descendants so far."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for p in process_tree(pid):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
    return total / tick


class RssSampler:
    """Samples :func:`rss_mib` of a process tree every ``interval_s`` on a thread; keeps the peak."""

    def __init__(self, pid: int, interval_s: float = 0.25) -> None:
        self.pid, self.interval_s = pid, interval_s
        self.peak = rss_mib(pid)
        self.samples = 1
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            value = rss_mib(self.pid)
            self.samples += 1
            self.peak = max(self.peak, value)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)


# --------------------------------------------------------------------------- the legitimate UA


@dataclass(frozen=True)
class LegitPlan:
    """What the legitimate UA's process does (picklable)."""

    pkg: tuple[str, int]
    fingerprint: str
    proxy: tuple[str, int]
    aor: str
    password: str
    bind_host: str
    rate: float
    timeout_s: float
    expires: int = 300


@dataclass
class _Pending:
    sent_at: float
    data: bytes
    next_retx: float
    interval: float
    done: asyncio.Future[tuple[int, str]] = field(repr=False)


class _LegitProtocol(asyncio.DatagramProtocol):
    def __init__(self, pending: dict[str, _Pending]) -> None:
        self.pending = pending

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        from sipsec.sip import RemoteProtocolError, Response, parse_datagram

        try:
            msg = parse_datagram(data)
        except RemoteProtocolError:
            return
        if not isinstance(msg, Response) or msg.status < 200:
            return
        p = self.pending.get(msg.call_id or "")
        if p is not None and not p.done.done():
            p.done.set_result((msg.status, msg.reason))


async def _legit_run(plan: LegitPlan, conn: Any) -> None:
    from sipsec.envelope import Keyring, sign_register
    from sipsec.ibc import Purpose
    from sipsec.pkgclient import PkgClient
    from sipsec.sip import Request, generate_branch, generate_call_id, generate_tag

    async with PkgClient(f"{plan.pkg[0]}:{plan.pkg[1]}", plaintext=True) as client:
        await client.login(plan.aor, plan.password)
        params = (await client.get_system_params(pinned_fingerprint=plan.fingerprint)).params
        sig = await client.get_private_key(params, Purpose.SIG)
        enc = await client.get_private_key(params, Purpose.ENC)
    keyring = Keyring.create(plan.aor, sig_keys=[sig], enc_keys=[enc], domains=[params])
    loop = asyncio.get_running_loop()
    pending: dict[str, _Pending] = {}
    transport, _ = await loop.create_datagram_endpoint(
        lambda: _LegitProtocol(pending), local_addr=(plan.bind_host, 0))
    lport = transport.get_extra_info("sockname")[1]
    domain = plan.aor.split("@", 1)[1]
    results: list[tuple[float, float | None, str]] = []

    async def one(t_start: float) -> None:
        call_id = generate_call_id()
        register = Request("REGISTER", f"sip:{domain}", [
            ("Via", f"SIP/2.0/UDP {plan.bind_host}:{lport};branch={generate_branch()};rport"),
            ("Max-Forwards", "70"), ("From", f"<{plan.aor}>;tag={generate_tag()}"), ("To", f"<{plan.aor}>"),
            ("Call-ID", call_id), ("CSeq", "1 REGISTER"),
            ("Contact", f"<sip:{plan.aor.split(':', 1)[1].split('@')[0]}@{plan.bind_host}:{lport}>"),
            ("Expires", str(plan.expires)),
        ])
        data = sign_register(register, keyring).to_bytes()
        sent = time.monotonic()
        p = _Pending(sent, data, sent + T1, T1, loop.create_future())
        pending[call_id] = p
        transport.sendto(data, plan.proxy)
        try:
            while True:
                wait = min(p.next_retx, sent + plan.timeout_s) - time.monotonic()
                try:
                    status, reason = await asyncio.wait_for(asyncio.shield(p.done), max(0.0, wait))
                    break
                except TimeoutError:
                    now = time.monotonic()
                    if now >= sent + plan.timeout_s:
                        results.append((sent - t_start, None, "timeout"))
                        return
                    transport.sendto(data, plan.proxy)  # Timer E: T1, 2·T1, ... capped at T2
                    p.interval = min(2 * p.interval, T2)
                    p.next_retx = now + p.interval
            ms = (time.monotonic() - sent) * 1000.0
            results.append((sent - t_start, ms, "ok" if 200 <= status < 300 else f"{status} {reason}"))
        finally:
            pending.pop(call_id, None)

    conn.send(("ready", None))
    start_at, stop_at = conn.recv()
    await asyncio.sleep(max(0.0, start_at - time.monotonic()))
    tasks: list[asyncio.Task[None]] = []
    n = 0
    while True:
        due = start_at + n / plan.rate
        if due >= stop_at:
            break
        await asyncio.sleep(max(0.0, due - time.monotonic()))
        tasks.append(asyncio.create_task(one(start_at)))
        n += 1
    await asyncio.gather(*tasks)
    transport.close()
    conn.send(("results", results))


def _legit_main(plan: LegitPlan, conn: Any) -> None:
    """The legitimate UA's process: log in, then REGISTER at the plan's rate in the window given."""
    from sipsec import lifecycle

    try:
        lifecycle.run(_legit_run(plan, conn))
    except Exception as exc:  # reported to the parent, which fails with it
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
    finally:
        conn.close()


def _legit_summary(results: list[tuple[float, float | None, str]], t0: float, t1: float) -> dict[str, Any]:
    """REGISTERs sent in [t0, t1) seconds after the UA's start: count, answered, failures, latency."""
    mine = [r for r in results if t0 <= r[0] < t1]
    ok = [ms for _, ms, outcome in mine if outcome == "ok" and ms is not None]
    failures: dict[str, int] = {}
    for _, _, outcome in mine:
        if outcome != "ok":
            failures[outcome] = failures.get(outcome, 0) + 1
    p50, p99 = percentile(ok, 50), percentile(ok, 99)
    return {
        "registers": len(mine), "answered_2xx": len(ok), "failures": sum(failures.values()),
        "failure_reasons": failures,
        "p50_ms": None if p50 is None else round(p50, 2), "p99_ms": None if p99 is None else round(p99, 2),
        "max_ms": round(max(ok), 2) if ok else None,
    }


# --------------------------------------------------------------------------- the flood


class _Sink(asyncio.DatagramProtocol):
    """Counts datagrams: per status code and per Call-ID (no parsing beyond that)."""

    def __init__(self, stats: FloodStats, where: str) -> None:
        self.stats, self.where = stats, where

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.stats.count(self.where, data)


@dataclass
class FloodStats:
    sent: int = 0
    send_errors: int = 0
    at: dict[str, int] = field(default_factory=lambda: {"via_host": 0, "via_port_at_source": 0, "source": 0})
    statuses: dict[str, int] = field(default_factory=dict)
    per_invite: dict[bytes, int] = field(default_factory=dict)
    not_sip: int = 0

    def count(self, where: str, data: bytes) -> None:
        self.at[where] += 1
        if not data.startswith(b"SIP/2.0 "):
            self.not_sip += 1
            return
        code = data[8:11].decode("ascii", "replace")
        self.statuses[code] = self.statuses.get(code, 0) + 1
        if where == "source":
            return
        i = data.find(b"\r\nCall-ID:")
        if i < 0:
            i = data.find(b"\r\ni:")
        if i >= 0:
            j = data.find(b"\r\n", i + 2)
            cid = data[data.index(b":", i) + 1:j].strip()
            self.per_invite[cid] = self.per_invite.get(cid, 0) + 1

    def via_total(self) -> int:
        return self.at["via_host"] + self.at["via_port_at_source"]


_SDP = ("v=0\r\no=- 1 1 IN IP4 {h}\r\ns=-\r\nc=IN IP4 {h}\r\nt=0 0\r\n"
        "m=audio 4000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n")


def _invite(n: int, src: str, sink: tuple[str, int], domain: str, run_id: str) -> bytes:
    body = _SDP.format(h=src)
    return (
        f"INVITE sip:flood-{run_id}-{n}@{domain} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {sink[0]}:{sink[1]};branch=z9hG4bK{run_id}{n:x}\r\n"
        f"Max-Forwards: 70\r\n"
        f"From: <sip:caller{n % 997}@{src}>;tag={run_id}{n:x}\r\n"
        f"To: <sip:flood-{run_id}-{n}@{domain}>\r\n"
        f"Call-ID: {run_id}-{n}@flood\r\n"
        f"CSeq: 1 INVITE\r\n"
        f"Contact: <sip:caller@{sink[0]}:{sink[1]}>\r\n"
        f"Content-Type: application/sdp\r\n"
        f"Content-Length: {len(body)}\r\n\r\n{body}"
    ).encode()


async def _flood(target: tuple[str, int], sources: list[str], sink_host: str, rate: float, duration_s: float,
                 stats: FloodStats) -> tuple[float, list[asyncio.BaseTransport]]:
    """Send the flood; returns (seconds it took, the open sink/source transports: close them later)."""
    loop = asyncio.get_running_loop()
    transports: list[asyncio.BaseTransport] = []
    # the sink's port: free on the sink host and on every source address
    for _ in range(50):
        probe, _ = await loop.create_datagram_endpoint(lambda: _Sink(stats, "via_host"), local_addr=(sink_host, 0))
        sink_port = probe.get_extra_info("sockname")[1]
        extra: list[asyncio.BaseTransport] = []
        try:
            for src in sources:
                t, _ = await loop.create_datagram_endpoint(lambda: _Sink(stats, "via_port_at_source"),
                                                           local_addr=(src, sink_port))
                extra.append(t)
        except OSError:
            probe.close()
            for tr in extra:
                tr.close()
            continue
        transports += [probe, *extra]
        break
    else:
        raise RuntimeError("no port free on the sink host and every source address")
    senders: list[asyncio.DatagramTransport] = []
    for src in sources:
        t, _ = await loop.create_datagram_endpoint(lambda: _Sink(stats, "source"), local_addr=(src, 0))
        senders.append(t)
        transports.append(t)
    run_id = secrets.token_hex(3)
    sink = (sink_host, sink_port)
    templates = [(src, senders[i]) for i, src in enumerate(sources)]
    start = time.monotonic()
    total = int(rate * duration_s)
    give_up = start + duration_s + 1.0  # a late tick may still send what was due; never more
    next_log = start + 5
    while stats.sent < total:
        now = time.monotonic()
        if now >= give_up:
            break
        due = min(int(rate * (now - start)) + 1, total) - stats.sent
        for _ in range(max(0, due)):
            src, tr = templates[stats.sent % len(templates)]
            try:
                tr.sendto(_invite(stats.sent, src, sink, DOMAIN, run_id), target)
            except OSError:
                stats.send_errors += 1
            stats.sent += 1
        if now >= next_log:
            log(f"flood: {stats.sent} INVITEs sent, {stats.via_total()} responses at the Via sink")
            next_log += 5
        await asyncio.sleep(TICK_S)
    return time.monotonic() - start, transports


async def _measure(args: argparse.Namespace, up: SipsecUp) -> dict[str, Any]:
    proxy = up.address(DOMAIN, "proxy", "sip")
    proxy_pid = int(up.row(DOMAIN, "proxy")["pid"])
    pkg = up.address(DOMAIN, "pkg", "grpc")
    aor = f"sip:{USER}@{DOMAIN}"
    plan = LegitPlan(pkg=pkg, fingerprint=up.fingerprint(DOMAIN), proxy=proxy, aor=aor,
                     password=up.credentials()[aor], bind_host=args.legit_host, rate=args.legit_rate,
                     timeout_s=args.legit_timeout_s)
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe()
    legit = ctx.Process(target=_legit_main, args=(plan, child), daemon=True)
    legit.start()
    child.close()
    loop = asyncio.get_running_loop()
    try:
        kind, payload = await loop.run_in_executor(None, _recv, parent, 60.0)
        if kind != "ready":
            raise RuntimeError(f"the legitimate UA could not start: {payload}")
        log(f"legitimate UA ready ({aor} from {args.legit_host}, {args.legit_rate:g} signed REGISTERs/s)")
        # let the proxy settle after start-up, then take the baseline
        ua_start = time.monotonic() + 0.5
        flood_at = ua_start + args.baseline_s
        parent.send((ua_start, flood_at + args.duration_s))
        await asyncio.sleep(max(0.0, flood_at - time.monotonic() - 0.2))
        rss_before = rss_mib(proxy_pid)
        watched = {name: int(up.row(DOMAIN, name)["pid"]) for name in ("proxy", "location", "redis")
                   if any(r["domain"] == DOMAIN and r["service"] == name and r["pid"] for r in up.rows)}
        cpu_before = {name: cpu_s(pid) for name, pid in watched.items()}
        own_before = time.process_time()
        await asyncio.sleep(max(0.0, flood_at - time.monotonic()))
        stats = FloodStats()
        sources = [str(ipaddress.ip_address(args.source_base) + i) for i in range(args.sources)]
        log(f"flood: {args.rate:g} INVITEs/s for {args.duration_s:g} s from {len(sources)} sources "
            f"({sources[0]} … {sources[-1]}) at {proxy[0]}:{proxy[1]}; proxy RSS {rss_before:.1f} MiB")
        with RssSampler(proxy_pid) as sampler:
            took, transports = await _flood(proxy, sources, args.sink_host, args.rate, args.duration_s, stats)
            cpu_flood = {name: round(cpu_s(pid) - cpu_before[name], 2) for name, pid in watched.items()}
            cpu_flood["flood generator (this process)"] = round(time.process_time() - own_before, 2)
            rss_end_of_flood = rss_mib(proxy_pid)
            at_flood_end = stats.via_total()
            log(f"flood done: {stats.sent} sent in {took:.1f} s; proxy RSS {rss_end_of_flood:.1f} MiB; "
                f"settling {args.settle_s:g} s")
            kind, payload = await loop.run_in_executor(None, _recv, parent, args.legit_timeout_s + 30.0)
            if kind != "results":
                raise RuntimeError(f"the legitimate UA failed: {payload}")
            results: list[tuple[float, float | None, str]] = payload
            settle_end = time.monotonic() + args.settle_s
            next_log = time.monotonic() + 10
            while time.monotonic() < settle_end:
                await asyncio.sleep(min(1.0, max(0.0, settle_end - time.monotonic())))
                if time.monotonic() >= next_log:
                    log(f"settling: proxy RSS {rss_mib(proxy_pid):.1f} MiB, "
                        f"{stats.via_total()} responses at the Via sink")
                    next_log += 10
            rss_after = rss_mib(proxy_pid)
            for t in transports:
                t.close()
        proxy_alive = Path(f"/proc/{proxy_pid}").exists()
    finally:
        legit.join(5)
        if legit.is_alive():
            legit.kill()
            legit.join()
    before = _legit_summary(results, 0.0, args.baseline_s)
    during = _legit_summary(results, args.baseline_s, args.baseline_s + args.duration_s)
    per = list(stats.per_invite.values())
    via_total = stats.via_total()
    ratio = rss_after / rss_before if rss_before else None
    return {
        "rate": args.rate, "duration_s": args.duration_s, "sources": args.sources, "settle_s": args.settle_s,
        "target": f"{proxy[0]}:{proxy[1]}", "proxy_pid": proxy_pid, "proxy_alive": proxy_alive,
        "legit_registers": during["registers"], "legit_answered": during["answered_2xx"],
        "legit_p50_ms": during["p50_ms"], "legit_p99_ms": during["p99_ms"], "legit_failures": during["failures"],
        "legit": {"during_flood": during, "before_flood": before, "rate": args.legit_rate,
                  "timeout_s": args.legit_timeout_s, "source": args.legit_host},
        "flood_sent": stats.sent, "flood_send_errors": stats.send_errors,
        "flood_achieved_rate": round(stats.sent / took, 1) if took > 0 else None,
        "via_responses": via_total,
        "via_responses_per_invite": round(via_total / stats.sent, 3) if stats.sent else None,
        "flood": {
            "via_responses_by_end_of_flood": at_flood_end,
            "via_responses_at": {k: v for k, v in stats.at.items() if k != "source"},
            "responses_at_sources": stats.at["source"],
            "invites_answered_at_via": len(per),
            "via_responses_per_answered_invite_max": max(per) if per else 0,
            "via_responses_per_answered_invite_median": statistics.median(per) if per else 0,
            "statuses": dict(sorted(stats.statuses.items())),
            "not_sip": stats.not_sip,
            "proxy_cpu_s_during_flood": cpu_flood["proxy"],
            "cpu_s_during_flood": cpu_flood,
        },
        "proxy_rss_mib": {"before": round(rss_before, 1), "peak": round(sampler.peak, 1),
                          "end_of_flood": round(rss_end_of_flood, 1), "after": round(rss_after, 1)},
        "rss_after_over_before": None if ratio is None else round(ratio, 3),
        "rss_after_within_1_2x": ratio is not None and ratio <= RSS_BAR,
    }


def _recv(conn: Any, timeout_s: float) -> tuple[str, Any]:
    if not conn.poll(timeout_s):
        return ("error", f"no answer in {timeout_s:g} s")
    try:
        msg: tuple[str, Any] = conn.recv()
    except EOFError:
        return ("error", "the process ended without an answer")
    return msg


def _run(args: argparse.Namespace) -> dict[str, Any]:
    from sipsec import lifecycle

    log("starting sipsec up")
    t0 = time.monotonic()
    with SipsecUp() as up:
        log(f"sipsec up ready in {time.monotonic() - t0:.1f} s")
        result: dict[str, Any] = lifecycle.run(_measure(args, up))
        result["sipsec_up_alive"] = up.alive()
    return result


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    assert __doc__ is not None
    p = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p.add_argument("--rate", type=float, default=2000.0, help="flood INVITEs per second (default 2000)")
    p.add_argument("--duration-s", type=float, default=20.0, help="seconds of flood (default 20)")
    p.add_argument("--sources", type=int, default=64, help="source addresses (default 64)")
    p.add_argument("--source-base", default="127.0.0.10", help="first source address (default 127.0.0.10)")
    p.add_argument("--sink-host", default="127.0.0.9", help="the address the INVITEs' Via names (127.0.0.9)")
    p.add_argument("--settle-s", type=float, default=40.0, help="quiet seconds before RSS 'after' (default 40)")
    p.add_argument("--baseline-s", type=float, default=3.0, help="seconds of legitimate REGISTERs before the flood")
    p.add_argument("--legit-rate", type=float, default=10.0, help="legitimate REGISTERs per second (default 10)")
    p.add_argument("--legit-timeout-s", type=float, default=8.0, help="a REGISTER's give-up time (default 8)")
    p.add_argument("--legit-host", default="127.0.0.4", help="the legitimate UA's address (127.0.0.4)")
    p.add_argument("--check", action="store_true",
                   help="exit 1 unless every legitimate REGISTER was answered 2xx and RSS after <= 1.2x before")
    args = p.parse_args(argv)
    if not 0 < args.rate <= MAX_RATE:
        p.error(f"--rate must be in (0, {MAX_RATE}]")
    if not 0 < args.duration_s <= MAX_DURATION_S:
        p.error(f"--duration-s must be in (0, {MAX_DURATION_S:g}]")
    if not 0 <= args.settle_s <= MAX_SETTLE_S:
        p.error(f"--settle-s must be in [0, {MAX_SETTLE_S:g}]")
    if not 1 <= args.sources <= MAX_SOURCES:
        p.error(f"--sources must be in [1, {MAX_SOURCES}]")
    if not (0 < args.legit_rate <= 100 and 0 <= args.baseline_s <= 60 and 0.5 <= args.legit_timeout_s <= 60):
        p.error("--legit-rate must be in (0, 100], --baseline-s in [0, 60], --legit-timeout-s in [0.5, 60]")
    try:
        last = str(ipaddress.ip_address(args.source_base) + args.sources - 1)
        for addr in (args.source_base, last, args.sink_host, args.legit_host):
            loopback(addr)
    except ValueError as exc:
        p.error(str(exc))
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    result = run_reported("flood", lambda: _run(args))
    if result is None:
        return 1
    ok = result["legit_failures"] == 0 and result["legit_registers"] > 0 and result["rss_after_within_1_2x"]
    if args.json:
        print(json.dumps(result))
    else:
        rss = result["proxy_rss_mib"]
        print(f"flood: {result['flood_sent']} INVITEs ({result['flood_achieved_rate']}/s) from "
              f"{result['sources']} sources at {result['target']}")
        print(f"  responses at the spoofed Via sink: {result['via_responses']} "
              f"({result['via_responses_per_invite']} per INVITE), statuses {result['flood']['statuses']}")
        print(f"  legitimate signed REGISTERs during the flood: {result['legit_registers']}, "
              f"answered {result['legit_answered']}, failures {result['legit_failures']}, "
              f"p50 {result['legit_p50_ms']} ms, p99 {result['legit_p99_ms']} ms "
              f"(before the flood: p50 {result['legit']['before_flood']['p50_ms']} ms)")
        print(f"  proxy RSS before / peak / after {result['settle_s']:g} s: {rss['before']} / {rss['peak']} / "
              f"{rss['after']} MiB = {result['rss_after_over_before']}x "
              f"({'within' if result['rss_after_within_1_2x'] else 'over'} the 1.2x bar)")
    return 1 if args.check and not ok else 0


if __name__ == "__main__":
    sys.exit(main())
