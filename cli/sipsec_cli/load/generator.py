"""One load generator: registers its share of the phones, then places calls per the profile.

A generator owns a slice of every domain's users (:class:`GeneratorSpec`), spread over
:class:`~sipsec_cli.load.phone.PhoneHost` sockets on distinct loopback source addresses (the
gateways limit requests per source address, as they would real phones). Its callers are its
own users; each call's callee is a random user of another domain (owned by any generator).
It reports a :class:`~sipsec_cli.load.stats.Recorder` snapshot every second through ``emit``.

:func:`run_generator` runs it in the current event loop; :func:`child_main` is the entry point of
a generator process (``--procs``), talking to the coordinator through a multiprocessing queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sipsec_cli.load.phone import PhoneError, PhoneHost
from sipsec_cli.load.profile import Profile
from sipsec_cli.load.stats import Recorder

__all__ = ["DomainPhones", "GeneratorSpec", "child_main", "run_generator"]

_TICK_S = 0.005
_NOT_STARTED = "not started: in-flight bound"


@dataclass(frozen=True)
class DomainPhones:
    """One domain's share of a generator: its gateway's phone side, its users and their source addresses."""

    domain: str
    gateway: tuple[str, int]
    users: tuple[tuple[str, str], ...]  # (user part, phone password)
    addresses: tuple[str, ...]


@dataclass(frozen=True)
class GeneratorSpec:
    index: int
    domains: tuple[DomainPhones, ...]
    #: every user of every domain, as ``user@domain`` (callees are picked from another domain's)
    callees: dict[str, tuple[str, ...]] = field(default_factory=dict)
    profile: Profile = Profile()
    timeout_s: float = 32.0
    max_in_flight: int = 10_000
    seed: int = 0


class _Generator:
    def __init__(self, spec: GeneratorSpec, emit: Callable[[dict[str, Any]], None]) -> None:
        self.spec = spec
        self.emit = emit
        self.rec = Recorder()
        self.rng = random.Random(spec.seed)
        self.hosts: list[PhoneHost] = []
        self.callers: list[tuple[PhoneHost, str]] = []
        self.tasks: set[asyncio.Task[None]] = set()

    def _answered(self) -> None:
        self.rec.counts["answered"] += 1

    async def start(self) -> None:
        """Open the phone sockets and register every phone (raises PhoneError when one is refused)."""
        for dom in self.spec.domains:
            hosts = [PhoneHost(addr, dom.gateway, dom.domain, self._answered) for addr in dom.addresses]
            for host in hosts:
                await host.start()
            for i, (user, password) in enumerate(dom.users):
                host = hosts[i % len(hosts)]
                host.add_user(user, password)
                self.callers.append((host, user))
            self.hosts.extend(hosts)
        gate = asyncio.Semaphore(32)

        async def register(host: PhoneHost, user: str) -> None:
            async with gate:
                for attempt in range(3):
                    status = await host.register(user, timeout=self.spec.timeout_s)
                    if status < 300:
                        return
                    if status != 503 or attempt == 2:
                        raise PhoneError(status, f"REGISTER of {user}@{host.domain} refused")
                    await asyncio.sleep(1.0)

        await asyncio.gather(*(register(h, u) for h, u in self.callers))

    def _callee(self, domain: str) -> str:
        others = [d for d in self.spec.callees if d != domain] or list(self.spec.callees)
        return self.rng.choice(self.spec.callees[self.rng.choice(others)])

    async def _one_call(self) -> None:
        host, user = self.rng.choice(self.callers)
        rec = self.rec  # in_flight was counted when the call was launched
        held = False

        def established() -> None:
            nonlocal held
            held = True
            rec.held += 1

        try:
            outcome = await host.call(user, self._callee(host.domain), self.spec.profile.hold_s,
                                      self.spec.timeout_s, established)
        except Exception as exc:  # noqa: BLE001 - a bug in one call is counted, not fatal to the run
            rec.fail(f"error: {type(exc).__name__}")
            return
        finally:
            rec.in_flight -= 1
            if held:
                rec.held -= 1
        if outcome.setup_s is not None:
            rec.setup(outcome.setup_s)
        if outcome.failure:
            rec.fail(outcome.failure)
        else:
            rec.counts["completed"] += 1

    def _launch(self) -> None:
        self.rec.counts["offered"] += 1
        if self.rec.in_flight >= self.spec.max_in_flight:
            self.rec.fail(_NOT_STARTED)
            return
        self.rec.counts["started"] += 1
        self.rec.in_flight += 1  # now, so that a hold profile's loop sees it before the task runs
        task = asyncio.get_running_loop().create_task(self._one_call())
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def run(self, start_at: float) -> None:
        """Place calls from wall-clock ``start_at`` (shared by every generator) for the profile's duration."""
        profile = self.spec.profile
        await asyncio.sleep(max(0.0, start_at - time.time()))
        t0 = time.monotonic()
        launched, next_snap = 0, 1.0
        while True:
            t = min(time.monotonic() - t0, profile.duration_s)
            if profile.kind == "hold":
                allowed = profile.due(t)  # started at ``rate`` while below the concurrency
                while launched < allowed and self.rec.in_flight < profile.concurrent:
                    self._launch()
                    launched += 1
            else:
                for _ in range(profile.due(t) - launched):
                    self._launch()
                    launched += 1
            if t >= next_snap:
                self.emit(self.rec.snapshot(next_snap - 1.0))
                next_snap += 1.0
            if t >= profile.duration_s:
                break
            await asyncio.sleep(_TICK_S)
        await self._drain(t0, next_snap)

    async def _drain(self, t0: float, next_snap: float) -> None:
        deadline = time.monotonic() + self.spec.profile.hold_s + 2 * self.spec.timeout_s + 5
        while self.tasks and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
            t = time.monotonic() - t0
            if t >= next_snap:
                self.emit(self.rec.snapshot(next_snap - 1.0))
                next_snap += 1.0
        for task in list(self.tasks):
            task.cancel()
            self.rec.fail("unfinished at the end of the run")
        self.emit(self.rec.snapshot(max(0.0, next_snap - 1.0)))

    async def close(self) -> None:
        for host in self.hosts:
            with contextlib.suppress(Exception):
                await host.close()


async def run_generator(spec: GeneratorSpec, emit: Callable[[dict[str, Any]], None],
                        ready: Callable[[], None], go: Callable[[], asyncio.Future[float]]) -> None:
    """Register the phones, call ``ready``, await ``go`` (the shared start time), run the profile."""
    gen = _Generator(spec, emit)
    try:
        await gen.start()
        ready()
        await gen.run(await go())
    finally:
        await gen.close()


def child_main(spec: GeneratorSpec, out: Any, go: Any) -> None:
    """A generator process: messages ``("ready"|"snap"|"error"|"done", index, payload)`` on ``out``;
    ``go`` is a multiprocessing queue that brings the shared start time."""
    import logging

    logging.basicConfig(level=logging.WARNING)

    async def main() -> None:
        loop = asyncio.get_running_loop()

        async def wait_go() -> float:
            return float(await loop.run_in_executor(None, go.get))

        def go_future() -> asyncio.Future[float]:
            return asyncio.ensure_future(wait_go())

        await run_generator(spec, lambda s: out.put(("snap", spec.index, s)),
                            lambda: out.put(("ready", spec.index, None)), go_future)

    try:
        asyncio.run(main())
    except Exception as exc:  # noqa: BLE001 - reported to the coordinator, which fails the run
        out.put(("error", spec.index, f"{type(exc).__name__}: {exc}"))
        return
    out.put(("done", spec.index, None))
