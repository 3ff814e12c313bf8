"""The embedded crypto engine: runs the ``sipsec.ibc`` calls in this process.

Verifications are batched by default: every ``verify`` waiting on an event loop joins the
next :func:`sipsec.ibc.verify_batch` of that loop's *verify lane*, which runs one batch at a
time. A batch of n valid signatures costs one multi-pairing instead of n, and a bad one
still fails alone with the error ``sipsec.ibc.verify`` raises.

Under load the lane also waits a little for a batch to fill: when verifies arrive more
often than once per ``batch_window_s`` (a moving average of the gaps between them) *and*
the process is busy (a moving average of its CPU use, ``time.process_time`` over wall
time, at or above ``busy_cpu`` of one core), the first of a batch waits that long (16 ms
by default) before the batch runs, or until ``max_batch`` are waiting. Each batch pays a
fixed ~1.6 ms (a two-pair multi-pairing), so a lane that waits spends at most
1.6 ms / ``batch_window_s`` of a core on it (10 % at 16 ms) however fast verifies come.
Waiting trades latency for CPU, which only pays when CPU is short: below ``busy_cpu`` the
lane batches only what is already waiting, and a lone verify, or a trickle of them, never
waits. Nor does a chain of verifies each caused by the last (one call at a time, on a busy
process): once two waits in a row gathered nothing the lane stops waiting, probing with a
quarter-window wait every 17th time, until waits gather company again. Near saturation, at the call rates the
benchmark drives, this gives batches of ~8 and halves the CPU of a secured call against
one call at a time (``bench/call_setup.py``).

A forged signature in a batch is found by halving (``sipsec.ibc.verify_batch``: log2(n)
more multi-pairings for a batch of n), so the batch bound ``max_batch`` is also the bound
on what one forgery costs the others. 16 by default: a batch of 16 costs ~0.3 ms a
signature against ~0.22 ms at 32, but a forgery in it ~7 ms instead of ~9 ms, and a burst
of 64 INVITEs with 2 forged ones among them costs ~1.15x the genuine ones alone, against
~1.23x with batches of 32 (``bench/forgery.py``); under load the lane's batches are ~8
anyway.
"""

from __future__ import annotations

import asyncio
import functools
import time
import weakref
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass
from typing import NamedTuple, TypeVar

from sipsec import ibc
from sipsec.ibc import DomainParams, Identity, PrivateKey

__all__ = ["DEFAULT_BATCH_WINDOW_S", "DEFAULT_BUSY_CPU", "InProcessEngine", "VerifyBatchStats"]

T = TypeVar("T")

#: How long, under load, a verification waits for others to join its batch (seconds).
DEFAULT_BATCH_WINDOW_S = 0.016
#: The share of one core this process must be using for a batch to wait (see the module docstring).
DEFAULT_BUSY_CPU = 0.7
#: Weight of the newest gap in the lane's moving average of the time between verifies.
_GAP_WEIGHT = 0.2
#: The lane samples the process's CPU use over spans of at least this long (seconds) ...
_CPU_SPAN_S = 0.05
#: ... and weighs the newest sample this much in its moving average.
_CPU_WEIGHT = 0.3
#: Weight of the newest wait in the moving average of whether waits gather company.
_YIELD_WEIGHT = 0.3
#: While waits gather nothing, every this many-th batch that could wait still does (a probe) ...
_PROBE_EVERY = 16
#: ... for this share of the window only (under load, company comes sooner than that).
_PROBE_SHARE = 0.25


@dataclass
class VerifyBatchStats:
    """What an engine's verify lanes did: batches run, verifications in them, largest one."""

    count: int = 0
    items: int = 0
    largest: int = 0

    def record(self, size: int) -> None:
        self.count += 1
        self.items += size
        self.largest = max(self.largest, size)


class _Verify(NamedTuple):
    params: DomainParams
    identity: Identity
    message: bytes
    signature: bytes


def _verify_all(items: Sequence[_Verify]) -> list[BaseException | None]:
    """``ibc.verify_batch``; if a caller's bad argument (not a bad signature) makes it raise,
    each item alone, so that only that caller sees its own error."""
    try:
        return list(ibc.verify_batch(items))
    except Exception:  # re-raised per item below
        out: list[BaseException | None] = []
        for item in items:
            try:
                ibc.verify(*item)
            except Exception as exc:  # handed to that item's caller
                out.append(exc)
            else:
                out.append(None)
        return out


