"""The caches of public tables under the first policy (built on a second use; kept as
``SECOND_USE`` for comparison): bounded, same results. The default policy: test_table_admission.py."""

from __future__ import annotations

import hashlib
import threading

import pytest
from sipsec import ibc
from sipsec.ibc.hazmat import backend as bk
from sipsec.ibc.hazmat import bf, cc
from sipsec.ibc.hazmat.tables import SECOND_USE

from ._helpers import PERIOD, domain, key

ALICE = "sip:alice@atlanta.com"


class _NoTables(bk.G1TableCache):
    """A cache that never has a table: every multiplication takes the generic path."""

    def get(self, point: bk.G1Point) -> bk.G1FixedBase | None:
        return None


class _NoGTTables(bk.GTTableCache):
    """A cache that never has a table: every encapsulation computes its pairing."""

    def get(self, key: tuple[bk.G1Point, bk.G2Point]) -> bk.GTFixedBase | None:
        return None


@pytest.fixture
def tables(monkeypatch: pytest.MonkeyPatch) -> bk.G1TableCache:
    """A fresh, small process-wide cache for the duration of a test."""
    cache = bk.G1TableCache(4, policy=SECOND_USE)
    monkeypatch.setattr(bk, "PUBLIC_G1_TABLES", cache)
    return cache


def _rng(seed: bytes) -> bk.Rng:
    counter = iter(range(1 << 30))
    return lambda n: hashlib.shake_256(seed + bytes([next(counter)])).digest(n)


def _point(i: int) -> bk.G1Point:
    return bk.hash_to_g1(b"point %d" % i, b"SIPSEC-TEST-TABLES")


def test_built_on_the_second_use_and_reused(tables: bk.G1TableCache) -> None:
    p = _point(0)
    assert tables.get(p) is None and len(tables) == 0  # a one-off point costs nothing
    first = tables.get(p)
    assert first is not None and p in tables
    assert tables.get(p) is first
    # another object holding the same point finds the same table
    assert tables.get(bk.g1_from_bytes(bk.g1_to_bytes(p))) is first
    assert tables.get(bk.g1_mul(p, 1)) is first  # a projective representation of it too


def test_bounded_least_recently_used(tables: bk.G1TableCache) -> None:
    points = [_point(i) for i in range(7)]
    for p in points[:4]:
        tables.get(p)
        tables.get(p)
    assert len(tables) == 4
    tables.get(points[0])  # touched: points[1] is now the oldest
    for p in points[4:]:
        tables.get(p)
        tables.get(p)
        assert len(tables) == 4
    assert [p in tables for p in points] == [True, False, False, False, True, True, True]


def test_first_uses_are_bounded_too() -> None:
    cache = bk.G1TableCache(2, watch=3, policy=SECOND_USE)
    points = [_point(i) for i in range(5)]
    for p in points:
        assert cache.get(p) is None
    assert cache.get(points[0]) is None  # pushed out of the watch list: a first use again
    assert cache.get(points[0]) is not None and cache.get(points[4]) is not None
    assert len(cache._seen) <= 3
    cache.clear()
    assert len(cache) == 0 and len(cache._seen) == 0
    with pytest.raises(ValueError):
        bk.G1TableCache(0)


@pytest.mark.parametrize("k", [0, 1, 15, 16, 2**64 + 7, bk.R - 1, bk.R, bk.R + 5, 2**255 - 19])
def test_public_mul_equals_g1_mul(tables: bk.G1TableCache, k: int) -> None:
    p = _point(1)
    for _ in range(3):  # no table, then built, then reused
        assert bk.g1_public_mul(p, k) == bk.g1_mul(p, k)
    assert p in tables


def test_scalar_matches_the_int_constructor() -> None:
    for k in (0, 1, 2**64, bk.R - 1, bk.R, bk.R + 1, -1, 2**256 + 3):
        assert bk.scalar(k) == bk.Scalar(k % bk.R)


