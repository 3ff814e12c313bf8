"""The gRPC adapter of the crypto-worker: CryptoWorkerService over a CryptoPool.

Decoding, passed deadlines, unexpected errors and per-method metrics are the shared server
interceptor's (:mod:`sipsec.rpc.interceptor`).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, Final

import grpc
from google.protobuf.message import Message
from sipsec.engine.wire import (
    KIND_DECAPSULATE,
    KIND_ENCAPSULATE,
    KIND_SIGN,
    KIND_VERIFY,
    QUEUE_DEPTH_KEY,
    REASON_BATCH_TOO_LARGE,
    REASON_DEADLINE,
    REASON_DRAINING,
    REASON_INVALID_ARGUMENT,
    item_status,
    status_code,
)
from sipsec.rpc import abort_with_details
from sipsec.rpc._gen.sipsec.crypto.v1 import crypto_pb2 as pb
from sipsec.rpc._gen.sipsec.crypto.v1 import crypto_pb2_grpc as pb_grpc

from sipsec_worker.metrics import WorkerMetrics, outcome_of
from sipsec_worker.ops import ItemResult
from sipsec_worker.pool import CryptoPool, PoolRejected

__all__ = ["CryptoWorkerServicer"]

log = logging.getLogger("sipsec.worker")

_DEADLINE_SLACK_S = 0.05


class _BatchFailed(Exception):
    """A whole batch is refused or abandoned: its gRPC code, wire reason and message."""

    def __init__(self, code: grpc.StatusCode, message: str, reason: str) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason


#: How a batch's results become its batch response (the same messages as the unary Batch* calls).
_ResultsOf = Callable[[list[ItemResult]], Message]
_DRAIN: Final = object()  # put on every open stream's queue when the worker starts draining
_SERVICE: Final = pb.DESCRIPTOR.services_by_name["CryptoWorkerService"].full_name


class CryptoWorkerServicer(pb_grpc.CryptoWorkerServiceServicer):
    """Turns each RPC into pool work and pool results into responses or gRPC statuses.

    A failed operation is INVALID_ARGUMENT with trailing ``sipsec-reason`` (and
    ``sipsec-field``); see the proto for the whole table. Nothing here logs request bytes.
    """

    def __init__(self, pool: CryptoPool, metrics: WorkerMetrics, *, max_batch: int = 256) -> None:
        self.pool = pool
        self.metrics = metrics
        self.max_batch = max_batch
        self.draining = False
        self._streams: set[asyncio.Queue[Any]] = set()
        #: Batches one stream may have read and not yet answered on the wire (twice what the pool admits).
        self.stream_window = max(8, 2 * pool.capacity)

    # --- single operations ---

    async def Encapsulate(self, request: pb.EncapsulateRequest, context: grpc.aio.ServicerContext) -> pb.EncapsulateResponse:
        r = await self._single(KIND_ENCAPSULATE, request, context)
        return pb.EncapsulateResponse(key=r[1], ciphertext=r[2])

    async def Decapsulate(self, request: pb.DecapsulateRequest, context: grpc.aio.ServicerContext) -> pb.DecapsulateResponse:
        r = await self._single(KIND_DECAPSULATE, request, context)
        return pb.DecapsulateResponse(key=r[1])

    async def Sign(self, request: pb.SignRequest, context: grpc.aio.ServicerContext) -> pb.SignResponse:
        r = await self._single(KIND_SIGN, request, context)
        return pb.SignResponse(signature=r[1])

    async def Verify(self, request: pb.VerifyRequest, context: grpc.aio.ServicerContext) -> pb.VerifyResponse:
        await self._single(KIND_VERIFY, request, context)
        return pb.VerifyResponse(valid=True)

    # --- batches ---

    async def BatchEncapsulate(self, request: pb.BatchEncapsulateRequest, context: grpc.aio.ServicerContext) -> pb.BatchEncapsulateResponse:
        return _encapsulate_results(await self._run(KIND_ENCAPSULATE, request.items, context))

    async def BatchDecapsulate(self, request: pb.BatchDecapsulateRequest, context: grpc.aio.ServicerContext) -> pb.BatchDecapsulateResponse:
        return _decapsulate_results(await self._run(KIND_DECAPSULATE, request.items, context))

    async def BatchSign(self, request: pb.BatchSignRequest, context: grpc.aio.ServicerContext) -> pb.BatchSignResponse:
        return _sign_results(await self._run(KIND_SIGN, request.items, context))

    async def BatchVerify(self, request: pb.BatchVerifyRequest, context: grpc.aio.ServicerContext) -> pb.BatchVerifyResponse:
        return _verify_results(await self._run(KIND_VERIFY, request.items, context))

    # --- the stream: batches of any kind on one long-lived call ---

    def begin_drain(self) -> None:
        """The worker is stopping: every open stream answers further batches UNAVAILABLE
        (draining) and ends once its batches in progress are answered."""
        self.draining = True
        for queue in list(self._streams):
            queue.put_nowait(_DRAIN)

    async def Stream(self, requests: AsyncIterator[pb.StreamRequest],
                     context: grpc.aio.ServicerContext) -> AsyncIterator[pb.StreamResponse]:
        """Each batch runs as it arrives and is answered when it finishes (matched by id)."""
        out: asyncio.Queue[Any] = asyncio.Queue()
        tasks: set[asyncio.Task[None]] = set()
        state = {"reading": 1, "pending": 0}  # the stream ends when reading stopped and none is pending
        # batches read but not yet answered on the wire: a client that sends without reading
        # the answers stops being read (gRPC's flow control then holds it back), not buffered
        budget = asyncio.Semaphore(self.stream_window)

        async def answer(request: pb.StreamRequest) -> None:
            try:
                out.put_nowait(await self._stream_batch(request))
            finally:
                state["pending"] -= 1
                if not state["reading"] and not state["pending"]:
                    out.put_nowait(None)

        async def read() -> None:
            try:
                async for request in requests:
                    await budget.acquire()
                    if self.draining:
                        self.metrics.rejections.labels("draining").inc()
                        out.put_nowait(_refused(request.id, grpc.StatusCode.UNAVAILABLE, "the worker is draining",
                                                REASON_DRAINING))
                        continue
                    state["pending"] += 1
                    task = asyncio.ensure_future(answer(request))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a request that does not decode, or the call broke: no more reading
                log.warning("a crypto stream stopped reading: %s", type(exc).__name__)
            finally:
                state["reading"] = 0
                if not state["pending"]:
                    out.put_nowait(None)

        self._streams.add(out)
        if self.draining:
            out.put_nowait(_DRAIN)
        reader = asyncio.ensure_future(read())
        try:
            while True:
                item = await out.get()
                if item is None:
                    return
                if item is _DRAIN:
                    state["reading"] = 0
                    reader.cancel()
                    if not state["pending"]:
                        return
                    continue
                yield item
                budget.release()
        finally:
            self._streams.discard(out)
            reader.cancel()
            for task in list(tasks):
                task.cancel()

    async def _stream_batch(self, request: pb.StreamRequest) -> pb.StreamResponse:
        """One batch of a stream, answered; timed and counted as the unary calls are, under
        the method ``Stream`` (``sipsec_rpc_server_handling_seconds``, ``_handled_total``)."""
        start = time.perf_counter()
        response = await self._stream_answer(request)
        self.metrics.rpc.observe(_SERVICE, "Stream", status_code(response.code),
                                 time.perf_counter() - start)
        return response

    async def _stream_answer(self, request: pb.StreamRequest) -> pb.StreamResponse:
        kind = request.WhichOneof("batch") or ""
        results_of = _STREAM_RESULTS.get(kind)
        if results_of is None:
            self.metrics.rejections.labels("malformed").inc()
            return _refused(request.id, grpc.StatusCode.INVALID_ARGUMENT, "no batch in the stream request",
                            REASON_INVALID_ARGUMENT)
        try:
            # the batch's deadline from its arrival, as a unary call's grpc-timeout is
            deadline = time.monotonic() + request.timeout_s if request.timeout_s > 0 else None
            results = await self._work(kind, getattr(request, kind).items,
                                       lambda: None if deadline is None else deadline - time.monotonic())
        except _BatchFailed as failed:
            return _refused(request.id, failed.code, str(failed), failed.reason)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # never kills the stream; logged without its message (request data)
            request_id = secrets.token_hex(8)
            log.error("stream batch failed with %s (request id %s)", type(exc).__name__, request_id,
                      exc_info=False)
            return _refused(request.id, grpc.StatusCode.INTERNAL, f"internal error (request id {request_id})", "")
        response = pb.StreamResponse(id=request.id, queue_depth=self.pool.waiting)
        getattr(response, kind).CopyFrom(results_of(results))
        return response

    # --- plumbing ---

    async def _single(self, kind: str, request: Message, context: grpc.aio.ServicerContext) -> ItemResult:
        (result,) = await self._run(kind, [request], context)
        reason, _, _, message, field = result
        if reason:
            details = {"reason": reason, "field": field} if field else {"reason": reason}
            await abort_with_details(context, grpc.StatusCode.INVALID_ARGUMENT, message, **details)
        return result

    async def _run(self, kind: str, items: Sequence[Message], context: grpc.aio.ServicerContext) -> list[ItemResult]:
        try:
            results = await self._work(kind, items, context.time_remaining)
        except _BatchFailed as failed:
            await abort_with_details(context, failed.code, str(failed), reason=failed.reason)
        # admission feedback: how many pool tasks wait now, so a client can slow down or shed
        # before this worker has to refuse (RESOURCE_EXHAUSTED at processes + queue)
        context.set_trailing_metadata(((QUEUE_DEPTH_KEY, str(self.pool.waiting)),))
        return results

    async def _work(self, kind: str, items: Sequence[Message],
                    time_remaining: Callable[[], float | None] | float | None) -> list[ItemResult]:
        """The pool's results for ``items``, or :class:`_BatchFailed` (counted) for a batch
        refused or abandoned as a whole. ``time_remaining``: seconds to the caller's deadline,
        or a function giving them (a unary call's context)."""
        def remaining() -> float | None:
            return time_remaining() if callable(time_remaining) else time_remaining

        if len(items) > self.max_batch:
            self.metrics.rejections.labels("batch_too_large").inc()
            raise _BatchFailed(grpc.StatusCode.INVALID_ARGUMENT,
                               f"batch of {len(items)} items is over the limit of {self.max_batch}",
                               REASON_BATCH_TOO_LARGE)
        try:
            results = await self.pool.run(kind, [m.SerializeToString() for m in items], remaining())
        except PoolRejected as exc:
            self.metrics.rejections.labels(exc.label).inc()
            raise _BatchFailed(exc.code, str(exc), exc.reason) from None
        except asyncio.CancelledError:
            # gRPC cancels the handler when the client goes away or its deadline fires
            # (gRPC's timer may fire a moment before time_remaining() reaches 0).
            left = remaining()
            near_deadline = left is not None and left <= _DEADLINE_SLACK_S
            self.metrics.rejections.labels("deadline_exceeded" if near_deadline else "cancelled").inc()
            raise
        for r in results:
            self.metrics.operations.labels(kind, outcome_of(r[0])).inc()
        if any(r[0] == REASON_DEADLINE for r in results):
            raise _BatchFailed(grpc.StatusCode.DEADLINE_EXCEEDED, "deadline passed before all the work could start",
                               REASON_DEADLINE)
        return results


def _refused(request_id: int, code: grpc.StatusCode, message: str, reason: str) -> pb.StreamResponse:
    return pb.StreamResponse(id=request_id, code=code.value[0], reason=reason, message=message)


def _encapsulate_results(results: list[ItemResult]) -> pb.BatchEncapsulateResponse:
    return pb.BatchEncapsulateResponse(results=[
        pb.BatchEncapsulateResult(
            status=item_status(r[0]), error=r[3], reason=r[0],
            result=None if r[0] else pb.EncapsulateResponse(key=r[1], ciphertext=r[2]),
        ) for r in results
    ])


def _decapsulate_results(results: list[ItemResult]) -> pb.BatchDecapsulateResponse:
    return pb.BatchDecapsulateResponse(results=[
        pb.BatchDecapsulateResult(
            status=item_status(r[0]), error=r[3], reason=r[0],
            result=None if r[0] else pb.DecapsulateResponse(key=r[1]),
        ) for r in results
    ])


def _sign_results(results: list[ItemResult]) -> pb.BatchSignResponse:
    return pb.BatchSignResponse(results=[
        pb.BatchSignResult(
            status=item_status(r[0]), error=r[3], reason=r[0],
            result=None if r[0] else pb.SignResponse(signature=r[1]),
        ) for r in results
    ])


def _verify_results(results: list[ItemResult]) -> pb.BatchVerifyResponse:
    return pb.BatchVerifyResponse(results=[
        pb.BatchVerifyResult(status=item_status(r[0]), error=r[3], reason=r[0]) for r in results
    ])


#: Each kind (also the name of its batch in the stream messages' oneofs) -> its batch response.
_STREAM_RESULTS: Final[dict[str, _ResultsOf]] = {
    KIND_ENCAPSULATE: _encapsulate_results,
    KIND_DECAPSULATE: _decapsulate_results,
    KIND_SIGN: _sign_results,
    KIND_VERIFY: _verify_results,
}
