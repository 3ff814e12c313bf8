"""alice@atlanta.com calls bob@biloxi.com through the two gateways' control APIs: secured end to end."""

from __future__ import annotations

import asyncio

import httpx

from tests.integration.gateway.harness import TwoDomains, call, login, wait_for

ALICE = "sip:alice@atlanta.com"
BOB = "sip:bob@biloxi.com"


async def _wait_state(client, call_id: str, state: str, timeout: float = 5.0) -> dict:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        doc = (await client.get(f"/v1/calls/{call_id}")).json()
        if doc["state"] == state or asyncio.get_running_loop().time() > deadline:
            return doc
        await asyncio.sleep(0.02)


async def test_secured_call_end_to_end_and_proxies_see_only_outer_messages() -> None:
    async with TwoDomains() as net:
        await login(net.atlanta, "alice")
        await login(net.biloxi, "bob", auto_answer=True)
        for d in (net.atlanta, net.biloxi):
            d.tap.clear()  # registrations done: from here on, only call traffic

        placed = await call(net.atlanta, ALICE, BOB)
        assert placed["state"] == "established", placed
        assert placed["secure"] is True and placed["sip_status"] == 200
        assert placed["setup_ms"] > 0
        assert placed["crypto"]["seal_kem"]["count"] == 1
        assert placed["crypto"]["open_kek"]["count"] >= 2  # 180 and 200
        assert placed["wire"]["bytes_sent"] > 0 and placed["wire"]["bytes_received"] > 0

        bob_gw = net.biloxi.gateway
        incoming = [c for c in bob_gw.secure.calls.values() if c.direction == "incoming"]
        assert len(incoming) == 1 and incoming[0].secure
        assert incoming[0].peer_aor == ALICE  # the verified signer, not anything on the wire

        hung = await net.atlanta.client.delete(f"/v1/calls/{placed['id']}")
        assert hung.status_code == 200 and hung.json()["sip_status"] == 200
        doc = await _wait_state(net.biloxi.client, incoming[0].id, "ended")
        assert doc["state"] == "ended"

        # what the proxies carried: outer messages only
        wire = net.atlanta.tap.text() + net.biloxi.tap.text()
        assert b"INVITE sip:bob@biloxi.com" in wire  # routing stays readable
        assert wire.count(b"application/pkcs7-mime") >= 6
        lowered = wire.lower()
        for secret in (b"alice", b"v=0", b"m=audio", b"application/sdp", incoming[0].call_id.encode()):
            assert secret not in lowered, secret

        # the wire view the demo shows: outer as sent, inner as opened with the verified signer
        assert bob_gw.metrics.sample("sipsec_gateway_dialogs", secure="true") == 0
        assert net.atlanta.gateway.metrics.sample("sipsec_gateway_dialogs", secure="true") == 0
        view = bob_gw.wire_view(incoming[0].id, [net.atlanta.tap, net.biloxi.tap])
        # each proxy saw this call's INVITE, 180, 200, ACK, BYE, 200 (plus its own 100s, none sent back)
        for proxy in view["proxies"]:
            seen = [m.split("\r\n", 1)[0] for m in proxy["messages"]]
            assert seen[0] == "INVITE sip:bob@biloxi.com SIP/2.0" or seen[0].startswith("INVITE sip:u"), seen
            assert any(line.startswith("BYE ") for line in seen), seen
            # the route set comes from the outer Record-Route only: each in-dialog request
            # crosses each proxy once (a doubled route set made ACK and BYE pass twice)
            assert sum(line.startswith("ACK ") for line in seen) == 1, seen
            assert sum(line.startswith("BYE ") for line in seen) == 1, seen
            assert all("alice" not in m for m in proxy["messages"])
        invite = view["messages"][0]
        assert invite["direction"] == "received" and invite["secured"]
        assert invite["signer"] == ALICE
        assert "sip:anonymous@anonymous.invalid" in invite["outer"]
        assert "alice@atlanta.com" in invite["inner"] and "m=audio" in invite["inner"]

        server = net.atlanta.gateway.metrics.serve(0)  # the metrics port (never the control API's)
        try:
            async with httpx.AsyncClient(timeout=10) as http:
                metrics = (await http.get(f"http://127.0.0.1:{server.server_port}/metrics")).text
        finally:
            server.shutdown()
        assert 'sipsec_gateway_call_setups_total{outcome="answered",secure="true"} 1.0' in metrics
        assert "sipsec_gateway_call_setup_duration_seconds_bucket" in metrics
        assert "sipsec_gateway_users_logged_in 1.0" in metrics


