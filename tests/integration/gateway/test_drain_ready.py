"""Readiness that tells the truth, SIGTERM drain, re-register on demand, 503 for failed dependencies.

Real PKG, location, proxy and gateways per domain (:class:`TwoDomains`), the test-driver UA as
a plain phone; the store check runs against a real redis-server and against a port nobody serves.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time

from sipsec.aio.ports import spare_port
from sipsec_gateway.calls import CallState
from sipsec_gateway.store import RedisCallStore

from tests.integration.gateway.harness import TwoDomains, call, login, wait_for
from tests.integration.gateway.test_b2bua import _phone
from tests.sipua import CallState as PhoneState

ALICE = "sip:alice@atlanta.com"
BOB = "sip:bob@biloxi.com"


async def test_readyz_names_a_dead_pkg_and_an_unreachable_store_while_livez_stays_green(redis_url: str) -> None:
    dead = f"redis://127.0.0.1:{spare_port('127.0.0.1')}/0"
    kwargs = {"atlanta.com": {"call_store": RedisCallStore.from_url(dead)},
              "biloxi.com": {"call_store": RedisCallStore.from_url(redis_url)}}
    async with TwoDomains(gateway_kwargs=kwargs) as net:
        for store in (kwargs["atlanta.com"]["call_store"], kwargs["biloxi.com"]["call_store"]):
            net.push(store.aclose)
        ready = await net.biloxi.client.get("/readyz")
        assert ready.status_code == 200, ready.text
        assert ready.json()["failing"] == [] and ready.json()["checks"]["pkg"]["serving"] == 1

        t0 = time.monotonic()
        down = await net.atlanta.client.get("/readyz")
        assert time.monotonic() - t0 < 3.0  # the deadline (1 s), not a client's default timeout
        assert down.status_code == 503 and down.json()["failing"] == ["store"], down.text
        assert down.headers["content-type"] == "application/json"
        assert (await net.atlanta.client.get("/livez")).status_code == 200
        lookup = await net.atlanta.client.get("/v1/calls/0123456789abcdef")  # needs the store: JSON 503, not 500
        assert lookup.status_code == 503 and lookup.headers["retry-after"] == "5", lookup.text
        assert lookup.json()["error"]["reason"] == "unavailable"

        await net.biloxi.pkg.stop(0)
        no_pkg = await net.biloxi.client.get("/readyz")
        assert no_pkg.status_code == 503 and no_pkg.json()["failing"] == ["pkg"], no_pkg.text
        assert (await net.biloxi.client.get("/livez")).json()["status"] == "ok"


async def test_logging_in_again_repairs_a_lost_binding() -> None:
    async with TwoDomains() as net:
        await login(net.atlanta, "alice")
        await login(net.biloxi, "bob", auto_answer=True)
        gw = net.biloxi.gateway
        await gw.register(BOB, expires=0)  # the binding is gone (as after a location restart)
        lost = await call(net.atlanta, ALICE, BOB)
        assert lost["state"] == "failed"
        before = gw.metrics.sample("sipsec_gateway_registrations_total", side="proxy", outcome="ok")
        again = await login(net.biloxi, "bob", auto_answer=True)
        assert again["registered"] is True
        assert gw.metrics.sample("sipsec_gateway_registrations_total", side="proxy", outcome="ok") == before + 1
        assert (await call(net.atlanta, ALICE, BOB))["state"] == "established"


async def test_drain_refuses_new_calls_keeps_established_ones_then_ends_them() -> None:
    async with TwoDomains() as net:
        await login(net.atlanta, "alice")
        bob = await login(net.biloxi, "bob")
        phone, endpoint = await _phone(net.biloxi, "bob", bob["phone_password"], auto_answer=True)
        net.push(endpoint.close)
        up = await call(net.atlanta, ALICE, BOB)
        assert up["state"] == "established"
        held = next(iter(phone.calls.values()))
        phone.auto_answer = False  # the next call rings on the phone
        ringing = await call(net.atlanta, ALICE, BOB, wait=False)
        incoming = await asyncio.wait_for(phone.incoming.get(), 5)
        alice_ringing = net.atlanta.gateway.find_call(ringing["id"])
        assert alice_ringing is not None
        await wait_for(lambda: alice_ringing.state is CallState.RINGING)

        gw = net.biloxi.gateway
        drain = asyncio.create_task(gw.drain(1.0))
        await wait_for(lambda: gw.draining)
        refused = await call(net.atlanta, ALICE, BOB)  # a new INVITE while draining: 503 + Retry-After,
        # which the proxy passes upstream as 500 (RFC 3261 §16.7 step 6)
        assert refused["state"] == "failed" and refused["sip_status"] in (500, 503), refused
        assert gw.metrics.sample("sipsec_gateway_messages_dropped_total", kind="request", reason="draining") == 1
        ready = await net.biloxi.client.get("/readyz")
        assert ready.status_code == 503 and "sip" in ready.json()["failing"]
        assert held.state is PhoneState.ESTABLISHED  # calls in progress go on
        assert await drain == 4  # the deadline passed with both calls (two legs each) still up

        await gw.stop()
        alice_up = net.atlanta.gateway.find_call(up["id"])
        assert alice_up is not None
        await wait_for(lambda: alice_up.state is CallState.ENDED)  # BYE on the secured leg
        await wait_for(lambda: held.state is PhoneState.TERMINATED)  # and on the phone
        await wait_for(lambda: incoming.state is PhoneState.TERMINATED)  # the ringing phone: CANCEL
        assert 487 in incoming.statuses
        await wait_for(lambda: alice_ringing.state is CallState.FAILED)  # the caller: 503 (500 past its proxy)
        assert alice_ringing.status in (500, 503)


async def test_a_failed_store_answers_503_with_retry_after_never_silence(redis_url: str) -> None:
    dead = f"redis://127.0.0.1:{spare_port('127.0.0.1')}/0"
    from sipsec.stores.envelope import RedisReplayCache

    cache = RedisReplayCache.from_url(dead)
    async with TwoDomains(gateway_kwargs={"biloxi.com": {"replay_cache": cache}}) as net:
        net.push(cache.aclose)
        await login(net.atlanta, "alice")
        await login(net.biloxi, "bob", auto_answer=True)
        placed = await call(net.atlanta, ALICE, BOB)  # biloxi answers 503; its proxy passes on 500 (§16.7)
        assert placed["state"] == "failed" and placed["sip_status"] in (500, 503), placed
        failures = net.biloxi.gateway.metrics.sample("sipsec_gateway_request_failures_total", kind="dependency")
        assert failures >= 1


async def test_a_replica_name_restores_users_on_another_address_and_drops_the_old_binding() -> None:
    from sipsec_gateway.store import MemoryCallStore

    from tests.integration.gateway.harness import gateway_config, start_gateway

    kept = MemoryCallStore()  # the store a restart finds (Redis in production)
    async with TwoDomains() as net:
        config = gateway_config("biloxi.com", net.pkg_ports["biloxi.com"], net.biloxi.proxy_port,
                                pkg_fingerprint=net.biloxi.gateway.config.pkg_fingerprint, replica="bob-gw-0")
        first, client = await start_gateway(config, call_store=kept)
        net.push(client.aclose)
        await first.login(BOB, "correct horse battery staple", auto_answer=True)
        old = [b.contact for b in await net.biloxi.location.store.lookup(BOB)]
        assert len(old) == 1
        await first.stop(0)  # gone without unregistering (as if killed); its users stay kept

        second, client2 = await start_gateway(config, call_store=kept)  # port 0: another address
        net.push(second.stop, 0)
        net.push(client2.aclose)
        assert second.sip_address != first.sip_address
        await wait_for(lambda: BOB in second.users and second.settings[BOB].registered, 10)
        for _ in range(50):
            now = [b.contact for b in await net.biloxi.location.store.lookup(BOB)]
            if old[0] not in now:
                break
            await asyncio.sleep(0.1)
        assert len(now) == 1 and now != old  # the first instance's binding is gone at once
        await login(net.atlanta, "alice")
        assert (await call(net.atlanta, ALICE, BOB))["state"] == "established"
        ready = await client2.get("/readyz")
        assert ready.status_code == 200 and ready.json()["checks"]["users"]["kept"] == 1


async def test_a_gateway_at_its_call_leg_limit_refuses_new_calls_and_keeps_the_ones_up() -> None:
    """SIPSEC_GATEWAY_MAX_CALL_LEGS bounds the calls (and so the memory) a gateway holds: a new
    INVITE past it gets 503 + Retry-After, a call placed through the API a JSON 503; the calls
    in progress go on, and once one ends a new call is admitted again."""
    limits = {"atlanta.com": {"max_call_legs": 1}, "biloxi.com": {"max_call_legs": 2}}
    async with TwoDomains(gateway_overrides=limits) as net:
        await login(net.atlanta, "alice")
        bob = await login(net.biloxi, "bob")
        phone, endpoint = await _phone(net.biloxi, "bob", bob["phone_password"], auto_answer=True)
        net.push(endpoint.close)
        up = await call(net.atlanta, ALICE, BOB)  # one leg at atlanta; two at biloxi (secured + phone)
        assert up["state"] == "established", up
        assert net.biloxi.gateway.at_call_limit() and net.atlanta.gateway.at_call_limit()

        placed = await net.atlanta.client.post("/v1/calls", json={"from": ALICE, "to": BOB})
        assert placed.status_code == 503 and "SIPSEC_GATEWAY_MAX_CALL_LEGS" in placed.text, placed.text

        # atlanta's limit lifted: its INVITE reaches biloxi, which is full: 503 + Retry-After
        # (passed upstream as 500 by the proxy, RFC 3261 §16.7 step 6)
        net.atlanta.gateway.config = dataclasses.replace(net.atlanta.gateway.config, max_call_legs=0)
        refused = await call(net.atlanta, ALICE, BOB)
        assert refused["state"] == "failed" and refused["sip_status"] in (500, 503), refused
        gw = net.biloxi.gateway
        assert gw.metrics.sample("sipsec_gateway_messages_dropped_total", kind="request", reason="call-limit") == 1
        held = next(iter(phone.calls.values()))
        assert held.state is PhoneState.ESTABLISHED and len(phone.calls) == 1  # the phone never rang again

        hung = await net.atlanta.client.delete(f"/v1/calls/{up['id']}")
        assert hung.status_code == 200, hung.text
        await wait_for(lambda: not gw.at_call_limit())
        again = await call(net.atlanta, ALICE, BOB)
        assert again["state"] == "established", again
