"""Key material and public parameters of suite v1, with their stable byte encodings.

DomainParams encoding (all integers big-endian, no trailing bytes)::

    magic      4 bytes  b"SSP\\x01"   (sipsec public parameters, encoding 1)
    suite id   1-byte length || bytes  (must be SUITE_ID)
    domain     1-byte length || ASCII  (canonical host, lower case)
    version    u32                      (parameter version; bumped on master-key rollover)
    length_s   u64                      (PeriodPolicy.length_s)
    max_ahead  u16                      (PeriodPolicy.max_ahead)
    P_pub      96 bytes                 (compressed G2)
    threshold  u16                      (1 for a single PKG)
    n          u16                      (number of public shares; 0 for a single PKG)
    shares     n x 96 bytes             (compressed G2 s_i*P2, node i = position + 1)
"""

from __future__ import annotations

import functools
import hmac
import threading
import weakref
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Final

from sipsec.ibc._errors import InvalidEncoding, InvalidIdentity
from sipsec.ibc._identity import Identity, PeriodPolicy, Purpose, canonical_domain
from sipsec.ibc.hazmat import backend as bk
from sipsec.ibc.hazmat import tables
from sipsec.ibc.hazmat import threshold as th
from sipsec.ibc.hazmat.cc import SignerTables
from sipsec.ibc.hazmat.suite import G2_LEN, SCALAR_LEN, SUITE_ID

__all__ = [
    "DomainParams",
    "MasterSecret",
    "MasterShare",
    "PartialKey",
    "PrivateKey",
]

_MAGIC = b"SSP\x01"

#: Most private keys that hold signing tables at once by default (~343 KiB each, 24 MiB in
#: all; ``sipsec.ibc.configure_tables`` sets it).
_TABLE_KEYS: Final = tables.capacity_for(tables.DEFAULT_SIGNER_BYTES, tables.SIGNER_TABLE_BYTES)


@functools.lru_cache(maxsize=256)
def _g2_point(data: bytes) -> bk.G2Point:
    """Decoded and validated public G2 point (cached: parameters are public)."""
    return bk.g2_from_bytes(data)


@functools.lru_cache(maxsize=64)
def _shares_consistent(p_pub: bytes, shares: tuple[bytes, ...], t: int) -> bool:
    return th.public_shares_consistent(_g2_point(p_pub), [_g2_point(s) for s in shares], t)


def _scalar_from_bytes(data: bytes, what: str) -> int:
    if len(data) != SCALAR_LEN:
        raise InvalidEncoding(f"{what} must be {SCALAR_LEN} bytes")
    value = int.from_bytes(data, "big")
    if not 0 < value < bk.R:
        raise InvalidEncoding(f"{what} is out of range")
    return value


class MasterSecret:
    """A domain's master secret s (P_pub = s * P2). ``repr`` never shows the value."""

    __slots__ = ("_s",)

    def __init__(self, value: int) -> None:
        if not 0 < value < bk.R:
            raise InvalidEncoding("master secret out of range")
        self._s = value

    def __repr__(self) -> str:
        return "MasterSecret(<hidden>)"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, MasterSecret):
            return NotImplemented
        return hmac.compare_digest(self.to_bytes(), other.to_bytes())

    __hash__ = None  # type: ignore[assignment]

    def __reduce__(self) -> str | tuple[object, ...]:
        raise TypeError("MasterSecret is not picklable; use to_bytes() and seal it")

    def to_bytes(self) -> bytes:
        """32-byte big-endian s."""
        return self._s.to_bytes(SCALAR_LEN, "big")

    @classmethod
    def from_bytes(cls, data: bytes) -> MasterSecret:
        """Inverse of to_bytes; raises InvalidEncoding."""
        return cls(_scalar_from_bytes(bytes(data), "master secret"))

    def _value(self) -> int:
        return self._s


