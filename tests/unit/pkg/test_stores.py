"""The PKG store contract, run against the memory store and a real redis-server."""

from __future__ import annotations

import pytest
from sipsec.stores.pkg import (
    CachedParams,
    MemoryPkgStore,
    RedisPkgStore,
    SessionRecord,
    UserRecord,
    open_pkg_store,
)
from sipsec_pkg.clock import ManualClock


@pytest.fixture(params=["memory", "redis"])
async def store(request):
    clock = ManualClock(1000.0)
    if request.param == "memory":
        s = MemoryPkgStore(clock)
    else:
        s = RedisPkgStore(request.getfixturevalue("redis_url"), "atlanta.com", clock)
    s.clock = clock
    yield s
    await s.close()


async def test_users(store):
    await store.put_user(UserRecord("sip:b@atlanta.com", "scrypt$h", 1.0))
    await store.put_user(UserRecord("sip:a@atlanta.com", "scrypt$g", 2.0))
    assert await store.list_users() == ["sip:a@atlanta.com", "sip:b@atlanta.com"]
    assert (await store.get_user("sip:a@atlanta.com")).password_hash == "scrypt$g"
    assert "scrypt" not in repr(await store.get_user("sip:a@atlanta.com"))
    assert await store.delete_user("sip:a@atlanta.com") and not await store.delete_user("sip:a@atlanta.com")
    assert await store.get_user("sip:a@atlanta.com") is None


async def test_sessions_and_counting(store):
    await store.put_session("t1", SessionRecord("sip:a@atlanta.com", 1000, 1000), 60)
    await store.put_session("t2", SessionRecord("sip:a@atlanta.com", 1000, 1010), 60)
    assert (await store.get_session("t2")).last_seen == 1010
    assert await store.count_sessions(since=1005) == 1  # t1 is idle past the cut, purged from the count
    assert await store.delete_session("t2") and await store.get_session("t2") is None
    assert not await store.delete_session("t2")


async def test_deleting_a_user_ends_its_sessions(store):
    await store.put_user(UserRecord("sip:a@atlanta.com", "h", 1.0))
    await store.put_session("ta", SessionRecord("sip:a@atlanta.com", 1000, 1000), 60)
    await store.put_session("tb", SessionRecord("sip:b@atlanta.com", 1000, 1000), 60)
    assert await store.delete_user("sip:a@atlanta.com")
    assert await store.get_session("ta") is None and await store.get_session("tb") is not None
    assert await store.count_sessions(since=0) == 1


async def test_failures_and_locks(store):
    assert [await store.incr_failures("user:x", 60) for _ in range(3)] == [1, 2, 3]
    await store.clear_failures("user:x")
    assert await store.incr_failures("user:x", 60) == 1
    assert await store.get_lock("user:x") is None
    await store.set_lock("user:x", 1234.5, 60)
    assert await store.get_lock("user:x") == 1234.5


async def test_peer_cache(store):
    entry = CachedParams("biloxi.com", b"\x00p", b"\x01s", b"\x02k", 3, 999.5)
    await store.put_peer_params(entry, 60)
    assert await store.get_peer_params("biloxi.com") == entry
    assert await store.get_peer_params("chicago.com") is None


async def test_memory_store_expires_on_its_clock():
    clock = ManualClock(0.0)
    s = MemoryPkgStore(clock)
    await s.put_session("t", SessionRecord("sip:a@atlanta.com", 0, 0), 10)
    await s.set_lock("k", 5.0, 10)
    await s.incr_failures("f", 10)
    clock.advance(11)
    assert await s.get_session("t") is None and await s.get_lock("k") is None
    assert await s.incr_failures("f", 10) == 1


def test_open_pkg_store_choices():
    assert isinstance(open_pkg_store("memory", domain="a"), MemoryPkgStore)
    with pytest.raises(ValueError):
        open_pkg_store("redis", domain="a")
    with pytest.raises(ValueError):
        open_pkg_store("etcd", domain="a")


async def test_epoch_and_mac_are_stored(store):
    await store.put_user(UserRecord("sip:a@atlanta.com", "h", 1.0, "epoch-1"))
    assert (await store.get_user("sip:a@atlanta.com")).epoch == "epoch-1"
    record = SessionRecord("sip:a@atlanta.com", 1000.125, 1000.5, "epoch-1", b"\x00mac\xff")
    await store.put_session("t", record, 60)
    assert await store.get_session("t") == record


async def test_memory_store_throttle_tables_stay_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """Failure counters and locks are keyed by what clients send (AOR, address): the memory store
    keeps at most MAX_THROTTLE_ENTRIES of each, dropping expired entries first, then the oldest."""
    import sipsec.stores.pkg as pkg_store

    monkeypatch.setattr(pkg_store, "MAX_THROTTLE_ENTRIES", 50)
    now = [1000.0]
    store = pkg_store.MemoryPkgStore(clock=lambda: now[0])
    await store.incr_failures("short-lived", 1.0)
    for i in range(200):
        assert await store.incr_failures(f"guess-{i}", 3600.0) == 1
        await store.set_lock(f"lock-{i}", now[0] + 60, 3600.0)
        now[0] += 0.01
    assert len(store._failures) <= 50 and len(store._locks) <= 50
    assert "short-lived" not in store._failures  # expired first
    assert await store.incr_failures("guess-199", 3600.0) == 2  # the newest are kept
    assert await store.get_lock("lock-199") is not None
