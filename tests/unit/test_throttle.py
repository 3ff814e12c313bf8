"""The shared back-off and token buckets (:mod:`sipsec.throttle`), driven by an explicit ``now``."""

from __future__ import annotations

import pytest
from sipsec.throttle import Backoff, LruTable, TokenBuckets, backoff_delay


def test_backoff_delay_is_free_then_doubles_up_to_the_cap() -> None:
    delays = [backoff_delay(n, 3, 1.0, 10.0) for n in range(9)]
    assert delays == [0.0, 0.0, 0.0, 0.0, 1.0, 2.0, 4.0, 8.0, 10.0]
    assert backoff_delay(10_000, 3, 1.0, 10.0) == 10.0  # no overflow far past the cap
    assert backoff_delay(1, 0, 0.5, 60.0) == 0.5  # no free failures: the first one waits


def test_backoff_blocks_only_its_key_and_only_for_the_wait() -> None:
    b: Backoff[str] = Backoff(free=2, base_s=1.0, max_s=4.0)
    assert b.failed("a", 0.0) == 0.0 and b.failed("a", 0.0) == 0.0
    assert not b.blocked("a", 0.0)  # the free failures cost nothing
    assert b.failed("a", 10.0) == 1.0
    assert b.blocked("a", 10.5) and not b.blocked("a", 11.0)
    assert not b.blocked("b", 10.5)  # another key is not affected
    assert [b.failed("a", 20.0) for _ in range(3)] == [2.0, 4.0, 4.0]  # doubling, capped
    assert b.failures("a") == 6
    b.succeeded("a")
    assert b.failures("a") == 0 and not b.blocked("a", 20.0)


def test_backoff_rejects_bad_parameters() -> None:
    with pytest.raises(ValueError):
        Backoff(free=-1, base_s=1.0, max_s=2.0)
    with pytest.raises(ValueError):
        Backoff(free=0, base_s=0.0, max_s=2.0)
    with pytest.raises(ValueError):
        Backoff(free=0, base_s=3.0, max_s=2.0)


def test_tables_are_bounded_least_recently_used_first() -> None:
    b: Backoff[int] = Backoff(free=0, base_s=1.0, max_s=1.0, max_keys=3)
    for key in range(10):
        b.failed(key, 0.0)
    assert len(b) == 3 and b.failures(9) == 1 and b.failures(0) == 0
    t: LruTable[str, int] = LruTable(2)
    t.put("x", 1)
    t.put("y", 2)
    assert t.get("x") == 1  # x is now the most recent
    t.put("z", 3)
    assert t.get("y") is None and t.get("x") == 1 and len(t) == 2
    with pytest.raises(ValueError):
        LruTable(0)


def test_token_buckets_allow_the_burst_then_the_rate() -> None:
    buckets: TokenBuckets[str] = TokenBuckets(rate=2.0, burst=3.0, max_keys=2)
    assert [buckets.allow("s", 0.0) for _ in range(4)] == [True, True, True, False]
    assert buckets.allow("other", 0.0)  # per key
    assert buckets.allow("s", 0.5) and not buckets.allow("s", 0.5)  # 2 tokens/s: one after 0.5 s
    assert buckets.allow("s", 100.0) and buckets.allow("s", 100.0) and buckets.allow("s", 100.0)
    assert not buckets.allow("s", 100.0)  # refilled to the burst, never past it
    buckets.allow("third", 0.0)
    assert len(buckets) == 2  # bounded


def test_token_buckets_rate_zero_is_no_limit_and_burst_at_least_one() -> None:
    off: TokenBuckets[str] = TokenBuckets(rate=0.0, burst=0.0)
    assert all(off.allow("s", 0.0) for _ in range(100)) and len(off) == 0
    tiny: TokenBuckets[str] = TokenBuckets(rate=1.0, burst=0.2)
    assert tiny.burst == 1.0 and tiny.allow("s", 0.0) and not tiny.allow("s", 0.0)
