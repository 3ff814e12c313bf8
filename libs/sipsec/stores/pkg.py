"""State of a PKG service (users, sessions, login throttling, federation cache): in memory or in Redis.

Both stores take an injectable clock (``() -> float`` unix seconds). The memory store expires
entries on that clock; Redis expires keys on its own clock, so the PKG's domain logic also
checks every time stamp it reads against its clock (idle expiry, lock expiry, cache age) and
the Redis TTLs are only a garbage-collection backstop.
Secrets never reach a store: users hold scrypt hashes and sessions are keyed by a hash of the
token (the caller hashes), so a dump of the store yields neither passwords nor usable tokens.
The store is not trusted with authority either: each session record carries a MAC computed by
the PKG under a key the store never sees, and the PKG rejects a record whose MAC does not verify
(a record planted by anyone who can write the store).
"""

from __future__ import annotations

import base64
import json
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from sipsec.stores.access import open_redis, store_operation

__all__ = [
    "CachedParams",
    "MemoryPkgStore",
    "PkgStore",
    "RedisPkgStore",
    "SessionRecord",
    "UserRecord",
    "open_pkg_store",
]

Clock = Callable[[], float]


@dataclass(frozen=True)
class UserRecord:
    """A provisioned user: canonical AOR and an encoded scrypt hash (never the password).

    ``epoch`` is an opaque value renewed at every credential change (and at re-creation); the
    PKG binds it into each session's MAC, so a password change revokes every earlier session.
    """

    aor: str
    password_hash: str
    created_at: float
    epoch: str = ""

    def __repr__(self) -> str:
        return f"UserRecord(aor={self.aor!r})"


def _user_from_json(raw: str | bytes) -> UserRecord:
    data = json.loads(raw)
    return UserRecord(str(data["aor"]), str(data["password_hash"]), float(data["created_at"]),
                      str(data.get("epoch", "")))


@dataclass(frozen=True)
class SessionRecord:
    """A login session; ``last_seen`` drives idle expiry, ``created_at`` the absolute lifetime.

    ``epoch`` is the user's credential epoch at login; ``mac`` is the PKG's MAC over the record
    and its token id (empty until the PKG seals it).
    """

    aor: str
    created_at: float
    last_seen: float
    epoch: str = ""
    mac: bytes = field(default=b"", repr=False)

    def to_json(self) -> str:
        return json.dumps({
            "aor": self.aor, "created_at": self.created_at, "last_seen": self.last_seen,
            "epoch": self.epoch, "mac": base64.b64encode(self.mac).decode(),
        }, sort_keys=True)

    @classmethod
    def from_json(cls, raw: str | bytes) -> SessionRecord:
        """Decodes a stored record; raises ValueError (or KeyError/TypeError) when malformed."""
        data = json.loads(raw)
        return cls(str(data["aor"]), float(data["created_at"]), float(data["last_seen"]),
                   str(data.get("epoch", "")), base64.b64decode(str(data.get("mac", "")), validate=True))


@dataclass(frozen=True)
class CachedParams:
    """A peer domain's signed public parameters as fetched and verified at ``fetched_at``."""

    domain: str
    params: bytes
    signature: bytes
    signer_public_key: bytes
    version: int
    fetched_at: float

    def to_json(self) -> str:
        data: dict[str, Any] = asdict(self)
        for k in ("params", "signature", "signer_public_key"):
            data[k] = base64.b64encode(data[k]).decode()
        return json.dumps(data, sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes) -> CachedParams:
        data = json.loads(text)
        return cls(
            domain=str(data["domain"]),
            params=base64.b64decode(data["params"]),
            signature=base64.b64decode(data["signature"]),
            signer_public_key=base64.b64decode(data["signer_public_key"]),
            version=int(data["version"]),
            fetched_at=float(data["fetched_at"]),
        )


class PkgStore(Protocol):
    """What the PKG needs to remember; ``ttl_s`` arguments are backstops, not the policy."""

    async def put_user(self, user: UserRecord) -> None: ...
    async def get_user(self, aor: str) -> UserRecord | None: ...
    async def delete_user(self, aor: str) -> bool:
        """Removes the user and ends all of its sessions."""
        ...

    async def list_users(self) -> list[str]: ...

    async def put_session(self, token_id: str, session: SessionRecord, ttl_s: float) -> None: ...
    async def get_session(self, token_id: str) -> SessionRecord | None: ...
    async def delete_session(self, token_id: str) -> bool: ...
    async def count_sessions(self, since: float) -> int:
        """Sessions seen at or after ``since``; older ones are purged."""
        ...

    async def incr_failures(self, key: str, ttl_s: float) -> int:
        """Adds one failure to ``key`` (the window starts with the first) and returns the count."""
        ...

    async def clear_failures(self, key: str) -> None: ...
    async def set_lock(self, key: str, until: float, ttl_s: float) -> None: ...
    async def get_lock(self, key: str) -> float | None: ...

    async def put_peer_params(self, cached: CachedParams, ttl_s: float) -> None: ...
    async def get_peer_params(self, domain: str) -> CachedParams | None: ...

    async def close(self) -> None: ...


