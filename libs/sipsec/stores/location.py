"""AOR -> contact bindings (RFC 3261 §10 location service): a Protocol, in-memory and Redis stores.

A binding is identified inside its AOR by ``instance_id`` + ``reg_id`` when the UA sent a
``+sip.instance`` (RFC 5626), otherwise by its contact URI. Expiry is absolute time
(``expires_at``, Unix seconds); the Redis store gives every binding a key with a matching
TTL, so bindings outlive a restart of the service and vanish by themselves.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, NewType, Protocol, TypedDict, Unpack, runtime_checkable

from sipsec.sip.errors import SipError
from sipsec.sip.uri import SipURI, parse_uri
from sipsec.sip.uri import canonical_aor as sip_canonical_aor
from sipsec.stores.access import StoreUnavailable as _Overloaded
from sipsec.stores.access import open_redis, redis_error_kind, store_metrics

__all__ = [
    "Aor",
    "Binding",
    "InvalidBinding",
    "BindingFields",
    "LocationError",
    "LocationService",
    "LocationStore",
    "MemoryLocationStore",
    "RedisLocationStore",
    "StaleCSeq",
    "StoreUnavailable",
    "TooManyContacts",
    "canonical_aor",
    "new_binding",
]

Aor = NewType("Aor", str)

MAX_URI_LENGTH = 1024
MAX_CALL_ID_LENGTH = 256
MAX_INSTANCE_LENGTH = 256

# A contact URI: sip/sips, no whitespace or angle brackets (parameters allowed).
_CONTACT = re.compile(r"^sips?:[^\s<>\"]+$", re.IGNORECASE)
_PRINTABLE = re.compile(r"^[\x21-\x7e]*$")


class LocationError(Exception):
    """Base of the store's errors; ``reason`` is a short fixed name (a metric label)."""

    reason = "error"

    def __init__(self, message: str, reason: str | None = None) -> None:
        super().__init__(message)
        if reason is not None:
            self.reason = reason

    @property
    def status(self) -> str:
        """The canonical gRPC status code name this failure travels as (the location service's API)."""
        return _STATUS.get(type(self), "INTERNAL")

    @staticmethod
    def from_status(status: str, message: str, reason: str) -> LocationError:
        """The error a remote location service answered with ``status`` (a code name); a status
        that is none of the caller's faults counts as :class:`StoreUnavailable`."""
        kind = next((k for k, name in _STATUS.items() if name == status), StoreUnavailable)
        return kind(message, reason)


class InvalidBinding(LocationError):
    """Bad AOR, contact, expiry, q-value or scope (the caller's fault)."""

    reason = "invalid"


class StaleCSeq(LocationError):
    """A binding with the same Call-ID and a higher or equal CSeq exists (RFC 3261 §10.3 step 7)."""

    reason = "stale-cseq"


class TooManyContacts(LocationError):
    """The AOR already holds the maximum number of bindings."""

    reason = "too-many-contacts"


class StoreUnavailable(LocationError, _Overloaded):
    """The backing store cannot be reached (also a :class:`sipsec.stores.access.StoreUnavailable`: overload)."""

    reason = "store-unavailable"


#: Each failure as the location service's gRPC API carries it (a gRPC status code name).
_STATUS: dict[type[LocationError], str] = {
    InvalidBinding: "INVALID_ARGUMENT",
    StaleCSeq: "FAILED_PRECONDITION",
    TooManyContacts: "RESOURCE_EXHAUSTED",
    StoreUnavailable: "UNAVAILABLE",
}


