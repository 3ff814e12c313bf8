"""Where the proxy finds and writes bindings: a Protocol, an in-process store, a gRPC client,
and a short-lived lookup cache in front of the remote ones."""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Protocol, TypeVar

import grpc
from sipsec.rpc import client_channel
from sipsec.rpc._gen.sipsec.location.v1 import location_pb2 as pb
from sipsec.rpc._gen.sipsec.location.v1 import location_pb2_grpc as pb_grpc
from sipsec.stores.location import (
    Binding,
    InvalidBinding,
    LocationError,
    LocationService,
    LocationStore,
    StoreUnavailable,
    canonical_aor,
)

__all__ = ["BindRequest", "CachingLocator", "Contact", "GrpcLocator", "Locator", "StoreLocator", "status_name"]

_T = TypeVar("_T")

#: Attribute of a :class:`LocationError` naming the gRPC status code the location service
#: call ended with (``DEADLINE_EXCEEDED``, ``UNAVAILABLE``...), when it came over gRPC.
_CODE_ATTR = "grpc_code"


def status_name(exc: LocationError) -> str:
    """The gRPC status code name of a location failure: the one the location service call
    ended with, else the one the failure's kind travels as (``UNAVAILABLE`` for an
    unreachable store, ``DEADLINE_EXCEEDED`` for a store past the lookup deadline)."""
    code = getattr(exc, _CODE_ATTR, None)
    return code if isinstance(code, str) else exc.status


def _with_code(exc: LocationError, code: str) -> LocationError:
    setattr(exc, _CODE_ATTR, code)
    return exc


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
    """The embedded default: a :class:`LocationStore` (memory or Redis) in this process, through
    the same :class:`LocationService` the location service runs."""

    def __init__(self, store: LocationStore, *, max_expires: int = 86400, max_contacts: int = 16,
                 timeout: float | None = None) -> None:
        self.store = store
        self.service = LocationService(store, max_expires=max_expires, max_contacts=max_contacts)
        self._timeout = timeout

    async def _bounded(self, work: Awaitable[_T]) -> _T:
        """``work`` within the deadline: a store that does not answer in time is unavailable."""
        if self._timeout is None:
            return await work
        try:
            return await asyncio.wait_for(work, self._timeout)
        except TimeoutError:
            raise _with_code(StoreUnavailable("location store deadline exceeded"), "DEADLINE_EXCEEDED") from None

    async def lookup(self, aor: str) -> list[Contact]:
        bindings = await self._bounded(self.service.lookup(aor))
        now = time.time()
        return [_contact(b, now) for b in bindings]

    async def bind(self, aor: str, item: BindRequest, call_id: str, cseq: int, received: str) -> None:
        await self._bounded(self.service.bind(
            aor, item.contact, item.expires, q_milli=item.q_milli, instance_id=item.instance_id,
            reg_id=item.reg_id, call_id=call_id, cseq=cseq, received=received))

    async def unbind(self, aor: str, contact: str, instance_id: str = "", reg_id: int = 0) -> None:
        await self._bounded(self.service.unbind_one(aor, contact, instance_id, reg_id))

    async def unbind_all(self, aor: str, call_id: str, cseq: int) -> None:
        await self._bounded(self.service.unbind_all(aor, call_id, cseq))

    async def close(self) -> None:
        await self.store.close()


class GrpcLocator:
    """A client of ``sipsec.location.v1.LocationService``."""

    def __init__(self, target: str, *, root_certificates: bytes | None = None, timeout: float = 2.0) -> None:
        self._channel = client_channel(target, root_certificates=root_certificates,
                                       plaintext=root_certificates is None)
        self._stub = pb_grpc.LocationServiceStub(self._channel)  # type: ignore[no-untyped-call,unused-ignore]
        self._timeout = timeout

    async def _call(self, rpc: object, request: object) -> object:
        """One RPC within the deadline; every failure is a :class:`LocationError` that keeps
        the gRPC status code name (:func:`status_name`): a service that is down, restarting or
        past the deadline is :class:`StoreUnavailable` (``UNAVAILABLE``, ``DEADLINE_EXCEEDED``)."""
        try:
            return await rpc(request, timeout=self._timeout)  # type: ignore[operator]
        except grpc.aio.AioRpcError as exc:
            code = exc.code().name
            reason = str(dict(exc.trailing_metadata() or ()).get("sipsec-reason", "error"))
            raise _with_code(LocationError.from_status(code, exc.details() or code, reason), code) from None
        except TimeoutError:
            raise _with_code(StoreUnavailable("location service deadline exceeded"), "DEADLINE_EXCEEDED") from None
        except (grpc.RpcError, grpc.aio.BaseError) as exc:  # a channel that broke
            raise _with_code(StoreUnavailable(f"location service call failed: {type(exc).__name__}"),
                             "UNAVAILABLE") from None

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


