"""The proxy's location cache: its rules against a scripted locator, then two proxy replicas'
caches in front of one real location service (gRPC on port 0), and a real proxy's metrics."""

from __future__ import annotations

import asyncio

import pytest
from sipsec.stores.location import InvalidBinding, StoreUnavailable
from sipsec_location.config import LocationConfig
from sipsec_location.server import create_location_server
from sipsec_proxy.config import ProxyConfig
from sipsec_proxy.locator import BindRequest, CachingLocator, Contact, GrpcLocator, StoreLocator
from sipsec_proxy.server import ProxyServer, make_locator

BOB = "sip:bob@biloxi.com"


class Scripted:
    """A locator whose answers the test sets; counts lookups; can hold a lookup or a write open."""

    def __init__(self) -> None:
        self.contacts: dict[str, list[Contact]] = {}
        self.lookups = 0
        self.gate: asyncio.Event | None = None  # lookups and writes wait on it when set
        self.fail = False

    async def _wait(self) -> None:
        if self.gate is not None:
            await self.gate.wait()

    async def lookup(self, aor: str) -> list[Contact]:
        self.lookups += 1
        if self.fail:
            raise StoreUnavailable("down", "unavailable")
        if not aor.startswith("sip:"):
            raise InvalidBinding("bad AOR", "bad-aor")
        answer = list(self.contacts.get(aor.lower(), []))
        await self._wait()
        return answer

    async def bind(self, aor: str, item: BindRequest, call_id: str, cseq: int, received: str) -> None:
        await self._wait()
        self.contacts[aor.lower()] = [Contact(item.contact, 1000, item.expires)]

    async def unbind(self, aor: str, contact: str, instance_id: str = "", reg_id: int = 0) -> None:
        await self._wait()
        self.contacts.pop(aor.lower(), None)

    async def unbind_all(self, aor: str, call_id: str, cseq: int) -> None:
        await self.unbind(aor, "")

    async def close(self) -> None:
        pass


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _cache(inner: Scripted, clock: Clock, ttl_s: float = 1.0, **kw: object) -> CachingLocator:
    return CachingLocator(inner, ttl_s, clock=clock, **kw)  # type: ignore[arg-type]


async def test_a_lookup_is_answered_from_the_cache_until_the_ttl() -> None:
    inner, clock, results = Scripted(), Clock(), []
    inner.contacts[BOB] = [Contact("sip:bob@10.0.0.3:5060", 1000, 600)]
    cache = _cache(inner, clock, on_result=results.append)
    assert await cache.lookup(BOB) == inner.contacts[BOB]
    clock.now += 0.9
    inner.contacts[BOB] = [Contact("sip:bob@10.0.0.4:5060", 1000, 600)]  # changed behind the cache
    assert (await cache.lookup("sip:bob@BILOXI.com"))[0].uri == "sip:bob@10.0.0.3:5060"  # same AOR, cached
    assert inner.lookups == 1 and results == [False, True]
    clock.now += 0.2  # past the TTL: the store's current answer
    assert (await cache.lookup(BOB))[0].uri == "sip:bob@10.0.0.4:5060"
    assert inner.lookups == 2 and results == [False, True, False]


async def test_cached_expiry_counts_down_and_expired_contacts_are_not_returned() -> None:
    inner, clock = Scripted(), Clock()
    inner.contacts[BOB] = [Contact("sip:bob@10.0.0.3:5060", 1000, 600), Contact("sip:bob@10.0.0.9:5060", 500, 2)]
    cache = _cache(inner, clock, ttl_s=10.0)
    await cache.lookup(BOB)
    clock.now += 1.5
    assert [(c.uri, c.expires) for c in await cache.lookup(BOB)] == [
        ("sip:bob@10.0.0.3:5060", 599), ("sip:bob@10.0.0.9:5060", 1)]
    clock.now += 1.0  # the second contact has expired
    assert [c.uri for c in await cache.lookup(BOB)] == ["sip:bob@10.0.0.3:5060"]
    assert inner.lookups == 1
    inner.contacts[BOB] = [Contact("sip:bob@10.0.0.3:5060", 1000, 1)]
    cache_short = _cache(inner, clock, ttl_s=10.0)
    await cache_short.lookup(BOB)
    clock.now += 1.0  # every cached contact expired: looked up again
    await cache_short.lookup(BOB)
    assert inner.lookups == 3


