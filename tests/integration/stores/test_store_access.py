"""Store access under load, against a real redis-server: a bounded pool that waits instead of
failing, socket timeouts, and every Redis failure a :class:`StoreUnavailable` that is counted."""

from __future__ import annotations

import asyncio
import os
import time

import pytest
import redis.asyncio as aioredis
from sipsec.aio.ports import spare_port
from sipsec.config import ConfigError
from sipsec.envelope import DialogKey
from sipsec.stores.access import RedisPoolConfig, StoreUnavailable, open_redis, store_metrics
from sipsec.stores.envelope import RedisDialogStore, RedisReplayCache

from tests.conftest import RedisServer

SMALL = RedisPoolConfig(max_connections=8, pool_timeout_s=5.0, socket_timeout_s=2.0, connect_timeout_s=2.0)


def _errors(store: str, op: str, kind: str) -> float:
    value = store_metrics().registry.get_sample_value(
        "sipsec_store_errors_total", {"store": store, "op": op, "kind": kind})
    return value or 0.0


def _ops(store: str, op: str) -> float:
    value = store_metrics().registry.get_sample_value(
        "sipsec_store_operation_seconds_count", {"store": store, "op": op})
    return value or 0.0


async def test_500_concurrent_remembers_on_a_small_pool_all_succeed(redis_url: str) -> None:
    """The issue's reproduction: 500 concurrent ``remember()`` calls (400 failed with the
    client's default pool, which raises MaxConnectionsError when full)."""
    client = open_redis(redis_url, pool=SMALL)
    cache = RedisReplayCache(client)
    before = _ops("replay", "remember")
    try:
        tokens = [os.urandom(16) for _ in range(500)]
        results = await asyncio.wait_for(
            asyncio.gather(*(cache.remember(t, 30, time.time()) for t in tokens), return_exceptions=True), 30)
        errors = [r for r in results if isinstance(r, BaseException)]
        assert errors == []
        assert results == [True] * 500
        admin = aioredis.Redis.from_url(redis_url)
        try:  # the pool's connections, still open, and the admin's own
            assert (await admin.info("clients"))["connected_clients"] <= SMALL.max_connections + 1
        finally:
            await admin.aclose()
        # the same tokens again: every one a replay, still no error
        again = await asyncio.gather(*(cache.remember(t, 30, time.time()) for t in tokens))
        assert again == [False] * 500
        assert _ops("replay", "remember") - before == 1000
    finally:
        await cache.aclose()


async def test_a_pool_held_busy_past_its_timeout_is_store_unavailable(redis_url: str) -> None:
    client = open_redis(redis_url, pool=RedisPoolConfig(max_connections=1, pool_timeout_s=0.2, socket_timeout_s=5.0))
    blocker = asyncio.ensure_future(client.blpop(["sipsec:test:never"], timeout=1))
    cache = RedisReplayCache(client)
    before = _errors("replay", "remember", "pool_timeout")
    try:
        await asyncio.sleep(0.1)  # the blocking command holds the pool's one connection
        t0 = time.monotonic()
        with pytest.raises(StoreUnavailable) as caught:
            await cache.remember(b"token", 30, time.time())
        assert 0.15 <= time.monotonic() - t0 < 1.5
        assert caught.value.kind == "pool_timeout"
        assert caught.value.retry_after_s >= 1
        assert _errors("replay", "remember", "pool_timeout") == before + 1
    finally:
        await blocker
        await cache.aclose()


async def test_unreachable_redis_is_store_unavailable_not_a_crash() -> None:
    port = spare_port("127.0.0.1", tcp=True)
    store = RedisDialogStore(open_redis(f"redis://127.0.0.1:{port}/0",
                                        pool=RedisPoolConfig(connect_timeout_s=0.5)))
    before = _errors("dialog", "get", "connection")
    try:
        with pytest.raises(StoreUnavailable) as caught:
            await store.get(b"\x01" * 16, time.time())
        assert caught.value.kind == "connection"
        assert _errors("dialog", "get", "connection") == before + 1
    finally:
        await store.aclose()


async def test_a_redis_too_slow_to_answer_is_a_timeout(redis_server: RedisServer) -> None:
    redis_server.flush()
    admin = aioredis.Redis(host="127.0.0.1", port=redis_server.port)
    store = RedisDialogStore(open_redis(redis_server.url, pool=RedisPoolConfig(socket_timeout_s=0.2)))
    dialog = DialogKey(b"k" * 32, b"\x02" * 8, "call@x", "sip:a@x.com", "sip:b@y.com", False, time.time(), b"")
    try:
        await admin.execute_command("CLIENT", "PAUSE", "1500", "WRITE")
        with pytest.raises(StoreUnavailable) as caught:
            await store.put(dialog, 30, time.time())
        assert caught.value.kind == "timeout"
    finally:
        await admin.execute_command("CLIENT", "UNPAUSE")
        await admin.aclose()
        await store.aclose()


def test_pool_settings_come_from_the_environment_and_are_checked() -> None:
    config = RedisPoolConfig.from_env({"SIPSEC_REDIS_MAX_CONNECTIONS": "5", "SIPSEC_REDIS_POOL_TIMEOUT_S": "0.5"})
    assert (config.max_connections, config.pool_timeout_s) == (5, 0.5)
    with pytest.raises(ConfigError, match="SIPSEC_REDIS_MAX_CONNECTIONS"):
        RedisPoolConfig.from_env({"SIPSEC_REDIS_MAX_CONNECTIONS": "0"})
    with pytest.raises(ConfigError):
        RedisPoolConfig.from_env({"SIPSEC_REDIS_SOCKET_TIMEOUT_S": "-1"})
    client = open_redis("redis://127.0.0.1:1/0", pool=config)
    pool = client.connection_pool
    assert isinstance(pool, aioredis.BlockingConnectionPool)
    assert pool.max_connections == 5 and pool.timeout == 0.5


async def test_a_first_requests_tokens_and_dialog_go_in_one_round_trip(redis_url: str) -> None:
    client = open_redis(redis_url)
    dialogs, replay = RedisDialogStore(client, sealing_key=os.urandom(32)), RedisReplayCache(client)
    dialog = DialogKey(os.urandom(32), os.urandom(8), "c@x", "sip:a@x.com", "sip:b@y.com", False, time.time())
    sent: list[int] = []
    real = client.connection_pool.connection_class.send_packed_command

    async def counting(self: object, command: object, check_health: bool = True) -> None:
        sent.append(1)
        await real(self, command, check_health)  # type: ignore[arg-type]

    try:
        await client.ping()
        client.connection_pool.connection_class.send_packed_command = counting  # type: ignore[method-assign]
        try:
            assert await replay.remember_all_and_keep([b"own", b"body"], 30, time.time(), dialogs, dialog, 60) is True
            assert len(sent) == 1
        finally:
            client.connection_pool.connection_class.send_packed_command = real  # type: ignore[method-assign]
        assert await dialogs.get(dialog.key_id, time.time()) == dialog
        # a replay after the BYE deleted the dialog: refused, and the dialog stays gone
        await dialogs.delete(dialog.key_id)
        assert await replay.remember_all_and_keep([b"own", b"body"], 30, time.time(), dialogs, dialog, 60) is False
        assert await dialogs.get(dialog.key_id, time.time()) is None
        # stores on different clients: not combined, the caller does the two steps
        other = RedisDialogStore(open_redis(redis_url))
        assert await replay.remember_all_and_keep([b"x"], 30, time.time(), other, dialog, 60) is None
        await other.aclose()
    finally:
        await replay.aclose()
