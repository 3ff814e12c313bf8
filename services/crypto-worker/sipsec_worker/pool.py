"""The crypto-worker's process pool: bounded admission, deadlines, batches spread over cores.

Admission counts *pool tasks* (a single operation is one task; a batch is split into at most
``processes`` contiguous chunks, one task each). At most ``processes + queue`` tasks are
admitted at once; a request that does not fit is refused at once with :class:`QueueFull`
(RESOURCE_EXHAUSTED) rather than queued without end. A request whose deadline has passed
is never started (:class:`DeadlineExpired`); one that waits past its deadline is abandoned,
and a pool process skips any item (any batch of verifications, see ``ops.run_items``) whose
deadline passed before it got to it.

A pool process never outlives the worker, even one killed with SIGKILL (no shutdown code
runs): its initialiser asks the kernel for SIGKILL when its parent dies
(``PR_SET_PDEATHSIG``, Linux) and starts a watchdog thread that exits the process once its
parent pid changes (the fallback where ``prctl`` is unavailable).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import logging
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

import grpc
from sipsec.engine.wire import (
    KIND_VERIFY,
    REASON_DEADLINE,
    REASON_DRAINING,
    REASON_POOL_BROKEN,
    REASON_QUEUE_FULL,
)

from sipsec_worker.ops import (
    DEFAULT_KEY_CACHE,
    DEFAULT_PARAMS_CACHE,
    DEFAULT_TABLE_MIB,
    ItemResult,
    init_process,
    run_items,
    warm,
)

__all__ = ["CryptoPool", "DeadlineExpired", "PoolBroken", "PoolClosed", "PoolRejected", "QueueFull",
           "init_pool_process"]

log = logging.getLogger("sipsec.worker")

_PR_SET_PDEATHSIG = 1
#: Fewest verifications a batch is split into per pool process (below it, one process takes them all).
VERIFY_MIN_CHUNK = 8
#: How often a pool process's watchdog checks that its parent is still the worker.
PARENT_CHECK_S = 1.0


def _watch_parent(parent_pid: int) -> None:
    while True:
        if os.getppid() != parent_pid:
            os._exit(1)  # the worker is gone: nothing to flush, no one to answer
        time.sleep(PARENT_CHECK_S)


def init_pool_process(params_cache: int, parent_pid: int, key_cache: int = DEFAULT_KEY_CACHE,
                      table_mib: float = DEFAULT_TABLE_MIB) -> None:
    """Pool-process initialiser: die with the worker (``PR_SET_PDEATHSIG`` = SIGKILL, and a
    parent-pid watchdog thread as the fallback), then :func:`~sipsec_worker.ops.init_process`."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
    if os.getppid() != parent_pid:  # the worker died before prctl took effect
        os._exit(1)
    threading.Thread(target=_watch_parent, args=(parent_pid,), name="parent-watchdog", daemon=True).start()
    init_process(params_cache, key_cache, table_mib)


class PoolRejected(Exception):
    """The pool refused a request without doing it; carries the gRPC code and wire reason."""

    code: grpc.StatusCode = grpc.StatusCode.UNAVAILABLE
    reason: str = REASON_DRAINING
    label: str = "draining"  # the sipsec_worker_rejections_total reason label


class QueueFull(PoolRejected):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    reason = REASON_QUEUE_FULL
    label = "queue_full"


class DeadlineExpired(PoolRejected):
    code = grpc.StatusCode.DEADLINE_EXCEEDED
    reason = REASON_DEADLINE
    label = "deadline_exceeded"


class PoolClosed(PoolRejected):
    pass


class PoolBroken(PoolRejected):
    reason = REASON_POOL_BROKEN
    label = "pool_broken"


def _chunks(items: Sequence[bytes], n: int) -> list[list[bytes]]:
    size, extra = divmod(len(items), n)
    out, start = [], 0
    for i in range(n):
        end = start + size + (1 if i < extra else 0)
        out.append(list(items[start:end]))
        start = end
    return out


