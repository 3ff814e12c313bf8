"""Back-off and rate limits shared by the services (sans-IO: no I/O, no clock; the caller passes ``now``).

Two ideas, one implementation each:

* **exponential back-off** (:func:`backoff_delay`, :class:`Backoff`): after ``free`` failures of
  one key (a user name from one address, an account from one client), each further failure
  makes the next attempt wait ``base_s · 2^(n − free − 1)`` seconds, capped at ``max_s``; a
  success clears the count. Attempts refused while waiting are not checked, so guessing is
  slowed without a hard lockout anyone could trigger for someone else (NIST SP 800-63B
  §5.2.2). The PKG applies :func:`backoff_delay` to counts kept in its store; the gateway's
  phone side keeps them in a :class:`Backoff` table.
* **token buckets** (:class:`TokenBuckets`): ``rate`` tokens per second per key, ``burst``
  deep; a request takes one token or is refused (in the spirit of Kamailio's ``pike``).

Every table here holds at most a fixed number of keys and forgets the least recently used
first (:class:`LruTable`), so a flood from spoofed sources costs a fixed amount of memory.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Generic, TypeVar

__all__ = ["Backoff", "LruTable", "TokenBuckets", "backoff_delay"]

K = TypeVar("K")
V = TypeVar("V")

#: Beyond this many doublings any maximum has been reached (and 2.0 ** n stays small).
_MAX_DOUBLINGS = 64


def backoff_delay(failures: int, free: int, base_s: float, max_s: float) -> float:
    """Seconds the next attempt waits after ``failures`` consecutive failures of which the
    first ``free`` cost nothing: 0, then ``base_s``, doubling with each failure, at most ``max_s``."""
    excess = failures - free
    if excess <= 0:
        return 0.0
    if excess > _MAX_DOUBLINGS:
        return max_s
    return min(max_s, base_s * 2.0 ** (excess - 1))


class LruTable(Generic[K, V]):
    """A dict that keeps at most ``limit`` keys, forgetting the least recently used."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("an LRU table needs room for at least one key")
        self.limit = limit
        self.items: OrderedDict[K, V] = OrderedDict()

    def get(self, key: K) -> V | None:
        """The value of ``key`` (now the most recently used), or None."""
        value = self.items.get(key)
        if value is not None:
            self.items.move_to_end(key)
        return value

    def put(self, key: K, value: V) -> None:
        """Set ``key`` (the most recently used), forgetting the oldest keys beyond ``limit``."""
        self.items[key] = value
        self.items.move_to_end(key)
        while len(self.items) > self.limit:
            self.items.popitem(last=False)

    def pop(self, key: K) -> None:
        """Forget ``key`` (no error when it is not there)."""
        self.items.pop(key, None)

    def __len__(self) -> int:
        return len(self.items)


@dataclass
class _Failures:
    count: int = 0
    until: float = 0.0


class Backoff(Generic[K]):
    """Per-key exponential back-off (:func:`backoff_delay`) in a bounded :class:`LruTable`.

    :meth:`blocked` says whether an attempt for ``key`` must be refused unchecked now;
    :meth:`failed` counts a checked failure (and starts the wait past ``free`` failures);
    :meth:`succeeded` clears the key."""

    def __init__(self, free: int, base_s: float, max_s: float, max_keys: int = 10_000) -> None:
        if free < 0:
            raise ValueError("free failures must be >= 0")
        if base_s <= 0 or max_s < base_s:
            raise ValueError("back-off delays must be positive, the maximum at least the base")
        self.free = free
        self.base_s = base_s
        self.max_s = max_s
        self._table: LruTable[K, _Failures] = LruTable(max_keys)

    def blocked(self, key: K, now: float) -> bool:
        """True while attempts for ``key`` must wait."""
        entry = self._table.get(key)
        return entry is not None and now < entry.until

    def failed(self, key: K, now: float) -> float:
        """Count a failure of ``key``; returns the wait it starts (0 while failures are free)."""
        entry = self._table.get(key) or _Failures()
        entry.count += 1
        delay = backoff_delay(entry.count, self.free, self.base_s, self.max_s)
        if delay > 0:
            entry.until = now + delay
        self._table.put(key, entry)
        return delay

    def succeeded(self, key: K) -> None:
        """``key`` succeeded: its count and wait end."""
        self._table.pop(key)

    def failures(self, key: K) -> int:
        """Consecutive failures counted for ``key``."""
        entry = self._table.items.get(key)
        return 0 if entry is None else entry.count

    def __len__(self) -> int:
        return len(self._table)


@dataclass
class _Bucket:
    tokens: float
    at: float


class TokenBuckets(Generic[K]):
    """Per-key token buckets (``rate`` tokens/s, ``burst`` deep, at least 1) in a bounded
    :class:`LruTable` of ``max_keys``; a ``rate`` of 0 (or less) means no limit. A new key starts full."""

    def __init__(self, rate: float, burst: float, max_keys: int = 65536) -> None:
        self.rate = rate
        self.burst = max(burst, 1.0)
        self._table: LruTable[K, _Bucket] = LruTable(max_keys)

    def allow(self, key: K, now: float) -> bool:
        """Take one token of ``key``'s bucket; False = over its rate (refuse the request)."""
        if self.rate <= 0:
            return True
        bucket = self._table.get(key)
        if bucket is None:
            bucket = _Bucket(self.burst, now)
            self._table.put(key, bucket)
        else:
            bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.at) * self.rate)
            bucket.at = now
        if bucket.tokens < 1.0:
            return False
        bucket.tokens -= 1.0
        return True

    def __len__(self) -> int:
        return len(self._table)