class MasterShare:
    """Node ``index``'s Shamir share s_i of the master secret. ``repr`` hides the value."""

    __slots__ = ("_s", "index")

    def __init__(self, index: int, value: int) -> None:
        if not 1 <= index <= 0xFFFF:
            raise InvalidEncoding("share index out of range")
        if not 0 < value < bk.R:
            raise InvalidEncoding("share value out of range")
        self.index = index
        self._s = value

    def __repr__(self) -> str:
        return f"MasterShare(index={self.index}, <hidden>)"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, MasterShare):
            return NotImplemented
        return hmac.compare_digest(self.to_bytes(), other.to_bytes())

    __hash__ = None  # type: ignore[assignment]

    def __reduce__(self) -> str | tuple[object, ...]:
        raise TypeError("MasterShare is not picklable; use to_bytes() and seal it")

    def to_bytes(self) -> bytes:
        """u16 index || 32-byte big-endian s_i."""
        return self.index.to_bytes(2, "big") + self._s.to_bytes(SCALAR_LEN, "big")

    @classmethod
    def from_bytes(cls, data: bytes) -> MasterShare:
        """Inverse of to_bytes; raises InvalidEncoding."""
        data = bytes(data)
        if len(data) != 2 + SCALAR_LEN:
            raise InvalidEncoding("master share must be 34 bytes")
        return cls(int.from_bytes(data[:2], "big"), _scalar_from_bytes(data[2:], "share value"))

    def _value(self) -> int:
        return self._s


class PrivateKey:
    """An identity private key d_ID = s * Q_ID in G1. ``repr`` shows the identity only.

    A key that signs often keeps fixed-base signing tables (``_signer_tables``), never
    encoded, pickled or compared; which keys get them, and how many at once, is the business
    of ``_HOLDERS`` (:class:`_TableHolders`).
    """

    __slots__ = ("__weakref__", "_d", "_signs", "_tables", "identity")

    def __init__(self, identity: Identity, point: bk.G1Point) -> None:
        self.identity = identity
        self._d = point
        self._signs = 0
        self._tables: SignerTables | None = None

    def __repr__(self) -> str:
        return f"PrivateKey(identity={self.identity!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, PrivateKey):
            return NotImplemented
        return self.identity == other.identity and hmac.compare_digest(
            self.to_bytes(), other.to_bytes()
        )

    __hash__ = None  # type: ignore[assignment]

    def __reduce__(self) -> str | tuple[object, ...]:
        raise TypeError("PrivateKey is not picklable; use to_bytes()")

    def to_bytes(self) -> bytes:
        """Compressed G1 d_ID, 48 bytes."""
        return bk.g1_to_bytes(self._d)

    @classmethod
    def from_bytes(cls, identity: Identity, data: bytes) -> PrivateKey:
        """Decode d_ID for ``identity``; raises InvalidEncoding for a bad point."""
        if not isinstance(identity, Identity):
            raise InvalidIdentity("identity must be an Identity")
        return cls(identity, bk.g1_from_bytes(bytes(data)))

    def _point(self) -> bk.G1Point:
        return self._d

    def _signer_tables(self, q_id: bk.G1Point) -> SignerTables | None:
        """The signing tables of this key (``q_id``: its identity point), or None: sign on the
        generic path (the same signature). See :class:`_TableHolders`."""
        return _HOLDERS.tables_for(self, q_id)


