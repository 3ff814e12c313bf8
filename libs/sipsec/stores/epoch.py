"""Store epochs: tell a Redis that kept its data from one that was emptied under a service.

A service that owns durable state in Redis (the PKG's user accounts, the location service's
registrations) writes an *epoch* key when it starts — a random value, ``SET NX``, so replicas
adopt the one already there — and checks it on every readiness round. The key lives and dies
with the data: a Redis restarted without its append-only file, flushed, or replaced by an empty
one has no epoch (or another one), and that is the only way the key goes. Then the service
says so loudly — an ERROR log line naming what was lost and what it can or cannot do, the
counter ``sipsec_store_epoch_resets_total{store}``, and its readiness check failing for
``hold_s`` — and re-publishes what it owns when it can (``republish``); then it writes a new
epoch, so the reset is reported once.

Which state is durable and which a cache is listed in ``docs/architecture.md`` (*State, trust
and overload*); a restart of a Redis with persistence (``appendfsync everysec``) keeps its epoch
and loses at most its last second of writes, which no epoch can detect.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry, Counter

from sipsec.stores.access import StoreUnavailable

__all__ = ["StoreEmptied", "StoreEpoch", "epoch_key", "store_epoch"]

log = logging.getLogger("sipsec.stores.epoch")

#: ``republish()`` returns True when it put back everything the emptied store lost.
Republish = Callable[[], Awaitable[bool]]

_RESETS: dict[int, Counter] = {}


def _resets(registry: CollectorRegistry) -> Counter:
    counter = _RESETS.get(id(registry))
    if counter is None:
        counter = Counter("sipsec_store_epoch_resets_total",
                          "Times a service found its Redis emptied (its store epoch missing or replaced), by store.",
                          ["store"], registry=registry)
        _RESETS[id(registry)] = counter
    return counter


def epoch_key(prefix: str) -> str:
    """The epoch key under a store's key prefix (inside its Redis ACL user's key patterns)."""
    return f"{prefix}epoch"


class StoreEmptied(Exception):
    """The store lost the data this service owns; raised by :meth:`StoreEpoch.check` (a readiness
    check) for ``hold_s`` after the loss was found."""


class StoreEpoch:
    """The epoch of one store (see the module docstring).

    ``redis`` is the store's client (``get`` and ``set``); ``store`` a short label (``pkg``,
    ``location``); ``durable`` says what the store holds that must survive, for the log line;
    ``republish`` puts it back where the service can (None: it cannot, and the line says who must).
    """

    def __init__(self, redis: Any, key: str, *, store: str, durable: str, republish: Republish | None = None,
                 hold_s: float = 60.0, registry: CollectorRegistry | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.redis = redis
        self.key = key
        self.store = store
        self.durable = durable
        self.republish = republish
        self.hold_s = hold_s
        self.clock = clock
        self.epoch: str | None = None
        self.resets = 0
        self._failing_until = 0.0
        self._counter = _resets(registry or REGISTRY)

    async def _get(self) -> str | None:
        try:
            raw = await self.redis.get(self.key)
        except StoreUnavailable:
            raise
        except Exception as exc:  # a Redis that is down is the store check's business, not a reset
            raise StoreUnavailable(f"store epoch unreadable: {type(exc).__name__}") from exc
        if raw is None:
            return None
        return raw.decode() if isinstance(raw, bytes) else str(raw)

    async def _adopt(self) -> str:
        """Write a new epoch unless one is there (``SET NX``); the one in the store wins."""
        await self.redis.set(self.key, os.urandom(16).hex(), nx=True)
        found = await self._get()
        if found is None:
            raise StoreUnavailable("store epoch not written")
        return found

    async def start(self) -> None:
        """Adopt the store's epoch, or write the first one (a new or an upgraded store)."""
        self.epoch = await self._adopt()

    async def check(self) -> None:
        """A readiness check: raises :class:`StoreEmptied` while a found loss is held, and
        :class:`~sipsec.stores.access.StoreUnavailable` when the store does not answer."""
        found = await self._get()
        if self.epoch is None:
            self.epoch = found if found is not None else await self._adopt()
        elif found != self.epoch:
            await self._lost(found)
        if self.clock() < self._failing_until:
            raise StoreEmptied(f"the {self.store} store was emptied: {self.durable} lost")

    async def _lost(self, found: str | None) -> None:
        self.resets += 1
        self._counter.labels(self.store).inc()
        what = "missing" if found is None else "replaced"
        republished = False
        if self.republish is not None:
            try:
                republished = await self.republish()
            except Exception:  # noqa: BLE001 - reported below as not republished
                log.exception("re-publishing to the emptied %s store failed", self.store)
        if republished:
            log.error("the %s store was emptied (its epoch %s): %s re-published", self.store, what, self.durable)
        else:
            log.error("the %s store was emptied (its epoch %s): %s LOST and not re-published here; "
                      "restore the store from its append-only file or backup, or provision them again",
                      self.store, what, self.durable)
            self._failing_until = self.clock() + self.hold_s
        self.epoch = await self._adopt()


def store_epoch(store: object, label: str, durable: str, *, republish: Republish | None = None,
                registry: CollectorRegistry | None = None) -> StoreEpoch | None:
    """The epoch of a Redis-backed store of :mod:`sipsec.stores` (its client and key prefix,
    ``_redis`` and ``_prefix``); None for a store in memory, which has nothing to lose this way."""
    redis, prefix = getattr(store, "_redis", None), getattr(store, "_prefix", None)
    if redis is None or not isinstance(prefix, str):
        return None
    return StoreEpoch(redis, epoch_key(prefix), store=label, durable=durable, republish=republish,
                      registry=registry)