@dataclass(frozen=True, slots=True)
class Binding:
    """One AOR -> contact binding; ``q_milli`` is the q-value in thousandths (1000 = q=1)."""

    aor: str
    contact: str
    expires_at: float
    q_milli: int = 1000
    instance_id: str = ""
    reg_id: int = 0
    call_id: str = ""
    cseq: int = 0
    received: str = ""
    updated_at: float = 0.0

    @property
    def key(self) -> str:
        """The binding's identity inside its AOR."""
        if self.instance_id:
            return f"i:{self.instance_id}|{self.reg_id}"
        return f"c:{self.contact}"

    def expires_in(self, now: float) -> int:
        """Whole seconds of life left at ``now`` (never negative)."""
        return max(0, int(round(self.expires_at - now)))

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | bytes) -> Binding:
        data: dict[str, Any] = json.loads(text)
        return cls(**data)


def canonical_aor(text: str) -> Aor:
    """The canonical AOR under which bindings are kept, or :class:`InvalidBinding` ("bad-aor").

    The normalisation is :func:`sipsec.sip.canonical_aor`'s (RFC 3261 §10.3 step 5,
    §19.1.4), so ``sip:%61lice@atlanta.com`` and ``sip:alice@atlanta.com`` are one AOR.
    Stricter here: the text must be an AOR already, a ``sip:``/``sips:`` URI with a user
    part and nothing a contact would carry (password, port, parameters, headers).
    """
    if not isinstance(text, str) or len(text) > MAX_URI_LENGTH:
        raise InvalidBinding("AOR is too long or not text", "bad-aor")
    try:
        uri = parse_uri(text.strip())
        if (not isinstance(uri, SipURI) or uri.user is None or uri.password is not None
                or uri.port is not None or uri.params or uri.headers):
            raise InvalidBinding("AOR must look like sip:user@host (no port or parameters)", "bad-aor")
        return Aor(sip_canonical_aor(uri))
    except SipError:
        raise InvalidBinding("AOR must look like sip:user@host (no port or parameters)", "bad-aor") from None


def new_binding(
    aor: str,
    contact: str,
    expires: int,
    now: float,
    *,
    max_expires: int,
    q_milli: int | None = None,
    instance_id: str = "",
    reg_id: int = 0,
    call_id: str = "",
    cseq: int = 0,
    received: str = "",
) -> Binding:
    """Validates the fields of a new binding; raises :class:`InvalidBinding` with a reason."""
    canon = canonical_aor(aor)
    if len(contact) > MAX_URI_LENGTH or _CONTACT.match(contact) is None:
        raise InvalidBinding("contact must be a sip: or sips: URI", "bad-contact")
    if not 1 <= expires <= max_expires:
        raise InvalidBinding(f"expiry must be 1..{max_expires} seconds", "bad-expiry")
    q = 1000 if q_milli is None else q_milli
    if not 0 <= q <= 1000:
        raise InvalidBinding("q-value must be 0..1000 thousandths", "bad-q")
    if len(instance_id) > MAX_INSTANCE_LENGTH or not _PRINTABLE.match(instance_id):
        raise InvalidBinding("instance id is too long or not printable", "bad-instance")
    if reg_id < 0 or (reg_id and not instance_id):
        raise InvalidBinding("reg-id needs an instance id", "bad-instance")
    if len(call_id) > MAX_CALL_ID_LENGTH or not _PRINTABLE.match(call_id):
        raise InvalidBinding("Call-ID is too long or not printable", "bad-call-id")
    if not 0 <= cseq < 2**31:
        raise InvalidBinding("CSeq must be below 2**31", "bad-cseq")
    if len(received) > MAX_URI_LENGTH or not _PRINTABLE.match(received):
        raise InvalidBinding("received is too long or not printable", "bad-received")
    return Binding(
        aor=canon, contact=contact, expires_at=now + expires, q_milli=q,
        instance_id=instance_id, reg_id=reg_id, call_id=call_id, cseq=cseq,
        received=received, updated_at=now,
    )


def _ordered(bindings: list[Binding]) -> list[Binding]:
    """Highest q first, then the most recently refreshed (RFC 3261 §16.6 target order)."""
    return sorted(bindings, key=lambda b: (-b.q_milli, -b.updated_at, b.contact))