class _VerifyLane:
    """The verifications waiting on one event loop, run as batches, one batch at a time.

    A verify arriving while the lane is idle starts a batch on the loop's next iteration,
    so every verify of the same iteration joins it — or, when verifies have been arriving
    faster than one per ``window_s`` and the process uses at least ``busy_cpu`` of a core,
    after ``window_s`` (sooner if ``max_batch`` are waiting); those arriving while a batch
    runs (on the lane's thread, the pairing releases the GIL) join the next one. Its
    methods run on that loop; it holds no reference to it, so an idle lane does not keep
    a loop alive. ``cpu_clock`` is the process's CPU clock (injectable for tests).
    """

    def __init__(self, executor: Executor | None, max_batch: int, stats: VerifyBatchStats,
                 window_s: float = 0.0, busy_cpu: float = 0.0,
                 cpu_clock: Callable[[], float] = time.process_time) -> None:
        self._executor = executor
        self._max_batch = max_batch
        self._stats = stats
        self._window_s = window_s
        self._busy_cpu = busy_cpu
        self._cpu_clock = cpu_clock
        self._pending: deque[tuple[_Verify, asyncio.Future[None]]] = deque()
        self._running = False
        self._timer: asyncio.TimerHandle | None = None
        self._last_arrival = -1e9
        self._gap_s = 8 * window_s  # moving average of the time between verifies
        self._cpu_at: tuple[float, float] | None = None  # (loop time, CPU clock) of the last sample
        self.cpu_share = 0.0  # moving average of the process's CPU use, in cores
        self.wait_yield = 1.0  # moving average: 1 when a wait gathered other verifies, 0 when not
        self._waited = False  # the pending batch waited
        self._skipped = 0  # batches that could have waited and did not, since the last wait

    def _sample_cpu(self, now: float) -> None:
        if self._cpu_at is None:
            self._cpu_at = (now, self._cpu_clock())
            return
        then, cpu_then = self._cpu_at
        if now - then >= _CPU_SPAN_S:
            cpu = self._cpu_clock()
            share = min((cpu - cpu_then) / (now - then), 1.0)  # threads can add up past one core
            self.cpu_share += _CPU_WEIGHT * (share - self.cpu_share)
            self._cpu_at = (now, cpu)

    def submit(self, item: _Verify) -> asyncio.Future[None]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        self._pending.append((item, future))
        now = loop.time()
        # Gaps count up to 8 windows: one idle spell that long ends the waiting (0.2 x 8 > 1), and
        # after it the lane waits again once verifies have come quickly three or four times.
        self._gap_s += _GAP_WEIGHT * (min(now - self._last_arrival, 8 * self._window_s) - self._gap_s)
        self._last_arrival = now
        if self._window_s:
            self._sample_cpu(now)
        if not self._running:
            self._running = True
            wait_s = self._wait_s()
            if wait_s:
                # busy: verifies arrive faster than the window and CPU is short, so wait for a few to batch
                self._waited = True
                self._timer = loop.call_later(wait_s, self._next)
            else:
                loop.call_soon(self._next)
        elif self._timer is not None and len(self._pending) >= self._max_batch:
            self._timer.cancel()
            self._timer = None
            loop.call_soon(self._next)
        return future

    def _wait_s(self) -> float:
        """How long the batch starting now waits: the window when busy and waiting pays (recent
        waits gathered other verifies), a short probe now and then when it has not, else 0.

        Verifies that come one after another, each caused by the last (one call at a time:
        INVITE, then 180, then 200 ...), arrive often and on a busy process, yet a wait
        gathers nothing and only delays the chain; after two such waits the lane stops
        waiting, and every ``_PROBE_EVERY``-th time waits a quarter window to see whether
        company comes now."""
        if self._gap_s >= self._window_s or self.cpu_share < self._busy_cpu:
            return 0.0
        if self.wait_yield >= 0.5:
            self._skipped = 0
            return self._window_s
        self._skipped += 1
        if self._skipped > _PROBE_EVERY:
            self._skipped = 0
            return self._window_s * _PROBE_SHARE
        return 0.0

    def _next(self) -> None:
        self._timer = None
        batch: list[tuple[_Verify, asyncio.Future[None]]] = []
        while self._pending and len(batch) < self._max_batch:
            entry = self._pending.popleft()
            if not entry[1].cancelled():
                batch.append(entry)
        if self._waited:
            self._waited = False
            self.wait_yield += _YIELD_WEIGHT * ((len(batch) > 1) - self.wait_yield)
        if not batch:
            self._running = False
            return
        self._stats.record(len(batch))
        items = [item for item, _ in batch]
        if self._executor is None:
            self._settle(batch, _verify_all(items))
            return
        try:
            done = asyncio.wrap_future(self._executor.submit(_verify_all, items))
        except RuntimeError as exc:  # the engine was closed
            self._settle(batch, [exc] * len(batch))
            return
        done.add_done_callback(functools.partial(self._finished, batch))

    def _finished(
        self,
        batch: list[tuple[_Verify, asyncio.Future[None]]],
        done: asyncio.Future[list[BaseException | None]],
    ) -> None:
        if done.cancelled():  # the engine closed its thread before the batch ran
            for _, future in batch:
                future.cancel()
            asyncio.get_running_loop().call_soon(self._next)
        elif (error := done.exception()) is not None:
            self._settle(batch, [error] * len(batch))
        else:
            self._settle(batch, done.result())

    def _settle(
        self,
        batch: list[tuple[_Verify, asyncio.Future[None]]],
        results: Sequence[BaseException | None],
    ) -> None:
        for (_, future), error in zip(batch, results, strict=True):
            if future.cancelled():
                continue
            if error is None:
                future.set_result(None)
            else:
                future.set_exception(error)
        asyncio.get_running_loop().call_soon(self._next)  # the loop breathes between batches