async def test_empty_answers_and_errors_are_not_cached() -> None:
    inner, clock = Scripted(), Clock()
    cache = _cache(inner, clock)
    assert await cache.lookup(BOB) == []
    inner.contacts[BOB] = [Contact("sip:bob@10.0.0.3:5060", 1000, 600)]
    assert len(await cache.lookup(BOB)) == 1  # registered a moment ago: found at once
    inner.fail = True
    with pytest.raises(StoreUnavailable):
        await cache.lookup("sip:carol@biloxi.com")
    inner.fail = False
    assert await cache.lookup("sip:carol@biloxi.com") == []
    with pytest.raises(InvalidBinding):  # not an AOR: the inner locator's error, nothing cached
        await cache.lookup("tel:+15551234")
    assert inner.lookups == 5


async def test_this_proxys_registrations_are_seen_at_once() -> None:
    inner, clock = Scripted(), Clock()
    cache = _cache(inner, clock, ttl_s=60.0)
    await cache.bind(BOB, BindRequest("sip:bob@10.0.0.3:5060", 600), "c1", 1, "")
    assert [c.uri for c in await cache.lookup(BOB)] == ["sip:bob@10.0.0.3:5060"]
    await cache.bind("sip:bob@Biloxi.COM", BindRequest("sip:bob@10.0.0.4:5060", 600), "c1", 2, "")
    assert [c.uri for c in await cache.lookup(BOB)] == ["sip:bob@10.0.0.4:5060"]
    await cache.unbind(BOB, "sip:bob@10.0.0.4:5060")
    assert await cache.lookup(BOB) == []
    await cache.bind(BOB, BindRequest("sip:bob@10.0.0.5:5060", 600), "c1", 3, "")
    await cache.lookup(BOB)
    await cache.unbind_all(BOB, "c1", 4)
    assert await cache.lookup(BOB) == []


async def test_a_lookup_that_overlaps_a_registration_stores_nothing() -> None:
    inner, clock = Scripted(), Clock()
    inner.contacts[BOB] = [Contact("sip:bob@10.0.0.3:5060", 1000, 600)]
    cache = _cache(inner, clock, ttl_s=60.0)
    gate = inner.gate = asyncio.Event()
    slow = asyncio.ensure_future(cache.lookup(BOB))  # reads the old contact, then waits
    await asyncio.sleep(0)
    inner.gate = None
    await cache.bind(BOB, BindRequest("sip:bob@10.0.0.4:5060", 600), "c1", 1, "")  # completes meanwhile
    assert inner.contacts[BOB][0].uri == "sip:bob@10.0.0.4:5060"
    gate.set()
    assert (await asyncio.wait_for(slow, 5))[0].uri == "sip:bob@10.0.0.3:5060"  # its own (older) answer ...
    assert (await cache.lookup(BOB))[0].uri == "sip:bob@10.0.0.4:5060"  # ... was not stored


async def test_a_lookup_during_a_registration_stores_nothing() -> None:
    inner, clock = Scripted(), Clock()
    inner.contacts[BOB] = [Contact("sip:bob@10.0.0.3:5060", 1000, 600)]
    cache = _cache(inner, clock, ttl_s=60.0)
    gate = asyncio.Event()
    inner.gate = gate
    write = asyncio.ensure_future(cache.bind(BOB, BindRequest("sip:bob@10.0.0.4:5060", 600), "c1", 1, ""))
    await asyncio.sleep(0)  # the write is in progress, not applied
    inner.gate = None
    assert (await cache.lookup(BOB))[0].uri == "sip:bob@10.0.0.3:5060"  # the store's answer for now
    gate.set()
    await asyncio.wait_for(write, 5)
    assert (await cache.lookup(BOB))[0].uri == "sip:bob@10.0.0.4:5060"


