"""The default table policy (``FREQUENCY``): tables only for values used often enough lately to
repay them, a full cache displaced only by a value used enough more than its victim, sizes from a memory budget, and the
same bytes out with tables, without them, and under every policy."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import pytest
from sipsec import ibc
from sipsec.ibc import _keys
from sipsec.ibc.hazmat import backend as bk
from sipsec.ibc.hazmat import cc, tables
from sipsec.ibc.hazmat.tables import FREQUENCY, OFF, SECOND_USE, UseCounter

from ._helpers import PERIOD, domain


def _point(i: int) -> bk.G1Point:
    return bk.hash_to_g1(b"admission %d" % i, b"SIPSEC-TEST-TABLES")


def _rng(seed: bytes) -> bk.Rng:
    counter = iter(range(1 << 30))
    return lambda n: hashlib.shake_256(seed + bytes([next(counter)])).digest(n)


def _key(i: int) -> ibc.PrivateKey:
    master, params = domain("atlanta.com")
    return ibc.extract(master, params, params.identity(f"sip:user{i}@atlanta.com", ibc.Purpose.SIG, PERIOD))


@pytest.fixture(autouse=True)
def default_tables() -> Iterator[None]:
    """Every test leaves the process-wide tables as the defaults have them."""
    yield
    ibc.configure_tables()


# --- the counter -----------------------------------------------------------------------------


def test_counts_are_halved_every_sample_uses() -> None:
    counter: UseCounter[str] = UseCounter(sample=10)
    assert [counter.add("a") for _ in range(5)] == [1, 2, 3, 4, 5]
    for _ in range(4):
        counter.add("b")
    assert counter.add("c") == 1  # the 10th use: the count this use gave, then the halving
    assert (counter.count("a"), counter.count("b"), counter.count("c")) == (2, 2, 0)  # c faded out
    assert counter.add("a") == 3


def test_the_counter_holds_at_most_twice_its_sample() -> None:
    counter: UseCounter[int] = UseCounter(sample=16)
    for i in range(10_000):
        counter.add(i % 3 if i % 4 else i)  # three hot keys among a stream of one-off ones
        assert len(counter) <= 32
    assert counter.count(1) > 1 and counter.count(8) == 0
    counter.clear()
    assert len(counter) == 0
    with pytest.raises(ValueError):
        UseCounter(0)


# --- the public-value caches ---------------------------------------------------------------


def test_a_table_only_after_the_break_even_uses() -> None:
    cache = bk.G1TableCache(4, admit_uses=3, counter=UseCounter(1000))
    p = _point(0)
    assert cache.get(p) is None and cache.get(p) is None and len(cache) == 0
    table = cache.get(p)  # the third use in the window builds it
    assert table is not None and p in cache
    assert cache.get(bk.g1_from_bytes(bk.g1_to_bytes(p))) is table  # equal points share it
    assert cache.stats.as_dict() | {"hit_ratio": 0} == {
        "hits": 1, "misses": 3, "builds": 1, "evictions": 0, "refused": 0, "hit_ratio": 0}
    assert bk.G1TableCache.ADMIT_USES == 7 and bk.GTTableCache.ADMIT_USES == 5  # measured break-evens


def test_uses_long_past_fade_out() -> None:
    counter: UseCounter[bk.G1Point] = UseCounter(8)
    cache = bk.G1TableCache(4, admit_uses=3, counter=counter)
    p, others = _point(1), [_point(10 + i) for i in range(7)]
    cache.get(p)
    cache.get(p)  # two uses: one short
    for q in others[:6]:
        cache.get(q)  # the 8th use halves every count: p down to 1
    assert counter.count(p) == 1
    assert cache.get(p) is None  # 2 now, not 3: no table
    assert cache.get(p) is not None


def test_a_full_cache_is_displaced_only_by_a_value_that_repays_the_victim_and_a_build() -> None:
    counter: UseCounter[bk.G1Point] = UseCounter(1000)
    cache = bk.G1TableCache(2, admit_uses=2, counter=counter)
    a, b, c = _point(20), _point(21), _point(22)
    for p in (a, a, b, b):
        cache.get(p)
    assert a in cache and b in cache
    for _ in range(3):
        assert cache.get(c) is None  # 2 and 3 uses: under the victim a's 2 + the 2 a build costs
    assert cache.stats.refused == 2 and c not in cache
    cache.get(a)  # a: 3 uses, most recently used; b, with 2, is the victim now
    assert cache.get(c) is not None  # 4 uses: b's 2 + 2
    assert (a in cache, b in cache, c in cache) == (True, False, True)
    assert cache.stats.evictions == 1


def test_a_uniform_population_larger_than_the_cache_does_not_churn_it() -> None:
    points = [_point(30 + i) for i in range(8)]

    def builds(policy: str) -> int:
        cache = bk.G1TableCache(4, policy=policy, admit_uses=3, counter=UseCounter(10_000))
        for _ in range(10):
            for p in points:
                assert bk.g1_mul(p, 5) == (cache.mul(p, 5))
        assert len(cache) == 4
        return cache.stats.builds

    assert builds(FREQUENCY) == 4  # the first four to reach 3 uses, then no displacement
    assert builds(SECOND_USE) >= 6 * 4  # tables on second uses, evicted after a use or two


def test_off_builds_nothing_and_unknown_policies_are_refused() -> None:
    cache = bk.G1TableCache(4, policy=OFF)
    p = _point(40)
    for _ in range(20):
        assert cache.mul(p, 7) == bk.g1_mul(p, 7)
    assert len(cache) == 0 and cache.stats.misses == 20 and cache.stats.builds == 0
    with pytest.raises(ValueError):
        bk.G1TableCache(4, policy="lru")
    with pytest.raises(ValueError):
        bk.GTTableCache(0)


def test_one_builder_at_a_time(monkeypatch: pytest.MonkeyPatch) -> None:
    cache = bk.G1TableCache(4, admit_uses=1, counter=UseCounter(1000))
    p = _point(41)
    seen: list[object] = []
    real = bk.G1FixedBase

    def build(base: bk.G1Point) -> bk.G1FixedBase:
        seen.append(cache.get(p))  # another use while this one builds: the generic path
        return real(base)

    monkeypatch.setattr(bk, "G1FixedBase", build)
    table = cache.get(p)
    assert seen == [None] and table is not None and cache.stats.builds == 1


def test_batches_of_several_signers_use_tables_but_never_build_them(monkeypatch: pytest.MonkeyPatch) -> None:
    cache = bk.G1TableCache(8, admit_uses=2, counter=UseCounter(1000))
    monkeypatch.setattr(bk, "PUBLIC_G1_TABLES", cache)
    params = domain("atlanta.com")[1]
    keys = [_key(50 + i) for i in range(3)]
    items = [(params, sk.identity, b"m", ibc.sign(sk, b"m")) for sk in keys]
    for _ in range(3):
        assert ibc.verify_batch(items) == [None] * 3  # three Q_ID in one multi-scalar multiplication
    assert len(cache) == 0 and cache.stats.misses == 0  # not even counted as uses
    for _ in range(2):
        assert ibc.verify_batch(items[:1] * 2) == [None] * 2  # one Q_ID: a multiplication, counted
    q0 = ibc.identity_point(keys[0].identity)
    assert q0 in cache and len(cache) == 1
    assert ibc.verify_batch(items) == [None] * 3  # its table used in the mixed batch, no other built
    assert len(cache) == 1 and cache.stats.hits == 1


# --- the signers -------------------------------------------------------------------------------


def test_a_key_gets_its_tables_after_the_break_even_signatures(monkeypatch: pytest.MonkeyPatch) -> None:
    holders = _keys._TableHolders(4, admit_uses=3, counter=UseCounter(1000))
    monkeypatch.setattr(_keys, "_HOLDERS", holders)
    sk = _key(0)
    q_id = ibc.identity_point(sk.identity)
    for i in range(5):
        message = b"INVITE %d" % i
        expected = cc.cc_sign(sk._point(), q_id, message, _rng(b"seed %d" % i))
        assert ibc.sign(sk, message, rng=_rng(b"seed %d" % i)) == expected  # the same bytes throughout
        assert (sk._tables is not None) == (i >= 2)
    assert holders.stats.as_dict() | {"hit_ratio": 0} == {
        "hits": 2, "misses": 3, "builds": 1, "evictions": 0, "refused": 0, "hit_ratio": 0}
    assert _keys._TableHolders.ADMIT_USES == 7


def test_a_holder_is_displaced_only_by_a_key_that_signs_enough_more(monkeypatch: pytest.MonkeyPatch) -> None:
    holders = _keys._TableHolders(1, admit_uses=2, counter=UseCounter(1000))
    monkeypatch.setattr(_keys, "_HOLDERS", holders)
    a, b = _key(1), _key(2)
    for message in (b"1", b"2", b"3"):
        ibc.sign(a, message)
    assert a._tables is not None
    for message in (b"1", b"2", b"3", b"4"):
        ibc.sign(b, message)  # 2, 3 and 4 signatures against a's 3 + 2: refused
    assert b._tables is None and holders.stats.refused == 3
    ibc.sign(b, b"5")  # 5 repay a's 3 and a build
    assert (a._tables is None, b._tables is not None) == (True, True)
    assert holders.stats.evictions == 1 and len(holders) == 1


# --- sizes and outputs -------------------------------------------------------------------------


def test_sizes_come_from_the_memory_budget() -> None:
    assert ibc.configure_tables() == {"g1": 143, "signers": 71, "gt": 27}  # the 64 MiB default
    assert bk.PUBLIC_G1_TABLES.capacity == 143 and bk.PUBLIC_GT_TABLES.capacity == 27
    assert _keys._HOLDERS.capacity == 71
    assert ibc.configure_tables(1024, SECOND_USE) == {"g1": 2299, "signers": 1149, "gt": 445}
    assert bk.PUBLIC_G1_TABLES.policy == SECOND_USE and _keys._HOLDERS.policy == SECOND_USE
    assert ibc.configure_tables(1) == {"g1": 2, "signers": 1, "gt": 0}
    assert bk.PUBLIC_GT_TABLES.policy == OFF  # no room for one recipient table: none at all
    assert ibc.configure_tables(0) == {"g1": 0, "signers": 0, "gt": 0}
    stats = ibc.table_stats()
    assert {name: s["policy"] for name, s in stats.items()} == {"g1": OFF, "signers": OFF, "gt": OFF}
    with pytest.raises(ValueError):
        ibc.configure_tables(-1)
    with pytest.raises(ValueError):
        ibc.configure_tables(64, "lfu")
    assert tables.capacity_for(tables.G1_TABLE_BYTES - 1, tables.G1_TABLE_BYTES) == 0


def test_configuring_drops_the_tables_built_so_far() -> None:
    ibc.configure_tables(64, SECOND_USE)
    sk = _key(3)
    ibc.sign(sk, b"1")
    ibc.sign(sk, b"2")
    assert sk._tables is not None and len(_keys._HOLDERS) == 1
    ibc.configure_tables()
    assert sk._tables is None and len(_keys._HOLDERS) == 0


@pytest.mark.parametrize("policy", [FREQUENCY, SECOND_USE])
def test_outputs_are_byte_identical_with_and_without_tables(policy: str) -> None:
    params, sk = domain("atlanta.com")[1], _key(4)
    master, bparams = domain("biloxi.com")
    bob = bparams.identity("sip:bob@biloxi.com", ibc.Purpose.ENC, PERIOD)
    bob_key = ibc.extract(master, bparams, bob)

    def run() -> list[object]:
        out: list[object] = []
        for i in range(10):
            message = b"MESSAGE %d" % i
            signature = ibc.sign(sk, message, rng=_rng(b"sig %d" % i))
            ibc.verify(params, sk.identity, message, signature)
            with pytest.raises(ibc.InvalidSignature):
                ibc.verify(params, sk.identity, message + b"!", signature)
            out.append(signature)
            key, ciphertext = ibc.encapsulate(bparams, bob, rng=_rng(b"kem %d" % i))
            assert ibc.decapsulate(bob_key, ciphertext) == key
            out.append((key, ciphertext))
        out.append(ibc.verify_batch([(params, sk.identity, b"MESSAGE %d" % i, out[2 * i]) for i in range(10)]))
        return out

    ibc.configure_tables(64, OFF)
    reference = run()
    assert all(s["builds"] == 0 for s in ibc.table_stats().values())
    ibc.configure_tables(64, policy)
    assert run() == reference  # uses before, at and after each admission
    stats = ibc.table_stats()
    assert stats["g1"]["builds"] == 1 and stats["signers"]["builds"] == 1 and stats["gt"]["builds"] == 1
    assert stats["g1"]["hits"] and stats["signers"]["hits"] and stats["gt"]["hits"]
    assert run() == reference  # every table reused
