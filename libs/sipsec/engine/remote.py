"""The remote crypto engine: a load-balanced pool of crypto-workers with in-process fallback."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

import grpc
from google.protobuf.message import Message

from sipsec.engine.inprocess import InProcessEngine
from sipsec.engine.metrics import EngineMetrics
from sipsec.engine.protocol import CryptoEngine
from sipsec.engine.wire import (
    KIND_DECAPSULATE,
    KIND_ENCAPSULATE,
    KIND_SIGN,
    KIND_VERIFY,
    error_for_reason,
    identity_to_proto,
)
from sipsec.ibc import DomainParams, IbcError, Identity, InvalidIdentity, PrivateKey
from sipsec.rpc import client_channel
from sipsec.rpc._gen.sipsec.crypto.v1 import crypto_pb2 as pb
from sipsec.rpc._gen.sipsec.crypto.v1 import crypto_pb2_grpc as pb_grpc

__all__ = ["RETRYABLE", "Balance", "EngineUnavailable", "RemoteEngine"]

log = logging.getLogger("sipsec.engine")

Balance = Literal["round_robin", "least_outstanding"]

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
    """No worker could do the operation and in-process fallback is disabled."""


@dataclass(eq=False)
class _Worker:
    target: str
    channel: grpc.aio.Channel | None = None
    stub: Any = None
    outstanding: int = 0
    failures: int = 0
    ejected_until: float = 0.0


class RemoteEngine:
    """A :class:`~sipsec.engine.CryptoEngine` backed by crypto-worker endpoints.

    * ``balance``: ``round_robin`` or ``least_outstanding`` (fewest calls in flight from
      this engine; ties broken round-robin).
    * A call failing with UNAVAILABLE, RESOURCE_EXHAUSTED or DEADLINE_EXCEEDED is retried
      once on *another* worker; if that fails too, or no worker is available, the operation
      runs in-process (``fallback``, an :class:`InProcessEngine` by default) and
      ``sipsec_engine_fallbacks_total`` counts it. With ``allow_fallback=False`` the engine
      raises :class:`EngineUnavailable` instead.
    * A worker answering UNAVAILABLE is ejected for ``eject_s`` seconds, doubling with each
      consecutive failure up to ``max_eject_s``; a success clears its record.
    * A worker's INVALID_ARGUMENT becomes the ``sipsec.ibc`` error its reason names, so the
      caller sees exactly what the in-process engine raises.

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
    ) -> None:
        if balance not in ("round_robin", "least_outstanding"):
            raise ValueError(f"unknown balance policy {balance!r}")
        if timeout_s <= 0:
            raise ValueError("timeout_s must be positive")
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

    def __repr__(self) -> str:
        return f"RemoteEngine(targets={self.targets!r}, balance={self.balance!r})"

    @property
    def targets(self) -> list[str]:
        return [w.target for w in self._workers]

    # --- the four operations ---

    async def encapsulate(self, params: DomainParams, identity: Identity) -> tuple[bytes, bytes]:
        _check_identity(identity)
        request = pb.EncapsulateRequest(
            domain_params=params.to_bytes(), identity=identity_to_proto(identity)
        )
        response = await self._remote(KIND_ENCAPSULATE, "Encapsulate", request)
        if response is None:
            return await self._fallback.encapsulate(params, identity)
        assert isinstance(response, pb.EncapsulateResponse)
        return response.key, response.ciphertext

    async def decapsulate(self, key: PrivateKey, ciphertext: bytes) -> bytes:
        _check_identity(key.identity)
        request = pb.DecapsulateRequest(
            identity=identity_to_proto(key.identity), private_key=key.to_bytes(),
            ciphertext=bytes(ciphertext),
        )
        response = await self._remote(KIND_DECAPSULATE, "Decapsulate", request)
        if response is None:
            return await self._fallback.decapsulate(key, ciphertext)
        assert isinstance(response, pb.DecapsulateResponse)
        return response.key

    async def sign(self, key: PrivateKey, message: bytes) -> bytes:
        _check_identity(key.identity)
        request = pb.SignRequest(
            identity=identity_to_proto(key.identity), private_key=key.to_bytes(),
            message=bytes(message),
        )
        response = await self._remote(KIND_SIGN, "Sign", request)
        if response is None:
            return await self._fallback.sign(key, message)
        assert isinstance(response, pb.SignResponse)
        return response.signature

    async def verify(
        self, params: DomainParams, identity: Identity, message: bytes, signature: bytes
    ) -> None:
        _check_identity(identity)
        request = pb.VerifyRequest(
            domain_params=params.to_bytes(), identity=identity_to_proto(identity),
            message=bytes(message), signature=bytes(signature),
        )
        response = await self._remote(KIND_VERIFY, "Verify", request)
        if response is None:
            await self._fallback.verify(params, identity, message, signature)

    async def close(self) -> None:
        for worker in self._workers:
            if worker.channel is not None:
                await worker.channel.close()
                worker.channel = worker.stub = None
        if self._own_fallback:
            await self._fallback.close()

    # --- balancing, retry, fallback ---

    def _pick(self, tried: Sequence[_Worker]) -> _Worker | None:
        now = self._clock()
        n = len(self._workers)
        order = [self._workers[(self._next + i) % n] for i in range(n)]
        candidates = [w for w in order if w not in tried and w.ejected_until <= now]
        if not candidates:
            return None
        if self.balance == "least_outstanding":
            chosen = min(candidates, key=lambda w: w.outstanding)  # min keeps the first of ties
        else:
            chosen = candidates[0]
        self._next = (self._workers.index(chosen) + 1) % n
        return chosen

    async def _remote(self, op: str, method: str, request: Message) -> Message | None:
        """The worker's response, or None when the caller must run the operation in-process."""
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
                return await self._invoke(worker, op, method, request)
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
        self.metrics.fallbacks.labels(op, reason).inc()
        if not self._allow_fallback:
            raise EngineUnavailable(f"no crypto-worker could {op} ({reason})")
        return None

    async def _invoke(self, worker: _Worker, op: str, method: str, request: Message) -> Message:
        if worker.stub is None:
            worker.channel = client_channel(worker.target, **self._channel_args)
            worker.stub = pb_grpc.CryptoWorkerServiceStub(worker.channel)  # type: ignore[no-untyped-call]
        worker.outstanding += 1
        start = time.perf_counter()
        try:
            response: Message = await getattr(worker.stub, method)(request, timeout=self.timeout_s)
        except grpc.aio.AioRpcError as err:
            code = err.code()
            self.metrics.remote_calls.labels(op, _OUTCOME.get(code, "error")).inc()
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
        self.metrics.remote_calls.labels(op, "ok").inc()
        return response


def _check_identity(identity: object) -> None:
    if not isinstance(identity, Identity):
        raise InvalidIdentity("identity must be an Identity")


def _ibc_error(err: grpc.aio.AioRpcError) -> IbcError:
    reason = ""
    for key, value in err.trailing_metadata() or ():
        if key == "sipsec-reason":
            reason = value if isinstance(value, str) else value.decode("ascii", "replace")
    return error_for_reason(reason, err.details() or "crypto-worker rejected the request")
