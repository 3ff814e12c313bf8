"""The gRPC adapter of the crypto-worker: CryptoWorkerService over a CryptoPool.

Decoding, passed deadlines, unexpected errors and per-method metrics are the shared server
interceptor's (:mod:`sipsec.rpc.interceptor`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

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
    item_status,
)
from sipsec.rpc import abort_with_details
from sipsec.rpc._gen.sipsec.crypto.v1 import crypto_pb2 as pb
from sipsec.rpc._gen.sipsec.crypto.v1 import crypto_pb2_grpc as pb_grpc

from sipsec_worker.metrics import WorkerMetrics, outcome_of
from sipsec_worker.ops import ItemResult
from sipsec_worker.pool import CryptoPool, PoolRejected

__all__ = ["CryptoWorkerServicer"]

_DEADLINE_SLACK_S = 0.05


class CryptoWorkerServicer(pb_grpc.CryptoWorkerServiceServicer):
    """Turns each RPC into pool work and pool results into responses or gRPC statuses.

    A failed operation is INVALID_ARGUMENT with trailing ``sipsec-reason`` (and
    ``sipsec-field``); see the proto for the whole table. Nothing here logs request bytes.
    """

    def __init__(self, pool: CryptoPool, metrics: WorkerMetrics, *, max_batch: int = 256) -> None:
        self.pool = pool
        self.metrics = metrics
        self.max_batch = max_batch

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
        results = await self._run(KIND_ENCAPSULATE, request.items, context)
        return pb.BatchEncapsulateResponse(results=[
            pb.BatchEncapsulateResult(
                status=item_status(r[0]), error=r[3], reason=r[0],
                result=None if r[0] else pb.EncapsulateResponse(key=r[1], ciphertext=r[2]),
            ) for r in results
        ])

    async def BatchDecapsulate(self, request: pb.BatchDecapsulateRequest, context: grpc.aio.ServicerContext) -> pb.BatchDecapsulateResponse:
        results = await self._run(KIND_DECAPSULATE, request.items, context)
        return pb.BatchDecapsulateResponse(results=[
            pb.BatchDecapsulateResult(
                status=item_status(r[0]), error=r[3], reason=r[0],
                result=None if r[0] else pb.DecapsulateResponse(key=r[1]),
            ) for r in results
        ])

    async def BatchSign(self, request: pb.BatchSignRequest, context: grpc.aio.ServicerContext) -> pb.BatchSignResponse:
        results = await self._run(KIND_SIGN, request.items, context)
        return pb.BatchSignResponse(results=[
            pb.BatchSignResult(
                status=item_status(r[0]), error=r[3], reason=r[0],
                result=None if r[0] else pb.SignResponse(signature=r[1]),
            ) for r in results
        ])

    async def BatchVerify(self, request: pb.BatchVerifyRequest, context: grpc.aio.ServicerContext) -> pb.BatchVerifyResponse:
        results = await self._run(KIND_VERIFY, request.items, context)
        return pb.BatchVerifyResponse(results=[
            pb.BatchVerifyResult(status=item_status(r[0]), error=r[3], reason=r[0]) for r in results
        ])

    # --- plumbing ---

    async def _single(self, kind: str, request: Message, context: grpc.aio.ServicerContext) -> ItemResult:
        (result,) = await self._run(kind, [request], context)
        reason, _, _, message, field = result
        if reason:
            details = {"reason": reason, "field": field} if field else {"reason": reason}
            await abort_with_details(context, grpc.StatusCode.INVALID_ARGUMENT, message, **details)
        return result

    async def _run(self, kind: str, items: Sequence[Message], context: grpc.aio.ServicerContext) -> list[ItemResult]:
        if len(items) > self.max_batch:
            self.metrics.rejections.labels("batch_too_large").inc()
            await abort_with_details(
                context, grpc.StatusCode.INVALID_ARGUMENT,
                f"batch of {len(items)} items is over the limit of {self.max_batch}",
                reason=REASON_BATCH_TOO_LARGE,
            )
        try:
            results = await self.pool.run(
                kind, [m.SerializeToString() for m in items], context.time_remaining()
            )
        except PoolRejected as exc:
            self.metrics.rejections.labels(exc.label).inc()
            await abort_with_details(context, exc.code, str(exc), reason=exc.reason)
        except asyncio.CancelledError:
            # gRPC cancels the handler when the client goes away or its deadline fires
            # (gRPC's timer may fire a moment before time_remaining() reaches 0).
            remaining = context.time_remaining()
            near_deadline = remaining is not None and remaining <= _DEADLINE_SLACK_S
            self.metrics.rejections.labels("deadline_exceeded" if near_deadline else "cancelled").inc()
            raise
        for r in results:
            self.metrics.operations.labels(kind, outcome_of(r[0])).inc()
        if any(r[0] == REASON_DEADLINE for r in results):
            await abort_with_details(
                context, grpc.StatusCode.DEADLINE_EXCEEDED,
                "deadline passed before all the work could start", reason=REASON_DEADLINE,
            )
        # admission feedback: how many pool tasks wait now, so a client can slow down or shed
        # before this worker has to refuse (RESOURCE_EXHAUSTED at processes + queue)
        context.set_trailing_metadata(((QUEUE_DEPTH_KEY, str(self.pool.waiting)),))
        return results
