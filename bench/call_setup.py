"""Benchmark: secured vs plain call setup across two domains (loopback), then secured throughput.

The two-domain topology of ``sipsec demo`` (:data:`sipsec_cli.plan.PLAN`, run by
:class:`sipsec_cli.topology.TwoDomainTopology`:
PKG, location, proxy and UA gateway per domain, in-memory stores, in-process crypto), with
call tracing and proxy taps off. The headline population is ``--users`` (default 1,000) users
per domain, every call between a random caller of atlanta.com and a random callee of
biloxi.com, who auto-answers — more identities than the precomputation caches (G1, GT,
signer tables) and the proxy's location cache hold. ``--one-pair`` makes every call
sip:alice@atlanta.com → sip:bob@biloxi.com, the **best case** (every cache hits); the JSON's
``label`` says which a run measured. This is the in-process shape, not what ships: for
``sipsec up`` (Redis stores, the crypto-worker) see ``bench/load.py``. Every message of a
secured call is signed (signing policy ``every-message``).
By default (``--processes 2``) each domain runs in its own process, as two providers would
run on their own machines, so the two domains use the box's two cores; the atlanta.com
process also places the calls. ``--processes 1`` runs both in one process, as ``sipsec demo``;
``--processes 4`` runs each domain's services (PKG, location, proxy) and each gateway in a
process of its own (atlanta.com's gateway with the calls), closer to ``sipsec up``.

1. Latency: ``--calls`` (default 200) sequential secured calls, then as many plain ones; the
   setup latency of a call is from placing it (the INVITE is built, sealed and sent) until the
   2xx is opened and the ACK sent; each call is then hung up (BYE/200, not timed). Bytes per
   call: everything Alice's gateway sent and received for the call (INVITE … BYE/200), as the
   thesis counted them (Tables 5, 6). The gateways' crypto engines count signatures made and
   verified per secured call (with ``every-message``: each of INVITE, 180, 200, ACK, BYE, 200),
   and the time those operations take; the CPU time per call (both processes) is reported too.
2. Throughput: secured calls (setup and BYE) started at a fixed rate for ``--trial-s`` seconds
   with at most ``--max-in-flight`` calls in flight (a call that cannot start counts as
   failed); a rate passes when >= 99.5 % of its calls are answered within ``--timeout-s``
   and the system kept up (answered calls / time until the last one ended >= 90 % of the rate).
   The search doubles the rate until one fails, then bisects; a search stops after
   ``--budget-s`` seconds. ``secured_cps`` is the best passing rate with each call hung up at
   once (setup + BYE, as sipp's uac); ``secured_setup_only_cps`` the same search with the calls
   held until the trial ends (setups alone; ``--no-setup-only`` skips it). Each trial also
   reports the CPU per answered call of all processes (``cpu_ms_per_call``) and of each
   (``cpu_ms_per_call_by_process``: which one saturates first), the mean size of the
   gateways' signature-verification batches (``verify_batch_mean``; the engines batch under
   load: ``--verify-window-ms`` and ``--verify-busy-cpu``, default the gateways' 16 ms and
   0.7 of a core), and why the calls that failed did (``failures``, by reason).

The processes run on the event loop the services use (``SIPSEC_EVENT_LOOP``, default uvloop
where installed; ``SIPSEC_EVENT_LOOP=asyncio`` for asyncio's own).

    .venv/bin/python bench/call_setup.py            # tables
    .venv/bin/python bench/call_setup.py --json     # secured_p50_ms, ..., secured_cps
    .venv/bin/python bench/call_setup.py --profile  # + cProfile of the secured calls (top functions)

The bars of the README's measured figures: secured p50 <= 25 ms with every message signed, overhead <= 20 ms,
>= 100 secured setups/s on the 2-core dev box.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import json
import logging
import multiprocessing
import pstats
import random
import secrets
import statistics
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sipsec import lifecycle  # noqa: E402
from sipsec.engine import DEFAULT_BATCH_WINDOW_S, DEFAULT_BUSY_CPU, CryptoEngine  # noqa: E402
from sipsec.ibc import DomainParams, Identity, PrivateKey  # noqa: E402
from sipsec_cli.plan import PLAN  # noqa: E402
from sipsec_cli.topology import RemoteDomain, TwoDomainTopology, pick_ports  # noqa: E402
from sipsec_gateway.calls import CallState  # noqa: E402
from sipsec_gateway.gateway import Gateway, GatewayError  # noqa: E402
from sipsec_pkg.material import init_domain  # noqa: E402

#: The topology's caller and callee (sip:alice@atlanta.com, sip:bob@biloxi.com), and their domains.
ALICE, BOB = PLAN.caller, PLAN.callee
CALLER_DOMAIN, CALLEE_DOMAIN = (aor.rsplit("@", 1)[1] for aor in (ALICE, BOB))


@dataclass
class Population:
    """Who calls whom: every call picks a random caller and a random callee (``--users`` of each
    domain, more than any precomputation cache holds), or alice and bob alone (``--one-pair``,
    the best case: every cache hits)."""

    callers: list[str] = field(default_factory=lambda: [ALICE])
    callees: list[str] = field(default_factory=lambda: [BOB])

    @classmethod
    def of(cls, users: int, one_pair: bool) -> Population:
        if one_pair:
            return cls()
        return cls([f"sip:caller{i:05d}@{CALLER_DOMAIN}" for i in range(users)],
                   [f"sip:callee{i:05d}@{CALLEE_DOMAIN}" for i in range(users)])

    def pair(self) -> tuple[str, str]:
        return random.choice(self.callers), random.choice(self.callees)  # noqa: S311 - not security


#: This process's population (set from the arguments in every process).
POPULATION = Population()


async def _login_all(topo: TwoDomainTopology, aors: list[str], **kwargs: Any) -> None:
    """Log ``aors`` in on their gateway, 8 at a time."""
    gate = asyncio.Semaphore(8)

    async def one(aor: str) -> None:
        async with gate:
            await topo.login(aor, timeout_s=120.0, **kwargs)

    await asyncio.gather(*(one(a) for a in aors))
PASS_RATIO = 0.995
KEEP_UP = 0.9
BARS = {"secured_p50_ms": 25.0, "overhead_ms": 20.0, "secured_cps": 100.0}


def percentile(samples: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty sample."""
    ordered = sorted(samples)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


