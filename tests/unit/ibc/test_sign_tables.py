"""Signing with a key's fixed-base tables: the same signatures, bounded memory, nothing leaked
(the first policy, tables on a second signature, kept as ``SECOND_USE``; the default policy:
test_table_admission.py)."""

from __future__ import annotations

import hashlib
import pickle

import pytest
from sipsec import ibc
from sipsec.ibc import _keys
from sipsec.ibc.hazmat import backend as bk
from sipsec.ibc.hazmat import cc
from sipsec.ibc.hazmat.tables import SECOND_USE

from ._helpers import PERIOD, domain

ALICE = "sip:alice@atlanta.com"


def _fresh_key(aor: str = ALICE) -> ibc.PrivateKey:
    ident = ibc.Identity.for_aor(aor, ibc.Purpose.SIG, PERIOD, ibc.PeriodPolicy())
    master, params = domain(ident.domain)
    return ibc.extract(master, params, ident)


def _rng(seed: bytes) -> bk.Rng:
    return lambda n: hashlib.shake_256(seed).digest(n)


@pytest.fixture(autouse=True)
def second_use(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fresh holders under the first policy for each test (64 keys, as it had)."""
    monkeypatch.setattr(_keys, "_HOLDERS", _keys._TableHolders(64, SECOND_USE))


def test_tables_from_the_second_signature_give_identical_signatures() -> None:
    sk = _fresh_key()
    q_id = ibc.identity_point(sk.identity)
    for i in range(4):
        message = b"INVITE %d" % i
        expected = cc.cc_sign(sk._point(), q_id, message, _rng(b"seed %d" % i))
        assert ibc.sign(sk, message, rng=_rng(b"seed %d" % i)) == expected
        assert (sk._tables is None) == (i == 0)  # none for a one-off signature


def test_tables_are_invisible() -> None:
    sk = _fresh_key()
    before = (repr(sk), sk.to_bytes())
    ibc.sign(sk, b"a")
    ibc.sign(sk, b"b")
    assert sk._tables is not None
    assert (repr(sk), sk.to_bytes()) == before and "hidden" in repr(sk._tables)
    assert sk == ibc.PrivateKey.from_bytes(sk.identity, sk.to_bytes())  # equality ignores them
    for obj in (sk, sk._tables):
        with pytest.raises(TypeError):
            pickle.dumps(obj)


def test_only_the_most_recently_used_keys_hold_tables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_keys, "_HOLDERS", _keys._TableHolders(2, SECOND_USE))
    params = domain("atlanta.com")[1]
    keys = [_fresh_key(f"sip:user{i}@atlanta.com") for i in range(3)]
    for sk in keys:
        ibc.sign(sk, b"1")
        ibc.sign(sk, b"2")
    assert [sk._tables is not None for sk in keys] == [False, True, True]
    ibc.sign(keys[1], b"3")  # touched: keys[2] is now the oldest holder
    sig = ibc.sign(keys[0], b"4")  # evicted keys rebuild on their next signature
    ibc.verify(params, keys[0].identity, b"4", sig)
    assert [sk._tables is not None for sk in keys] == [True, True, False]


def test_tables_follow_a_replaced_identity() -> None:
    sk = _fresh_key()
    ibc.sign(sk, b"1")
    ibc.sign(sk, b"2")
    other = _fresh_key("sip:bob@atlanta.com")
    sk.identity, sk._d = other.identity, other._point()  # as if the key were re-issued in place
    params = domain("atlanta.com")[1]
    ibc.verify(params, other.identity, b"3", ibc.sign(sk, b"3"))
