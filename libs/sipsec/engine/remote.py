"""The remote crypto engine: a load-balanced pool of crypto-workers with in-process fallback."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal, TypeVar

import grpc
from google.protobuf.message import Message

from sipsec import ibc
from sipsec.engine.inprocess import InProcessEngine, VerifyBatchStats
from sipsec.engine.metrics import EngineMetrics
from sipsec.engine.protocol import CryptoEngine
from sipsec.engine.wire import (
    KIND_DECAPSULATE,
    KIND_ENCAPSULATE,
    KIND_SIGN,
    KIND_VERIFY,
    QUEUE_DEPTH_KEY,
    error_for_reason,
    identity_to_proto,
    status_code,
)
from sipsec.ibc import DomainParams, IbcError, Identity, InvalidIdentity, PrivateKey
from sipsec.rpc import client_channel
from sipsec.rpc._gen.sipsec.crypto.v1 import crypto_pb2 as pb
from sipsec.rpc._gen.sipsec.crypto.v1 import crypto_pb2_grpc as pb_grpc
from sipsec.telemetry import tracing

__all__ = ["RETRYABLE", "Balance", "EngineUnavailable", "RemoteEngine"]

log = logging.getLogger("sipsec.engine")

Balance = Literal["round_robin", "least_outstanding"]
T = TypeVar("T")

#: Statuses after which a call is retried once on another worker, then run in-process.
RETRYABLE: Final = frozenset(
    {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.DEADLINE_EXCEEDED}
)
_OUTCOME: Final = {
    grpc.StatusCode.INVALID_ARGUMENT: "rejected",
    grpc.StatusCode.UNAVAILABLE: "unavailable",
    grpc.StatusCode.RESOURCE_EXHAUSTED: "resource_exhausted",
    grpc.StatusCode.DEADLINE_EXCEEDED: "deadline_exceeded",
}


class EngineUnavailable(Exception):
    """No worker could do the operation and in-process fallback is disabled or full."""


class _NoWorker(Exception):
    """No worker could do it: the caller runs it in-process (``reason``: a fallback reason)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(eq=False)
class _Lane:
    """The operations of one kind waiting for their batch RPC, and the batches in flight."""

    pending: deque[tuple[Message, asyncio.Future[Message]]] = field(default_factory=deque)
    in_flight: int = 0
    scheduled: bool = False


#: The unary RPC of each kind, and its batch RPC with the request and response types.
_SINGLE: Final = {KIND_ENCAPSULATE: "Encapsulate", KIND_DECAPSULATE: "Decapsulate",
                  KIND_SIGN: "Sign", KIND_VERIFY: "Verify"}
_BATCH: Final[dict[str, tuple[str, type[Message], type[Message]]]] = {
    KIND_ENCAPSULATE: ("BatchEncapsulate", pb.BatchEncapsulateRequest, pb.BatchEncapsulateResponse),
    KIND_DECAPSULATE: ("BatchDecapsulate", pb.BatchDecapsulateRequest, pb.BatchDecapsulateResponse),
    KIND_SIGN: ("BatchSign", pb.BatchSignRequest, pb.BatchSignResponse),
    KIND_VERIFY: ("BatchVerify", pb.BatchVerifyRequest, pb.BatchVerifyResponse),
}


@dataclass(eq=False)
class _Stream:
    """One open ``Stream`` call to a worker: batches waiting for their answers, by id."""

    call: Any
    pending: dict[int, asyncio.Future[pb.StreamResponse]] = field(default_factory=dict)
    next_id: int = 1
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)  # one write at a time
    reader: asyncio.Task[None] | None = None
    closed: bool = False


@dataclass(eq=False)
class _Worker:
    target: str
    channel: grpc.aio.Channel | None = None
    stub: Any = None
    stream: _Stream | None = None
    no_stream: bool = False  # the worker answered UNIMPLEMENTED: an older worker, unary only
    outstanding: int = 0
    queue_depth: int = 0  # the pool tasks waiting on the worker, as its last answer said
    failures: int = 0
    ejected_until: float = 0.0


