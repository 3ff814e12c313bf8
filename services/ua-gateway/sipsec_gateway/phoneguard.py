"""Guessing and flood limits of the gateway's phone side (sans-IO: the caller passes ``now``).

The phone side authenticates phones with Digest (RFC 3261 §22, RFC 8760). Without limits an
attacker tries passwords as fast as the network carries them. :class:`PhoneGuard` keeps three
bounded tables:

* **per (user, source) back-off**: the first ``free_failures`` wrong answers of a user name
  from one source address are checked normally; after that each wrong answer doubles a
  wait (``backoff_s``, ``2 × backoff_s`` ... up to ``max_backoff_s``) during which answers
  from that source for that name are refused *without checking the password*. The real
  user on another address is not affected: an attacker cannot lock anyone out.
* **per-source failure budget**: at most ``source_failures`` checked wrong answers per
  ``window_s`` from one address, whatever the user names (a scan over many names); past it
  the address is refused until the window ends.
* **per-source rate of unauthenticated requests**: a token bucket (``rate`` per second,
  ``burst``) per address for requests that arrive before credentials were checked; past it
  each request gets one 503 with ``Retry-After`` that is never retransmitted (its
  transaction is abandoned at once), so a flood costs its sender, not the users (in the
  spirit of Kamailio's ``pike``).

Unknown and known user names are treated alike everywhere (same challenge, same back-off),
so the answers do not tell which users exist. Each table holds at most ``max_entries``
keys (the least recently used go first). The back-off and the token buckets are the
shared ones of :mod:`sipsec.throttle`.
"""

from __future__ import annotations

from dataclasses import dataclass

from sipsec.throttle import Backoff, LruTable, TokenBuckets

__all__ = ["GuardSettings", "PhoneGuard"]


@dataclass(frozen=True)
class GuardSettings:
    """The limits of a :class:`PhoneGuard` (see the module docstring)."""

    free_failures: int = 3
    backoff_s: float = 1.0
    max_backoff_s: float = 300.0
    source_failures: int = 30
    window_s: float = 600.0
    rate: float = 20.0
    burst: float = 40.0
    max_entries: int = 10_000


@dataclass
class _Source:
    window_start: float
    failures: int = 0


class PhoneGuard:
    """The three limits of the module docstring, keyed by user name and source address."""

    def __init__(self, settings: GuardSettings | None = None) -> None:
        self.settings = s = settings or GuardSettings()
        self._pairs: Backoff[tuple[str, str]] = Backoff(s.free_failures, s.backoff_s, s.max_backoff_s,
                                                        s.max_entries)
        self._sources: LruTable[str, _Source] = LruTable(s.max_entries)
        self._buckets: TokenBuckets[str] = TokenBuckets(s.rate, s.burst, s.max_entries)

    def admit(self, source: str, now: float) -> bool:
        """Take one token of ``source``'s bucket for an unauthenticated request; False = drop it."""
        return self._buckets.allow(source, now)

    def blocked(self, user: str, source: str, now: float) -> bool:
        """True while answers for ``user`` from ``source`` must be refused unchecked."""
        if self._pairs.blocked((user, source), now):
            return True
        src = self._sources.get(source)
        return (src is not None and now - src.window_start < self.settings.window_s
                and src.failures >= self.settings.source_failures)

    def failed(self, user: str, source: str, now: float) -> None:
        """A checked answer for ``user`` from ``source`` was wrong."""
        self._pairs.failed((user, source), now)
        src = self._sources.get(source)
        if src is None or now - src.window_start >= self.settings.window_s:
            src = _Source(now)
        src.failures += 1
        self._sources.put(source, src)

    def succeeded(self, user: str, source: str) -> None:
        """A checked answer for ``user`` from ``source`` was right: its back-off ends."""
        self._pairs.succeeded((user, source))

    @property
    def entries(self) -> int:
        """Keys held over the three tables (bounded by three times ``max_entries``)."""
        return len(self._pairs) + len(self._sources) + len(self._buckets)
