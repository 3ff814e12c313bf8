"""Location domain logic (depends on a LocationStore) and its gRPC adapter."""

from __future__ import annotations

import time
from collections.abc import Callable

import grpc
from sipsec.rpc import abort_with_details
from sipsec.rpc._gen.sipsec.location.v1 import location_pb2, location_pb2_grpc
from sipsec.stores.location import (
    Binding,
    InvalidBinding,
    LocationError,
    LocationStore,
    StaleCSeq,
    StoreUnavailable,
    TooManyContacts,
    canonical_aor,
    new_binding,
)

from sipsec_location.metrics import LocationMetrics

__all__ = ["LocationService", "LocationServicer"]

_STATUS: dict[type[LocationError], grpc.StatusCode] = {
    InvalidBinding: grpc.StatusCode.INVALID_ARGUMENT,
    StaleCSeq: grpc.StatusCode.FAILED_PRECONDITION,
    TooManyContacts: grpc.StatusCode.RESOURCE_EXHAUSTED,
    StoreUnavailable: grpc.StatusCode.UNAVAILABLE,
}


class LocationService:
    """Validates requests and applies them to the store; raises :class:`LocationError`."""

    def __init__(
        self,
        store: LocationStore,
        *,
        max_expires: int = 86400,
        max_contacts: int = 16,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.max_expires = max_expires
        self.max_contacts = max_contacts
        self._clock = clock

    async def bind(
        self,
        aor: str,
        contact: str,
        expires: int,
        *,
        q_milli: int | None = None,
        instance_id: str = "",
        reg_id: int = 0,
        call_id: str = "",
        cseq: int = 0,
        received: str = "",
    ) -> list[Binding]:
        binding = new_binding(
            aor, contact, expires, self._clock(), max_expires=self.max_expires, q_milli=q_milli,
            instance_id=instance_id, reg_id=reg_id, call_id=call_id, cseq=cseq, received=received,
        )
        return await self.store.bind(binding, self.max_contacts)

    async def unbind_one(
        self, aor: str, contact: str = "", instance_id: str = "", reg_id: int = 0
    ) -> tuple[int, list[Binding]]:
        canon = canonical_aor(aor)
        if instance_id:
            key = f"i:{instance_id}|{reg_id}"
        elif contact:
            key = f"c:{contact}"
        else:
            raise InvalidBinding("unbinding one needs a contact or an instance id", "bad-scope")
        return await self.store.unbind(canon, key)

    async def unbind_all(self, aor: str, call_id: str = "", cseq: int = 0) -> tuple[int, list[Binding]]:
        return await self.store.unbind(canonical_aor(aor), None, call_id, cseq)

    async def lookup(self, aor: str) -> list[Binding]:
        return await self.store.lookup(canonical_aor(aor))


def _to_pb(b: Binding, now: float) -> location_pb2.Binding:
    return location_pb2.Binding(
        aor=b.aor, contact=b.contact, q_milli=b.q_milli, expires_seconds=b.expires_in(now),
        instance_id=b.instance_id, reg_id=b.reg_id, call_id=b.call_id, cseq=b.cseq,
        received=b.received, expires_at_unix_ms=int(b.expires_at * 1000),
    )


class LocationServicer(location_pb2_grpc.LocationServiceServicer):
    """gRPC adapter: protobuf <-> domain, errors -> status codes with a ``sipsec-reason``."""

    def __init__(self, service: LocationService, metrics: LocationMetrics,
                 clock: Callable[[], float] = time.time) -> None:
        self.service = service
        self.metrics = metrics
        self._clock = clock

    async def _fail(self, context: grpc.aio.ServicerContext, method: str, exc: LocationError) -> None:
        code = _STATUS.get(type(exc), grpc.StatusCode.INTERNAL)
        self.metrics.operations.labels(method, code.name.lower()).inc()
        await abort_with_details(context, code, str(exc), reason=exc.reason)

    async def Bind(  # noqa: N802 - gRPC method name
        self, request: location_pb2.BindRequest, context: grpc.aio.ServicerContext
    ) -> location_pb2.BindResponse:
        start = time.perf_counter()
        try:
            bindings = await self.service.bind(
                request.aor, request.contact, request.expires_seconds,
                q_milli=request.q_milli if request.HasField("q_milli") else None,
                instance_id=request.instance_id, reg_id=request.reg_id,
                call_id=request.call_id, cseq=request.cseq, received=request.received,
            )
        except LocationError as exc:
            await self._fail(context, "Bind", exc)
            raise
        finally:
            self.metrics.latency.labels("Bind").observe(time.perf_counter() - start)
        self.metrics.operations.labels("Bind", "ok").inc()
        now = self._clock()
        return location_pb2.BindResponse(bindings=[_to_pb(b, now) for b in bindings])

    async def Unbind(  # noqa: N802
        self, request: location_pb2.UnbindRequest, context: grpc.aio.ServicerContext
    ) -> location_pb2.UnbindResponse:
        start = time.perf_counter()
        try:
            if request.scope == location_pb2.UNBIND_SCOPE_ONE:
                removed, left = await self.service.unbind_one(
                    request.aor, request.contact, request.instance_id, request.reg_id
                )
            elif request.scope == location_pb2.UNBIND_SCOPE_ALL:
                removed, left = await self.service.unbind_all(request.aor, request.call_id, request.cseq)
            else:
                raise InvalidBinding("scope must be UNBIND_SCOPE_ONE or UNBIND_SCOPE_ALL", "bad-scope")
        except LocationError as exc:
            await self._fail(context, "Unbind", exc)
            raise
        finally:
            self.metrics.latency.labels("Unbind").observe(time.perf_counter() - start)
        self.metrics.operations.labels("Unbind", "ok").inc()
        now = self._clock()
        return location_pb2.UnbindResponse(removed=removed, bindings=[_to_pb(b, now) for b in left])

    async def Lookup(  # noqa: N802
        self, request: location_pb2.LookupRequest, context: grpc.aio.ServicerContext
    ) -> location_pb2.LookupResponse:
        start = time.perf_counter()
        try:
            bindings = await self.service.lookup(request.aor)
        except LocationError as exc:
            await self._fail(context, "Lookup", exc)
            raise
        finally:
            self.metrics.latency.labels("Lookup").observe(time.perf_counter() - start)
        self.metrics.operations.labels("Lookup", "ok").inc()
        now = self._clock()
        return location_pb2.LookupResponse(bindings=[_to_pb(b, now) for b in bindings])