class CountingEngine:
    """The in-process engine, counting and timing its operations (signatures made and verified
    per call are the evidence that every message is signed)."""

    def __init__(self, inner: CryptoEngine) -> None:
        self.inner = inner
        self.count: dict[str, int] = {}
        self.seconds: dict[str, float] = {}

    def _done(self, op: str, t0: float) -> None:
        self.count[op] = self.count.get(op, 0) + 1
        self.seconds[op] = self.seconds.get(op, 0.0) + time.perf_counter() - t0

    async def encapsulate(self, params: DomainParams, identity: Identity) -> tuple[bytes, bytes]:
        t0 = time.perf_counter()
        key, ciphertext = await self.inner.encapsulate(params, identity)
        self._done("encapsulate", t0)
        return bytes(key), bytes(ciphertext)

    async def decapsulate(self, key: PrivateKey, ciphertext: bytes) -> bytes:
        t0 = time.perf_counter()
        result = bytes(await self.inner.decapsulate(key, ciphertext))
        self._done("decapsulate", t0)
        return result

    async def sign(self, key: PrivateKey, message: bytes) -> bytes:
        t0 = time.perf_counter()
        result = bytes(await self.inner.sign(key, message))
        self._done("sign", t0)
        return result

    async def verify(self, params: DomainParams, identity: Identity, message: bytes, signature: bytes) -> None:
        t0 = time.perf_counter()
        await self.inner.verify(params, identity, message, signature)
        self._done("verify", t0)

    async def close(self) -> None:
        await self.inner.close()


def _totals(engines: list[CountingEngine]) -> tuple[dict[str, int], dict[str, float]]:
    count: dict[str, int] = {}
    seconds: dict[str, float] = {}
    for e in engines:
        for op, n in e.count.items():
            count[op] = count.get(op, 0) + n
        for op, v in e.seconds.items():
            seconds[op] = seconds.get(op, 0.0) + v
    return count, seconds


@dataclass
class Latency:
    setup_ms: list[float] = field(default_factory=list)
    bytes_per_call: list[int] = field(default_factory=list)
    failed: int = 0


async def _call(alice: Gateway, secure: bool, timeout_s: float, held: list[str] | None = None,
                failures: Counter[str] | None = None) -> tuple[float, int] | None:
    """One call: placed, set up, hung up (or, with ``held``, kept up and its id appended there).
    (setup ms, bytes) or None when it was not answered; ``failures`` counts why not."""
    def failed(why: str) -> None:
        if failures is not None:
            failures[why] += 1

    t0 = time.perf_counter()
    try:
        caller, callee = POPULATION.pair()
        call = await alice.place_call(caller, callee, secure=secure, timeout=timeout_s)
    except GatewayError as exc:
        failed(f"setup: {exc.status}")
        return None
    setup_ms = (time.perf_counter() - t0) * 1e3
    if call.state is not CallState.ESTABLISHED or call.secure is not secure:
        failed(f"setup: {call.status or 'no answer'} {call.reason}".rstrip())
        return None
    if held is not None:
        held.append(call.id)
        return setup_ms, call.bytes_sent + call.bytes_received
    try:
        status = await asyncio.wait_for(alice.hangup(call.id), timeout_s)
    except TimeoutError:
        failed("BYE: no answer in time")
        return None
    except GatewayError as exc:
        failed(f"BYE: {exc.status}")
        return None
    if status != 200:
        failed(f"BYE: {status}")
        return None
    return setup_ms, call.bytes_sent + call.bytes_received


