"""The pairing backend of suite v1 over ``py-arkworks-bls12381`` (native BLS12-381).

Groups: G1 and G2 of BLS12-381 (prime order ``R``), GT in F_p^12, e: G1 x G2 -> GT.

Encodings
---------
* G1 / G2: the compressed encodings of the IETF pairing-friendly-curves draft (ZCash format),
  48 and 96 bytes. Decoding checks the length, that the point is on the curve, that it is in
  the prime-order subgroup, and that the encoding is canonical (it re-encodes to the same
  bytes: arkworks alone accepts, e.g., an infinity flag with garbage behind it).
* GT: ``gt_to_bytes`` is arkworks' canonical serialisation of F_p^12, which ``str(gt)`` gives
  in hex: the tower F_p^12 = F_p^6[w]/(w^2 - v), F_p^6 = F_p^2[v]/(v^3 - (u + 1)),
  F_p^2 = F_p[u]/(u^2 + 1), written as 12 F_p elements of 48 bytes, little-endian, in the order
  c0.c0.c0, c0.c0.c1, c0.c1.c0, c0.c1.c1, c0.c2.c0, c0.c2.c1, c1.c0.c0, ..., c1.c2.c1
  (576 bytes). The arkworks pairing equals py_ecc's ``pairing(Q, P)`` raised to the power
  -3 (mod R): py_ecc's Miller loop ignores the sign of the BLS parameter x (a conjugation,
  i.e. an inversion in GT) and arkworks' final exponentiation (Hayashida–Hayasaka–Teruya)
  computes the cube of the textbook one. Any non-degenerate bilinear map is a fixed power
  of another, so the schemes are unaffected; the reference verifier applies this map.

Scalars are Python ints in [0, R). Neither this backend nor arkworks' scalar multiplication
promises constant time at the micro-architectural level: in particular the fixed-base combs
(``G1FixedBase``, ``g2_generator_mul``, and ``g1_public_mul`` through the cache of public
identity-point tables ``PUBLIC_G1_TABLES``) look up table rows indexed by the digits of a
possibly secret scalar and skip zero digits.
"""

from __future__ import annotations

import abc
import functools
import secrets
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from typing import Final, Generic, TypeVar

from py_arkworks_bls12381 import GT, G1Point, G2Point, Scalar

from sipsec.ibc._errors import InvalidEncoding
from sipsec.ibc.hazmat import tables

__all__ = [
    "GT",
    "G1FixedBase",
    "G1TableCache",
    "GTFixedBase",
    "GTTableCache",
    "P",
    "PUBLIC_G1_TABLES",
    "PUBLIC_GT_TABLES",
    "R",
    "G1Point",
    "G2Point",
    "Rng",
    "g1_from_bytes",
    "g1_generator",
    "g1_mul",
    "g1_multiexp",
    "g1_public_mul",
    "public_pairing_power",
    "g1_to_bytes",
    "g2_from_bytes",
    "g2_from_bytes_unchecked_subgroup",
    "g2_generator",
    "g2_generator_mul",
    "g2_mul",
    "g2_to_bytes",
    "gt_to_bytes",
    "hash_to_g1",
    "multi_pairing",
    "pairing",
    "pairing_check",
    "random_scalar",
    "scalar",
]

#: Order of G1, G2 and GT.
R: Final = 0x73EDA753299D7D483339D80809A1D80553BDA402FFFE5BFEFFFFFFFF00000001
#: Base field modulus.
P: Final = 0x1A0111EA397FE69A4B1BA7B6434BACD764774B84F38512BF6730D2A0F6B0F6241EABFFFEB153FFFFB9FEFFFFFFFFAAAB

#: Source of randomness: ``rng(n)`` returns n bytes. Injectable for known-answer vectors only.
Rng = Callable[[int], bytes]

_G1_LEN: Final = 48
_G2_LEN: Final = 96
_G1_GEN: Final = G1Point()
_G2_GEN: Final = G2Point()
_G1_INF: Final = G1Point.identity()
_G2_INF: Final = G2Point.identity()


def g1_generator() -> G1Point:
    """The standard generator P1 of G1."""
    return _G1_GEN


def g2_generator() -> G2Point:
    """The standard generator P2 of G2."""
    return _G2_GEN


def scalar(k: int) -> Scalar:
    """An arkworks scalar from an int (reduced mod R).

    Built from 32 little-endian bytes: the same scalar as ``Scalar(k % R)``, whose int
    conversion costs ~5 us against ~0.3 us (it adds up in multi-scalar multiplications).
    """
    return Scalar.from_le_bytes((k % R).to_bytes(32, "little"))


