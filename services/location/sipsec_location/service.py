"""The location service's gRPC adapter over the domain logic of :class:`sipsec.stores.location.LocationService`."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import NoReturn

import grpc
from sipsec.rpc import abort_with_details
from sipsec.rpc._gen.sipsec.location.v1 import location_pb2, location_pb2_grpc
from sipsec.stores.location import Binding, InvalidBinding, LocationError, LocationService

__all__ = ["LocationService", "LocationServicer"]


async def _fail(context: grpc.aio.ServicerContext, exc: LocationError) -> NoReturn:
    await abort_with_details(
        context, getattr(grpc.StatusCode, exc.status, grpc.StatusCode.INTERNAL), str(exc), reason=exc.reason
    )


def _to_pb(b: Binding, now: float) -> location_pb2.Binding:
    return location_pb2.Binding(
        aor=b.aor, contact=b.contact, q_milli=b.q_milli, expires_seconds=b.expires_in(now),
        instance_id=b.instance_id, reg_id=b.reg_id, call_id=b.call_id, cseq=b.cseq,
        received=b.received, expires_at_unix_ms=int(b.expires_at * 1000),
    )


class LocationServicer(location_pb2_grpc.LocationServiceServicer):
    """gRPC adapter: protobuf <-> domain, errors -> status codes with a ``sipsec-reason``.

    Decoding, deadlines, unexpected errors and per-method metrics are the shared server
    interceptor's (:mod:`sipsec.rpc.interceptor`).
    """

    def __init__(self, service: LocationService, clock: Callable[[], float] = time.time) -> None:
        self.service = service
        self._clock = clock

    async def Bind(  # noqa: N802 - gRPC method name
        self, request: location_pb2.BindRequest, context: grpc.aio.ServicerContext
    ) -> location_pb2.BindResponse:
        try:
            bindings = await self.service.bind(
                request.aor, request.contact, request.expires_seconds,
                q_milli=request.q_milli if request.HasField("q_milli") else None,
                instance_id=request.instance_id, reg_id=request.reg_id,
                call_id=request.call_id, cseq=request.cseq, received=request.received,
            )
        except LocationError as exc:
            await _fail(context, exc)
        now = self._clock()
        return location_pb2.BindResponse(bindings=[_to_pb(b, now) for b in bindings])

    async def Unbind(  # noqa: N802
        self, request: location_pb2.UnbindRequest, context: grpc.aio.ServicerContext
    ) -> location_pb2.UnbindResponse:
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
            await _fail(context, exc)
        now = self._clock()
        return location_pb2.UnbindResponse(removed=removed, bindings=[_to_pb(b, now) for b in left])

    async def Lookup(  # noqa: N802
        self, request: location_pb2.LookupRequest, context: grpc.aio.ServicerContext
    ) -> location_pb2.LookupResponse:
        try:
            bindings = await self.service.lookup(request.aor)
        except LocationError as exc:
            await _fail(context, exc)
        now = self._clock()
        return location_pb2.LookupResponse(bindings=[_to_pb(b, now) for b in bindings])