async def latency(alice: Gateway, secure: bool, calls: int, timeout_s: float) -> Latency:
    result = Latency()
    for _ in range(calls):
        outcome = await _call(alice, secure, timeout_s)
        if outcome is None:
            result.failed += 1
            continue
        result.setup_ms.append(outcome[0])
        result.bytes_per_call.append(outcome[1])
    return result


@dataclass
class Snapshot:
    """CPU seconds used so far and the crypto engines' operation counts and seconds (one or more processes)."""

    cpu_s: float
    count: dict[str, int]
    seconds: dict[str, float]
    verify_batches: int = 0  # batches the engines' verify lanes ran (InProcessEngine.verify_batches)
    verify_batched: int = 0  # verifications in them
    cpu_by_process: dict[str, float] = field(default_factory=dict)  # cpu_s per process, by the domain it runs

    def __add__(self, other: Snapshot) -> Snapshot:
        count = dict(self.count)
        seconds = dict(self.seconds)
        for op, n in other.count.items():
            count[op] = count.get(op, 0) + n
        for op, v in other.seconds.items():
            seconds[op] = seconds.get(op, 0.0) + v
        return Snapshot(self.cpu_s + other.cpu_s, count, seconds, self.verify_batches + other.verify_batches,
                        self.verify_batched + other.verify_batched, {**self.cpu_by_process, **other.cpu_by_process})


def _snapshot(engines: list[CountingEngine], name: str) -> Snapshot:
    """This process's snapshot; ``name`` says which domains it runs."""
    count, seconds = _totals(engines)
    stats = [e.inner.verify_batches for e in engines if hasattr(e.inner, "verify_batches")]
    cpu = time.process_time()
    return Snapshot(cpu, count, seconds, sum(b.count for b in stats), sum(b.items for b in stats), {name: cpu})


SnapshotFn = Callable[[], Awaitable[Snapshot]]


@dataclass
class Trial:
    rate: float
    attempted: int
    answered: int
    elapsed_s: float
    p50_ms: float | None
    cpu_ms_per_call: float | None = None  # CPU of all processes during the trial, per answered call
    #: the same, split by process (named by the domains it runs): which one saturates first
    cpu_ms_per_call_by_process: dict[str, float] = field(default_factory=dict)
    verify_batch_mean: float | None = None  # mean size of the verify batches during the trial
    failures: dict[str, int] = field(default_factory=dict)  # why the calls not answered failed, by reason

    @property
    def passed(self) -> bool:
        """>= 99.5 % answered, and kept up: the calls were done at >= 90 % of the offered rate."""
        return (self.attempted > 0 and self.answered >= PASS_RATIO * self.attempted
                and self.achieved_cps >= KEEP_UP * self.rate)

    @property
    def achieved_cps(self) -> float:
        return self.answered / self.elapsed_s if self.elapsed_s > 0 else 0.0


async def _hang_up_all(alice: Gateway, call_ids: list[str], timeout_s: float) -> None:
    """End held calls, 20 at a time (untimed: between trials)."""
    for i in range(0, len(call_ids), 20):
        await asyncio.gather(*(asyncio.wait_for(alice.hangup(cid), timeout_s) for cid in call_ids[i:i + 20]),
                             return_exceptions=True)


async def trial(alice: Gateway, rate: float, duration_s: float, max_in_flight: int, timeout_s: float,
                bye: bool = True) -> Trial:
    """Start secured calls at ``rate``/s for ``duration_s`` seconds, at most ``max_in_flight`` at once;
    each call is hung up at once (``bye``) or held until the trial is over."""
    loop = asyncio.get_running_loop()
    total = max(1, int(rate * duration_s))
    in_flight = 0
    answered = 0
    setups: list[float] = []
    tasks: set[asyncio.Task[None]] = set()
    held: list[str] | None = None if bye else []
    failures: Counter[str] = Counter()
    last_done = loop.time()

    async def one() -> None:
        nonlocal in_flight, answered, last_done
        try:
            outcome = await _call(alice, True, timeout_s, held, failures)
        finally:
            in_flight -= 1
        if outcome is not None:
            answered += 1
            setups.append(outcome[0])
            last_done = loop.time()

    start = loop.time()
    for i in range(total):
        delay = start + i / rate - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        if in_flight >= max_in_flight:
            failures["not started: in-flight bound"] += 1  # this call could not start: it counts as failed
            continue
        in_flight += 1
        task = loop.create_task(one())
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    if tasks:
        await asyncio.wait(set(tasks), timeout=timeout_s * 2 + 5)
    elapsed = max(last_done, start + (total - 1) / rate) - start + 1 / rate
    for task in list(tasks):
        task.cancel()
        failures["cancelled: trial over"] += 1
    if held:
        await _hang_up_all(alice, held, timeout_s)
    return Trial(rate, total, answered, elapsed, statistics.median(setups) if setups else None,
                 failures=dict(failures))