class _TableHolders:
    """The keys holding signing tables, least recently used first, at most ``capacity``.

    Only weak references: the tables live in their key and die with it. A key pushed out
    loses its tables (an in-flight signature keeps the object it already has). Which keys get
    tables is ``policy`` (:mod:`sipsec.ibc.hazmat.tables`):

    * ``FREQUENCY`` (default): every signature counts a use of the key's identity in
      ``counter``; a key without tables gets them (~1.2 ms, ~343 KiB) once its identity signed
      ``admit_uses`` (7) times lately, about the break-even of tables that save ~0.18 ms a
      signature; when ``capacity`` keys hold tables already, only if it signed lately at least
      ``admit_uses`` times more than the least recently used holder, which then loses them.
    * ``SECOND_USE``: the first policy, tables for a key's second signature (its own count,
      never forgotten), least recently used holders out first.
    * ``OFF``: no tables.
    """

    #: Recent signatures after which a key gets its tables (FREQUENCY): the measured break-even.
    ADMIT_USES = 7

    def __init__(self, capacity: int, policy: str = tables.FREQUENCY, *, admit_uses: int | None = None,
                 counter: tables.UseCounter[Identity] | None = None) -> None:
        self._refs: OrderedDict[int, weakref.ref[PrivateKey]] = OrderedDict()
        self._lock = threading.Lock()
        self.stats = tables.CacheStats()
        self.configure(capacity, policy, admit_uses=admit_uses, counter=counter)

    def configure(self, capacity: int, policy: str = tables.FREQUENCY, *, admit_uses: int | None = None,
                  counter: tables.UseCounter[Identity] | None = None) -> None:
        """Start afresh with these settings: every holder loses its tables, counts and stats
        are zeroed. ``counter`` defaults to one halved every 16 x capacity signatures."""
        tables.check_settings(capacity, policy)
        with self._lock:
            self.capacity = capacity
            self.policy = policy
            self.admit_uses = self.ADMIT_USES if admit_uses is None else admit_uses
            self.counter: tables.UseCounter[Identity] = tables.use_counter(capacity) if counter is None else counter
            while self._refs:
                self._drop(self._refs.popitem(last=False)[1])
            self.stats.reset()

    def __len__(self) -> int:
        return len(self._refs)

    def tables_for(self, key: PrivateKey, q_id: bk.G1Point) -> SignerTables | None:
        """``key``'s tables for this signature, built if the policy admits it, or None."""
        held = key._tables
        if held is not None and held.q_point != q_id:  # ``identity`` was replaced: stale
            held = None
        if self.policy == tables.SECOND_USE:
            return self._second_use(key, q_id, held)
        with self._lock:
            if self.policy == tables.OFF:
                self.stats.misses += 1
                return None
            count = self.counter.add(key.identity)
            if held is not None:
                self.stats.hits += 1
                self._touch(key)
                return held
            self.stats.misses += 1
            if count < self.admit_uses:
                return None
            if len(self._refs) >= self.capacity and id(key) not in self._refs:
                victim = next(iter(self._refs.values()))()
                if victim is not None and not tables.displaces(count, self.counter.count(victim.identity),
                                                               self.admit_uses):
                    self.stats.refused += 1  # the victim's uses lost, plus a build, must be repaid
                    return None
        built = key._tables = SignerTables(key._d, q_id)  # outside the lock: about a millisecond
        with self._lock:
            self.stats.builds += 1
            self._touch(key)
        return built

    def _second_use(self, key: PrivateKey, q_id: bk.G1Point, held: SignerTables | None) -> SignerTables | None:
        if held is None:
            self.stats.misses += 1
            key._signs += 1
            if key._signs < 2:
                return None
            held = key._tables = SignerTables(key._d, q_id)
            self.stats.builds += 1
        else:
            self.stats.hits += 1
        self.touch(key)
        return held

    def touch(self, key: PrivateKey) -> None:
        """Mark ``key`` the most recently used holder; evict beyond the capacity."""
        with self._lock:
            self._touch(key)

    def _touch(self, key: PrivateKey) -> None:
        ref = self._refs.pop(id(key), None)
        if ref is None or ref() is not key:  # new, or an id reused after a key died
            ref = weakref.ref(key)
        self._refs[id(key)] = ref
        while len(self._refs) > self.capacity:
            self._drop(self._refs.popitem(last=False)[1])

    def _drop(self, ref: weakref.ref[PrivateKey]) -> None:
        evicted = ref()
        if evicted is not None and evicted._tables is not None:
            evicted._tables = None
            self.stats.evictions += 1


_HOLDERS: Final = _TableHolders(_TABLE_KEYS)


@dataclass(frozen=True)
class PartialKey:
    """Node ``index``'s partial key s_i * Q_ID (compressed G1); ``repr`` hides the value."""

    index: int
    value: bytes = field(repr=False)