def random_scalar(rng: Rng = secrets.token_bytes) -> int:
    """A uniformly random non-zero scalar: 48 random bytes reduced mod R (bias < 2^-128)."""
    while True:
        k = int.from_bytes(rng(48), "big") % R
        if k:
            return k


def g1_mul(point: G1Point, k: int) -> G1Point:
    """k * point in G1."""
    return point * scalar(k)


def g1_multiexp(points: Sequence[G1Point], scalars: Sequence[int]) -> G1Point:
    """sum(k_i * P_i) in G1: one multi-scalar multiplication (Pippenger), g1_mul for one point.

    The points must already be in G1 (decoded by ``g1_from_bytes`` or computed): arkworks'
    ``multiexp_unchecked`` does not check them again. Short scalars (e.g. 64-bit batch
    weights) make it proportionally cheaper.
    """
    if len(points) != len(scalars):
        raise ValueError("need as many scalars as points")
    if len(points) == 1:
        return g1_mul(points[0], scalars[0])
    return G1Point.multiexp_unchecked(list(points), [scalar(k) for k in scalars])


class G1FixedBase:
    """k * B for one fixed point B of G1, by a fixed-base comb of 4-bit windows.

    ``rows[i][j] = j * 16^i * B`` for 64 rows of 16 entries: about 1,000 point additions
    (~1 ms) and ~170 KiB to build, then at most 64 additions per multiplication (~3.5x
    faster than ``g1_mul``). The table is as secret as B is secret; lookups are indexed by
    the digits of k and zero digits are skipped, so this is not constant time (see above).
    """

    __slots__ = ("_rows",)

    def __init__(self, base: G1Point) -> None:
        rows: list[tuple[G1Point, ...]] = []
        for _ in range(64):
            row = [_G1_INF, base]
            for _ in range(14):
                row.append(row[-1] + base)
            rows.append(tuple(row))
            base = row[-1] + base
        self._rows = tuple(rows)

    def __repr__(self) -> str:
        return "G1FixedBase(<hidden>)"

    def __reduce__(self) -> str | tuple[object, ...]:
        raise TypeError("G1FixedBase is not picklable")

    def mul(self, k: int) -> G1Point:
        """k * B (k reduced mod R)."""
        acc = _G1_INF
        rows = iter(self._rows)
        for byte in (k % R).to_bytes(32, "little"):
            low, high = next(rows), next(rows)
            if byte & 0xF:
                acc = acc + low[byte & 0xF]
            if byte >> 4:
                acc = acc + high[byte >> 4]
        return acc


class GTFixedBase:
    """A fixed-base comb for a GT element g: ``pow(k)`` = g^k, as 64 GT multiplications.

    The GT counterpart of :class:`G1FixedBase` (4-bit windows, ~1 ms to build, ~0.3 ms per
    power against ~1.2 ms for the pairing it replaces in encapsulation); the same caveat on
    secret exponents (not constant time).
    """

    __slots__ = ("_rows",)

    def __init__(self, base: GT) -> None:
        one = GT.one()
        rows: list[tuple[GT, ...]] = []
        for _ in range(64):
            row = [one, base]
            for _ in range(14):
                row.append(row[-1] * base)
            rows.append(tuple(row))
            base = row[-1] * base
        self._rows = tuple(rows)

    def __repr__(self) -> str:
        return "GTFixedBase(<hidden>)"

    def __reduce__(self) -> str | tuple[object, ...]:
        raise TypeError("GTFixedBase is not picklable")

    def pow(self, k: int) -> GT:
        """g^k (k reduced mod R)."""
        acc = GT.one()
        rows = iter(self._rows)
        for byte in (k % R).to_bytes(32, "little"):
            low, high = next(rows), next(rows)
            if byte & 0xF:
                acc = acc * low[byte & 0xF]
            if byte >> 4:
                acc = acc * high[byte >> 4]
        return acc


K = TypeVar("K", bound=Hashable)
T = TypeVar("T")