def _check_cseq(old: Binding | None, new_call_id: str, new_cseq: int) -> None:
    if old is not None and new_call_id and old.call_id == new_call_id and new_cseq <= old.cseq:
        raise StaleCSeq("a newer REGISTER with this Call-ID refreshed the binding")


@runtime_checkable
class LocationStore(Protocol):
    """Where bindings live. Every method is safe to call concurrently."""

    async def bind(self, binding: Binding, max_contacts: int) -> list[Binding]:
        """Creates or replaces ``binding``; returns the AOR's live bindings, ordered."""
        ...

    async def unbind(
        self, aor: str, key: str | None, call_id: str = "", cseq: int = 0
    ) -> tuple[int, list[Binding]]:
        """Removes one binding (by :attr:`Binding.key`) or all (``key=None``): (removed, left)."""
        ...

    async def lookup(self, aor: str) -> list[Binding]:
        """The AOR's live bindings, ordered."""
        ...

    async def count(self) -> int:
        """How many live bindings the store holds (all AORs)."""
        ...

    async def close(self) -> None:
        ...


class BindingFields(TypedDict, total=False):
    """The optional fields of a new binding (see :func:`new_binding`)."""

    q_milli: int | None
    instance_id: str
    reg_id: int
    call_id: str
    cseq: int
    received: str


class LocationService:
    """The registrar's operations on a :class:`LocationStore` (RFC 3261 §10.3): requests
    validated, AORs canonicalised, limits applied; raises :class:`LocationError`.

    The one implementation behind both the location service's gRPC API and the proxy's
    embedded store.
    """

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

    async def bind(self, aor: str, contact: str, expires: int, **fields: Unpack[BindingFields]) -> list[Binding]:
        """Add or refresh one binding of ``aor``; the AOR's bindings after it (§10.3 steps 6-7)."""
        binding = new_binding(aor, contact, expires, self._clock(), max_expires=self.max_expires, **fields)
        return await self.store.bind(binding, self.max_contacts)

    async def unbind_one(
        self, aor: str, contact: str = "", instance_id: str = "", reg_id: int = 0
    ) -> tuple[int, list[Binding]]:
        """Remove the binding of ``instance_id``/``reg_id`` (RFC 5626), else of ``contact``."""
        canon = canonical_aor(aor)
        if instance_id:
            key = f"i:{instance_id}|{reg_id}"
        elif contact:
            key = f"c:{contact}"
        else:
            raise InvalidBinding("unbinding one needs a contact or an instance id", "bad-scope")
        return await self.store.unbind(canon, key)

    async def unbind_all(self, aor: str, call_id: str = "", cseq: int = 0) -> tuple[int, list[Binding]]:
        """Remove every binding of ``aor`` (``Contact: *``, §10.3 step 6)."""
        return await self.store.unbind(canonical_aor(aor), None, call_id, cseq)

    async def lookup(self, aor: str) -> list[Binding]:
        """The live bindings of ``aor``, highest q first."""
        return await self.store.lookup(canonical_aor(aor))


