"""Envelope state: the dialog-key store and the replay cache, as Protocols with in-memory and Redis implementations.

Time is passed in (``now``, unix seconds) so tests and the sans-clock envelope code
decide it; the in-memory implementations expire entries lazily against that ``now``,
the Redis ones use server-side TTLs (``SET ... NX PX``).
"""

from __future__ import annotations

import math
from typing import Protocol, runtime_checkable

import redis.asyncio as aioredis

from sipsec.envelope.dialog import DialogKey

__all__ = [
    "DialogStore",
    "InMemoryDialogStore",
    "InMemoryReplayCache",
    "RedisDialogStore",
    "RedisReplayCache",
    "ReplayCache",
]

DEFAULT_DIALOG_TTL_S = 12 * 3600.0


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
    """Seen message nonces, each remembered until its window has passed."""

    async def remember(self, token: bytes, ttl_s: float, now: float) -> bool:
        """Record ``token``; True if it was new, False if it was already seen (a replay)."""


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

    def __len__(self) -> int:
        return len(self._seen)


def _ttl_ms(ttl_s: float) -> int:
    return max(1, math.ceil(ttl_s * 1000))


class RedisDialogStore:
    """A :class:`DialogStore` in Redis: one string per dialog, ``<prefix>dlg:<key id hex>``, with a TTL.

    The record holds the dialog key in clear: run Redis on a trusted network with AUTH/TLS,
    as for every other secret the gateway keeps there.
    """

    def __init__(self, client: aioredis.Redis, prefix: str = "sipsec:envelope:") -> None:
        self._r = client
        self._prefix = prefix

    @classmethod
    def from_url(cls, url: str, prefix: str = "sipsec:envelope:") -> RedisDialogStore:
        return cls(aioredis.Redis.from_url(url), prefix)

    def _key(self, key_id: bytes) -> str:
        return f"{self._prefix}dlg:{key_id.hex()}"

    async def put(self, dialog: DialogKey, ttl_s: float, now: float) -> None:
        await self._r.set(self._key(dialog.key_id), dialog.to_bytes(), px=_ttl_ms(ttl_s))

    async def get(self, key_id: bytes, now: float) -> DialogKey | None:
        data = await self._r.get(self._key(key_id))
        if data is None:
            return None
        try:
            return DialogKey.from_bytes(data if isinstance(data, bytes) else str(data).encode())
        except ValueError:
            return None

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
        return cls(aioredis.Redis.from_url(url), prefix)

    async def remember(self, token: bytes, ttl_s: float, now: float) -> bool:
        created = await self._r.set(
            f"{self._prefix}nonce:{token.hex()}", b"1", nx=True, px=_ttl_ms(ttl_s)
        )
        return bool(created)

    async def aclose(self) -> None:
        await self._r.aclose()