class _TableCache(abc.ABC, Generic[K, T]):
    """Fixed-base tables of public values, bounded, admitted by ``policy`` (see
    :mod:`sipsec.ibc.hazmat.tables` and :class:`G1TableCache`); a subclass says how a table is
    built from its key and after how many recent uses it pays back (``ADMIT_USES``)."""

    #: Recent uses after which a value's table is built (FREQUENCY): its measured break-even.
    ADMIT_USES = 7

    def __init__(self, capacity: int, watch: int | None = None, *, policy: str = tables.FREQUENCY,
                 admit_uses: int | None = None, counter: tables.UseCounter[K] | None = None) -> None:
        self._lock = threading.Lock()
        self._tables: OrderedDict[K, T] = OrderedDict()
        self._seen: OrderedDict[K, None] = OrderedDict()
        self._building: set[K] = set()
        self.stats = tables.CacheStats()
        self.configure(capacity, policy, watch=watch, admit_uses=admit_uses, counter=counter)

    def configure(self, capacity: int, policy: str = tables.FREQUENCY, *, watch: int | None = None,
                  admit_uses: int | None = None, counter: tables.UseCounter[K] | None = None) -> None:
        """Start afresh (no table, no count, stats zeroed) with these settings.

        ``capacity``: most tables kept (at least 1; ``policy=OFF`` for none). ``watch``
        (SECOND_USE): first uses remembered, 4 x capacity by default. ``admit_uses``
        (FREQUENCY): ``ADMIT_USES`` by default. ``counter``: the use counts (FREQUENCY), by
        default a :class:`~sipsec.ibc.hazmat.tables.UseCounter` halved every 16 x capacity uses.
        """
        tables.check_settings(capacity, policy)
        with self._lock:
            self.capacity = capacity
            self.policy = policy
            self.watch = 4 * capacity if watch is None else watch
            self.admit_uses = self.ADMIT_USES if admit_uses is None else admit_uses
            self.counter: tables.UseCounter[K] = tables.use_counter(capacity) if counter is None else counter
            self._tables.clear()
            self._seen.clear()
            self.stats.reset()

    @abc.abstractmethod
    def _build(self, key: K) -> T:
        """The table of ``key`` (called outside the lock)."""

    def __len__(self) -> int:
        return len(self._tables)

    def __contains__(self, key: object) -> bool:
        return key in self._tables

    def clear(self) -> None:
        """Forget every table, every first use and every count."""
        with self._lock:
            self._tables.clear()
            self._seen.clear()
            self.counter.clear()

    def peek(self, key: K) -> T | None:
        """The table of ``key`` if it has one, without counting a use or building one: for a
        use a table barely speeds up (a point among others in a multi-scalar multiplication)."""
        with self._lock:
            return self._hit(key)

    def _hit(self, key: K) -> T | None:
        """The table of ``key``, marked most recently used and counted as a hit, or None (the
        caller holds the lock)."""
        table = self._tables.get(key)
        if table is not None:
            self._tables.move_to_end(key)
            self.stats.hits += 1
        return table

    def get(self, key: K) -> T | None:
        """The table of ``key``, or None: the caller takes the generic path (class doc)."""
        if self.policy == tables.SECOND_USE:
            return self._get_second_use(key)
        with self._lock:
            if self.policy == tables.OFF:
                self.stats.misses += 1
                return None
            count = self.counter.add(key)
            table = self._hit(key)
            if table is not None:
                return table
            self.stats.misses += 1
            if count < self.admit_uses or key in self._building:
                return None
            if len(self._tables) >= self.capacity:  # the victim's uses lost, plus a build, must be repaid
                victim = next(iter(self._tables))
                if not tables.displaces(count, self.counter.count(victim), self.admit_uses):
                    self.stats.refused += 1
                    return None
            self._building.add(key)
        try:
            table = self._build(key)  # outside the lock: a millisecond or a few of group operations
        finally:
            with self._lock:
                self._building.discard(key)
        return self._store(key, table)

    def _store(self, key: K, table: T) -> T:
        with self._lock:
            stored = self._tables.setdefault(key, table)  # another thread's, if it won
            if stored is table:
                self.stats.builds += 1
            self._tables.move_to_end(key)
            while len(self._tables) > self.capacity:
                self._tables.popitem(last=False)
                self.stats.evictions += 1
        return stored

    def _get_second_use(self, key: K) -> T | None:
        """The first policy: built on the second use among the last ``watch`` first uses."""
        with self._lock:
            table = self._hit(key)
            if table is not None:
                return table
            self.stats.misses += 1
            if key not in self._seen:
                self._seen[key] = None
                while len(self._seen) > self.watch:
                    self._seen.popitem(last=False)
                return None
            del self._seen[key]
        return self._store(key, self._build(key))


