"""Envelope state: the dialog-key store and the replay cache, as Protocols with in-memory and Redis implementations.

Time is passed in (``now``, unix seconds) so tests and the sans-clock envelope code
decide it; the in-memory implementations expire entries lazily against that ``now``,
the Redis ones use server-side TTLs (``SET ... NX PX``). Every Redis operation is one round
trip (a pipeline where it covers several keys), timed into ``sipsec_store_operation_seconds``;
a Redis that cannot be reached, answers too slowly or has no free pooled connection in time
raises :class:`~sipsec.stores.access.StoreUnavailable` (see :func:`~sipsec.stores.access.store_operation`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import redis.asyncio as aioredis

from sipsec.envelope.dialog import DEFAULT_DIALOG_TTL_S, DialogKey
from sipsec.stores.access import RecordSealer, open_redis, store_operation

__all__ = [
    "DEFAULT_DIALOG_TTL_S",
    "DialogStore",
    "InMemoryDialogStore",
    "InMemoryReplayCache",
    "RedisDialogStore",
    "RedisReplayCache",
    "ReplayCache",
]


@runtime_checkable
class DialogStore(Protocol):
    """Dialog keys by key id (the KEKIdentifier of every later message of the dialog)."""

    async def put(self, dialog: DialogKey, ttl_s: float, now: float) -> None:
        """Keep ``dialog`` for ``ttl_s`` seconds from ``now`` (replacing one with the same id)."""

    async def get(self, key_id: bytes, now: float) -> DialogKey | None:
        """The dialog with ``key_id``, or None when unknown or expired."""

    async def delete(self, key_id: bytes) -> None:
        """Forget a dialog (after BYE); unknown ids are ignored."""


@runtime_checkable
class ReplayCache(Protocol):
    """Seen message tokens (nonces, digests), each remembered until its window has passed.

    ``seen`` only looks (the envelope asks it before any pairing, so a replay costs no
    pairing); ``remember`` / ``remember_all`` record (atomically per token: of two
    concurrent callers recording the same token, exactly one is told it was new).
    """

    async def remember(self, token: bytes, ttl_s: float, now: float) -> bool:
        """Record ``token``; True if it was new, False if it was already seen (a replay)."""

    async def remember_all(self, tokens: Sequence[bytes], ttl_s: float, now: float) -> bool:
        """Record every one of ``tokens``; True if none of them had been seen."""

    async def seen(self, tokens: Sequence[bytes], now: float) -> bytes | None:
        """The first of ``tokens`` that is recorded and unexpired, or None; records nothing."""


class InMemoryDialogStore:
    """A process-local :class:`DialogStore` (the embedded default)."""

    def __init__(self, max_entries: int = 100_000) -> None:
        self._items: dict[bytes, tuple[float, DialogKey]] = {}
        self._max = max_entries

    async def put(self, dialog: DialogKey, ttl_s: float, now: float) -> None:
        if len(self._items) >= self._max:
            self._purge(now)
            if len(self._items) >= self._max:
                self._items.pop(next(iter(self._items)))  # oldest insertion
        self._items[dialog.key_id] = (now + ttl_s, dialog)

    async def get(self, key_id: bytes, now: float) -> DialogKey | None:
        entry = self._items.get(key_id)
        if entry is None:
            return None
        if entry[0] <= now:
            del self._items[key_id]
            return None
        return entry[1]

    async def delete(self, key_id: bytes) -> None:
        self._items.pop(key_id, None)

    def __len__(self) -> int:
        return len(self._items)

    def _purge(self, now: float) -> None:
        for k in [k for k, (exp, _) in self._items.items() if exp <= now]:
            del self._items[k]


class InMemoryReplayCache:
    """A process-local :class:`ReplayCache`; bounded, oldest entries dropped first when full."""

    def __init__(self, max_entries: int = 1_000_000) -> None:
        self._seen: dict[bytes, float] = {}
        self._max = max_entries

    async def remember(self, token: bytes, ttl_s: float, now: float) -> bool:
        expiry = self._seen.get(token)
        if expiry is not None and expiry > now:
            return False
        if len(self._seen) >= self._max:
            for k in [k for k, exp in self._seen.items() if exp <= now]:
                del self._seen[k]
            while len(self._seen) >= self._max:
                self._seen.pop(next(iter(self._seen)))
        self._seen[token] = now + ttl_s
        return True

    async def remember_all(self, tokens: Sequence[bytes], ttl_s: float, now: float) -> bool:
        fresh = True
        for token in tokens:
            fresh = await self.remember(token, ttl_s, now) and fresh
        return fresh

    async def seen(self, tokens: Sequence[bytes], now: float) -> bytes | None:
        for token in tokens:
            expiry = self._seen.get(token)
            if expiry is not None and expiry > now:
                return token
        return None

    def __len__(self) -> int:
        return len(self._seen)


def _ttl_ms(ttl_s: float) -> int:
    return max(1, math.ceil(ttl_s * 1000))


class RedisDialogStore:
    """A :class:`DialogStore` in Redis: one string per dialog, ``<prefix>dlg:<key id hex>``, with a TTL.

    With ``sealing_key`` (32 bytes, e.g. from a secret mounted into every gateway replica)
    each record is AES-256-GCM encrypted, the Redis key name as additional data — so
    dialog keys are not readable from Redis, and a record moved to another key id or
    altered reads as absent. Without it the record (dialog key included) is stored in
    clear: a development mode only (the gateway refuses Redis without a sealing key).
    """

    def __init__(self, client: aioredis.Redis, prefix: str = "sipsec:envelope:",
                 sealing_key: bytes | None = None) -> None:
        if sealing_key is not None and len(sealing_key) != 32:
            raise ValueError("sealing_key must be 32 bytes")
        self._r = client
        self._prefix = prefix
        self._sealer = None if sealing_key is None else RecordSealer(sealing_key)

    @property
    def sealed(self) -> bool:
        """Whether records are AES-256-GCM sealed (see :class:`~sipsec.stores.access.RecordSealer`)."""
        return self._sealer is not None

    @classmethod
    def from_url(cls, url: str, prefix: str = "sipsec:envelope:",
                 sealing_key: bytes | None = None) -> RedisDialogStore:
        """A store with its own client from :func:`~sipsec.stores.access.open_redis` (bounded, blocking pool)."""
        return cls(open_redis(url), prefix, sealing_key)

    def _key(self, key_id: bytes) -> str:
        return f"{self._prefix}dlg:{key_id.hex()}"

    @property
    def client(self) -> aioredis.Redis:
        """The Redis client the records go through."""
        return self._r

    def record(self, dialog: DialogKey) -> tuple[str, bytes]:
        """The key name and the (sealed) value :meth:`put` writes for ``dialog``."""
        name = self._key(dialog.key_id)
        return name, self._seal(name, dialog.to_bytes())

    def _seal(self, name: str, record: bytes) -> bytes:
        return record if self._sealer is None else self._sealer.seal(name, record)

    def _unseal(self, name: str, data: bytes) -> bytes:
        return data if self._sealer is None else self._sealer.unseal(name, data)

    @store_operation("dialog", "put")
    async def put(self, dialog: DialogKey, ttl_s: float, now: float) -> None:
        name, value = self.record(dialog)
        await self._r.set(name, value, px=_ttl_ms(ttl_s))

    @store_operation("dialog", "get")
    async def get(self, key_id: bytes, now: float) -> DialogKey | None:
        name = self._key(key_id)
        data = await self._r.get(name)
        if data is None:
            return None
        try:
            raw = data if isinstance(data, bytes) else str(data).encode()
            return DialogKey.from_bytes(self._unseal(name, raw))
        except ValueError:  # damaged, tampered or sealed under another key: unusable
            return None

    @store_operation("dialog", "delete")
    async def delete(self, key_id: bytes) -> None:
        await self._r.delete(self._key(key_id))

    async def aclose(self) -> None:
        await self._r.aclose()


class RedisReplayCache:
    """A :class:`ReplayCache` in Redis: ``SET <prefix>nonce:<hex> 1 NX PX ttl`` is atomic across replicas."""

    def __init__(self, client: aioredis.Redis, prefix: str = "sipsec:envelope:") -> None:
        self._r = client
        self._prefix = prefix

    @classmethod
    def from_url(cls, url: str, prefix: str = "sipsec:envelope:") -> RedisReplayCache:
        """A cache with its own client from :func:`~sipsec.stores.access.open_redis` (bounded, blocking pool)."""
        return cls(open_redis(url), prefix)

    def _key(self, token: bytes) -> str:
        return f"{self._prefix}nonce:{token.hex()}"

    @store_operation("replay", "remember")
    async def remember(self, token: bytes, ttl_s: float, now: float) -> bool:
        created = await self._r.set(self._key(token), b"1", nx=True, px=_ttl_ms(ttl_s))
        return bool(created)

    @store_operation("replay", "remember_all")
    async def remember_all(self, tokens: Sequence[bytes], ttl_s: float, now: float) -> bool:
        """One round trip: a pipeline of ``SET NX PX``, one per token (each atomic)."""
        if not tokens:
            return True
        async with self._r.pipeline(transaction=False) as pipe:
            for token in tokens:
                pipe.set(self._key(token), b"1", nx=True, px=_ttl_ms(ttl_s))
            created = await pipe.execute()
        return all(bool(c) for c in created)

    @store_operation("replay", "remember_all_and_keep")
    async def remember_all_and_keep(self, tokens: Sequence[bytes], ttl_s: float, now: float,
                                    dialogs: DialogStore, dialog: DialogKey, dialog_ttl_s: float) -> bool | None:
        """:meth:`remember_all` and, when every token was new, ``dialogs.put(dialog)``, in one
        round trip (a pipeline) when ``dialogs`` is a :class:`RedisDialogStore` on this cache's
        client; None (nothing done) otherwise, for the caller to do the two steps itself.

        The dialog record is written ``NX`` with the tokens; when a token turns out to have
        been seen (a replayed first request), a record this call created is deleted again (a
        second round trip, on that path only), so a replay never brings back a dialog that a
        BYE ended; its key is the one the dialog had.
        """
        if not isinstance(dialogs, RedisDialogStore) or dialogs.client is not self._r:
            return None
        name, value = dialogs.record(dialog)
        async with self._r.pipeline(transaction=False) as pipe:
            for token in tokens:
                pipe.set(self._key(token), b"1", nx=True, px=_ttl_ms(ttl_s))
            pipe.set(name, value, nx=True, px=_ttl_ms(dialog_ttl_s))
            created = await pipe.execute()
        fresh = all(bool(c) for c in created[:-1])
        if not fresh and created[-1]:
            await self._r.delete(name)
        return fresh

    @store_operation("replay", "seen")
    async def seen(self, tokens: Sequence[bytes], now: float) -> bytes | None:
        """One round trip: ``MGET`` of the tokens' keys."""
        if not tokens:
            return None
        values = await self._r.mget([self._key(t) for t in tokens])
        return next((t for t, v in zip(tokens, values, strict=True) if v is not None), None)

    async def aclose(self) -> None:
        await self._r.aclose()