async def measured_trial(alice: Gateway, args: argparse.Namespace, rate: float, bye: bool,
                         snapshot: SnapshotFn) -> Trial:
    """:func:`trial`, with the CPU per answered call and the verify batch size over it."""
    before = await snapshot()
    t = await trial(alice, rate, args.trial_s, args.max_in_flight, args.timeout_s, bye)
    after = await snapshot()
    if t.answered:
        t.cpu_ms_per_call = (after.cpu_s - before.cpu_s) * 1e3 / t.answered
        t.cpu_ms_per_call_by_process = {name: (cpu - before.cpu_by_process.get(name, 0.0)) * 1e3 / t.answered
                                        for name, cpu in after.cpu_by_process.items()}
    batches = after.verify_batches - before.verify_batches
    if batches:
        t.verify_batch_mean = (after.verify_batched - before.verify_batched) / batches
    return t


async def throughput(alice: Gateway, args: argparse.Namespace, snapshot: SnapshotFn,
                     bye: bool = True) -> list[Trial]:
    """Double the rate until a trial fails, then bisect; within ``budget_s`` seconds."""
    deadline = time.monotonic() + args.budget_s
    trials: list[Trial] = []
    low, high = 0.0, None
    rate = float(args.start_rate)
    while time.monotonic() + args.trial_s < deadline:
        t = await measured_trial(alice, args, rate, bye, snapshot)
        trials.append(t)
        await asyncio.sleep(0.5)  # let the last BYEs and retransmissions settle
        if t.passed:
            low = rate
        else:
            high = rate
        if high is None:
            if rate >= args.max_rate:
                break
            rate = min(rate * 2, float(args.max_rate))
        else:
            if high - low <= max(2.0, 0.1 * high):
                break
            rate = (low + high) / 2 if low > 0 else high / 2
    return trials


def _trial_doc(t: Trial) -> dict[str, Any]:
    return {"rate": t.rate, "attempted": t.attempted, "answered": t.answered,
            "achieved_cps": round(t.achieved_cps, 1), "p50_ms": t.p50_ms and round(t.p50_ms, 3),
            "cpu_ms_per_call": t.cpu_ms_per_call and round(t.cpu_ms_per_call, 2),
            "cpu_ms_per_call_by_process": {k: round(v, 2) for k, v in t.cpu_ms_per_call_by_process.items()},
            "verify_batch_mean": t.verify_batch_mean and round(t.verify_batch_mean, 2),
            "failures": t.failures, "passed": t.passed}


def _counting(engines: list[CountingEngine]) -> Any:
    def engine(_: str, inner: CryptoEngine) -> CountingEngine:
        engines.append(CountingEngine(inner))
        return engines[-1]
    return engine


PublicTuple = tuple[bytes, str, int, int]  # RemoteDomain as plain values, for the pipe


def _to_tuple(public: RemoteDomain) -> PublicTuple:
    return public.params.to_bytes(), public.fingerprint, public.pkg_port, public.proxy_port


def _from_tuple(public: PublicTuple) -> RemoteDomain:
    params, fingerprint, pkg_port, proxy_port = public
    return RemoteDomain(DomainParams.from_bytes(params), fingerprint, pkg_port, proxy_port)


def _domain_process_main(conn: Any, domain: str, part: str, ports: tuple[int, int], password: str,
                         signing: str, timeout_s: float, threaded: bool, verify_window_s: float,
                         verify_busy_cpu: float, users: int = 1, one_pair: bool = True) -> None:
    """A child process running ``part`` (``all``, ``services`` or ``gateway``) of ``domain``.

    Running the domain's services (``all``, ``services``), it makes the domain's key material
    and sends the public part. On ("start", the other publics) it starts what it runs (a
    ``gateway`` part finds its domain's PKG and proxy among those publics) and logs bob in
    (auto-answer) if it runs biloxi.com's gateway; then it answers "stats" with a
    :class:`Snapshot` and ends on "stop" or EOF."""
    logging.getLogger("sipsec").setLevel(logging.WARNING)
    global POPULATION
    POPULATION = Population.of(users, one_pair)
    material = None
    if part != "gateway":
        material = init_domain(domain)
        conn.send(("material", (material.params.to_bytes(), material.signed.fingerprint)))
    label = domain if part == "all" else f"{domain} {part}"

    async def serve() -> None:
        engines: list[CountingEngine] = []
        loop = asyncio.get_running_loop()
        try:
            message = await loop.run_in_executor(None, conn.recv)
        except EOFError:
            return
        if not (isinstance(message, tuple) and message[0] == "start"):
            return  # "stop": the parent gave up before the start
        publics = message[1]
        remote = {name: _from_tuple(public) for name, public in publics.items()}
        topo = TwoDomainTopology(users=POPULATION.callers + POPULATION.callees,
                                 trace_calls=0, tap=False, password=password, signing=signing,
                                 call_timeout_s=timeout_s, engine_factory=_counting(engines),
                                 threaded_crypto=threaded, verify_window_s=verify_window_s,
                                 verify_busy_cpu=verify_busy_cpu, remote=remote, parts={domain: part},
                                 materials={domain: material} if material is not None else None,
                                 ports={domain: ports} if material is not None else None)
        try:
            await topo.start()
            if part != "services" and domain == CALLEE_DOMAIN:
                await _login_all(topo, POPULATION.callees, auto_answer=True)
            conn.send(("ready", None))
            while True:
                try:
                    command = await loop.run_in_executor(None, conn.recv)
                except EOFError:
                    break
                if command != "stats":
                    break
                conn.send(("stats", _snapshot(engines, label)))
        except Exception as exc:  # noqa: BLE001 - reported to the parent, which stops with it
            conn.send(("error", f"{label} failed: {exc}"))
        finally:
            await topo.stop()

    lifecycle.run(serve())


