"""Dialog state in a real Redis: secured calls work, and another gateway replica continues a dialog."""

from __future__ import annotations

import redis.asyncio as aioredis
from sipsec_gateway.calls import CallState

from tests.integration.gateway.harness import (
    PASSWORD,
    TwoDomains,
    call,
    gateway_config,
    login,
    redis_stores,
    start_gateway,
    wait_for,
)

ALICE = "sip:alice@atlanta.com"
BOB = "sip:bob@biloxi.com"
SECRET = "00" * 32


async def test_dialog_keys_in_redis_and_a_second_replica_hangs_up(redis_url: str) -> None:
    overrides = {"biloxi.com": {"contact_secret": SECRET}}
    async with TwoDomains(redis_url=redis_url, gateway_overrides=overrides) as net:
        await login(net.atlanta, "alice")
        await login(net.biloxi, "bob", auto_answer=True)
        placed = await call(net.atlanta, ALICE, BOB)
        assert placed["state"] == "established" and placed["secure"]

        r = aioredis.Redis.from_url(redis_url)
        try:
            assert await r.keys("sipsec:atlanta.com:envelope:dlg:*")
            assert await r.keys("sipsec:biloxi.com:envelope:dlg:*")
            assert await r.keys("sipsec:biloxi.com:gateway:call:*")
        finally:
            await r.aclose()

        # a second biloxi replica: same Redis prefix and contact secret, bob logged in (not registered)
        bob_call = next(c for c in net.biloxi.gateway.secure.calls.values() if c.direction == "incoming")
        stores = redis_stores(redis_url, "biloxi.com")
        for store in stores.values():
            net.push(store.aclose)
        config = gateway_config("biloxi.com", net.pkg_ports["biloxi.com"], net.biloxi.proxy_port,
                                contact_secret=SECRET)
        replica, client = await start_gateway(config, **stores)
        net.push(replica.stop, 0)
        net.push(client.aclose)
        await replica.login(BOB, PASSWORD, register=False)
        assert replica.find_call(bob_call.id) is None  # it never saw this call
        seen = await client.get(f"/v1/calls/{bob_call.id}")
        assert seen.status_code == 200 and seen.json()["replica"] == "other"

        hung = await client.delete(f"/v1/calls/{bob_call.id}")
        assert hung.status_code == 200 and hung.json()["sip_status"] == 200, hung.text
        alice_call = net.atlanta.gateway.find_call(placed["id"])
        assert alice_call is not None
        await wait_for(lambda: alice_call.state is CallState.ENDED)
        assert alice_call.reason == "remote hangup"
        # the BYE and its 200 were sealed under the dialog key the first replica stored
        view = replica.wire_view(bob_call.id)
        assert [m["secured"] for m in view["messages"]] == [True, True]
        assert view["messages"][1]["signer"] == ALICE
