"""Timer C at the gateway (RFC 3261 §16.6 step 11, §9.1): an outgoing INVITE that got a 180 and
then nothing is CANCELled and the call fails with 408 on both legs.

bob's phone (a test-driver UA registered with the biloxi gateway) rings and never answers; the
atlanta gateway's secured side runs with a short Timer C. The caller — alice's phone through
the atlanta gateway, or the control API — sees 408, and bob's phone gets the CANCEL.
"""

from __future__ import annotations

import asyncio

from sipsec.aio import Peer, SipEndpoint
from sipsec.sip.digest import DigestClient
from sipsec.sip.timers import TimerSettings

from tests.integration.gateway.harness import Domain, TwoDomains, call, login, wait_for
from tests.sipua import CallFailed, CallState, UserAgent

ALICE = "sip:alice@atlanta.com"
BOB = "sip:bob@biloxi.com"
SHORT_TIMER_C = TimerSettings(timer_c=0.5)


async def _phone(net: TwoDomains, domain: Domain, user: str, password: str, *, auto_answer: bool) -> UserAgent:
    endpoint = SipEndpoint()
    await endpoint.listen_udp(domain.host, 0)
    endpoint.start()
    net.push(endpoint.close)
    ua = UserAgent(endpoint, user=user, auto_answer=auto_answer)
    host, port = domain.gateway.plain_address or ("", 0)
    resp = await ua.register(f"sip:{host}:{port}", f"sip:{user}@{domain.name}", expires=300,
                             peer=Peer("UDP", host, port), credentials=DigestClient(user, password))
    assert resp.status == 200, resp
    return ua


async def _ringing_bob(net: TwoDomains) -> UserAgent:
    bob_pw = (await login(net.biloxi, "bob"))["phone_password"]
    bob = await _phone(net, net.biloxi, "bob", bob_pw, auto_answer=False)  # 180, then nothing
    secure = net.atlanta.gateway.secure
    assert secure is not None
    secure.endpoint.core.timers = SHORT_TIMER_C
    return bob


async def _bob_got_cancel(bob: UserAgent) -> None:
    incoming = await asyncio.wait_for(bob.incoming.get(), 5)
    await wait_for(lambda: incoming.state is CallState.TERMINATED, 10)
    assert 180 in incoming.statuses and incoming.final_status == 487  # answered the CANCEL's INVITE with 487


def _live(domain: Domain) -> list[object]:
    gw = domain.gateway
    return [c for agent in (gw.secure, gw.plain) if agent is not None for c in agent.calls.values() if c.live]


async def test_timer_c_cancels_and_the_calling_phone_sees_408() -> None:
    async with TwoDomains() as net:
        alice_pw = (await login(net.atlanta, "alice"))["phone_password"]
        alice = await _phone(net, net.atlanta, "alice", alice_pw, auto_answer=True)
        bob = await _ringing_bob(net)
        host, port = net.atlanta.gateway.plain_address or ("", 0)
        placing = asyncio.ensure_future(alice.call(BOB, peer=Peer("UDP", host, port), timeout=15,
                                                   credentials=DigestClient("alice", alice_pw)))
        await _bob_got_cancel(bob)
        try:
            await placing
        except CallFailed as exc:
            assert exc.status == 408
        else:
            raise AssertionError("the call should have failed with 408")
        await wait_for(lambda: not _live(net.atlanta) and not _live(net.biloxi), 10)


async def test_timer_c_cancels_and_the_api_sees_408() -> None:
    async with TwoDomains() as net:
        await login(net.atlanta, "alice")
        bob = await _ringing_bob(net)
        placed = await call(net.atlanta, ALICE, BOB, wait=False)
        await _bob_got_cancel(bob)
        alice_call = net.atlanta.gateway.find_call(placed["id"])
        assert alice_call is not None
        await wait_for(lambda: alice_call.state.value == "failed", 10)
        view = (await net.atlanta.client.get(f"/v1/calls/{placed['id']}")).json()
        assert view["state"] == "failed" and view["sip_status"] == 408, view
        assert net.atlanta.gateway.metrics.sample("sipsec_gateway_call_setups_total",
                                                  outcome="timeout", secure="true") >= 1
        await wait_for(lambda: not _live(net.atlanta) and not _live(net.biloxi), 10)
