"""When a fixed-base table is worth building: admission by observed use, sizes by memory.

The schemes keep three kinds of precomputed tables (``backend.G1TableCache`` for public
identity points, ``backend.GTTableCache`` for e(Q_ID, P_pub) of recipients, and each private
key's ``cc.SignerTables``). A table costs a build and memory, and saves a little on every use
it gets before it is evicted; measured on the 2-core box (``bench/caches.py`` prints them):

==================  ========  =================  ===========  ================
table               build     saving per use     break-even   bytes
==================  ========  =================  ===========  ================
G1 identity point   ~0.6 ms   ~0.09 ms (a mul)   ~7 uses      ~171 KiB
signer (d_ID, Q)    ~1.2 ms   ~0.18 ms (a sign)  ~7 signs     ~343 KiB
GT e(Q, P_pub)      ~3.3 ms   ~0.7 ms (an enc)   ~5 uses      ~588 KiB
==================  ========  =================  ===========  ================

Only a use that the table speeds up as measured counts: in a batch verification with several
signers an identity point is one point of a multi-scalar multiplication, ~0.04 ms a point at 16
points against ~0.038 ms by a table, so such a use takes a table that exists and never counts
towards building one (``cc._terms``, ``G1TableCache.peek``).

Building on a value's *second* use (the first policy) pays off for a few hot values, and costs
more than it saves as soon as the values outnumber the tables: with 1,000 users per domain and
random caller/callee pairs, each call built a signer table per signer and an identity-point
table per verified signer, used them once or twice, and evicted them before their next call.

The policy here (``FREQUENCY``) is TinyLFU's (Einziger, Friedman and Manes, "TinyLFU: A
Highly Efficient Cache Admission Policy", ACM ToS 2017), with exact counts instead of a sketch:

* every use of a value, with or without a table, is counted in a :class:`UseCounter`, whose
  counts are halved every ``sample`` uses (so they measure the recent rate of use, and a burst
  long past fades);
* a value without a table gets one only once its count reaches the break-even uses of its
  kind of table (``admit_uses``): a value used that often lately is likely to be used that
  often again, and a one-off or a rarely met value never pays a build;
* when the cache is full, the new table displaces the least recently used one only if the
  newcomer's count exceeds the victim's by the break-even uses too: the displacement loses
  the victim's future uses and costs a build, and repays both only then. TinyLFU's plain
  "higher than the victim" lets a uniform population larger than the cache churn it (who
  is ahead is noise there, and each displacement is a build that a later one undoes).

``SECOND_USE`` keeps the first policy (a table on the second use, plain LRU), for comparison
(``bench/caches.py``); ``OFF`` builds no table at all. Sizes come from a memory budget
(:func:`capacity_for`); ``sipsec.ibc.configure_tables`` sets both for the process.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any, Final, Generic, TypeVar

__all__ = [
    "FREQUENCY",
    "G1_TABLE_BYTES",
    "GT_TABLE_BYTES",
    "OFF",
    "POLICIES",
    "SECOND_USE",
    "SIGNER_TABLE_BYTES",
    "DEFAULT_G1_BYTES",
    "DEFAULT_GT_BYTES",
    "DEFAULT_SIGNER_BYTES",
    "DEFAULT_TABLE_MIB",
    "CacheStats",
    "UseCounter",
    "budgets",
    "capacity_for",
    "check_settings",
    "displaces",
    "use_counter",
]

#: Tables built once a value's recent use count reaches the break-even uses (module docstring).
FREQUENCY: Final = "frequency"
#: The first policy: a table on a value's second use, least recently used out first.
SECOND_USE: Final = "second-use"
#: No tables: every multiplication and pairing on the generic path.
OFF: Final = "off"
POLICIES: Final = (FREQUENCY, SECOND_USE, OFF)

#: Measured bytes of one table (tracemalloc over ten tables; ``bench/caches.py`` reprints them).
G1_TABLE_BYTES: Final = 171 * 1024
SIGNER_TABLE_BYTES: Final = 2 * G1_TABLE_BYTES
GT_TABLE_BYTES: Final = 588 * 1024

#: The default memory for tables per process, and its split: 3/8 identity points, 3/8 signers,
#: 1/4 recipients (64 MiB: 143 identity-point tables, 71 signers, 27 recipients).
DEFAULT_TABLE_MIB: Final = 64


def budgets(total_mib: float) -> tuple[int, int, int]:
    """(identity-point, signer, recipient) bytes of a ``total_mib`` budget (3/8, 3/8, 1/4)."""
    total = int(total_mib * 1024 * 1024)
    return total * 3 // 8, total * 3 // 8, total // 4


DEFAULT_G1_BYTES, DEFAULT_SIGNER_BYTES, DEFAULT_GT_BYTES = budgets(DEFAULT_TABLE_MIB)

K = TypeVar("K", bound=Hashable)


def capacity_for(budget_bytes: int, table_bytes: int) -> int:
    """How many tables of ``table_bytes`` fit in ``budget_bytes`` (0 when none does)."""
    return max(0, budget_bytes // table_bytes)


class UseCounter(Generic[K]):
    """Exact counts of recent uses per key, all halved every ``sample`` uses.

    TinyLFU's "reset" with a dict instead of a count-min sketch: deterministic (the tests
    inject one and read it), and bounded by itself, since a halving drops every key used only
    once since the last one, so at most ``2 * sample`` keys are held. The keys are public
    values (identity points, identities), never key material.
    """

    __slots__ = ("_counts", "_uses", "sample")

    def __init__(self, sample: int) -> None:
        if sample < 1:
            raise ValueError("sample must be at least 1")
        self.sample = sample
        self._counts: dict[K, int] = {}
        self._uses = 0

    def add(self, key: K) -> int:
        """Count one use of ``key``; returns its count, this use included."""
        count = self._counts.get(key, 0) + 1
        self._counts[key] = count
        self._uses += 1
        if self._uses >= self.sample:
            self._halve()
        return count

    def count(self, key: K) -> int:
        """The recent uses of ``key`` (0 for a key not seen since it faded out)."""
        return self._counts.get(key, 0)

    def __len__(self) -> int:
        return len(self._counts)

    def clear(self) -> None:
        """Forget every count."""
        self._counts.clear()
        self._uses = 0

    def _halve(self) -> None:
        self._uses = 0
        self._counts = {k: c >> 1 for k, c in self._counts.items() if c > 1}


def check_settings(capacity: int, policy: str) -> None:
    """ValueError unless ``capacity`` is at least 1 and ``policy`` is one of :data:`POLICIES`."""
    if capacity < 1:
        raise ValueError("capacity must be at least 1")
    if policy not in POLICIES:
        raise ValueError(f"unknown table policy {policy!r}")


def use_counter(capacity: int) -> UseCounter[Any]:
    """The default counts of a cache of ``capacity`` tables: halved every 16 x capacity uses."""
    return UseCounter(max(64, 16 * capacity))


def displaces(count: int, victim_count: int, admit_uses: int) -> bool:
    """Whether a value used ``count`` times lately may take the place of a table whose value was
    used ``victim_count`` times: only by ``admit_uses`` more, which repays the victim's lost
    uses and the build (module docstring)."""
    return count >= victim_count + admit_uses


@dataclass
class CacheStats:
    """What one cache did: uses with a table (hits), without (misses), tables built, tables
    evicted, and builds refused by the admission policy (count too low, or below the victim's)."""

    hits: int = 0
    misses: int = 0
    builds: int = 0
    evictions: int = 0
    refused: int = 0

    def as_dict(self) -> dict[str, float]:
        """The counts and ``hit_ratio`` (hits over uses; 0.0 before any use)."""
        uses = self.hits + self.misses
        return {"hits": self.hits, "misses": self.misses, "builds": self.builds,
                "evictions": self.evictions, "refused": self.refused,
                "hit_ratio": round(self.hits / uses, 4) if uses else 0.0}

    def reset(self) -> None:
        """Back to zero."""
        self.hits = self.misses = self.builds = self.evictions = self.refused = 0
