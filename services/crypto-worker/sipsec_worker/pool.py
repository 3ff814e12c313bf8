"""The crypto-worker's process pool: bounded admission, deadlines, batches spread over cores.

Admission counts *pool tasks* (a single operation is one task; a batch is split into at most
``processes`` contiguous chunks, one task each). At most ``processes + queue`` tasks are
admitted at once; a request that does not fit is refused at once with :class:`QueueFull`
(RESOURCE_EXHAUSTED) rather than queued without end. A request whose deadline has passed
is never started (:class:`DeadlineExpired`); one that waits past its deadline is abandoned,
and a pool process skips any item (any batch of verifications, see ``ops.run_items``) whose
deadline passed before it got to it.

Each pool process is a spawned process joined to the worker by its own socket pair: the
worker's event loop writes a task to an idle process and reads its answer (length-prefixed
pickles, as :class:`multiprocessing.connection.Connection` frames them), with no thread
in between — no feeder or manager thread contending with the loop for the GIL, one pickle
each way. Tasks wait in the worker, in order, and go to the first process that is idle.

A pool process that dies fails the task it held (:class:`PoolBroken`, UNAVAILABLE) and is
replaced; the other processes and their tasks carry on. A pool process never outlives the
worker, even one killed with SIGKILL (no shutdown code runs): its initialiser asks the
kernel for SIGKILL when its parent dies (``PR_SET_PDEATHSIG``, Linux) and starts a watchdog
thread that exits the process once its parent pid changes (the fallback where ``prctl`` is
unavailable); and it exits when its socket to the worker closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import logging
import multiprocessing
import os
import pickle
import signal
import socket
import struct
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

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
)

__all__ = ["CryptoPool", "DeadlineExpired", "PoolBroken", "PoolClosed", "PoolRejected", "QueueFull",
           "init_pool_process"]

log = logging.getLogger("sipsec.worker")

_PR_SET_PDEATHSIG = 1
#: Fewest verifications a batch is split into per pool process (below it, one process takes them all).
VERIFY_MIN_CHUNK = 8
#: How often a pool process's watchdog checks that its parent is still the worker.
PARENT_CHECK_S = 1.0
#: How long a pool process may take to start (spawn, imports, the pairing library) before the pool gives up.
START_TIMEOUT_S = 60.0

_HEADER = struct.Struct("!i")  # multiprocessing.connection's frame header (its -1 + !Q form is never needed)
_OP_RUN = "run"
_OP_CALL = "call"


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


def _process_main(conn: Connection, params_cache: int, parent_pid: int, key_cache: int, table_mib: float) -> None:
    """A pool process: tasks in, results out, one at a time, until the worker closes the socket."""
    init_pool_process(params_cache, parent_pid, key_cache, table_mib)
    conn.send_bytes(pickle.dumps(os.getpid()))  # ready
    while True:
        try:
            op, payload = pickle.loads(conn.recv_bytes())  # noqa: S301 - from the worker, over its private socket pair
        except (EOFError, OSError):
            return
        try:
            if op == _OP_RUN:
                kind, items, deadline = payload
                answer: tuple[bool, Any] = (True, run_items(kind, items, deadline))
            else:  # _OP_CALL: a module-level function by reference (introspection, tests)
                fn, args = payload
                answer = (True, fn(*args))
        except Exception as exc:  # a bug: reported as its type only (messages may quote request data)
            answer = (False, type(exc).__name__)
        try:
            conn.send_bytes(pickle.dumps(answer, protocol=pickle.HIGHEST_PROTOCOL))
        except OSError:
            return


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


@dataclass(eq=False)
class _Task:
    op: str
    payload: Any
    future: asyncio.Future[Any]
    started: bool = False
    released: bool = False  # no longer counted in ``in_flight``


@dataclass(eq=False)
class _Process:
    """One pool process and the worker's end of its socket pair."""

    process: Any  # multiprocessing.Process (spawn context)
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    pid: int
    task: _Task | None = None
    listener: asyncio.Task[None] | None = field(default=None, repr=False)


