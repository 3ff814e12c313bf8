"""Faults around secured calls: PKG down, a byte flipped in transit, callee not registered, policies."""

from __future__ import annotations

import asyncio

from sipsec_gateway.calls import CallState

from tests.integration.gateway.harness import TwoDomains, call, login, wait_for

ALICE = "sip:alice@atlanta.com"
BOB = "sip:bob@biloxi.com"


class FlipRelay(asyncio.DatagramProtocol):
    """A hop between a gateway and its proxy that flips one byte of every secured INVITE body."""

    def __init__(self) -> None:
        self.transport: asyncio.DatagramTransport | None = None
        self.target: tuple[str, int] | None = None
        self.flip = True
        self.flipped = 0
        self.client: tuple[str, int] | None = None

    async def start(self, host: str) -> int:
        loop = asyncio.get_running_loop()
        self.transport, _ = await loop.create_datagram_endpoint(lambda: self, local_addr=(host, 0))
        return int(self.transport.get_extra_info("sockname")[1])

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        assert self.transport is not None and self.target is not None
        if addr == self.target:  # the proxy answers the relay (Via rport): pass it back
            if self.client is not None:
                self.transport.sendto(data, self.client)
            return
        self.client = addr
        if self.flip and data.startswith(b"INVITE ") and b"smime-type=authEnveloped-data" in data:
            # inside the AES-GCM ciphertext: the CMS ends with the content-type authAttrs
            # (28 bytes) and the 16-byte tag (18 with its DER header), after the ciphertext
            pos = len(data) - 64
            data = data[:pos] + bytes([data[pos] ^ 0x01]) + data[pos + 1:]
            self.flipped += 1
        self.transport.sendto(data, self.target)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


async def test_calls_still_work_with_cached_keys_when_the_pkgs_go_down() -> None:
    async with TwoDomains() as net:
        await login(net.atlanta, "alice")
        await login(net.biloxi, "bob", auto_answer=True)
        await net.atlanta.pkg.stop(0)
        await net.biloxi.pkg.stop(0)
        placed = await call(net.atlanta, ALICE, BOB)
        assert placed["state"] == "established" and placed["secure"]
        assert (await net.atlanta.client.delete(f"/v1/calls/{placed['id']}")).json()["sip_status"] == 200
        # a new login needs the PKG: a clear 503, not a crash
        refused = await net.atlanta.client.post("/v1/users", json={"aor": "sip:carol@atlanta.com",
                                                                   "password": "x" * 8})
        assert refused.status_code == 503 and "PKG" in refused.json()["error"]["message"]


async def test_a_byte_flipped_in_transit_fails_the_call_with_493_and_nothing_crashes() -> None:
    relay = FlipRelay()
    port = await relay.start("127.0.0.2")
    try:
        async with TwoDomains(gateway_overrides={"atlanta.com": {"proxy": f"127.0.0.2:{port}"}}) as net:
            relay.target = ("127.0.0.2", net.atlanta.proxy_port)
            await login(net.atlanta, "alice")
            await login(net.biloxi, "bob", auto_answer=True)
            failed = await call(net.atlanta, ALICE, BOB)
            assert relay.flipped == 1
            assert failed["state"] == "failed" and failed["sip_status"] == 493, failed
            bob = net.biloxi.gateway.metrics
            assert bob.sample("sipsec_gateway_envelope_rejections_total", reason="decrypt-failed") == 1
            assert net.atlanta.gateway.metrics.sample(
                "sipsec_gateway_call_setups_total", outcome="failed", secure="true") == 1
            # both gateways keep working
            relay.flip = False
            placed = await call(net.atlanta, ALICE, BOB)
            assert placed["state"] == "established"
            assert (await net.biloxi.client.get("/healthz")).json()["status"] == "ok"
    finally:
        relay.close()


async def test_prefer_secure_retries_in_plain_after_493() -> None:
    relay = FlipRelay()
    port = await relay.start("127.0.0.2")
    try:
        async with TwoDomains(gateway_overrides={"atlanta.com": {"proxy": f"127.0.0.2:{port}"}}) as net:
            relay.target = ("127.0.0.2", net.atlanta.proxy_port)
            await login(net.atlanta, "alice", policy="prefer-secure")
            await login(net.biloxi, "bob", auto_answer=True, policy="prefer-secure")
            placed = await call(net.atlanta, ALICE, BOB)
            assert relay.flipped == 1  # only the secured INVITE is damaged
            assert placed["state"] == "established" and placed["secure"] is False, placed
            assert placed["retried_plain"] is True
            assert net.atlanta.gateway.metrics.sample("sipsec_gateway_plain_fallbacks_total") == 1
    finally:
        relay.close()