class G1TableCache(_TableCache[G1Point, G1FixedBase]):
    """``G1FixedBase`` tables of public G1 points (identity points Q_ID), bounded LRU.

    ``get(B)`` returns B's table, or None. Under the default policy (``FREQUENCY``,
    :mod:`sipsec.ibc.hazmat.tables`) every use is counted, and a point gets a table (~0.6 ms,
    ~171 KiB) once it was used ``ADMIT_USES`` (7) times lately, about the break-even of a table
    that saves ~0.09 ms a multiplication; a full cache lets a new table displace its least
    recently used one only if the newcomer was used lately at least ``ADMIT_USES`` times more
    than the victim (the uses the victim's table would still have saved, plus a build). ``SECOND_USE`` (the first
    policy) builds on the second use while the point is still among the ``watch`` most recent
    first uses. At most ``capacity`` tables are kept, the least recently used dropped first.
    Keys are the points themselves (arkworks hashes and compares their affine coordinates, so
    equal points share a table whatever object holds them).

    Only for public points: the table is as secret as B, and a shared process-wide cache
    must hold nothing secret. Thread-safe: the bookkeeping runs under a lock and tables are
    built outside it; while one thread builds a point's table others take the generic path
    (FREQUENCY), or may build it too (SECOND_USE: the first stored is kept and returned to
    both); a table is immutable once built.
    """

    ADMIT_USES = 7

    def _build(self, key: G1Point) -> G1FixedBase:
        return G1FixedBase(key)

    def mul(self, point: G1Point, k: int) -> G1Point:
        """k * point: by the table of ``point`` when it has one (same result as ``g1_mul``)."""
        table = self.get(point)
        return g1_mul(point, k) if table is None else table.mul(k)


class GTTableCache(_TableCache[tuple[G1Point, G2Point], GTFixedBase]):
    """``GTFixedBase`` tables of e(Q, P) for public pairs (a recipient's Q_ID and its domain's
    P_pub), bounded LRU, admitted like :class:`G1TableCache` (FREQUENCY: after 5 recent uses,
    the break-even of a ~3.3 ms build that saves ~0.7 ms an encapsulation; ~588 KiB each:
    1,024 elements of GT)."""

    ADMIT_USES = 5

    def _build(self, key: tuple[G1Point, G2Point]) -> GTFixedBase:
        return GTFixedBase(GT.pairing(*key))

    def pairing_power(self, q: G1Point, p: G2Point, k: int) -> GT:
        """e(Q, P)^k = e(k Q, P): by the table of (Q, P) when it has one."""
        table = self.get((q, p))
        return pairing(g1_public_mul(q, k), p) if table is None else table.pow(k)


#: The process-wide cache of identity-point tables used by verification (Q_ID of the signer)
#: and encapsulation (Q_ID of the recipient): sized by ``sipsec.ibc.configure_tables``
#: (by default 143 tables, ~24 MiB at most).
PUBLIC_G1_TABLES: Final = G1TableCache(tables.capacity_for(tables.DEFAULT_G1_BYTES, tables.G1_TABLE_BYTES))


def g1_public_mul(point: G1Point, k: int) -> G1Point:
    """k * point for a PUBLIC, often reused point (an identity point Q_ID), by the tables of
    ``PUBLIC_G1_TABLES``: the same point as ``g1_mul``; neither is constant time in k."""
    return PUBLIC_G1_TABLES.mul(point, k)


#: The process-wide cache of e(Q_ID, P_pub) tables used by encapsulation to a recipient met
#: often lately: sized by ``sipsec.ibc.configure_tables`` (by default 27 tables, ~16 MiB).
PUBLIC_GT_TABLES: Final = GTTableCache(tables.capacity_for(tables.DEFAULT_GT_BYTES, tables.GT_TABLE_BYTES))


def public_pairing_power(q: G1Point, p: G2Point, k: int) -> GT:
    """e(k Q, P) = e(Q, P)^k for a PUBLIC, often reused pair (a recipient's Q_ID and P_pub), by
    the tables of ``PUBLIC_GT_TABLES``: the same element as ``pairing(g1_mul(q, k), p)``;
    not constant time in k."""
    return PUBLIC_GT_TABLES.pairing_power(q, p, k)


def g2_mul(point: G2Point, k: int) -> G2Point:
    """k * point in G2."""
    return point * scalar(k)


def _g2_table() -> list[list[G2Point]]:
    # Fixed-base comb for P2: table[i][j] = j * 256^i * P2, 32 windows of 8 bits.
    table: list[list[G2Point]] = []
    base = _G2_GEN
    for _ in range(32):
        row = [_G2_INF, base]
        for _ in range(254):
            row.append(row[-1] + base)
        table.append(row)
        base = row[-1] + base
    return table


@functools.cache
def _g2_generator_table() -> list[list[G2Point]]:
    return _g2_table()


def g2_generator_mul(k: int) -> G2Point:
    """k * P2 by a precomputed fixed-base table (about 6x faster than a generic multiplication)."""
    table = _g2_generator_table()
    digits = (k % R).to_bytes(32, "little")
    acc = _G2_INF
    for row, digit in zip(table, digits, strict=True):
        if digit:
            acc = acc + row[digit]
    return acc


