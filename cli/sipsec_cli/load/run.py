"""The coordinator of ``sipsec load``: target, population, generators, live progress, report, verdict."""

from __future__ import annotations

import asyncio
import contextlib
import math
import multiprocessing
import queue
import secrets
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from sipsec_cli.load.generator import DomainPhones, GeneratorSpec, child_main, run_generator
from sipsec_cli.load.profile import Profile
from sipsec_cli.load.stats import Aggregate, Threshold
from sipsec_cli.load.target import LoadError, Target

__all__ = ["LoadOptions", "Population", "emit_sipp", "make_population", "provision", "run_load"]


@dataclass(frozen=True)
class LoadOptions:
    profile: Profile
    users: int = 100  # per domain
    procs: int = 1
    thresholds: tuple[Threshold, ...] = ()
    timeout_s: float = 32.0
    max_in_flight: int = 10_000
    users_per_address: int = 8
    seed: int = 0
    live: bool = True
    one_pair: bool = False  # every call alice-like user 0 -> user 0 of the other domain (best case)
    provision: bool = True
    users_file: str = ""  # existing users: aor:password lines (no provisioning)


@dataclass
class Population:
    """Per domain: (user part, PKG password, phone password)."""

    users: dict[str, list[tuple[str, str, str]]] = field(default_factory=dict)

    def aors(self, domain: str) -> list[tuple[str, str, str]]:
        return [(f"sip:{u}@{domain}", pw, phone) for u, pw, phone in self.users[domain]]


def make_population(domains: list[str], per_domain: int, users_file: str = "") -> Population:
    """``per_domain`` users ``load<run>u00001``… in each domain with random passwords, or the users of
    ``users_file`` (aor:password lines, already in their PKGs)."""
    pop = Population({d: [] for d in domains})
    if users_file:
        for line in Path(users_file).read_text(encoding="utf-8").splitlines():
            if not line.strip() or line.startswith("#"):
                continue
            at = line.find("@")
            colon = line.find(":", at)
            aor, password = line[:colon].removeprefix("sip:"), line[colon + 1:]
            user, domain = aor.split("@", 1)
            if domain in pop.users:
                pop.users[domain].append((user, password, secrets.token_urlsafe(12)))
        return pop
    run = secrets.token_hex(2)  # a new population each run (a deployment may keep earlier ones logged in)
    for d in domains:
        pop.users[d] = [(f"load{run}u{i:05d}", secrets.token_urlsafe(12), secrets.token_urlsafe(12))
                        for i in range(1, per_domain + 1)]
    return pop


def _addresses(domain_index: int, generator: int, count: int) -> tuple[str, ...]:
    """Loopback source addresses of a generator's phones for one domain: 127.<100+d>.<g>.<k>."""
    return tuple(f"127.{100 + domain_index}.{generator}.{k + 1}" for k in range(count))