class DomainProcess:
    """``part`` of ``domain`` in a child process (``--processes 2`` or ``4``), driven over a pipe."""

    def __init__(self, domain: str, part: str, ports: tuple[int, int], password: str,
                 args: argparse.Namespace) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.domain, self.part, self.ports = domain, part, ports
        self.label = domain if part == "all" else f"{domain} {part}"
        self.process = ctx.Process(
            target=_domain_process_main, name=f"sipsec-bench-{domain}-{part}", daemon=True,
            args=(child, domain, part, ports, password, args.signing, args.timeout_s, args.threaded_crypto,
                  args.verify_window_ms / 1000, args.verify_busy_cpu, args.users, args.one_pair))
        self.process.start()
        child.close()

    async def _recv(self, expect: str, timeout_s: float) -> Any:
        loop = asyncio.get_running_loop()
        ready = await loop.run_in_executor(None, self.conn.poll, timeout_s)
        if not ready:
            raise SystemExit(f"call_setup: the {self.label} process did not answer in {timeout_s:g} s")
        kind, value = self.conn.recv()
        if kind != expect:
            raise SystemExit(f"call_setup: {value}")
        return value

    async def public(self) -> RemoteDomain:
        """The domain's public parameters, fingerprint and ports (before its services start)."""
        params, fingerprint = await self._recv("material", 60.0)
        return RemoteDomain(DomainParams.from_bytes(params), fingerprint, *self.ports)

    async def start(self, publics: dict[str, RemoteDomain]) -> None:
        """Start what the process runs, given the other parts' public data; biloxi.com's gateway logs bob in."""
        self.conn.send(("start", {name: _to_tuple(public) for name, public in publics.items()}))
        # every user is provisioned and logged in first (a password hash each): time scales
        await self._recv("ready", 60.0 + 0.5 * len(POPULATION.callers + POPULATION.callees))

    async def snapshot(self) -> Snapshot:
        self.conn.send("stats")
        snap: Snapshot = await self._recv("stats", 30.0)
        return snap

    def stop(self) -> None:
        try:
            self.conn.send("stop")
        except OSError:
            pass
        self.process.join(15)
        if self.process.is_alive():
            self.process.kill()
        self.conn.close()


@dataclass
class Deployment:
    """The topology as ``--processes`` splits it: this process's part, the children, what they publish."""

    topology: TwoDomainTopology
    engines: list[CountingEngine]
    label: str = "both domains"  # what this process runs, for the per-process CPU figures
    children: list[DomainProcess] = field(default_factory=list)
    publics: dict[str, RemoteDomain] = field(default_factory=dict)

    async def snapshot(self) -> Snapshot:
        snap = _snapshot(self.engines, self.label)
        for child in self.children:
            snap = snap + await child.snapshot()
        return snap

    async def start_children(self, part: str) -> None:
        """Start the children running ``part`` (services before this process's topology starts,
        the others after), each told the other parts' public data."""
        for child in self.children:
            if child.part == part:
                # a gateway part's own domain's services are remote to it too
                await child.start({n: p for n, p in self.publics.items()
                                   if n != child.domain or part == "gateway"})

    def stop_children(self) -> None:
        for child in reversed(self.children):  # gateways before the services they use
            child.stop()