class InProcessEngine:
    """The default :class:`~sipsec.engine.CryptoEngine`: calls ``sipsec.ibc`` directly.

    By default each operation runs inline on the event loop (a few ms each). With
    ``threaded=True`` (or an ``executor``) they run off the loop, so a slow batch of
    operations does not delay unrelated I/O.

    With ``batch_verify`` (the default) concurrent ``verify`` calls are batched, at most
    ``max_batch`` per batch (see the module docstring): inline, the verifies requested in
    one iteration of the event loop form a batch; threaded, batches run on a dedicated
    thread and the verifies arriving meanwhile form the next. Under load (verifies more often
    than once per window, and the process using at least ``busy_cpu`` of a core; 0 = on the
    arrival rate alone) a batch waits up to ``batch_window_s`` to fill (0 = never waits).
    ``cpu_clock`` is the CPU clock the lanes sample (tests inject one). Each caller still gets exactly
    its own result or ``sipsec.ibc`` error. ``verify_batches`` counts what the lanes did.
    ``batch_verify=False`` verifies each signature on its own, as the other operations.
    """

    def __init__(
        self,
        *,
        threaded: bool = False,
        executor: Executor | None = None,
        batch_verify: bool = True,
        max_batch: int = 16,
        batch_window_s: float = DEFAULT_BATCH_WINDOW_S,
        busy_cpu: float = DEFAULT_BUSY_CPU,
        cpu_clock: Callable[[], float] = time.process_time,
    ) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        if not 0 <= batch_window_s <= 1:
            raise ValueError("batch_window_s must be between 0 and 1 second")
        if not 0 <= busy_cpu <= 1:
            raise ValueError("busy_cpu must be between 0 and 1 (a share of one core)")
        self.batch_window_s = batch_window_s
        self.busy_cpu = busy_cpu
        self._cpu_clock = cpu_clock
        self._own_executor = executor is None and threaded
        self._executor: Executor | None = (
            ThreadPoolExecutor(max_workers=2, thread_name_prefix="sipsec-ibc")
            if self._own_executor else executor
        )
        self.batch_verify = batch_verify
        self.max_batch = max_batch
        self.verify_batches = VerifyBatchStats()
        self._verify_executor: ThreadPoolExecutor | None = (
            ThreadPoolExecutor(max_workers=1, thread_name_prefix="sipsec-verify")
            if batch_verify and self._executor is not None else None
        )
        self._lanes: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _VerifyLane] = (
            weakref.WeakKeyDictionary()
        )

    def __repr__(self) -> str:
        return (
            f"InProcessEngine(threaded={self._executor is not None}, "
            f"batch_verify={self.batch_verify})"
        )

    async def _run(self, fn: Callable[..., T], *args: object) -> T:
        if self._executor is None:
            return fn(*args)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(fn, *args))

    async def encapsulate(self, params: DomainParams, identity: Identity) -> tuple[bytes, bytes]:
        return await self._run(ibc.encapsulate, params, identity)

    async def decapsulate(self, key: PrivateKey, ciphertext: bytes) -> bytes:
        return await self._run(ibc.decapsulate, key, ciphertext)

    async def sign(self, key: PrivateKey, message: bytes) -> bytes:
        return await self._run(ibc.sign, key, message)

    async def verify(
        self, params: DomainParams, identity: Identity, message: bytes, signature: bytes
    ) -> None:
        if not self.batch_verify:
            await self._run(ibc.verify, params, identity, message, signature)
            return
        loop = asyncio.get_running_loop()
        lane = self._lanes.get(loop)
        if lane is None:
            lane = self._lanes[loop] = _VerifyLane(
                self._verify_executor, self.max_batch, self.verify_batches, self.batch_window_s,
                self.busy_cpu, self._cpu_clock,
            )
        await lane.submit(_Verify(params, identity, message, signature))

    async def close(self) -> None:
        if self._own_executor and self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
        if self._verify_executor is not None:
            self._verify_executor.shutdown(wait=False, cancel_futures=True)