class CryptoPool:
    """A ``ProcessPoolExecutor`` of ``processes`` spawned processes behind a bounded queue."""

    def __init__(self, processes: int, queue: int, *, params_cache: int = DEFAULT_PARAMS_CACHE,
                 key_cache: int = DEFAULT_KEY_CACHE, table_mib: float = DEFAULT_TABLE_MIB) -> None:
        if processes < 1 or queue < 0:
            raise ValueError("need processes >= 1 and queue >= 0")
        self.processes = processes
        self.queue = queue
        self.capacity = processes + queue
        self.params_cache = params_cache
        self.key_cache = key_cache
        self.table_mib = table_mib
        self.in_flight = 0  # admitted tasks not yet finished (running or waiting)
        self._closed = False
        self._executor = self._new_executor()

    def _new_executor(self) -> ProcessPoolExecutor:
        # spawn, not fork: the parent runs gRPC threads, which must not be forked.
        return ProcessPoolExecutor(
            max_workers=self.processes, mp_context=multiprocessing.get_context("spawn"),
            initializer=init_pool_process,
            initargs=(self.params_cache, os.getpid(), self.key_cache, self.table_mib),
        )

    @property
    def waiting(self) -> int:
        """Admitted tasks not yet running (the queue depth)."""
        return max(0, self.in_flight - self.processes)

    async def warm_up(self) -> None:
        """Starts every pool process now rather than on the first requests."""
        loop = asyncio.get_running_loop()
        await asyncio.gather(*(loop.run_in_executor(self._executor, warm) for _ in range(self.processes)))

    def _admit(self, items: Sequence[bytes], time_remaining: float | None, min_chunk: int = 1) -> list[list[bytes]]:
        """The chunks ``items`` run as, one task each (none for no items), at least ``min_chunk``
        items each where there are that many, or the :class:`PoolRejected` that refuses them:
        draining, deadline already passed, no room."""
        if self._closed:
            raise PoolClosed("the worker is draining")
        if not items:
            return []
        if time_remaining is not None and time_remaining <= 0:
            raise DeadlineExpired("deadline passed before the work started")
        chunks = _chunks(items, max(1, min(len(items) // max(1, min_chunk), self.processes)))
        if self.in_flight > 0 and self.in_flight + len(chunks) > self.capacity:
            raise QueueFull(f"worker queue is full ({self.capacity} tasks admitted)")
        return chunks

    async def run(self, kind: str, items: Sequence[bytes], time_remaining: float | None) -> list[ItemResult]:
        """Runs serialized requests of ``kind``; one result per item, in order.

        ``time_remaining``: seconds until the caller's deadline (None: no deadline).
        Raises a :class:`PoolRejected` subclass when the work is refused or abandoned.
        """
        # verifications stay together in chunks of VERIFY_MIN_CHUNK: one multi-pairing per chunk
        # (a batch of 8 costs ~1 ms a signature against ~4 ms alone, ops.run_items)
        chunks = self._admit(items, time_remaining, VERIFY_MIN_CHUNK if kind == KIND_VERIFY else 1)
        if not chunks:
            return []
        loop = asyncio.get_running_loop()
        # CLOCK_MONOTONIC is system-wide: the pool processes compare against the same clock.
        deadline = None if time_remaining is None else time.monotonic() + time_remaining
        executor = self._executor
        futures: list[Future[list[ItemResult]]] = []
        waiters: list[asyncio.Future[list[ItemResult]]] = []
        try:
            for chunk in chunks:
                future = executor.submit(run_items, kind, chunk, deadline)
                self.in_flight += 1
                future.add_done_callback(lambda _f: self._release_threadsafe(loop))
                futures.append(future)
                waiters.append(asyncio.wrap_future(future))
            _, pending = await asyncio.wait(waiters, timeout=time_remaining)
        except BrokenProcessPool:
            self._abandon(waiters)
            self._restart(executor)
            raise PoolBroken("a pool process died; the pool was restarted") from None
        except BaseException:  # cancelled by gRPC (client gone or its deadline fired first)
            self._abandon(waiters)
            raise
        if pending:
            self._abandon(waiters)
            raise DeadlineExpired("deadline passed while the request waited")
        errors = [w.exception() for w in waiters]  # retrieve every one: no "never retrieved"
        if any(isinstance(e, BrokenProcessPool) for e in errors):
            self._restart(executor)
            raise PoolBroken("a pool process died; the pool was restarted")
        for error in errors:
            if error is not None:
                raise error
        return [result for w in waiters for result in w.result()]

    @staticmethod
    def _abandon(waiters: list[asyncio.Future[list[ItemResult]]]) -> None:
        """Cancels what has not started (a started task skips items past their deadline)."""
        for w in waiters:
            if w.done():
                if not w.cancelled():
                    w.exception()
            else:
                w.cancel()

    def _release_threadsafe(self, loop: asyncio.AbstractEventLoop) -> None:
        try:
            loop.call_soon_threadsafe(self._release)
        except RuntimeError:  # the loop is already closed (shutdown)
            pass

    def _release(self) -> None:
        self.in_flight -= 1

    def _restart(self, broken: ProcessPoolExecutor) -> None:
        if self._executor is broken and not self._closed:
            log.error("a crypto pool process died; restarting the pool")
            broken.shutdown(wait=False, cancel_futures=True)
            self._executor = self._new_executor()

    async def close(self) -> None:
        """Refuses new work, cancels what has not started, waits for the running tasks."""
        self._closed = True
        await asyncio.to_thread(self._executor.shutdown, True, cancel_futures=True)