def _specs(target: Target, pop: Population, options: LoadOptions) -> list[GeneratorSpec]:
    names = list(target.domains)
    procs = max(1, min(options.procs, min(len(pop.users[d]) for d in names)))
    callees = {d: tuple(f"{u}@{d}" for u, _, _ in pop.users[d]) for d in names}
    if options.one_pair:
        callees = {d: c[:1] for d, c in callees.items()}
    specs = []
    for g in range(procs):
        doms = []
        for i, d in enumerate(names):
            mine = [(u, phone) for j, (u, _, phone) in enumerate(pop.users[d]) if j % procs == g]
            count = max(1, min(250, math.ceil(len(mine) / options.users_per_address)))
            sources = target.domains[d].sources  # given: every socket on one of them (a port each)
            addresses = tuple(sources[k % len(sources)] for k in range(count)) if sources else _addresses(i, g, count)
            doms.append(DomainPhones(d, target.domains[d].phone, tuple(mine), addresses))
        specs.append(GeneratorSpec(g, tuple(doms), callees, options.profile.share(g, procs), options.timeout_s,
                                   max(1, options.max_in_flight // procs), options.seed * 1000 + g))
    if options.one_pair:  # the single caller: the first user of the first domain
        first = specs[0].domains[0]
        specs[0] = GeneratorSpec(0, (DomainPhones(first.domain, first.gateway, first.users[:1], first.addresses[:1]),
                                     *specs[0].domains[1:]), callees, options.profile, options.timeout_s,
                                 options.max_in_flight, options.seed)
        specs = specs[:1]
    return specs


class _Sampler:
    """CPU (% of one core) and RSS (KiB) of the named processes, once a second."""

    def __init__(self, processes: dict[str, int]) -> None:
        import psutil

        self.procs: dict[str, Any] = {}
        for label, pid in processes.items():
            with contextlib.suppress(psutil.Error):
                p = psutil.Process(pid)
                p.cpu_percent(None)
                self.procs[label] = p
        self.rows: list[dict[str, Any]] = []

    def add(self, label: str, pid: int) -> None:
        import psutil

        with contextlib.suppress(psutil.Error):
            p = psutil.Process(pid)
            p.cpu_percent(None)
            self.procs[label] = p

    def sample(self, t: float) -> dict[str, dict[str, float]]:
        import psutil

        row: dict[str, dict[str, float]] = {}
        for label, p in self.procs.items():
            with contextlib.suppress(psutil.Error):
                row[label] = {"cpu_percent": round(p.cpu_percent(None), 1), "rss_kib": p.memory_info().rss // 1024}
        self.rows.append({"t": round(t, 2), "processes": row})
        return row


class _Generators:
    """The generators: one task in this process (``procs`` 1), else one process each."""

    def __init__(self, specs: list[GeneratorSpec]) -> None:
        self.specs = specs
        self.inbox: queue.Queue[tuple[str, int, Any]] = queue.Queue()
        self.children: list[multiprocessing.process.BaseProcess] = []
        self.task: asyncio.Task[None] | None = None
        self._go: list[Any] = []
        self._go_local: asyncio.Future[float] | None = None

    def start(self) -> None:
        if len(self.specs) == 1:
            loop = asyncio.get_running_loop()
            self._go_local = loop.create_future()
            spec = self.specs[0]

            async def local() -> None:
                try:
                    await run_generator(spec, lambda s: self.inbox.put(("snap", 0, s)),
                                        lambda: self.inbox.put(("ready", 0, None)), lambda: self._go_local)  # type: ignore[arg-type,return-value]
                except Exception as exc:  # noqa: BLE001 - reported as the run's failure
                    self.inbox.put(("error", 0, f"{type(exc).__name__}: {exc}"))
                    return
                self.inbox.put(("done", 0, None))

            self.task = loop.create_task(local())
            return
        ctx = multiprocessing.get_context("spawn")
        out = ctx.Queue()
        self.inbox = out  # type: ignore[assignment]
        for spec in self.specs:
            go = ctx.Queue()
            proc = ctx.Process(target=child_main, args=(spec, out, go), daemon=True)
            proc.start()
            self.children.append(proc)
            self._go.append(go)

    def go(self, start_at: float) -> None:
        if self._go_local is not None:
            self._go_local.set_result(start_at)
        for q in self._go:
            q.put(start_at)

    def poll(self) -> list[tuple[str, int, Any]]:
        items = []
        with contextlib.suppress(queue.Empty):
            while True:
                items.append(self.inbox.get_nowait())
        return items

    def stop(self) -> None:
        for proc in self.children:
            proc.join(5)
            if proc.is_alive():
                proc.kill()
        if self.task is not None and not self.task.done():
            self.task.cancel()


async def _provision(target: Target, pop: Population, options: LoadOptions, err: TextIO) -> float:
    t0 = time.monotonic()
    for d in target.domains:
        users = pop.aors(d)
        if options.provision and target.provision is not None and not options.users_file:
            print(f"sipsec load: provisioning {len(users)} users in {d}'s PKG", file=err, flush=True)
            await target.provision(d, users)
        print(f"sipsec load: logging {len(users)} users in on {d}'s gateway", file=err, flush=True)
        await target.login(d, users)
    return time.monotonic() - t0


async def _wait_ready(gens: _Generators, n: int, timeout_s: float) -> None:
    ready: set[int] = set()
    deadline = time.monotonic() + timeout_s
    while len(ready) < n:
        for kind, index, payload in gens.poll():
            if kind == "error":
                raise LoadError(f"generator {index}: {payload}")
            if kind == "ready":
                ready.add(index)
        if time.monotonic() > deadline:
            raise LoadError(f"the generators' phones were not registered within {timeout_s:.0f} s")
        await asyncio.sleep(0.05)


async def provision(target: Target, options: LoadOptions, err: TextIO | None = None) -> Population:
    """A new population (or ``options.users_file``'s), provisioned and logged in on ``target``."""
    pop = make_population(list(target.domains), options.users, options.users_file)
    await _provision(target, pop, options, err or sys.stderr)
    return pop


async def run_load(target: Target, options: LoadOptions, err: TextIO | None = None,
                   population: Population | None = None) -> dict[str, Any]:
    """Provision the population (unless ``population``, already logged in, is given), register the
    phones, run the profile; the report document."""
    from sipsec_cli.load.report import summarize
    from sipsec_cli.load.stats import Aggregate

    err = err or sys.stderr
    pop = population
    provision_s = 0.0
    if pop is None:
        pop = make_population(list(target.domains), options.users, options.users_file)
        provision_s = await _provision(target, pop, options, err)
    specs = _specs(target, pop, options)
    gens = _Generators(specs)
    sampler = _Sampler(target.processes)
    gens.start()
    for i, proc in enumerate(gens.children):
        sampler.add(f"generator {i}", proc.pid or 0)
    if not gens.children:
        sampler.add("sipsec load (generator)" if target.kind != "embedded" else "sipsec load (topology)",
                    __import__("os").getpid())
    agg = Aggregate()
    try:
        await _wait_ready(gens, len(specs), 60.0 + options.users / 10.0)
        baseline = sampler.sample(0.0)
        start_at = time.time() + 0.5
        gens.go(start_at)
        await asyncio.sleep(0.5)
        run_s, peak = await _progress(gens, agg, sampler, options, len(specs), err)
    finally:
        gens.stop()
    return summarize(target, options, agg, sampler.rows, baseline, peak, run_s, provision_s)


async def _progress(gens: _Generators, agg: Aggregate, sampler: _Sampler, options: LoadOptions, n: int,
                    err: TextIO) -> tuple[float, dict[str, dict[str, float]]]:
    """Merge snapshots until every generator is done; live table on ``err`` (rich) meanwhile."""
    from sipsec_cli.load.report import live_table

    t0 = time.monotonic()
    done: set[int] = set()
    peak: dict[str, dict[str, float]] = {}
    peak_held = -1
    last_sample = 0.0
    live_ctx: Any = contextlib.nullcontext()
    if options.live:
        from rich.console import Console
        from rich.live import Live

        live_ctx = Live(console=Console(file=err), refresh_per_second=2, transient=False)
    with live_ctx as live:
        while len(done) < n:
            for kind, index, payload in gens.poll():
                if kind == "snap":
                    agg.add(index, payload)
                elif kind == "done":
                    done.add(index)
                elif kind == "error":
                    raise LoadError(f"generator {index}: {payload}")
            now = time.monotonic() - t0
            if now - last_sample >= 1.0:
                last_sample = now
                row = sampler.sample(now)
                held = agg.gauges()[1]
                if held > peak_held:  # the processes' RSS when the most calls were held
                    peak_held, peak = held, row
                if live is not None:
                    live.update(live_table(agg, options, now))
            await asyncio.sleep(0.05)
    return time.monotonic() - t0, peak


async def emit_sipp(target: Target, options: LoadOptions, directory: Path, err: TextIO | None = None) -> dict[str, Any]:
    """Provision and log in a population on ``target``, then write SIPp files for it (no calls)."""
    from sipsec_cli.load.sipp import write_sipp

    err = err or sys.stderr
    pop = make_population(list(target.domains), options.users, options.users_file)
    await _provision(target, pop, options, err)
    return {"emitted": [str(p) for p in write_sipp(directory, target, pop, options.seed)]}
