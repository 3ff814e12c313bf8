"""Each replica's index of its call records (:meth:`RedisCallStore.replica_calls`), on a real
redis-server with the gateway's ACL user (GET/SET/DEL/MGET only): setup records, sealing, and
one round trip per change."""

from __future__ import annotations

from typing import Any

from sipsec.stores.access import open_redis
from sipsec_gateway.store import INDEX_BUCKETS, MemoryCallStore, RedisCallStore

REPLICA = "biloxi.com|127.0.0.3:5070"
OTHER = "biloxi.com|127.0.0.3:5071"


def _store(acl_redis: Any, key: bytes = b"k" * 32) -> RedisCallStore:
    client = open_redis(acl_redis.url_for("gateway"), password_file=acl_redis.password_files["gateway"])
    return RedisCallStore(client, sealing_key=key)


def _record(call_id: str, sip_call_id: str, **extra: Any) -> dict[str, Any]:
    return {"id": call_id, "call_id": sip_call_id, "side": "plain", "direction": "outgoing", **extra}


async def test_the_index_finds_setup_and_established_records_and_forgets_deleted_ones(acl_redis: Any) -> None:
    store = _store(acl_redis)
    try:
        setup = _record("a1", "cid-a", setup=True, invite="INVITE sip:bob@127.0.0.3 SIP/2.0\r\n\r\n")
        await store.put("a1", "cid-a", setup, 60, REPLICA)
        await store.put("b2", "cid-b", _record("b2", "cid-b", local="<sip:a@x>;tag=1"), 60, REPLICA)
        await store.put("c3", "cid-c", _record("c3", "cid-c"), 60, OTHER)
        # a setup record is no dialog: not found by id or Call-ID (nothing to continue), only by the index
        assert await store.get("a1") is None and await store.by_call_id("cid-a") is None
        assert (await store.by_call_id("cid-b") or {}).get("id") == "b2"

        restarted = _store(acl_redis)  # a new process: reads the index from Redis
        try:
            assert sorted(r["id"] for r in await restarted.replica_calls(REPLICA)) == ["a1", "b2"]
            assert [r["id"] for r in await restarted.replica_calls(OTHER)] == ["c3"]
            assert await _store(acl_redis, b"o" * 32).replica_calls(REPLICA) == []  # sealed: another key reads none
        finally:
            await restarted.aclose()

        await store.put("a1", "cid-a", _record("a1", "cid-a"), 60, REPLICA)  # established: replaces the setup record
        assert (await store.get("a1") or {}).get("setup") is None
        await store.delete("a1", "cid-a", REPLICA)
        await store.delete("b2", "cid-b", REPLICA)
        again = _store(acl_redis)
        try:
            assert await again.replica_calls(REPLICA) == []
        finally:
            await again.aclose()
    finally:
        await store.aclose()


async def test_the_index_is_sealed_and_costs_no_round_trip_of_its_own(acl_redis: Any) -> None:
    store = _store(acl_redis)
    executes = 0
    real = store.client.pipeline

    def counting(*args: Any, **kwargs: Any) -> Any:
        pipe = real(*args, **kwargs)
        run = pipe.execute

        async def execute(*a: Any, **k: Any) -> Any:
            nonlocal executes
            executes += 1
            return await run(*a, **k)

        pipe.execute = execute
        return pipe

    store.client.pipeline = counting  # type: ignore[method-assign]
    gets = 0
    real_get = store.client.get

    async def counting_get(*args: Any, **kwargs: Any) -> Any:
        nonlocal gets
        gets += 1
        return await real_get(*args, **kwargs)

    store.client.get = counting_get  # type: ignore[method-assign]
    try:
        await store.replica_calls(REPLICA)  # what a start does: every bucket read (one MGET)
        gets_before = executes
        for i in range(10):
            await store.put(f"id{i}", f"cid{i}", _record(f"id{i}", f"cid{i}"), 60, REPLICA)
            await store.put(f"id{i}", f"cid{i}", _record(f"id{i}", f"cid{i}", acked=True), 60, REPLICA)
        for i in range(10):
            await store.delete(f"id{i}", f"cid{i}", REPLICA)
        # one MULTI per put (record, Call-ID index and, for a new id, its bucket) and per delete
        assert executes - gets_before == 30
        assert gets == 0  # the buckets were read at start: no GET of their own afterwards
        await store.put("kept", "cid-kept", _record("kept", "cid-kept"), 60, REPLICA)
        values = [v for v in await store.client.mget(
            [store._index_key(REPLICA, b) for b in range(INDEX_BUCKETS)]) if v]
        assert values  # buckets written (sealed JSON lists)
        assert not any(b"kept" in v or b"id0" in v for v in values)  # call ids not in clear
        assert "127.0.0.3" not in store._index_key(REPLICA, 0)  # nor the replica's name
    finally:
        await store.aclose()


async def test_the_memory_store_keeps_an_index_too() -> None:
    store = MemoryCallStore()
    await store.put("a1", "cid-a", _record("a1", "cid-a", setup=True), 60, REPLICA)
    await store.put("b2", "cid-b", _record("b2", "cid-b"), 60, REPLICA)
    assert await store.get("a1") is None and await store.by_call_id("cid-a") is None
    assert sorted(r["id"] for r in await store.replica_calls(REPLICA)) == ["a1", "b2"]
    await store.delete("a1", "cid-a", REPLICA)
    assert [r["id"] for r in await store.replica_calls(REPLICA)] == ["b2"]
    assert await store.replica_calls(OTHER) == []