#: the most failure counters and locks a :class:`MemoryPkgStore` keeps: their keys come from what
#: a client sends (AOR, address), so past this the expired ones go, then the oldest
MAX_THROTTLE_ENTRIES = 100_000


def _bounded(table: dict[str, tuple[Any, float]], now: float) -> None:
    """Make room for one more entry in ``table`` (values ``(…, expires)``), which holds at most
    :data:`MAX_THROTTLE_ENTRIES`: the expired entries go first, then the oldest."""
    limit = MAX_THROTTLE_ENTRIES
    if len(table) < limit:
        return
    for key in [k for k, v in table.items() if v[1] <= now]:
        del table[key]
    while len(table) >= limit:
        del table[next(iter(table))]


class MemoryPkgStore:
    """A process-local store for tests, the demo and single-node deployments."""

    def __init__(self, clock: Clock = time.time, users: Iterable[UserRecord] = ()) -> None:
        self._clock = clock
        self._users: dict[str, UserRecord] = {u.aor: u for u in users}
        self._sessions: dict[str, tuple[SessionRecord, float]] = {}
        self._failures: dict[str, tuple[int, float]] = {}
        self._locks: dict[str, tuple[float, float]] = {}
        self._peers: dict[str, tuple[CachedParams, float]] = {}

    async def put_user(self, user: UserRecord) -> None:
        self._users[user.aor] = user

    async def get_user(self, aor: str) -> UserRecord | None:
        return self._users.get(aor)

    async def delete_user(self, aor: str) -> bool:
        for token_id in [k for k, (s, _) in self._sessions.items() if s.aor == aor]:
            del self._sessions[token_id]
        return self._users.pop(aor, None) is not None

    async def list_users(self) -> list[str]:
        return sorted(self._users)

    async def put_session(self, token_id: str, session: SessionRecord, ttl_s: float) -> None:
        self._sessions[token_id] = (session, self._clock() + ttl_s)

    async def get_session(self, token_id: str) -> SessionRecord | None:
        entry = self._sessions.get(token_id)
        if entry is None:
            return None
        if entry[1] <= self._clock():
            del self._sessions[token_id]
            return None
        return entry[0]

    async def delete_session(self, token_id: str) -> bool:
        return self._sessions.pop(token_id, None) is not None

    async def count_sessions(self, since: float) -> int:
        now = self._clock()
        stale = [k for k, (s, exp) in self._sessions.items() if s.last_seen < since or exp <= now]
        for k in stale:
            del self._sessions[k]
        return len(self._sessions)

    async def incr_failures(self, key: str, ttl_s: float) -> int:
        now = self._clock()
        count, expires = self._failures.get(key, (0, 0.0))
        if expires <= now:
            count, expires = 0, now + ttl_s
        if key not in self._failures:
            _bounded(self._failures, now)
        self._failures[key] = (count + 1, expires)
        return count + 1

    async def clear_failures(self, key: str) -> None:
        self._failures.pop(key, None)

    async def set_lock(self, key: str, until: float, ttl_s: float) -> None:
        now = self._clock()
        if key not in self._locks:
            _bounded(self._locks, now)
        self._locks[key] = (until, now + ttl_s)

    async def get_lock(self, key: str) -> float | None:
        entry = self._locks.get(key)
        if entry is None or entry[1] <= self._clock():
            self._locks.pop(key, None)
            return None
        return entry[0]

    async def put_peer_params(self, cached: CachedParams, ttl_s: float) -> None:
        self._peers[cached.domain] = (cached, self._clock() + ttl_s)

    async def get_peer_params(self, domain: str) -> CachedParams | None:
        entry = self._peers.get(domain)
        if entry is None or entry[1] <= self._clock():
            self._peers.pop(domain, None)
            return None
        return entry[0]

    async def close(self) -> None:
        return None


def _ttl_ms(ttl_s: float) -> int:
    return max(1000, math.ceil(ttl_s * 1000))


