"""Where the proxy finds and writes bindings: a Protocol, an in-process store and a gRPC client."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Protocol

import grpc
from sipsec.rpc import client_channel
from sipsec.rpc._gen.sipsec.location.v1 import location_pb2 as pb
from sipsec.rpc._gen.sipsec.location.v1 import location_pb2_grpc as pb_grpc
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

__all__ = ["BindRequest", "Contact", "GrpcLocator", "Locator", "StoreLocator"]


@dataclass(frozen=True, slots=True)
class Contact:
    """A live binding as the proxy uses it."""

    uri: str
    q_milli: int
    expires: int
    received: str = ""


@dataclass(frozen=True, slots=True)
class BindRequest:
    """One Contact of a REGISTER, already validated by the registrar."""

    contact: str
    expires: int
    q_milli: int | None = None
    instance_id: str = ""
    reg_id: int = 0


class Locator(Protocol):
    """The proxy's view of the location service; failures raise :class:`LocationError`."""

    async def lookup(self, aor: str) -> list[Contact]:
        """Live contacts of ``aor``, highest q first."""
        ...

    async def bind(self, aor: str, item: BindRequest, call_id: str, cseq: int, received: str) -> None:
        ...

    async def unbind(self, aor: str, contact: str, instance_id: str = "", reg_id: int = 0) -> None:
        ...

    async def unbind_all(self, aor: str, call_id: str, cseq: int) -> None:
        ...

    async def close(self) -> None:
        ...


def _contact(b: Binding, now: float) -> Contact:
    return Contact(b.contact, b.q_milli, b.expires_in(now), b.received)


class StoreLocator:
    """The embedded default: a :class:`LocationStore` (memory or Redis) in this process."""

    def __init__(self, store: LocationStore, *, max_expires: int = 86400, max_contacts: int = 16) -> None:
        self.store = store
        self.max_expires = max_expires
        self.max_contacts = max_contacts

    async def lookup(self, aor: str) -> list[Contact]:
        now = time.time()
        return [_contact(b, now) for b in await self.store.lookup(canonical_aor(aor))]

    async def bind(self, aor: str, item: BindRequest, call_id: str, cseq: int, received: str) -> None:
        binding = new_binding(
            aor, item.contact, item.expires, time.time(), max_expires=self.max_expires,
            q_milli=item.q_milli, instance_id=item.instance_id, reg_id=item.reg_id,
            call_id=call_id, cseq=cseq, received=received,
        )
        await self.store.bind(binding, self.max_contacts)

    async def unbind(self, aor: str, contact: str, instance_id: str = "", reg_id: int = 0) -> None:
        key = f"i:{instance_id}|{reg_id}" if instance_id else f"c:{contact}"
        await self.store.unbind(canonical_aor(aor), key)

    async def unbind_all(self, aor: str, call_id: str, cseq: int) -> None:
        await self.store.unbind(canonical_aor(aor), None, call_id, cseq)

    async def close(self) -> None:
        await self.store.close()


_ERRORS: dict[grpc.StatusCode, type[LocationError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidBinding,
    grpc.StatusCode.FAILED_PRECONDITION: StaleCSeq,
    grpc.StatusCode.RESOURCE_EXHAUSTED: TooManyContacts,
}


class GrpcLocator:
    """A client of ``sipsec.location.v1.LocationService``."""

    def __init__(self, target: str, *, root_certificates: bytes | None = None, timeout: float = 2.0) -> None:
        self._channel = client_channel(target, root_certificates=root_certificates,
                                       plaintext=root_certificates is None)
        self._stub = pb_grpc.LocationServiceStub(self._channel)  # type: ignore[no-untyped-call,unused-ignore]
        self._timeout = timeout

    async def _call(self, rpc: object, request: object) -> object:
        try:
            return await rpc(request, timeout=self._timeout)  # type: ignore[operator]
        except grpc.aio.AioRpcError as exc:
            reason = str(dict(exc.trailing_metadata() or ()).get("sipsec-reason", "error"))
            kind = _ERRORS.get(exc.code(), StoreUnavailable)
            raise kind(exc.details() or exc.code().name, reason) from None

    async def lookup(self, aor: str) -> list[Contact]:
        resp = await self._call(self._stub.Lookup, pb.LookupRequest(aor=aor))
        return [Contact(b.contact, b.q_milli, b.expires_seconds, b.received)
                for b in resp.bindings]  # type: ignore[attr-defined]

    async def bind(self, aor: str, item: BindRequest, call_id: str, cseq: int, received: str) -> None:
        req = pb.BindRequest(aor=aor, contact=item.contact, expires_seconds=item.expires,
                             instance_id=item.instance_id, reg_id=item.reg_id, call_id=call_id,
                             cseq=cseq, received=received)
        if item.q_milli is not None:
            req.q_milli = item.q_milli
        await self._call(self._stub.Bind, req)

    async def unbind(self, aor: str, contact: str, instance_id: str = "", reg_id: int = 0) -> None:
        await self._call(self._stub.Unbind, pb.UnbindRequest(
            aor=aor, scope=pb.UNBIND_SCOPE_ONE, contact=contact, instance_id=instance_id, reg_id=reg_id))

    async def unbind_all(self, aor: str, call_id: str, cseq: int) -> None:
        await self._call(self._stub.Unbind, pb.UnbindRequest(
            aor=aor, scope=pb.UNBIND_SCOPE_ALL, call_id=call_id, cseq=cseq))

    async def close(self) -> None:
        await self._channel.close()
