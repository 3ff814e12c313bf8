"""scrypt hashes: salted, cost carried with the hash, constant-time check."""

from __future__ import annotations

import pytest
from sipsec_pkg.passwords import ScryptParams, hash_password, password_matches

FAST = ScryptParams(n=16, r=1, p=1)


def test_hash_and_check():
    h = hash_password("s3cret", FAST)
    assert h.startswith("scrypt$16$1$1$") and "s3cret" not in h
    assert password_matches("s3cret", h)
    assert not password_matches("s3cret ", h)
    assert hash_password("s3cret", FAST) != h  # salted


def test_cost_travels_with_the_hash():
    h = hash_password("pw", ScryptParams(n=32, r=2, p=1))
    assert h.split("$")[1:4] == ["32", "2", "1"] and password_matches("pw", h)


def test_malformed_hashes_never_match():
    for bad in ("", "scrypt$16$1$1$!!$!!", "bcrypt$x", "scrypt$notanumber$1$1$AA==$AA=="):
        assert not password_matches("pw", bad)


def test_production_default_is_strong_and_bad_params_refused():
    assert ScryptParams().n >= 2**15 and ScryptParams().r == 8
    with pytest.raises(ValueError):
        ScryptParams(n=1000)