@dataclass(frozen=True)
class DomainParams:
    """A domain's public parameters; ``to_bytes``/``from_bytes`` are stable (module docstring)."""

    domain: str
    suite_id: bytes
    p_pub: bytes
    policy: PeriodPolicy
    version: int
    threshold: int = 1
    public_shares: tuple[bytes, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "suite_id", bytes(self.suite_id))
        object.__setattr__(self, "p_pub", bytes(self.p_pub))
        object.__setattr__(self, "public_shares", tuple(bytes(s) for s in self.public_shares))
        self._check_fields()
        _g2_point(self.p_pub)
        self._check_shares()

    def _check_fields(self) -> None:
        """Suite, domain, version and period policy (InvalidEncoding on the first bad one)."""
        if self.suite_id != SUITE_ID:
            raise InvalidEncoding("unknown suite id")
        try:
            if canonical_domain(self.domain) != self.domain:
                raise InvalidEncoding("domain is not canonical")
        except InvalidIdentity as exc:
            raise InvalidEncoding("domain is not a valid host") from exc
        if len(self.domain) > 255:
            raise InvalidEncoding("domain too long")
        if not isinstance(self.version, int) or not 0 <= self.version <= 0xFFFFFFFF:
            raise InvalidEncoding("version out of range")
        if not isinstance(self.policy, PeriodPolicy):
            raise InvalidEncoding("policy must be a PeriodPolicy")

    def _check_shares(self) -> None:
        """The threshold and the public shares: each a G2 point, together matching P_pub."""
        shares = self.public_shares
        n = len(shares)
        if n > 0xFFFF or not isinstance(self.threshold, int):
            raise InvalidEncoding("too many public shares")
        if n == 0:
            if self.threshold != 1:
                raise InvalidEncoding("a threshold above 1 needs public shares")
        else:
            if not 1 <= self.threshold <= n:
                raise InvalidEncoding("threshold must be in 1..n")
            for s in shares:
                _g2_point(s)
            if not _shares_consistent(self.p_pub, shares, self.threshold):
                raise InvalidEncoding("public shares do not match P_pub and the threshold")

    @property
    def n(self) -> int:
        """Number of threshold nodes (0 for a single PKG)."""
        return len(self.public_shares)

    def p_pub_point(self) -> bk.G2Point:
        """P_pub as a (cached) G2 point."""
        return _g2_point(self.p_pub)

    def public_share_point(self, index: int) -> bk.G2Point:
        """P_pub,i of node ``index`` (1..n) as a G2 point."""
        return _g2_point(self.public_shares[index - 1])

    def identity(self, uri: str, purpose: Purpose, period: int) -> Identity:
        """The identity of ``uri`` under this domain's period policy."""
        return Identity.for_aor(uri, purpose, period, self.policy)

    def check_identity(self, identity: Identity) -> None:
        """Raise InvalidIdentity unless ``identity`` belongs to this domain and policy."""
        if not isinstance(identity, Identity):
            raise InvalidIdentity("identity must be an Identity")
        if identity.domain != self.domain:
            raise InvalidIdentity("identity is not of this domain")
        if identity.period_length_s != self.policy.length_s:
            raise InvalidIdentity("identity period length differs from the domain policy")

    def to_bytes(self) -> bytes:
        """The stable encoding documented in this module."""
        domain = self.domain.encode("ascii")
        out = bytearray(_MAGIC)
        out += bytes([len(self.suite_id)]) + self.suite_id
        out += bytes([len(domain)]) + domain
        out += self.version.to_bytes(4, "big")
        out += self.policy.length_s.to_bytes(8, "big")
        out += self.policy.max_ahead.to_bytes(2, "big")
        out += self.p_pub
        out += self.threshold.to_bytes(2, "big")
        out += len(self.public_shares).to_bytes(2, "big")
        for share in self.public_shares:
            out += share
        return bytes(out)

    @classmethod
    def from_bytes(cls, data: bytes) -> DomainParams:
        """Decode and validate (points, subgroup, share consistency); raises InvalidEncoding."""
        reader = _Reader(bytes(data))
        if reader.take(4) != _MAGIC:
            raise InvalidEncoding("not sipsec domain parameters (bad magic)")
        suite_id = reader.take(reader.uint(1))
        try:
            domain = reader.take(reader.uint(1)).decode("ascii")
        except UnicodeDecodeError as exc:
            raise InvalidEncoding("domain is not ASCII") from exc
        version = reader.uint(4)
        length_s = reader.uint(8)
        max_ahead = reader.uint(2)
        p_pub = reader.take(G2_LEN)
        threshold = reader.uint(2)
        n = reader.uint(2)
        shares = tuple(reader.take(G2_LEN) for _ in range(n))
        reader.end()
        try:
            policy = PeriodPolicy(length_s=length_s, max_ahead=max_ahead)
        except ValueError as exc:
            raise InvalidEncoding("bad period policy") from exc
        return cls(domain, suite_id, p_pub, policy, version, threshold, shares)


class _Reader:
    def __init__(self, data: bytes) -> None:
        self._data = data
        self._pos = 0

    def take(self, n: int) -> bytes:
        if self._pos + n > len(self._data):
            raise InvalidEncoding("truncated encoding")
        out = self._data[self._pos : self._pos + n]
        self._pos += n
        return out

    def uint(self, n: int) -> int:
        return int.from_bytes(self.take(n), "big")

    def end(self) -> None:
        if self._pos != len(self._data):
            raise InvalidEncoding("trailing bytes after the encoding")