async def deploy(args: argparse.Namespace) -> Deployment:
    """Lay the topology out over ``args.processes`` processes (the children are started, not yet serving)."""
    engines: list[CountingEngine] = []
    common: dict[str, Any] = {"trace_calls": 0, "tap": False, "signing": args.signing,
                              "call_timeout_s": args.timeout_s, "engine_factory": _counting(engines),
                              "threaded_crypto": args.threaded_crypto, "workers": args.workers,
                              "verify_window_s": args.verify_window_ms / 1000,
                              "verify_busy_cpu": args.verify_busy_cpu,
                              "password": secrets.token_urlsafe(18),  # the users' password in every process
                              "users": POPULATION.callers + POPULATION.callees}
    password = common["password"]
    if args.processes == 1:
        return Deployment(TwoDomainTopology(**common), engines)
    ports = {d.name: pick_ports(d.host) for d in PLAN.domains}
    children: list[DomainProcess] = []
    try:
        if args.processes == 2:  # the callee's domain in a child; the caller's here
            caller = init_domain(CALLER_DOMAIN)
            children.append(DomainProcess(CALLEE_DOMAIN, "all", ports[CALLEE_DOMAIN], password, args))
            publics = {CALLER_DOMAIN: RemoteDomain(caller.params, caller.signed.fingerprint, *ports[CALLER_DOMAIN]),
                       CALLEE_DOMAIN: await children[0].public()}
            topology = TwoDomainTopology(materials={CALLER_DOMAIN: caller}, ports={CALLER_DOMAIN: ports[CALLER_DOMAIN]},
                                         remote={CALLEE_DOMAIN: publics[CALLEE_DOMAIN]}, **common)
            return Deployment(topology, engines, f"{CALLER_DOMAIN} + calls", children, publics)
        # each domain's services in a child, the callee's gateway in a third; the caller's gateway here
        children.extend(DomainProcess(name, "services", ports[name], password, args) for name in PLAN.names)
        publics = {child.domain: await child.public() for child in children}
        children.append(DomainProcess(CALLEE_DOMAIN, "gateway", ports[CALLEE_DOMAIN], password, args))
        topology = TwoDomainTopology(remote=publics, parts={CALLER_DOMAIN: "gateway"}, **common)
        return Deployment(topology, engines, f"{CALLER_DOMAIN} gateway + calls", children, publics)
    except BaseException:
        for child in children:
            child.stop()
        raise


@dataclass
class Measured:
    """What the latency runs and the rate searches measured."""

    secured: Latency
    plain: Latency
    secured_cpu_s: float
    plain_cpu_s: float
    ops: dict[str, float]  # crypto operations per secured call
    ops_ms: dict[str, float]  # their milliseconds per secured call
    trials: list[Trial]
    setup_trials: list[Trial]
    profile: cProfile.Profile | None


async def measure(alice: Gateway, args: argparse.Namespace, snapshot: SnapshotFn) -> Measured:
    """Warm up, time ``args.calls`` secured then plain calls, then search the secured rates."""
    await latency(alice, True, args.warmup, args.timeout_s)
    await latency(alice, False, args.warmup, args.timeout_s)
    profile = cProfile.Profile() if args.profile else None
    if profile is not None:
        profile.enable()
    before = await snapshot()
    secured = await latency(alice, True, args.calls, args.timeout_s)
    after = await snapshot()
    if profile is not None:
        profile.disable()
    answered = max(1, len(secured.setup_ms))
    ops = {op: (after.count[op] - before.count.get(op, 0)) / answered for op in after.count}
    ops_ms = {op: (after.seconds[op] - before.seconds.get(op, 0.0)) * 1e3 / answered for op in after.seconds}
    plain_before = await snapshot()
    plain = await latency(alice, False, args.calls, args.timeout_s)
    plain_cpu = (await snapshot()).cpu_s - plain_before.cpu_s
    search = args.budget_s > 0
    trials = await throughput(alice, args, snapshot) if search else []
    setup_trials = await throughput(alice, args, snapshot, bye=False) if search and args.setup_only else []
    return Measured(secured, plain, after.cpu_s - before.cpu_s, plain_cpu, ops, ops_ms, trials, setup_trials,
                    profile)


def _best(trials: list[Trial]) -> Trial | None:
    passing = [t for t in trials if t.passed]
    return max(passing, key=lambda t: t.rate) if passing else None


