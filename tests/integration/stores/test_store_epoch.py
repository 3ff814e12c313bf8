"""Store epochs (``sipsec.stores.epoch``): a Redis emptied under a service is found and reported.

Real ACL-enabled redis-server, each store as its own ACL user (the epoch key lies inside its key
patterns); the "emptying" is a FLUSHALL by the fixture's admin user, as a Redis restarted without
its data looks to the services. The location service's readiness follows the epoch.
"""

from __future__ import annotations

import asyncio
import logging

import pytest
from prometheus_client import CollectorRegistry
from sipsec.stores.epoch import StoreEmptied, store_epoch
from sipsec.stores.location import MemoryLocationStore, RedisLocationStore
from sipsec.stores.pkg import RedisPkgStore
from sipsec_location.config import LocationConfig
from sipsec_location.server import create_location_server

from tests.conftest import AclRedisServer


def _pkg(acl: AclRedisServer) -> RedisPkgStore:
    return RedisPkgStore(acl.url_for("pkg"), "atlanta.com", password_file=acl.password_files["pkg"])


async def test_an_emptied_store_is_reported_once_and_held_not_ready(acl_redis: AclRedisServer,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    store = _pkg(acl_redis)
    registry = CollectorRegistry()
    try:
        epoch = store_epoch(store, "pkg", "user accounts", registry=registry)
        assert epoch is not None
        epoch.hold_s = 0.5
        await epoch.check()  # the first epoch is written
        first = epoch.epoch
        await epoch.check()
        assert epoch.resets == 0
        # another node (or this one restarted) adopts the same epoch: no reset
        again = store_epoch(_pkg(acl_redis), "pkg", "user accounts", registry=CollectorRegistry())
        assert again is not None
        await again.check()
        assert again.epoch == first
        await again.redis.aclose()

        acl_redis.flush()  # the store emptied under the service
        caplog.set_level(logging.ERROR, logger="sipsec.stores.epoch")
        with pytest.raises(StoreEmptied):
            await epoch.check()
        assert epoch.resets == 1 and epoch.epoch != first
        assert registry.get_sample_value("sipsec_store_epoch_resets_total", {"store": "pkg"}) == 1
        lines = [r.getMessage() for r in caplog.records]
        assert len(lines) == 1 and "user accounts LOST" in lines[0], lines
        with pytest.raises(StoreEmptied):  # held for hold_s, reported once
            await epoch.check()
        assert epoch.resets == 1 and len(caplog.records) == 1
        await asyncio.sleep(0.6)
        await epoch.check()  # past the hold: ready again, on the new epoch
    finally:
        await store.close()


async def test_a_store_that_can_republish_does_so_and_stays_ready(acl_redis: AclRedisServer) -> None:
    store = RedisLocationStore(acl_redis.url_for("location"), password_file=acl_redis.password_files["location"])
    calls = []

    async def republish() -> bool:
        calls.append(1)
        return True

    try:
        epoch = store_epoch(store, "location", "registrations", republish=republish, registry=CollectorRegistry())
        assert epoch is not None
        await epoch.check()
        acl_redis.flush()
        await epoch.check()  # no raise: what was lost is back
        assert calls == [1] and epoch.resets == 1
    finally:
        await store.close()


def test_a_memory_store_has_no_epoch() -> None:
    assert store_epoch(MemoryLocationStore(), "location", "registrations") is None


async def test_location_readiness_follows_the_epoch(acl_redis: AclRedisServer) -> None:
    config = LocationConfig(listen="127.0.0.1:0", metrics_port=-1, drain_seconds=0, store="redis",
                            redis_url=acl_redis.url_for("location"),
                            redis_password_file=acl_redis.password_files["location"])
    server, _ = create_location_server(config)
    assert server.epoch is not None
    server.epoch.hold_s = 2.0
    await server.start()
    try:
        async def state(want: bool, timeout: float = 5.0) -> bool:
            loop = asyncio.get_running_loop()
            end = loop.time() + timeout
            while loop.time() < end:
                if server.readiness.states.get("store_epoch") is want:
                    return True
                await asyncio.sleep(0.05)
            return False

        assert await state(True)
        acl_redis.flush()
        assert await state(False), server.readiness.states
        assert not server.readiness.ready
        assert await state(True), "ready again once the hold is over"
    finally:
        await server.stop(0)