class MemoryLocationStore:
    """Bindings in a dict; expired ones are dropped on access and by :meth:`count`."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._aors: dict[str, dict[str, Binding]] = {}

    def _live(self, aor: str) -> dict[str, Binding]:
        now = self._clock()
        table = self._aors.get(aor)
        if table is None:
            return {}
        for key in [k for k, b in table.items() if b.expires_at <= now]:
            del table[key]
        if not table:
            del self._aors[aor]
            return {}
        return table

    async def bind(self, binding: Binding, max_contacts: int) -> list[Binding]:
        table = self._live(binding.aor)
        old = table.get(binding.key)
        _check_cseq(old, binding.call_id, binding.cseq)
        if old is None and len(table) >= max_contacts:
            raise TooManyContacts(f"the AOR already has {len(table)} contacts")
        table[binding.key] = binding
        self._aors[binding.aor] = table
        return _ordered(list(table.values()))

    async def unbind(
        self, aor: str, key: str | None, call_id: str = "", cseq: int = 0
    ) -> tuple[int, list[Binding]]:
        table = self._live(aor)
        if key is None:
            for old in table.values():
                _check_cseq(old, call_id, cseq)
            removed = len(table)
            table.clear()
        else:
            removed = 1 if table.pop(key, None) is not None else 0
        if not table:
            self._aors.pop(aor, None)
        return removed, _ordered(list(table.values()))

    async def lookup(self, aor: str) -> list[Binding]:
        return _ordered(list(self._live(aor).values()))

    async def count(self) -> int:
        return sum(len(self._live(aor)) for aor in list(self._aors))

    async def close(self) -> None:
        return None


# Redis layout (hash tags keep one AOR's keys in one cluster slot):
#   sipsec:loc:{<aor>}:b:<key>  binding JSON, PX = time to expiry
#   sipsec:loc:{<aor>}:idx      set of <key>, PEXPIREAT = latest expiry of the AOR
#   sipsec:loc:expiry           sorted set "<aor>\n<key>" scored by expiry (ms) for counting
_LUA_LIVE = """
local idx = KEYS[1]
local prefix = ARGV[1]
local out = {}
for _, m in ipairs(redis.call('SMEMBERS', idx)) do
  local v = redis.call('GET', prefix .. m)
  if v then table.insert(out, v) else redis.call('SREM', idx, m) end
end
return out
"""

_LUA_BIND = """
local idx, bkey, gone = KEYS[1], KEYS[2], KEYS[3]
local prefix, member, value = ARGV[1], ARGV[2], ARGV[3]
local ttl_ms, max_contacts = tonumber(ARGV[4]), tonumber(ARGV[5])
local call_id, cseq, gmember, expires_ms = ARGV[6], tonumber(ARGV[7]), ARGV[8], tonumber(ARGV[9])
local old = redis.call('GET', bkey)
if old then
  local o = cjson.decode(old)
  if call_id ~= '' and o['call_id'] == call_id and cseq <= tonumber(o['cseq']) then
    return {'ERR', 'stale-cseq'}
  end
else
  local live = 0
  for _, m in ipairs(redis.call('SMEMBERS', idx)) do
    if redis.call('EXISTS', prefix .. m) == 1 then live = live + 1 else redis.call('SREM', idx, m) end
  end
  if live >= max_contacts then return {'ERR', 'too-many-contacts'} end
end
redis.call('SET', bkey, value, 'PX', ttl_ms)
redis.call('SADD', idx, member)
local pttl = redis.call('PTTL', idx)
if pttl < ttl_ms then redis.call('PEXPIRE', idx, ttl_ms) end
redis.call('ZADD', gone, expires_ms, gmember)
return {'OK'}
"""

_LUA_UNBIND = """
local idx, gone = KEYS[1], KEYS[2]
local prefix, aor, member, call_id, cseq = ARGV[1], ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[5])
local members
if member == '' then members = redis.call('SMEMBERS', idx) else members = {member} end
if member == '' and call_id ~= '' then
  for _, m in ipairs(members) do
    local v = redis.call('GET', prefix .. m)
    if v then
      local o = cjson.decode(v)
      if o['call_id'] == call_id and cseq <= tonumber(o['cseq']) then return -1 end
    end
  end
end
local removed = 0
for _, m in ipairs(members) do
  removed = removed + redis.call('DEL', prefix .. m)
  redis.call('SREM', idx, m)
  redis.call('ZREM', gone, aor .. '\\n' .. m)