def g1_to_bytes(point: G1Point) -> bytes:
    """Compressed encoding of a G1 point (48 bytes)."""
    return point.to_compressed_bytes()


def g2_to_bytes(point: G2Point) -> bytes:
    """Compressed encoding of a G2 point (96 bytes)."""
    return point.to_compressed_bytes()


def g1_from_bytes(data: bytes, *, allow_identity: bool = False) -> G1Point:
    """Decode a compressed G1 point, checking curve, subgroup and canonical form.

    Raises InvalidEncoding; the identity is refused unless ``allow_identity``.

    Nearly all of the cost (~0.07 ms) is arkworks' own: about a third decompression (a
    square root in F_p), two thirds the subgroup check; the Python around it (length,
    canonical re-encoding of a now affine point, identity test) is under 1 us. The subgroup
    check stays: G1's cofactor (~2^126) has small factors (3, 11, 10177, ...), and a U or V
    with a small-order component would void the prime-order arguments the schemes rest on
    (the batch test's 2^-64 bound: a weight divisible by 3 kills an order-3 component), let
    signatures be mauled into other valid-looking encodings, and feed points outside G1 to
    ``g1_multiexp`` and the combs, which assume G1.
    """
    if len(data) != _G1_LEN:
        raise InvalidEncoding(f"G1 point must be {_G1_LEN} bytes, got {len(data)}")
    try:
        point = G1Point.from_compressed_bytes(bytes(data))
    except (ValueError, OverflowError) as exc:
        raise InvalidEncoding("G1 point not on the curve or not in the subgroup") from exc
    if point.to_compressed_bytes() != data:
        raise InvalidEncoding("non-canonical G1 encoding")
    if not allow_identity and point == _G1_INF:
        raise InvalidEncoding("G1 point is the identity")
    return point


def _g2_decode(data: bytes, check_subgroup: bool, allow_identity: bool) -> G2Point:
    if len(data) != _G2_LEN:
        raise InvalidEncoding(f"G2 point must be {_G2_LEN} bytes, got {len(data)}")
    try:
        if check_subgroup:
            point = G2Point.from_compressed_bytes(bytes(data))
        else:
            point = G2Point.from_compressed_bytes_unchecked(bytes(data))
    except (ValueError, OverflowError) as exc:
        raise InvalidEncoding("G2 point not on the curve or not in the subgroup") from exc
    if point.to_compressed_bytes() != data:
        raise InvalidEncoding("non-canonical G2 encoding")
    if not allow_identity and point == _G2_INF:
        raise InvalidEncoding("G2 point is the identity")
    return point


def g2_from_bytes(data: bytes, *, allow_identity: bool = False) -> G2Point:
    """Decode a compressed G2 point, checking curve, subgroup and canonical form."""
    return _g2_decode(data, True, allow_identity)


def g2_from_bytes_unchecked_subgroup(data: bytes) -> G2Point:
    """Decode a compressed G2 point on the curve WITHOUT the subgroup check.

    Only for the FullIdent ``U``, whose re-encryption check ``U == r * P2`` rejects any
    point outside the subgroup anyway (``r * P2`` always lies in it).
    """
    return _g2_decode(data, False, False)


@functools.lru_cache(maxsize=4096)
def hash_to_g1(msg: bytes, dst: bytes) -> G1Point:
    """RFC 9380 ``BLS12381G1_XMD:SHA-256_SSWU_RO_`` hash_to_curve (cached: public, deterministic)."""
    if not 0 < len(dst) <= 255:
        raise ValueError("DST must be 1..255 bytes")
    return G1Point.hash_to_curve(bytes(msg), bytes(dst))


def pairing(a: G1Point, b: G2Point) -> GT:
    """e(a, b)."""
    return GT.pairing(a, b)


def pairing_check(g1s: Sequence[G1Point], g2s: Sequence[G2Point]) -> bool:
    """True iff prod e(g1s[i], g2s[i]) == 1, computed as one multi-pairing."""
    return GT.pairing_check(list(g1s), list(g2s))


def multi_pairing(g1s: Sequence[G1Point], g2s: Sequence[G2Point]) -> GT:
    """prod e(g1s[i], g2s[i]) as a GT value (one Miller loop per pair, one final exponentiation)."""
    return GT.multi_pairing(list(g1s), list(g2s))


def gt_to_bytes(value: GT) -> bytes:
    """Canonical 576-byte encoding of a GT element (see the module docstring)."""
    out = bytes.fromhex(str(value))
    if len(out) != 576:
        raise ValueError("unexpected GT serialisation length")
    return out