def test_many_identities_through_a_small_cache(tables: bk.G1TableCache) -> None:
    master, params = domain("atlanta.com")
    keys = []
    for i in range(10):
        ident = params.identity(f"sip:user{i}@atlanta.com", ibc.Purpose.SIG, PERIOD)
        keys.append(ibc.extract(master, params, ident))
    for rnd in range(3):
        items = []
        for i, sk in enumerate(keys):
            message = b"INVITE %d %d" % (rnd, i)
            signature = ibc.sign(sk, message)
            ibc.verify(params, sk.identity, message, signature)
            with pytest.raises(ibc.InvalidSignature):
                ibc.verify(params, sk.identity, message + b"!", signature)
            items.append((params, sk.identity, message, signature))
        assert ibc.verify_batch(items) == [None] * len(items)
        forged = list(items)
        forged[3] = (params, keys[3].identity, b"forged", items[3][3])
        forged[7] = (params, keys[4].identity, items[7][2], items[7][3])  # someone else's
        results = ibc.verify_batch(forged)
        assert [i for i, r in enumerate(results) if r is not None] == [3, 7]
        assert len(tables) <= 4


def test_signatures_ciphertexts_and_verdicts_are_unchanged(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    params, sig_key = key(ALICE, ibc.Purpose.SIG)
    enc_params, enc_key = key(ALICE, ibc.Purpose.ENC)

    def run() -> list[object]:
        out: list[object] = []
        for i in range(3):
            message = b"MESSAGE %d" % i
            signature = ibc.sign(sig_key, message, rng=_rng(b"sig %d" % i))
            ibc.verify(params, sig_key.identity, message, signature)
            out.append(signature)
            out.append(ibc.encapsulate(enc_params, enc_key.identity, rng=_rng(b"kem %d" % i)))
        return out

    monkeypatch.setattr(bk, "PUBLIC_G1_TABLES", _NoTables(1))
    monkeypatch.setattr(bk, "PUBLIC_GT_TABLES", _NoGTTables(1))
    reference = run()
    monkeypatch.setattr(bk, "PUBLIC_G1_TABLES", bk.G1TableCache(4, policy=SECOND_USE))
    monkeypatch.setattr(bk, "PUBLIC_GT_TABLES", bk.GTTableCache(4, policy=SECOND_USE))
    assert run() == reference  # first uses, then tables built and used
    assert ibc.identity_point(sig_key.identity) in bk.PUBLIC_G1_TABLES  # verify's h Q_ID
    assert (ibc.identity_point(enc_key.identity), enc_params.p_pub_point()) in bk.PUBLIC_GT_TABLES  # encapsulate
    assert run() == reference


def test_one_point_for_both_verify_and_encapsulate(tables: bk.G1TableCache) -> None:
    # Suite v1 gives ENC and SIG identities different points; the hazmat layer does not care.
    q = _point(2)
    s = 0x5EC12E7
    d = bk.g1_mul(q, s)
    p_pub = bk.g2_generator_mul(s)
    for i in range(4):
        message = b"REGISTER %d" % i
        signature = cc.cc_sign(d, q, message, _rng(b"s %d" % i))
        cc.cc_verify(q, p_pub, message, signature)
        with pytest.raises(ibc.InvalidSignature):
            cc.cc_verify(q, p_pub, message + b".", signature)
        assert cc.cc_verify_batch([(q, p_pub, message, signature)] * 2) == [None, None]
        k, ct = bf.bf_encapsulate(q, p_pub, b"id", _rng(b"e %d" % i))
        assert bf.bf_decapsulate(d, b"id", ct) == k
        with pytest.raises(ibc.InvalidCiphertext):
            bf.bf_decapsulate(bk.g1_mul(q, s + 1), b"id", ct)
    assert q in tables and len(tables) == 1


def test_concurrent_use(tables: bk.G1TableCache) -> None:
    points = [_point(10 + i) for i in range(6)]
    scalars = [bk.R - 1 - 977 * i for i in range(6)]
    expected = {
        (i, j): bk.g1_mul(p, k) for i, p in enumerate(points) for j, k in enumerate(scalars)
    }
    errors: list[BaseException] = []

    def worker(offset: int) -> None:
        try:
            for n in range(24):
                i, j = (n + offset) % 6, (n * 5 + offset) % 6
                assert bk.g1_public_mul(points[i], scalars[j]) == expected[i, j]
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(tables) <= 4 and len(tables._seen) <= tables.watch


def test_racing_builders_share_one_table(
    tables: bk.G1TableCache, monkeypatch: pytest.MonkeyPatch
) -> None:
    p = _point(20)
    both_building = threading.Barrier(2, timeout=30)
    building = threading.Event()
    real = bk.G1FixedBase

    def slow_build(base: bk.G1Point) -> bk.G1FixedBase:
        building.set()
        both_building.wait()  # neither has stored its table yet
        return real(base)

    monkeypatch.setattr(bk, "G1FixedBase", slow_build)
    got: list[bk.G1FixedBase | None] = []
    assert tables.get(p) is None
    first = threading.Thread(target=lambda: got.append(tables.get(p)))  # second use: builds
    first.start()
    assert building.wait(30)
    assert tables.get(p) is None  # the first builder took p off the first uses: seen anew
    second = threading.Thread(target=lambda: got.append(tables.get(p)))  # builds too
    second.start()
    first.join()
    second.join()
    assert len(got) == 2 and got[0] is not None and got[0] is got[1]
    assert len(tables) == 1 and tables.get(p) is got[0]
    assert bk.g1_public_mul(p, 12345) == bk.g1_mul(p, 12345)


@pytest.fixture
def gt_tables(monkeypatch: pytest.MonkeyPatch) -> bk.GTTableCache:
    """A fresh, small process-wide cache of e(Q, P) tables for the duration of a test."""
    cache = bk.GTTableCache(2, policy=SECOND_USE)
    monkeypatch.setattr(bk, "PUBLIC_GT_TABLES", cache)
    return cache


def test_gt_power_is_the_pairing_of_the_multiple(gt_tables: bk.GTTableCache) -> None:
    q = _point(1)
    p = bk.g2_generator_mul(0xC0FFEE)
    table = bk.GTFixedBase(bk.pairing(q, p))
    for k in (0, 1, 2, 15, 16, 255, 0xDEADBEEF, bk.R - 1, bk.R, bk.R + 5, 2**255 - 19):
        assert table.pow(k) == bk.pairing(bk.g1_mul(q, k), p)
    assert table.pow(0) == bk.GT.one()
    assert "<hidden>" in repr(table)
    with pytest.raises(TypeError):
        import pickle
        pickle.dumps(table)
    # through the cache: none on the first use, built on the second, the same element throughout
    expected = bk.pairing(bk.g1_mul(q, 12345), p)
    assert [bk.public_pairing_power(q, p, 12345) for _ in range(3)] == [expected] * 3
    assert (q, p) in gt_tables and len(gt_tables) == 1
    for i in range(2, 5):  # bounded: two tables at most
        for _ in range(2):
            bk.public_pairing_power(_point(i), p, 7)
    assert len(gt_tables) == 2 and (q, p) not in gt_tables


def test_encapsulation_is_byte_identical_with_and_without_the_gt_table(gt_tables: bk.GTTableCache) -> None:
    master, params = domain("biloxi.com")
    bob = params.identity("sip:bob@biloxi.com", ibc.Purpose.ENC, PERIOD)
    secret = ibc.extract(master, params, bob)
    runs = [ibc.encapsulate(params, bob, rng=_rng(b"kem")) for _ in range(3)]  # no table, build, use
    assert (ibc.identity_point(bob), params.p_pub_point()) in gt_tables
    assert runs[0] == runs[1] == runs[2]
    assert ibc.decapsulate(secret, runs[2][1]) == runs[2][0]