async def test_callee_not_registered_or_not_answering() -> None:
    async with TwoDomains() as net:
        await login(net.atlanta, "alice")
        nobody = await call(net.atlanta, ALICE, "sip:carol@biloxi.com")
        assert nobody["state"] == "failed" and nobody["sip_status"] in (404, 480), nobody
        await login(net.biloxi, "bob")  # logged in, registered, but no auto-answer and no phone
        busy = await call(net.atlanta, ALICE, BOB)
        assert busy["state"] == "failed" and busy["sip_status"] == 480, busy


async def test_secure_only_callee_refuses_a_plain_call_and_plain_policy_is_honoured() -> None:
    async with TwoDomains() as net:
        await login(net.atlanta, "alice", policy="plain")
        await login(net.biloxi, "bob", auto_answer=True)
        refused = await call(net.atlanta, ALICE, BOB)
        assert refused["secure"] is False
        assert refused["state"] == "failed" and refused["sip_status"] == 404, refused
        assert net.biloxi.gateway.metrics.sample("sipsec_gateway_envelope_rejections_total", reason="policy") == 1
        # bob accepts plain calls once his policy allows it
        await login(net.biloxi, "bob", auto_answer=True, policy="prefer-secure")
        plain = await call(net.atlanta, ALICE, BOB)
        assert plain["state"] == "established" and plain["secure"] is False
        assert "seal_kem" not in plain["crypto"]


async def test_auto_answer_with_hold_time_hangs_up_by_itself() -> None:
    async with TwoDomains() as net:
        await login(net.atlanta, "alice")
        await login(net.biloxi, "bob", auto_answer=True, hold_s=0.2)
        placed = await call(net.atlanta, ALICE, BOB)
        assert placed["state"] == "established"
        alice_call = net.atlanta.gateway.find_call(placed["id"])
        assert alice_call is not None
        await wait_for(lambda: alice_call.state is CallState.ENDED)
        assert alice_call.reason == "remote hangup"


async def test_finished_calls_are_forgotten_beyond_keep_calls() -> None:
    async with TwoDomains(gateway_overrides={"atlanta.com": {"keep_calls": 1}}) as net:
        await login(net.atlanta, "alice")
        await login(net.biloxi, "bob", auto_answer=True)
        first = await call(net.atlanta, ALICE, BOB)
        assert (await net.atlanta.client.delete(f"/v1/calls/{first['id']}")).status_code == 200
        assert (await net.atlanta.client.get(f"/v1/calls/{first['id']}")).json()["state"] == "ended"
        second = await call(net.atlanta, ALICE, BOB)
        assert (await net.atlanta.client.delete(f"/v1/calls/{second['id']}")).status_code == 200
        assert (await net.atlanta.client.get(f"/v1/calls/{first['id']}")).status_code == 404
        assert (await net.atlanta.client.get(f"/v1/calls/{second['id']}")).json()["state"] == "ended"
        agent = net.atlanta.gateway.secure
        assert len(agent.calls) == 1 and len(agent._by_outer_cid) <= 1


async def test_a_call_for_a_kept_user_not_yet_logged_in_again_is_told_to_retry() -> None:
    """A restarted gateway knows its kept users before it has logged them in again: a call for
    one of them meanwhile is a temporary failure (503 + Retry-After from bob's gateway, which
    the proxies pass on to alice as 500, RFC 3261 §16.7 step 6), not ``404 Not Found``; a user
    this gateway never had is still 404."""
    async with TwoDomains() as net:
        await login(net.atlanta, "alice")
        await login(net.biloxi, "bob", auto_answer=True)
        gateway = net.biloxi.gateway
        settings = gateway.settings.pop(BOB)  # as between a restart's start and bob's login again
        gateway._kept.add(BOB)
        bob = gateway.metrics
        before = bob.sample("sipsec_gateway_call_setups_total", outcome="failed", secure="true")
        refused = await call(net.atlanta, ALICE, BOB)
        assert refused["state"] == "failed" and refused["sip_status"] in (500, 503), refused
        assert bob.sample("sipsec_gateway_call_setups_total", outcome="failed", secure="true") == before + 1
        gateway._kept.discard(BOB)
        unknown = await call(net.atlanta, ALICE, BOB)
        assert unknown["state"] == "failed" and unknown["sip_status"] == 404, unknown
        gateway.settings[BOB] = settings
        placed = await call(net.atlanta, ALICE, BOB)
        assert placed["state"] == "established", placed