async def test_threshold_pkg_keys_combined_from_t_nodes_with_one_node_down() -> None:
    # biloxi.com runs a 2-of-3 threshold PKG, node 3 is down: bob's keys come from nodes 1 and 2
    async with TwoDomains(threshold={"biloxi.com": (2, 3, frozenset({3}))}) as net:
        assert net.biloxi.gateway.pkg.threshold_mode
        await login(net.atlanta, "alice", auto_answer=True)
        bob = await login(net.biloxi, "bob", auto_answer=True)
        assert len(bob["key_periods"]) == 2
        placed = await call(net.atlanta, ALICE, BOB)
        assert placed["state"] == "established" and placed["secure"]
        back = await call(net.biloxi, BOB, ALICE)  # bob signs and opens with the combined keys
        assert back["state"] == "established" and back["secure"]


async def test_concurrent_calls_in_both_directions() -> None:
    async with TwoDomains() as net:
        await login(net.atlanta, "alice", auto_answer=True)
        await login(net.biloxi, "bob", auto_answer=True)
        placed = await asyncio.gather(
            *(call(net.atlanta, ALICE, BOB) for _ in range(6)), *(call(net.biloxi, BOB, ALICE) for _ in range(6)))
        assert [p["state"] for p in placed] == ["established"] * 12
        assert len({p["id"] for p in placed}) == 12
        for gw in (net.atlanta.gateway, net.biloxi.gateway):
            assert gw.metrics.sample("sipsec_gateway_dialogs", secure="true") == 12  # 6 placed + 6 answered
        hung = await asyncio.gather(*(
            (net.atlanta if p["from"] == ALICE else net.biloxi).client.delete(f"/v1/calls/{p['id']}") for p in placed))
        assert [h.json()["sip_status"] for h in hung] == [200] * 12
        for gw in (net.atlanta.gateway, net.biloxi.gateway):
            await wait_for(lambda gw=gw: gw.metrics.sample("sipsec_gateway_dialogs", secure="true") == 0)


async def test_call_between_two_users_of_the_same_gateway(redis_url: str) -> None:
    # caller and callee share the outer Call-ID, the dialog key id and (here) one Redis
    async with TwoDomains(redis_url=redis_url) as net:
        await login(net.atlanta, "alice")
        await login(net.atlanta, "carol", auto_answer=True)
        placed = await call(net.atlanta, ALICE, "sip:carol@atlanta.com")
        assert placed["state"] == "established" and placed["secure"], placed
        gw = net.atlanta.gateway
        carol = next(c for c in gw.secure.calls.values() if c.direction == "incoming")
        assert carol.local_aor == "sip:carol@atlanta.com" and carol.peer_aor == ALICE
        hung = await net.atlanta.client.delete(f"/v1/calls/{carol.id}")  # the callee hangs up
        assert hung.status_code == 200 and hung.json()["sip_status"] == 200
        alice_call = gw.find_call(placed["id"])
        assert alice_call is not None
        await wait_for(lambda: alice_call.state.value == "ended")
        assert gw.metrics.sample("sipsec_gateway_envelope_rejections_total", reason="dialog-mismatch") == 0


async def test_secured_call_over_tcp_between_gateways_and_proxies() -> None:
    async with TwoDomains(tcp=True) as net:
        await login(net.atlanta, "alice")
        await login(net.biloxi, "bob", auto_answer=True)
        placed = await call(net.atlanta, ALICE, BOB)
        assert placed["state"] == "established" and placed["secure"], placed
        assert (await net.atlanta.client.delete(f"/v1/calls/{placed['id']}")).json()["sip_status"] == 200
        for d in (net.atlanta, net.biloxi):
            assert "TCP" in d.gateway.secure.endpoint.transports
            assert d.proxy.transports["TCP"].connection_count >= 1
        invite = net.biloxi.gateway.wire_view(
            next(c.id for c in net.biloxi.gateway.secure.calls.values() if c.direction == "incoming"))
        assert "SIP/2.0/TCP" in invite["messages"][0]["outer"]