end
return removed
"""


class RedisLocationStore:
    """Bindings in Redis, one key per binding with a TTL equal to its remaining life."""

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "sipsec:loc:",
        clock: Callable[[], float] = time.time,
        client: Any = None,
        password_file: str = "",
        ca_file: str = "",
        what: str = "SIPSEC_REDIS_URL",
    ) -> None:
        # the service's ACL user is named in the URL (redis://location@host), its password
        # read from ``password_file``; rediss:// verifies the server against ``ca_file``
        self._redis = client if client is not None else open_redis(
            url, password_file=password_file, ca_file=ca_file, what=what,
            socket_timeout=5, socket_connect_timeout=5,
        )
        self._prefix = prefix
        self._clock = clock
        self._expiry_key = f"{prefix}expiry"
        self._live_script = self._redis.register_script(_LUA_LIVE)
        self._bind_script = self._redis.register_script(_LUA_BIND)
        self._unbind_script = self._redis.register_script(_LUA_UNBIND)

    def _keys(self, aor: str) -> tuple[str, str]:
        base = f"{self._prefix}{{{aor}}}:"
        return f"{base}idx", f"{base}b:"

    async def _call(self, script: Any, keys: list[str], args: list[Any], op: str) -> Any:
        """One script run, timed into ``sipsec_store_operation_seconds{store="location",op}``;
        an unreachable Redis, a slow one or a pool with no free connection in time is
        :class:`StoreUnavailable` (counted in ``sipsec_store_errors_total``)."""
        import redis.exceptions

        metrics = store_metrics()
        start = time.perf_counter()
        try:
            return await script(keys=keys, args=args)
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError) as exc:
            kind = redis_error_kind(exc) or "connection"
            metrics.errors.labels("location", op, kind).inc()
            raise StoreUnavailable(f"redis unreachable: {type(exc).__name__}") from exc
        except asyncio.CancelledError:
            raise
        finally:
            metrics.seconds.labels("location", op).observe(time.perf_counter() - start)

    async def _live(self, aor: str) -> list[Binding]:
        idx, prefix = self._keys(aor)
        raw = await self._call(self._live_script, [idx], [prefix], "lookup")
        now = self._clock()
        return _ordered([b for b in map(Binding.from_json, raw) if b.expires_at > now])

    async def bind(self, binding: Binding, max_contacts: int) -> list[Binding]:
        idx, prefix = self._keys(binding.aor)
        ttl_ms = max(1, int((binding.expires_at - self._clock()) * 1000))
        result = await self._call(
            self._bind_script,
            [idx, prefix + binding.key, self._expiry_key],
            [prefix, binding.key, binding.to_json(), ttl_ms, max_contacts, binding.call_id,
             binding.cseq, f"{binding.aor}\n{binding.key}", int(binding.expires_at * 1000)],
            "bind",
        )
        if result[0] == b"ERR":
            if result[1] == b"stale-cseq":
                raise StaleCSeq("a newer REGISTER with this Call-ID refreshed the binding")
            raise TooManyContacts("the AOR already has the maximum number of contacts")
        return await self._live(binding.aor)

    async def unbind(
        self, aor: str, key: str | None, call_id: str = "", cseq: int = 0
    ) -> tuple[int, list[Binding]]:
        idx, prefix = self._keys(aor)
        removed = await self._call(
            self._unbind_script, [idx, self._expiry_key],
            [prefix, aor, key or "", call_id if key is None else "", cseq], "unbind",
        )
        if int(removed) < 0:
            raise StaleCSeq("a newer REGISTER with this Call-ID refreshed a binding")
        return int(removed), await self._live(aor)

    async def lookup(self, aor: str) -> list[Binding]:
        return await self._live(aor)

    async def count(self) -> int:
        import redis.exceptions

        now_ms = int(self._clock() * 1000)
        try:
            pipe = self._redis.pipeline(transaction=True)
            pipe.zremrangebyscore(self._expiry_key, "-inf", now_ms)
            pipe.zcard(self._expiry_key)
            _, n = await pipe.execute()
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError) as exc:
            raise StoreUnavailable(f"redis unreachable: {type(exc).__name__}") from exc
        return int(n)

    async def close(self) -> None:
        await self._redis.aclose()