def report(args: argparse.Namespace, m: Measured) -> dict[str, Any]:
    """The JSON document of a run."""
    secured, plain = m.secured, m.plain
    if not secured.setup_ms or not plain.setup_ms:
        raise SystemExit("call_setup: no call was answered")
    s50, p50 = percentile(secured.setup_ms, 50), percentile(plain.setup_ms, 50)
    best, setup_best = _best(m.trials), _best(m.setup_trials)
    result: dict[str, Any] = {
        "label": "best case: one caller/callee pair (every cache hits)" if args.one_pair
                 else f"headline: {args.users:,} users per domain, random caller/callee pairs",
        "users_per_domain": 1 if args.one_pair else args.users,
        "pairs": "one pair (best case)" if args.one_pair else "random",
        "calls": args.calls,
        "processes": args.processes,
        "signing": args.signing,
        "threaded_crypto": args.threaded_crypto,
        "verify_window_ms": args.verify_window_ms,
        "verify_busy_cpu": args.verify_busy_cpu,
        "workers": args.workers,
        "secured_p50_ms": round(s50, 3),
        "secured_p95_ms": round(percentile(secured.setup_ms, 95), 3),
        "plain_p50_ms": round(p50, 3),
        "plain_p95_ms": round(percentile(plain.setup_ms, 95), 3),
        "ratio": round(s50 / p50, 3),
        "overhead_ms": round(s50 - p50, 3),
        "secured_bytes": int(statistics.median(secured.bytes_per_call)),
        "plain_bytes": int(statistics.median(plain.bytes_per_call)),
        "bytes_ratio": round(statistics.median(secured.bytes_per_call) / statistics.median(plain.bytes_per_call), 3),
        "signatures_per_secured_call": round(m.ops.get("sign", 0.0), 2),
        "verifications_per_secured_call": round(m.ops.get("verify", 0.0), 2),
        "cpu_ms_per_secured_call": round(m.secured_cpu_s * 1e3 / max(1, len(secured.setup_ms)), 2),
        "cpu_ms_per_plain_call": round(m.plain_cpu_s * 1e3 / max(1, len(plain.setup_ms)), 2),
        "crypto_ms_per_secured_call": {op: round(v, 2) for op, v in sorted(m.ops_ms.items())},
        "secured_failed": secured.failed,
        "plain_failed": plain.failed,
        "secured_cps": best.rate if best else 0.0,
        "secured_cps_achieved": round(best.achieved_cps, 1) if best else 0.0,
        "secured_setup_only_cps": setup_best.rate if setup_best else None,
        "trials": [_trial_doc(t) for t in m.trials],
        "setup_only_trials": [_trial_doc(t) for t in m.setup_trials],
    }
    result["bars"] = {
        "secured_p50_ms<=25": result["secured_p50_ms"] <= BARS["secured_p50_ms"],
        "overhead_ms<=20": result["overhead_ms"] <= BARS["overhead_ms"],
        "secured_cps>=100": result["secured_cps"] >= BARS["secured_cps"],
    }
    if m.profile is not None:
        out = io.StringIO()
        stats = pstats.Stats(m.profile, stream=out)
        stats.sort_stats("tottime").print_stats(args.profile_top)
        result["profile"] = out.getvalue()
    return result