async def test_the_cache_keeps_at_most_max_entries() -> None:
    inner, clock = Scripted(), Clock()
    for user in ("a", "b", "c"):
        inner.contacts[f"sip:{user}@biloxi.com"] = [Contact(f"sip:{user}@10.0.0.3", 1000, 600)]
    cache = _cache(inner, clock, max_entries=2)
    for user in ("a", "b", "a", "c"):  # c pushes out the least recently used: b
        await cache.lookup(f"sip:{user}@biloxi.com")
    assert inner.lookups == 3
    await cache.lookup("sip:a@biloxi.com")
    assert inner.lookups == 3
    await cache.lookup("sip:b@biloxi.com")
    assert inner.lookups == 4
    with pytest.raises(ValueError):
        CachingLocator(inner, 0)


async def test_two_replicas_in_front_of_one_location_service() -> None:
    """Replica A's own registration is seen by A at once; replica B sees it once its cache
    time has passed (the bounded staleness the README states); a real gRPC service behind."""
    server, port = create_location_server(LocationConfig(listen="127.0.0.1:0", metrics_port=-1, drain_seconds=0))
    await server.start()
    ttl = 0.3
    a = CachingLocator(GrpcLocator(f"127.0.0.1:{port}"), ttl)
    b = CachingLocator(GrpcLocator(f"127.0.0.1:{port}"), ttl)
    try:
        await a.bind(BOB, BindRequest("sip:bob@10.0.0.3:5060", 600), "c1", 1, "10.0.0.3:5060")
        assert [c.uri for c in await b.lookup(BOB)] == ["sip:bob@10.0.0.3:5060"]
        await a.bind(BOB, BindRequest("sip:bob@10.0.0.4:5060", 600, 900), "c1", 2, "10.0.0.4:5060")
        both = ["sip:bob@10.0.0.3:5060", "sip:bob@10.0.0.4:5060"]  # by q: 1.0, then 0.9
        assert [c.uri for c in await a.lookup(BOB)] == both
        assert [c.uri for c in await b.lookup(BOB)] == ["sip:bob@10.0.0.3:5060"]  # B's cached answer
        await asyncio.sleep(ttl + 0.05)
        assert [c.uri for c in await b.lookup(BOB)] == both
    finally:
        await a.close()
        await b.close()
        await server.stop(0)


async def test_make_locator_caches_remote_lookups_and_the_proxy_counts_them() -> None:
    assert isinstance(make_locator(ProxyConfig(location="memory")), StoreLocator)  # nothing to save in-process
    assert isinstance(make_locator(ProxyConfig(location="127.0.0.1:1", location_cache_ms=0)), GrpcLocator)
    with pytest.raises(ValueError, match="location_cache_ms"):
        ProxyConfig(location_cache_ms=-1)
    locator = make_locator(ProxyConfig(location="127.0.0.1:1", location_cache_ms=250))
    assert isinstance(locator, CachingLocator) and locator.ttl_s == 0.25
    inner, clock = Scripted(), Clock()
    inner.contacts[BOB] = [Contact("sip:bob@10.0.0.3:5060", 1000, 600)]
    proxy = ProxyServer(ProxyConfig(domains="biloxi.com", listen="127.0.0.3:0", metrics_port=-1),
                        locator=_cache(inner, clock))
    for _ in range(3):
        await proxy.locator.lookup(BOB)
    sample = proxy.metrics.registry.get_sample_value
    assert sample("sipsec_proxy_location_cache_lookups_total", {"result": "miss"}) == 1
    assert sample("sipsec_proxy_location_cache_lookups_total", {"result": "hit"}) == 2
    await locator.close()