class CryptoPool:
    """``processes`` spawned processes behind a bounded queue, driven from the event loop."""

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
        self._waiting: deque[_Task] = deque()
        self._procs: list[_Process] = []
        self._starting = 0
        self._background: set[asyncio.Task[None]] = set()
        self._ctx = multiprocessing.get_context("spawn")  # the worker runs gRPC threads: never fork

    @property
    def waiting(self) -> int:
        """Admitted tasks not yet running (the queue depth)."""
        return max(0, self.in_flight - self.processes)

    @property
    def pids(self) -> list[int]:
        """The pool processes' pids."""
        return [p.pid for p in self._procs]

    async def warm_up(self) -> None:
        """Starts every pool process now (rather than on the first requests) and waits until
        each has loaded the pairing library."""
        missing = max(0, self.processes - len(self._procs) - self._starting)
        self._starting += missing
        await asyncio.gather(*(self._start_process() for _ in range(missing)))

    def _spawn_missing(self) -> None:
        """Starts, in the background, the processes the pool lacks (not warmed up, or one died)."""
        missing = max(0, self.processes - len(self._procs) - self._starting)
        self._starting += missing
        for _ in range(missing):
            self._in_background(self._start_process())

    async def _start_process(self) -> None:
        """One more pool process (``_starting`` was counted up for it by the caller)."""
        try:
            ours, theirs = self._ctx.Pipe(duplex=True)
            process = self._ctx.Process(
                target=_process_main, name="sipsec-worker-pool", daemon=True,
                args=(theirs, self.params_cache, os.getpid(), self.key_cache, self.table_mib),
            )
            await asyncio.to_thread(process.start)
            theirs.close()
            sock = socket.socket(fileno=os.dup(ours.fileno()))
            ours.close()
            sock.setblocking(False)
            reader, writer = await asyncio.open_unix_connection(sock=sock)
            try:
                pid = pickle.loads(await asyncio.wait_for(_read_frame(reader), START_TIMEOUT_S))  # noqa: S301 - our child
            except (asyncio.IncompleteReadError, TimeoutError, OSError):
                writer.close()
                process.kill()
                raise PoolBroken("a pool process did not start") from None
        finally:
            self._starting -= 1
        proc = _Process(process, reader, writer, int(pid))
        if self._closed:
            writer.close()
            return
        self._procs.append(proc)
        proc.listener = asyncio.ensure_future(self._listen(proc))
        self._dispatch()

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
        # CLOCK_MONOTONIC is system-wide: the pool processes compare against the same clock.
        deadline = None if time_remaining is None else time.monotonic() + time_remaining
        tasks = [self._submit(_OP_RUN, (kind, chunk, deadline)) for chunk in chunks]
        futures = [t.future for t in tasks]
        try:
            _, pending = await asyncio.wait(futures, timeout=time_remaining)
        except BaseException:  # cancelled by gRPC (client gone or its deadline fired first)
            self._abandon(tasks)
            raise
        if pending:
            self._abandon(tasks)
            raise DeadlineExpired("deadline passed while the request waited")
        errors = [f.exception() for f in futures]  # retrieve every one: no "never retrieved"
        for error in errors:
            if error is not None:
                raise error
        return [result for f in futures for result in f.result()]

    async def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(*args)`` in a pool process (a module-level function, by reference): what a
        process holds (its caches), for introspection and tests."""
        if self._closed:
            raise PoolClosed("the worker is draining")
        task = self._submit(_OP_CALL, (fn, args))
        return await task.future

    def _submit(self, op: str, payload: Any) -> _Task:
        task = _Task(op, payload, asyncio.get_running_loop().create_future())
        self.in_flight += 1
        self._waiting.append(task)
        if not self._closed:
            self._spawn_missing()
        self._dispatch()
        return task

    def _in_background(self, coro: Any) -> None:
        job = asyncio.ensure_future(coro)
        self._background.add(job)
        job.add_done_callback(self._background.discard)
        job.add_done_callback(_log_failure)

    def _release(self, task: _Task) -> None:
        """``task`` stops counting in ``in_flight``: answered, failed, or dropped before it started."""
        if not task.released:
            task.released = True
            self.in_flight -= 1

    def _abandon(self, tasks: list[_Task]) -> None:
        """Drops what has not started (a started task skips items past their deadline, counts
        until its process answers, and its answer is then ignored)."""
        for task in tasks:
            if not task.future.done():
                task.future.cancel()
                if not task.started:
                    self._release(task)
            elif not task.future.cancelled():
                task.future.exception()

    def _dispatch(self) -> None:
        """Gives waiting tasks, in order, to idle processes."""
        for proc in self._procs:
            if proc.task is not None:
                continue
            while self._waiting:
                task = self._waiting.popleft()
                if task.future.done():  # abandoned while it waited
                    self._release(task)
                    continue
                task.started = True
                proc.task = task
                try:
                    data = pickle.dumps((task.op, task.payload), protocol=pickle.HIGHEST_PROTOCOL)
                except Exception as exc:  # a value that does not pickle: this task's error, not the pool's
                    proc.task = None
                    self._release(task)
                    task.future.set_exception(exc)
                    continue
                proc.writer.write(_HEADER.pack(len(data)) + data)
                break

    async def _listen(self, proc: _Process) -> None:
        """Reads ``proc``'s answers; when its socket closes (the process died), fails the task
        it held and starts a replacement."""
        try:
            while True:
                ok, value = pickle.loads(await _read_frame(proc.reader))  # noqa: S301 - our child, private socket pair
                task, proc.task = proc.task, None
                if task is not None:
                    self._release(task)
                if task is not None and not task.future.done():
                    if ok:
                        task.future.set_result(value)
                    else:
                        task.future.set_exception(RuntimeError(f"pool task failed with {value}"))
                self._dispatch()
        except (asyncio.IncompleteReadError, ConnectionError, OSError, pickle.UnpicklingError):
            pass
        except asyncio.CancelledError:
            return
        if proc in self._procs:
            self._procs.remove(proc)
        proc.writer.close()
        task, proc.task = proc.task, None
        if task is not None:
            self._release(task)
        if task is not None and not task.future.done():
            task.future.set_exception(PoolBroken("a pool process died; it was replaced"))
        if not self._closed:
            log.error("a crypto pool process (pid %d) died; starting another", proc.pid)
            self._spawn_missing()
        await asyncio.to_thread(proc.process.join, 1.0)  # reaped

    async def close(self) -> None:
        """Refuses new work, cancels what has not started, waits for the running tasks, then
        stops the processes."""
        self._closed = True
        while self._waiting:
            task = self._waiting.popleft()
            self._release(task)
            if not task.future.done():
                task.future.set_exception(PoolClosed("the worker stopped"))
        running = [p.task.future for p in self._procs if p.task is not None]
        if running:
            await asyncio.wait(running)
        for job in list(self._background):
            job.cancel()
        procs, self._procs = self._procs, []
        for proc in procs:
            if proc.listener is not None:
                proc.listener.cancel()
            proc.writer.close()  # the process reads EOF and returns
        for proc in procs:
            await asyncio.to_thread(proc.process.join, 5.0)
            if proc.process.is_alive():
                proc.process.kill()
                await asyncio.to_thread(proc.process.join, 1.0)


def _log_failure(job: asyncio.Task[None]) -> None:
    if not job.cancelled() and job.exception() is not None:
        log.error("a crypto pool process could not be started: %s", type(job.exception()).__name__)


async def _read_frame(reader: asyncio.StreamReader) -> bytes:
    (size,) = _HEADER.unpack(await reader.readexactly(_HEADER.size))
    if size == -1:  # multiprocessing's form for frames of 2 GiB and more
        (size,) = struct.unpack("!Q", await reader.readexactly(8))
    return await reader.readexactly(size)