async def run(args: argparse.Namespace) -> dict[str, Any]:
    global POPULATION
    POPULATION = Population.of(args.users, args.one_pair)
    logging.getLogger("sipsec").setLevel(logging.WARNING)
    dep = await deploy(args)
    try:
        await dep.start_children("services")
        async with dep.topology as topo:
            await dep.start_children("all")
            await dep.start_children("gateway")
            if not dep.children:
                await _login_all(topo, POPULATION.callees, auto_answer=True)
            await _login_all(topo, POPULATION.callers)
            measured = await measure(topo.gateway_for(POPULATION.callers[0]), args, dep.snapshot)
    finally:
        dep.stop_children()
    return report(args, measured)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--calls", type=int, default=200, help="sequential calls per kind (default 200)")
    parser.add_argument("--users", type=int, default=1000,
                        help="users per domain; each call between a random caller and a random callee "
                             "(default 1,000: more than any precomputation cache holds; provisioning and "
                             "logging them in takes minutes: a scrypt hash and a PKG login each)")
    parser.add_argument("--one-pair", action="store_true",
                        help="every call alice→bob: the best case (every cache hits), labelled so")
    parser.add_argument("--warmup", type=int, default=10, help="untimed calls per kind first (default 10)")
    parser.add_argument("--processes", type=int, default=2, choices=(1, 2, 4),
                        help="2 (default): each domain in its own process, using both cores; "
                             "1: both domains in this process, as sipsec demo; 4: each domain's services "
                             "and each gateway in a process of its own")
    parser.add_argument("--signing", default="every-message", choices=("every-message", "dialog-establishing"))
    parser.add_argument("--verify-window-ms", type=float, default=DEFAULT_BATCH_WINDOW_S * 1000,
                        help="how long a verification waits under load to be batched "
                             f"(default {DEFAULT_BATCH_WINDOW_S * 1000:g}, the gateways' default; 0 = never)")
    parser.add_argument("--verify-busy-cpu", type=float, default=DEFAULT_BUSY_CPU,
                        help="the share of a core a process must be using before its verifications wait "
                             f"(default {DEFAULT_BUSY_CPU:g}, the gateways' default; 0 = on the arrival rate alone)")
    parser.add_argument("--threaded-crypto", action="store_true",
                        help="the gateways run pairings on a thread pool (default: inline, the embedded default)")
    parser.add_argument("--workers", type=int, default=0,
                        help="run the pairings on an in-process crypto-worker with this many pool processes "
                             "(default 0: in-process crypto, the embedded default)")
    parser.add_argument("--timeout-s", type=float, default=5.0, help="longest wait for a call's setup")
    parser.add_argument("--start-rate", type=float, default=10.0, help="first throughput trial, calls/s")
    parser.add_argument("--max-rate", type=float, default=400.0, help="highest rate tried, calls/s")
    parser.add_argument("--trial-s", type=float, default=3.0, help="seconds per throughput trial")
    parser.add_argument("--max-in-flight", type=int, default=100, help="bound on calls in flight")
    parser.add_argument("--budget-s", type=float, default=75.0, help="time for each rate search (0 = skip)")
    parser.add_argument("--setup-only", action=argparse.BooleanOptionalAction, default=True,
                        help="also search the rate of setups alone (calls held, hung up after each trial)")
    parser.add_argument("--profile", action="store_true",
                        help="cProfile the secured latency calls (this process only: with --processes 2, atlanta.com)")
    parser.add_argument("--profile-top", type=int, default=30)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    result = lifecycle.run(run(args))
    if args.json:
        print(json.dumps(result))
        return 0
    from rich.console import Console
    from rich.table import Table

    console = Console()
    console.print(result["label"])
    table = Table(title=f"call setup, two domains on loopback ({args.processes} process"
                        f"{'es' if args.processes > 1 else ''}), {args.calls} sequential calls per kind")
    for col in ("", "p50", "p95", "bytes/call"):
        table.add_column(col, justify="right")
    table.add_row("secured", f"{result['secured_p50_ms']:.2f} ms", f"{result['secured_p95_ms']:.2f} ms",
                  str(result["secured_bytes"]))
    table.add_row("plain", f"{result['plain_p50_ms']:.2f} ms", f"{result['plain_p95_ms']:.2f} ms",
                  str(result["plain_bytes"]))
    table.add_row("secured/plain", f"{result['ratio']:.2f}×", f"overhead {result['overhead_ms']:.2f} ms",
                  f"{result['bytes_ratio']:.2f}×")
    console.print(table)
    console.print(f"per secured call (INVITE … BYE 200): {result['signatures_per_secured_call']:g} signatures "
                  f"made, {result['verifications_per_secured_call']:g} verified ({args.signing})")
    crypto = result["crypto_ms_per_secured_call"]
    procs = f"{args.processes} process{'es' if args.processes > 1 else ''}"
    console.print(f"CPU per call ({procs}): secured {result['cpu_ms_per_secured_call']:.1f} ms, "
                  f"plain {result['cpu_ms_per_plain_call']:.1f} ms; of a secured call's, pairing-based "
                  f"crypto {sum(crypto.values()):.1f} ms ("
                  + ", ".join(f"{op} {v:.1f}" for op, v in crypto.items()) + ")")
    for title, key in (("secured throughput search (setup + BYE per call)", "trials"),
                       ("secured throughput search, setups only (calls held, hung up after the trial)",
                        "setup_only_trials")):
        if not result[key]:
            continue
        table = Table(title=title)
        for col in ("rate/s", "attempted", "answered", "achieved/s", "p50 ms", "CPU ms/call",
                    "by process", "verify batch", "failures", "pass"):
            table.add_column(col, justify="right")
        for t in result[key]:
            table.add_row(f"{t['rate']:.0f}", str(t["attempted"]), str(t["answered"]), f"{t['achieved_cps']:.1f}",
                          "—" if t["p50_ms"] is None else f"{t['p50_ms']:.1f}",
                          "—" if t["cpu_ms_per_call"] is None else f"{t['cpu_ms_per_call']:.1f}",
                          " / ".join(f"{v:.1f}" for v in t["cpu_ms_per_call_by_process"].values()) or "—",
                          "—" if t["verify_batch_mean"] is None else f"{t['verify_batch_mean']:.2f}",
                          ", ".join(f"{why} ×{n}" for why, n in t["failures"].items()) or "—",
                          "✓" if t["passed"] else "✗")
        console.print(table)
    if any(t["cpu_ms_per_call_by_process"] for t in result["trials"]):
        console.print("CPU ms/call by process: " + " / ".join(next(
            t["cpu_ms_per_call_by_process"] for t in result["trials"] if t["cpu_ms_per_call_by_process"])))
    console.print(f"secured setups/s (>= 99.5 % answered, kept up): {result['secured_cps']:.0f} with BYE, "
                  f"{result['secured_setup_only_cps'] or 0:.0f} setups alone")
    console.print("bars: " + ", ".join(f"{k} {'✓' if v else '✗'}" for k, v in result["bars"].items()))
    if "profile" in result:
        console.print(result["profile"], markup=False, highlight=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