class RedisPkgStore:
    """The shared store (redis.asyncio); every key lives under ``sipsec:pkg:<domain>:``.

    Nodes of one domain (threshold mode, replicas) share users, sessions, throttling state and
    the federation cache through it. Every operation is one round trip (a pipeline where it
    touches several keys); an unreachable or overloaded Redis raises
    :class:`~sipsec.stores.access.StoreUnavailable` (:func:`~sipsec.stores.access.store_operation`).
    """

    def __init__(self, url: str, domain: str, clock: Clock = time.time, *,
                 password_file: str = "", ca_file: str = "") -> None:
        # the PKG's ACL user is named in the URL (redis://pkg@host), its password read from
        # ``password_file``; rediss:// verifies the server against ``ca_file``
        self._redis: Any = open_redis(url, password_file=password_file, ca_file=ca_file,
                                      what="SIPSEC_PKG_REDIS_PASSWORD_FILE / SIPSEC_REDIS_URL")
        self._clock = clock
        self._prefix = f"sipsec:pkg:{domain}:"

    def _k(self, *parts: str) -> str:
        return self._prefix + ":".join(parts)

    @store_operation("pkg", "ping")
    async def ping(self) -> None:
        await self._redis.ping()

    @store_operation("pkg", "put_user")
    async def put_user(self, user: UserRecord) -> None:
        await self._redis.hset(self._k("users"), user.aor, json.dumps(asdict(user)))

    @store_operation("pkg", "get_user")
    async def get_user(self, aor: str) -> UserRecord | None:
        raw = await self._redis.hget(self._k("users"), aor)
        return None if raw is None else _user_from_json(raw)

    @store_operation("pkg", "delete_user")
    async def delete_user(self, aor: str) -> bool:
        members = await self._redis.smembers(self._k("user-sessions", aor))
        token_ids = [m.decode() if isinstance(m, bytes) else str(m) for m in members]
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hdel(self._k("users"), aor)
            for tid in token_ids:
                pipe.delete(self._k("session", tid))
            if token_ids:
                pipe.zrem(self._k("sessions"), *token_ids)
            pipe.delete(self._k("user-sessions", aor))
            results = await pipe.execute()
        return bool(results[0])

    @store_operation("pkg", "list_users")
    async def list_users(self) -> list[str]:
        keys = await self._redis.hkeys(self._k("users"))
        return sorted(k.decode() if isinstance(k, bytes) else str(k) for k in keys)

    @store_operation("pkg", "put_session")
    async def put_session(self, token_id: str, session: SessionRecord, ttl_s: float) -> None:
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.set(self._k("session", token_id), session.to_json(), px=_ttl_ms(ttl_s))
            pipe.zadd(self._k("sessions"), {token_id: session.last_seen})
            pipe.sadd(self._k("user-sessions", session.aor), token_id)
            pipe.pexpire(self._k("user-sessions", session.aor), _ttl_ms(ttl_s))
            await pipe.execute()

    @store_operation("pkg", "get_session")
    async def get_session(self, token_id: str) -> SessionRecord | None:
        raw = await self._redis.get(self._k("session", token_id))
        if raw is None:
            return None
        try:
            return SessionRecord.from_json(raw)
        except (ValueError, KeyError, TypeError):
            return SessionRecord("", 0.0, 0.0)  # malformed: a record no MAC can verify

    @store_operation("pkg", "delete_session")
    async def delete_session(self, token_id: str) -> bool:
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.delete(self._k("session", token_id))
            pipe.zrem(self._k("sessions"), token_id)
            deleted, _ = await pipe.execute()
        return bool(deleted)

    @store_operation("pkg", "count_sessions")
    async def count_sessions(self, since: float) -> int:
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.zremrangebyscore(self._k("sessions"), "-inf", f"({since!r}")
            pipe.zcard(self._k("sessions"))
            _, count = await pipe.execute()
        return int(count)

    @store_operation("pkg", "incr_failures")
    async def incr_failures(self, key: str, ttl_s: float) -> int:
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.incr(self._k("fail", key))
            pipe.pexpire(self._k("fail", key), _ttl_ms(ttl_s), nx=True)
            count, _ = await pipe.execute()
        return int(count)

    @store_operation("pkg", "clear_failures")
    async def clear_failures(self, key: str) -> None:
        await self._redis.delete(self._k("fail", key))

    @store_operation("pkg", "set_lock")
    async def set_lock(self, key: str, until: float, ttl_s: float) -> None:
        await self._redis.set(self._k("lock", key), repr(until), px=_ttl_ms(ttl_s))

    @store_operation("pkg", "get_lock")
    async def get_lock(self, key: str) -> float | None:
        raw = await self._redis.get(self._k("lock", key))
        return None if raw is None else float(raw)

    @store_operation("pkg", "put_peer_params")
    async def put_peer_params(self, cached: CachedParams, ttl_s: float) -> None:
        await self._redis.set(self._k("peer", cached.domain), cached.to_json(), px=_ttl_ms(ttl_s))

    @store_operation("pkg", "get_peer_params")
    async def get_peer_params(self, domain: str) -> CachedParams | None:
        raw = await self._redis.get(self._k("peer", domain))
        return None if raw is None else CachedParams.from_json(raw)

    async def close(self) -> None:
        await self._redis.aclose()


def open_pkg_store(kind: str, *, domain: str, redis_url: str = "", clock: Clock = time.time,
                   redis_password_file: str = "", redis_ca: str = "") -> PkgStore:
    """``kind`` is ``memory`` or ``redis``; raises ValueError for anything else (and for an
    unusable Redis URL, password file or CA file)."""
    if kind == "memory":
        return MemoryPkgStore(clock)
    if kind == "redis":
        if not redis_url:
            raise ValueError("the redis store needs a Redis URL")
        return RedisPkgStore(redis_url, domain, clock, password_file=redis_password_file, ca_file=redis_ca)
    raise ValueError(f"unknown store {kind!r} (expected memory or redis)")
