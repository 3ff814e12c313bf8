"""In-memory dialog store and replay cache: expiry against the passed-in clock, bounds, records."""

from __future__ import annotations

import os

import pytest
from sipsec.envelope import DialogKey
from sipsec.stores.envelope import (
    DialogStore,
    InMemoryDialogStore,
    InMemoryReplayCache,
    ReplayCache,
)


def dialog(call_id: str = "c1@x") -> DialogKey:
    return DialogKey(os.urandom(32), os.urandom(8), call_id, "sip:a@x.example", "sip:b@y.example", True, 5.0)


async def test_dialog_store_put_get_expire_delete() -> None:
    store = InMemoryDialogStore()
    assert isinstance(store, DialogStore)
    d = dialog()
    await store.put(d, 10, now=100)
    assert await store.get(d.key_id, now=109.9) == d
    assert await store.get(d.key_id, now=110) is None  # expired
    await store.put(d, 10, now=200)
    await store.delete(d.key_id)
    assert await store.get(d.key_id, now=200) is None
    await store.delete(b"unknown!")  # ignored


async def test_dialog_store_is_bounded() -> None:
    store = InMemoryDialogStore(max_entries=3)
    dialogs = [dialog(f"c{i}") for i in range(5)]
    for d in dialogs:
        await store.put(d, 100, now=0)
    assert len(store) == 3
    assert await store.get(dialogs[0].key_id, now=1) is None
    assert await store.get(dialogs[4].key_id, now=1) == dialogs[4]


async def test_replay_cache_remembers_until_ttl() -> None:
    cache = InMemoryReplayCache(max_entries=2)
    assert isinstance(cache, ReplayCache)
    assert await cache.remember(b"n1", 10, now=0)
    assert not await cache.remember(b"n1", 10, now=9)
    assert await cache.remember(b"n1", 10, now=10)  # the window has passed
    assert await cache.remember(b"n2", 10, now=10)
    assert await cache.remember(b"n3", 10, now=10)  # full: the oldest goes
    assert len(cache) == 2


def test_dialog_record_round_trip_and_views() -> None:
    d = dialog()
    assert DialogKey.from_bytes(d.to_bytes()) == d
    r = d.reversed()
    assert (r.local_aor, r.peer_aor, r.local_is_caller) == (d.peer_aor, d.local_aor, False)
    assert r.caller_aor == d.caller_aor == d.local_aor
    assert d.outer_call_id() == r.outer_call_id() and len(d.outer_call_id()) == 16  # 96 bits
    assert d.outer_tag("abc") != d.outer_tag("abd") and len(d.outer_tag("abc")) == 8  # 48 bits
    assert d.key.hex() not in repr(d)
    for bad in [b"", b"{}", b"not json", b'{"k": 1}']:
        with pytest.raises(ValueError):
            DialogKey.from_bytes(bad)
    with pytest.raises(ValueError):
        DialogKey(b"short", os.urandom(8), "c", "a", "b", True)