class CachingLocator:
    """A :class:`Locator` that keeps what ``inner`` looked up for ``ttl_s`` seconds.

    A call's INVITE costs the proxy one location lookup; over gRPC that is a round trip of
    ~0.5 ms of CPU between proxy and location service, a sizeable share of what the proxy
    spends on the call (``bench/call_setup.py``). This cache answers repeated lookups of an
    AOR from memory for ``ttl_s`` (``SIPSEC_PROXY_LOCATION_CACHE_MS``, default 1 s):

    * only non-empty answers are kept, so a user who has just registered is found at once;
    * this proxy's own REGISTERs (``bind``/``unbind``/``unbind_all``) drop the AOR's entry
      before and after the write, and a lookup that was in flight during a write does not
      store its (possibly older) answer, so through one proxy the cache is never stale;
    * a registration changed through *another* proxy replica is seen here at most ``ttl_s``
      later: the same bounded staleness as a registrar cluster that replicates its bindings
      asynchronously. Without the cache (``SIPSEC_PROXY_LOCATION_CACHE_MS=0``) every lookup
      gets the store's current answer;
    * a cached contact's ``expires`` counts down, and a contact past its expiry is not
      returned (an entry whose contacts have all expired is looked up again);
    * at most ``max_entries`` AORs are kept, the least recently used go first.

    Errors are never cached. ``on_result(hit)`` is told about every lookup (metrics).
    """

    def __init__(
        self,
        inner: Locator,
        ttl_s: float,
        *,
        max_entries: int = 10000,
        clock: Callable[[], float] = time.monotonic,
        on_result: Callable[[bool], None] | None = None,
    ) -> None:
        if ttl_s <= 0 or max_entries < 1:
            raise ValueError("the cache needs ttl_s > 0 and max_entries >= 1")
        self.inner = inner
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self.on_result = on_result
        self._clock = clock
        self._entries: OrderedDict[str, tuple[float, list[Contact]]] = OrderedDict()
        self._epoch = 0  # bumped as every write begins and ends: a lookup that overlapped one stores nothing

    @staticmethod
    def _key(aor: str) -> str | None:
        try:
            return str(canonical_aor(aor))
        except InvalidBinding:
            return None  # the inner locator gives the error

    def _report(self, hit: bool) -> None:
        if self.on_result is not None:
            self.on_result(hit)

    async def lookup(self, aor: str) -> list[Contact]:
        key = self._key(aor)
        if key is None:
            return await self.inner.lookup(aor)
        now = self._clock()
        entry = self._entries.get(key)
        if entry is not None:
            fetched, contacts = entry
            age = now - fetched
            if age < self.ttl_s:
                live = [replace(c, expires=c.expires - int(age)) for c in contacts if c.expires > age]
                if live:
                    self._entries.move_to_end(key)
                    self._report(True)
                    return live
            del self._entries[key]
        self._report(False)
        epoch = self._epoch
        contacts = await self.inner.lookup(aor)
        if contacts and epoch == self._epoch:
            self._entries[key] = (now, contacts)
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)
        return list(contacts)  # the caller's own list, not the cached one

    def _begin_write(self, aor: str) -> str | None:
        key = self._key(aor)
        self._end_write(key)
        return key

    def _end_write(self, key: str | None) -> None:
        # Dropped before the write (no answer from before it) and after it (an answer read
        # while it was under way); a lookup begun before either bump stores nothing.
        self._epoch += 1
        if key is not None:
            self._entries.pop(key, None)

    async def bind(self, aor: str, item: BindRequest, call_id: str, cseq: int, received: str) -> None:
        key = self._begin_write(aor)
        try:
            await self.inner.bind(aor, item, call_id, cseq, received)
        finally:
            self._end_write(key)

    async def unbind(self, aor: str, contact: str, instance_id: str = "", reg_id: int = 0) -> None:
        key = self._begin_write(aor)
        try:
            await self.inner.unbind(aor, contact, instance_id, reg_id)
        finally:
            self._end_write(key)

    async def unbind_all(self, aor: str, call_id: str, cseq: int) -> None:
        key = self._begin_write(aor)
        try:
            await self.inner.unbind_all(aor, call_id, cseq)
        finally:
            self._end_write(key)

    async def close(self) -> None:
        self._entries.clear()
        await self.inner.close()