class RemoteEngine:
    """A :class:`~sipsec.engine.CryptoEngine` backed by crypto-worker endpoints.

    * ``balance``: ``round_robin`` or ``least_outstanding`` (fewest calls in flight from
      this engine plus the queue depth the worker last reported; ties broken round-robin).
    * Admission feedback: each worker answer carries its queue depth; :attr:`queue_depth`
      (and the ``sipsec_engine_worker_queue_depth`` gauge) is the least loaded worker's.
    * A call failing with UNAVAILABLE, RESOURCE_EXHAUSTED or DEADLINE_EXCEEDED is retried
      once on *another* worker; if that fails too, or no worker is available, the operation
      runs in-process (``fallback``, an :class:`InProcessEngine` by default) and
      ``sipsec_engine_fallbacks_total`` counts it. With ``allow_fallback=False`` the engine
      raises :class:`EngineUnavailable` instead.
    * Coalescing (``coalesce``, on by default): the operations of one kind requested while
      the engine is busy travel together as one batch RPC (``BatchSign``...), at most
      ``max_batch`` items each and ``max_in_flight`` batches per kind at once; what arrives
      meanwhile waits for the next batch. One RPC then carries the work of many calls (fewer
      round trips, less gRPC CPU on both sides), and the worker verifies a batch's signatures
      with one multi-pairing. A lone operation still goes at once, as a batch of one. Each
      caller gets exactly its own result or ``sipsec.ibc`` error.
    * Streaming (``stream``, on by default): the batches travel as messages of one long-lived
      ``Stream`` call per worker, answered as each finishes, instead of one unary call each (a
      message on an open stream costs a fraction of a unary call's gRPC work on both sides).
      A batch's refusal (queue full, deadline, draining) comes back as that batch's status and
      is handled as a unary call's would be; a stream that breaks fails its batches UNAVAILABLE
      (retried, the worker ejected) and the next batch opens a new one; a batch that times out
      closes its stream. A worker without the ``Stream`` method (UNIMPLEMENTED) is used with
      unary calls. While tracing is on, batches go as unary calls, each a traced RPC.
    * The fallback is itself bounded: at most ``max_fallback`` operations run in-process at
      once (0 = no bound); one more raises :class:`EngineUnavailable` at once (counted with
      reason ``fallback_full``), which the gateway answers with 503 + ``Retry-After``, so an
      overloaded pool sheds load instead of moving all of it onto the gateway's own core.
    * A worker answering UNAVAILABLE is ejected for ``eject_s`` seconds, doubling with each
      consecutive failure up to ``max_eject_s``; a success clears its record.
    * A worker's INVALID_ARGUMENT becomes the ``sipsec.ibc`` error its reason names, so the
      caller sees exactly what the in-process engine raises.
    * Signing in-process (``local_sign``): signatures are made here, on the event loop, with
      the key's fixed-base tables (built once a key has signed a few times and kept on the key
      object, within ``ibc.configure_tables``'s budget), counted in
      ``sipsec_engine_local_ops_total``. A signature with its key's tables costs less CPU than
      the stream message and the worker's hop that would carry it, the signing key does not
      travel, and a message's seal does not wait on a round trip. The pairings (verify,
      decapsulate) and encapsulations still go to the workers.

    Private keys travel to the worker: use TLS (``root_certificates``, ``client_cert``)
    outside a trusted host; ``plaintext=True`` must be asked for.
    """

    def __init__(
        self,
        targets: Sequence[str],
        *,
        balance: Balance = "least_outstanding",
        timeout_s: float = 2.0,
        plaintext: bool = False,
        root_certificates: bytes | None = None,
        client_cert: tuple[bytes, bytes] | None = None,
        server_name: str | None = None,
        fallback: CryptoEngine | None = None,
        allow_fallback: bool = True,
        metrics: EngineMetrics | None = None,
        eject_s: float = 1.0,
        max_eject_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        max_fallback: int = 8,
        coalesce: bool = True,
        max_batch: int = 64,
        max_in_flight: int = 2,
        stream: bool = True,
        local_sign: bool = False,
    ) -> None:
        if balance not in ("round_robin", "least_outstanding"):
            raise ValueError(f"unknown balance policy {balance!r}")
        if timeout_s <= 0:
            raise ValueError("timeout_s must be positive")
        if max_fallback < 0:
            raise ValueError("max_fallback must not be negative")
        if max_batch < 1 or max_in_flight < 1:
            raise ValueError("max_batch and max_in_flight must be at least 1")
        self._workers = [_Worker(t.strip()) for t in targets if t.strip()]
        self.balance: Balance = balance
        self.timeout_s = timeout_s
        self._channel_args: dict[str, Any] = {
            "plaintext": plaintext, "root_certificates": root_certificates,
            "client_cert": client_cert, "server_name": server_name,
        }
        self._own_fallback = fallback is None
        self._fallback: CryptoEngine = InProcessEngine() if fallback is None else fallback
        self._allow_fallback = allow_fallback
        self.metrics = EngineMetrics() if metrics is None else metrics
        self._eject_s = eject_s
        self._max_eject_s = max_eject_s
        self._clock = clock
        self._next = 0
        self.max_fallback = max_fallback
        self.fallback_in_flight = 0
        self.coalesce = coalesce
        self.stream = stream
        self.local_sign = local_sign
        self.max_batch = max_batch
        self.max_in_flight = max_in_flight
        #: Batch RPCs sent and the operations in them (``count``, ``items``, ``largest``).
        self.batch_sizes = VerifyBatchStats()
        self._lanes: dict[str, _Lane] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._encoded: dict[int, tuple[DomainParams, bytes]] = {}

    def __repr__(self) -> str:
        return f"RemoteEngine(targets={self.targets!r}, balance={self.balance!r})"

    @property
    def targets(self) -> list[str]:
        return [w.target for w in self._workers]

    @property
    def queue_depth(self) -> int:
        """Admission feedback: the pool tasks waiting on the least loaded usable worker, as the
        workers' last answers said (``sipsec-queue-depth``); a caller sheds new work (a new
        call's INVITE) when it grows, before the workers refuse with RESOURCE_EXHAUSTED."""
        now = self._clock()
        usable = [w.queue_depth for w in self._workers if w.ejected_until <= now]
        return min(usable, default=0)

    # --- the four operations ---

    async def encapsulate(self, params: DomainParams, identity: Identity) -> tuple[bytes, bytes]:
        _check_identity(identity)
        request = pb.EncapsulateRequest(
            domain_params=self._params_bytes(params), identity=identity_to_proto(identity)
        )
        try:
            response = await self._submit(KIND_ENCAPSULATE, request)
        except _NoWorker as none:
            return await self._bounded(KIND_ENCAPSULATE, none.reason, self._fallback.encapsulate, params, identity)
        assert isinstance(response, pb.EncapsulateResponse)
        return response.key, response.ciphertext

    async def decapsulate(self, key: PrivateKey, ciphertext: bytes) -> bytes:
        _check_identity(key.identity)
        request = pb.DecapsulateRequest(
            identity=identity_to_proto(key.identity), private_key=key.to_bytes(),
            ciphertext=bytes(ciphertext),
        )
        try:
            response = await self._submit(KIND_DECAPSULATE, request)
        except _NoWorker as none:
            return await self._bounded(KIND_DECAPSULATE, none.reason, self._fallback.decapsulate, key, ciphertext)
        assert isinstance(response, pb.DecapsulateResponse)
        return response.key

    async def sign(self, key: PrivateKey, message: bytes) -> bytes:
        _check_identity(key.identity)
        if self.local_sign:
            self.metrics.local_ops.labels(KIND_SIGN).inc()
            return ibc.sign(key, message)
        request = pb.SignRequest(
            identity=identity_to_proto(key.identity), private_key=key.to_bytes(),
            message=bytes(message),
        )
        try:
            response = await self._submit(KIND_SIGN, request)
        except _NoWorker as none:
            return await self._bounded(KIND_SIGN, none.reason, self._fallback.sign, key, message)
        assert isinstance(response, pb.SignResponse)
        return response.signature

    async def verify(
        self, params: DomainParams, identity: Identity, message: bytes, signature: bytes
    ) -> None:
        _check_identity(identity)
        request = pb.VerifyRequest(
            domain_params=self._params_bytes(params), identity=identity_to_proto(identity),
            message=bytes(message), signature=bytes(signature),
        )
        try:
            await self._submit(KIND_VERIFY, request)
        except _NoWorker as none:
            await self._bounded(KIND_VERIFY, none.reason, self._fallback.verify, params, identity, message, signature)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for lane in self._lanes.values():  # what never left: its callers are told, not left waiting
            while lane.pending:
                _, future = lane.pending.popleft()
                if not future.done():
                    future.set_exception(EngineUnavailable("the engine was closed"))
        for worker in self._workers:
            if worker.stream is not None:
                self._close_stream(worker, worker.stream)
            if worker.channel is not None:
                await worker.channel.close()
                worker.channel = worker.stub = None
        if self._own_fallback:
            await self._fallback.close()

    # --- balancing, retry, fallback ---

    async def _bounded(self, op: str, reason: str, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        """``fn(*args)`` in-process (no worker could do ``op``: ``reason``), within the
        ``max_fallback`` bound; beyond it, or with fallback off, :class:`EngineUnavailable`."""
        if not self._allow_fallback:
            raise EngineUnavailable(f"no crypto-worker could {op} ({reason})")
        if self.max_fallback and self.fallback_in_flight >= self.max_fallback:
            self.metrics.fallbacks.labels(op, "fallback_full").inc()
            raise EngineUnavailable(f"no crypto-worker could {op} ({reason}) and the in-process fallback is full")
        self.metrics.fallbacks.labels(op, reason).inc()
        self.fallback_in_flight += 1
        try:
            return await fn(*args)
        finally:
            self.fallback_in_flight -= 1

    def _params_bytes(self, params: DomainParams) -> bytes:
        """``params.to_bytes()``, remembered for the few parameter objects a gateway holds."""
        entry = self._encoded.get(id(params))
        if entry is not None and entry[0] is params:
            return entry[1]
        data = params.to_bytes()
        if len(self._encoded) >= 64:
            self._encoded.pop(next(iter(self._encoded)))
        self._encoded[id(params)] = (params, data)
        return data

    # --- coalescing: the operations of one kind waiting together travel as one batch RPC ---

    async def _submit(self, kind: str, request: Message) -> Message:
        """The worker's answer to ``request`` (the item's response message; a verify's is its
        batch result); raises the ``sipsec.ibc`` error of a rejected item, :class:`_NoWorker`
        when it must run in-process, :class:`EngineUnavailable` when it cannot run at all."""
        if not self.coalesce:
            return await self._remote(kind, _SINGLE[kind], request)
        loop = asyncio.get_running_loop()
        lane = self._lanes.get(kind)
        if lane is None:
            lane = self._lanes[kind] = _Lane()
        future: asyncio.Future[Message] = loop.create_future()
        lane.pending.append((request, future))
        if not lane.scheduled:
            lane.scheduled = True
            loop.call_soon(self._flush, kind)
        return await future

    def _flush(self, kind: str) -> None:
        """Sends what waits on ``kind``'s lane as batch RPCs, at most ``max_in_flight`` at once,
        spread over up to one batch per worker (the balancing picks each batch's worker)."""
        lane = self._lanes[kind]
        lane.scheduled = False
        # what waits is split evenly over as many batches as there are free slots and workers
        parts = max(1, min(self.max_in_flight - lane.in_flight, len(self._workers), len(lane.pending)))
        size = min(self.max_batch, -(-len(lane.pending) // parts))
        while lane.pending and lane.in_flight < self.max_in_flight:
            batch: list[tuple[Message, asyncio.Future[Message]]] = []
            while lane.pending and len(batch) < size:
                entry = lane.pending.popleft()
                if not entry[1].done():
                    batch.append(entry)
            if not batch:
                break
            lane.in_flight += 1
            self.batch_sizes.record(len(batch))
            task = asyncio.ensure_future(self._send(kind, lane, batch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _send(self, kind: str, lane: _Lane, batch: list[tuple[Message, asyncio.Future[Message]]]) -> None:
        method, request_cls, _ = _BATCH[kind]
        try:
            response = await self._remote(kind, method, request_cls(items=[r for r, _ in batch]), len(batch))
        except asyncio.CancelledError:  # the engine closed: its callers are told so
            for _, future in batch:
                if not future.done():
                    future.set_exception(EngineUnavailable("the engine was closed"))
            raise
        except Exception as exc:  # every caller of the batch gets it (_NoWorker: each falls back)
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
        else:
            results = list(response.results)
            for (_, future), result in zip(batch, results, strict=True):
                if future.done():
                    continue
                self.metrics.remote_calls.labels(kind, "rejected" if result.reason else "ok").inc()
                if result.reason:
                    future.set_exception(error_for_reason(result.reason, result.error or "crypto-worker rejected it"))
                else:
                    future.set_result(result if kind == KIND_VERIFY else result.result)
        finally:
            lane.in_flight -= 1
            if lane.pending and not lane.scheduled:
                lane.scheduled = True
                asyncio.get_running_loop().call_soon(self._flush, kind)

    def _pick(self, tried: Sequence[_Worker]) -> _Worker | None:
        now = self._clock()
        n = len(self._workers)
        order = [self._workers[(self._next + i) % n] for i in range(n)]
        candidates = [w for w in order if w not in tried and w.ejected_until <= now]
        if not candidates:
            return None
        if self.balance == "least_outstanding":
            # this engine's calls in flight plus what the worker said waits there (other clients')
            chosen = min(candidates, key=lambda w: w.outstanding + w.queue_depth)  # min keeps the first of ties
        else:
            chosen = candidates[0]
        self._next = (self._workers.index(chosen) + 1) % n
        return chosen

    async def _remote(self, op: str, method: str, request: Message, items: int = 0) -> Message:
        """The worker's response; :class:`_NoWorker` when the caller must run the operation
        in-process (:meth:`_bounded`), :class:`EngineUnavailable` when fallback is off."""
        tried: list[_Worker] = []
        reason = "no_worker"
        for attempt in range(2):
            worker = self._pick(tried)
            if worker is None:
                break
            if attempt:
                self.metrics.retries.labels(op).inc()
            tried.append(worker)
            try:
                return await self._invoke(worker, op, method, request, items)
            except grpc.aio.AioRpcError as err:
                code = err.code()
                if code == grpc.StatusCode.INVALID_ARGUMENT:
                    raise _ibc_error(err) from None
                if code in RETRYABLE:
                    reason = "failed"
                    continue
                log.warning("crypto-worker %s failed %s with %s", worker.target, op, code.name)
                reason = "error"
                break
        if not self._allow_fallback:
            self.metrics.fallbacks.labels(op, reason).inc()  # counted as before: no worker could
            raise EngineUnavailable(f"no crypto-worker could {op} ({reason})")
        raise _NoWorker(reason)

    async def _invoke(self, worker: _Worker, op: str, method: str, request: Message, items: int) -> Message:
        """One RPC; ``items`` > 0 for a batch of that many operations (the caller counts each
        one's outcome when the RPC succeeds, this one counts them all when it fails)."""
        if worker.stub is None:
            worker.channel = client_channel(worker.target, **self._channel_args)
            worker.stub = pb_grpc.CryptoWorkerServiceStub(worker.channel)  # type: ignore[no-untyped-call]
        worker.outstanding += 1
        start = time.perf_counter()
        try:
            response = None
            if items and self.stream and not worker.no_stream and not tracing.enabled():
                try:
                    response = await self._streamed(worker, op, request)
                except grpc.aio.AioRpcError as err:
                    if err.code() != grpc.StatusCode.UNIMPLEMENTED:
                        raise
                    # an older worker without Stream, whichever batch saw it first (a write can
                    # fail before the stream's reader does): this batch and the next go unary
                    worker.no_stream = True
            if response is None:  # unary: no stream, an older worker, or tracing on
                call = getattr(worker.stub, method)(request, timeout=self.timeout_s)
                response = await call
                worker.queue_depth = _queue_depth(await call.trailing_metadata())
        except grpc.aio.AioRpcError as err:
            code = err.code()
            self.metrics.remote_calls.labels(op, _OUTCOME.get(code, "error")).inc(max(1, items))
            if code == grpc.StatusCode.UNAVAILABLE:
                worker.failures += 1
                backoff = self._eject_s * 2 ** min(worker.failures - 1, 16)
                worker.ejected_until = self._clock() + min(self._max_eject_s, backoff)
            raise
        finally:
            worker.outstanding -= 1
            self.metrics.remote_latency.labels(op).observe(time.perf_counter() - start)
        worker.failures = 0
        worker.ejected_until = 0.0
        self.metrics.queue_depth.set(self.queue_depth)
        if not items:
            self.metrics.remote_calls.labels(op, "ok").inc()
        return response


    # --- the stream: batches as messages of one long-lived call per worker ---

    async def _streamed(self, worker: _Worker, op: str, request: Message) -> Message:
        """The batch response to ``request`` over ``worker``'s stream; raises an
        :class:`grpc.aio.AioRpcError` as the unary call would (the batch's own status, the
        stream's failure, DEADLINE_EXCEEDED after ``timeout_s``)."""
        stream = worker.stream
        if stream is None or stream.closed:
            stream = worker.stream = _Stream(worker.stub.Stream())
            stream.reader = asyncio.ensure_future(self._read(worker, stream))
        request_id = stream.next_id
        stream.next_id += 1
        message = pb.StreamRequest(id=request_id, timeout_s=self.timeout_s)
        getattr(message, op).CopyFrom(request)  # the oneof fields are named after the kinds
        future: asyncio.Future[pb.StreamResponse] = asyncio.get_running_loop().create_future()
        stream.pending[request_id] = future

        async def send_and_wait() -> pb.StreamResponse:
            async with stream.lock:
                if stream.closed:  # broke while this batch waited to be written
                    raise _rpc_error(grpc.StatusCode.UNAVAILABLE, "the stream to the crypto-worker broke")
                await stream.call.write(message)  # the first one waits for the connection
            return await future

        try:  # the timeout covers the write too: a worker that never answers the connection
            response = await asyncio.wait_for(send_and_wait(), self.timeout_s)
        except TimeoutError:
            self._close_stream(worker, stream)  # a stream that stopped answering is not used again
            raise _rpc_error(grpc.StatusCode.DEADLINE_EXCEEDED, "no answer on the stream in time") from None
        except (grpc.aio.AioRpcError, asyncio.InvalidStateError) as exc:
            if future.done() and not future.cancelled() and future.exception() is not None:
                raise future.exception() from None  # type: ignore[misc]
            self._close_stream(worker, stream)
            if isinstance(exc, grpc.aio.AioRpcError):
                raise
            raise _rpc_error(grpc.StatusCode.UNAVAILABLE, "the stream to the crypto-worker broke") from None
        finally:
            stream.pending.pop(request_id, None)
        if response.code:
            raise _rpc_error(status_code(response.code), response.message, response.reason)
        worker.queue_depth = response.queue_depth
        return getattr(response, op)

    async def _read(self, worker: _Worker, stream: _Stream) -> None:
        """Hands each answer on ``stream`` to its batch; when the stream ends or breaks, fails
        the batches still waiting (UNAVAILABLE, or the stream's own status)."""
        error: grpc.aio.AioRpcError = _rpc_error(grpc.StatusCode.UNAVAILABLE, "the crypto-worker ended the stream")
        try:
            while True:
                response = await stream.call.read()
                if response is grpc.aio.EOF:
                    break
                future = stream.pending.get(response.id)
                if future is not None and not future.done():
                    future.set_result(response)
        except grpc.aio.AioRpcError as err:
            error = err
            if err.code() == grpc.StatusCode.UNIMPLEMENTED and not worker.no_stream:
                worker.no_stream = True
                log.info("crypto-worker %s has no Stream method: using unary calls", worker.target)
        except asyncio.CancelledError:
            error = _rpc_error(grpc.StatusCode.UNAVAILABLE, "the stream to the crypto-worker was closed")
        finally:
            stream.closed = True
            if worker.stream is stream:
                worker.stream = None
            for future in stream.pending.values():
                if not future.done():
                    future.set_exception(error)

    def _close_stream(self, worker: _Worker, stream: _Stream) -> None:
        stream.closed = True
        if worker.stream is stream:
            worker.stream = None
        stream.call.cancel()
        if stream.reader is not None:
            stream.reader.cancel()


def _rpc_error(code: grpc.StatusCode, details: str, reason: str = "") -> grpc.aio.AioRpcError:
    """A stream batch's failure in the shape of a unary call's (reason in the trailers)."""
    trailers = grpc.aio.Metadata(("sipsec-reason", reason)) if reason else grpc.aio.Metadata()
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), trailers, details=details)


def _queue_depth(metadata: Any) -> int:
    """The worker's ``sipsec-queue-depth`` trailing value (0 when absent or not a count)."""
    for key, value in metadata or ():
        if key == QUEUE_DEPTH_KEY:
            text = value if isinstance(value, str) else value.decode("ascii", "replace")
            return int(text) if text.isdigit() else 0
    return 0


def _check_identity(identity: object) -> None:
    if not isinstance(identity, Identity):
        raise InvalidIdentity("identity must be an Identity")


def _ibc_error(err: grpc.aio.AioRpcError) -> IbcError:
    reason = ""
    for key, value in err.trailing_metadata() or ():
        if key == "sipsec-reason":
            reason = value if isinstance(value, str) else value.decode("ascii", "replace")
    return error_for_reason(reason, err.details() or "crypto-worker rejected the request")
