"""RFC 4028 session timers on the secured leg: refreshes keep a call up, a vanished far end ends it.

Short intervals (a few seconds; the defaults are 1800 s with Min-SE 90) between two real gateways.
"""

from __future__ import annotations

import asyncio

import redis.asyncio as aioredis
from sipsec_gateway.calls import CallState
from sipsec_gateway.sessiontimer import SessionTimer, answer, expiry_after, parse

from tests.integration.gateway.harness import TwoDomains, call, login, wait_for

ALICE = "sip:alice@atlanta.com"
BOB = "sip:bob@biloxi.com"
SHORT = {"session_expires_s": 3, "min_se_s": 2}


def _methods(view_call: object, direction: str) -> list[str]:
    trace = getattr(view_call, "trace", None) or []
    return [e.inner.split(b" ", 1)[0].decode() for e in trace if e.direction == direction and e.inner]


async def test_refreshes_keep_the_call_up_and_both_sides_agree_on_the_timer(redis_url: str) -> None:
    overrides = {"atlanta.com": SHORT, "biloxi.com": SHORT}
    async with TwoDomains(gateway_overrides=overrides, redis_url=redis_url) as net:
        await login(net.atlanta, "alice")
        await login(net.biloxi, "bob", auto_answer=True)
        placed = await call(net.atlanta, ALICE, BOB)
        assert placed["state"] == "established"
        alice = net.atlanta.gateway.find_call(placed["id"])
        bob = next(c for c in net.biloxi.gateway.secure.calls.values() if c.direction == "incoming")
        assert alice is not None and alice.session == bob.session == SessionTimer(3, "uac")
        await asyncio.sleep(4.0)  # past the interval: only the refreshes keep it up
        assert alice.state is CallState.ESTABLISHED and bob.state is CallState.ESTABLISHED
        assert _methods(alice, "sent").count("UPDATE") >= 2
        assert _methods(bob, "received").count("UPDATE") >= 2
        assert net.biloxi.gateway.metrics.sample("sipsec_gateway_session_timer_expiries_total") == 0
        # the call records live two intervals and a minute past the last refresh, not the 12 h dialog TTL
        r = aioredis.Redis.from_url(redis_url)
        try:
            for domain in ("atlanta.com", "biloxi.com"):
                keys = await r.keys(f"sipsec:{domain}:gateway:call:*")
                assert keys, domain
                for key in keys:
                    assert 0 < await r.pttl(key) <= (2 * 3 + 60) * 1000
        finally:
            await r.aclose()


async def test_a_vanished_refresher_is_hung_up_by_the_other_side() -> None:
    overrides = {"atlanta.com": SHORT, "biloxi.com": SHORT}
    async with TwoDomains(gateway_overrides=overrides) as net:
        await login(net.atlanta, "alice")
        await login(net.biloxi, "bob", auto_answer=True)
        placed = await call(net.atlanta, ALICE, BOB)
        assert placed["state"] == "established"
        alice = net.atlanta.gateway.find_call(placed["id"])
        bob = next(c for c in net.biloxi.gateway.secure.calls.values() if c.direction == "incoming")
        assert alice is not None
        alice_side = net.atlanta.gateway.secure
        assert alice_side is not None
        alice_side._disarm_session(alice)  # alice's gateway vanishes: no refresh, no answer any more
        alice_side.events.running = False
        await wait_for(lambda: bob.state is CallState.ENDED, expiry_after(3) + 2.0)
        assert bob.reason == "local hangup"  # bob's gateway sent the BYE itself
        assert net.biloxi.gateway.metrics.sample("sipsec_gateway_session_timer_expiries_total") == 1


async def test_an_interval_below_min_se_is_refused_with_422() -> None:
    overrides = {"atlanta.com": SHORT, "biloxi.com": {"session_expires_s": 20, "min_se_s": 10}}
    async with TwoDomains(gateway_overrides=overrides) as net:
        await login(net.atlanta, "alice")
        await login(net.biloxi, "bob", auto_answer=True)
        placed = await call(net.atlanta, ALICE, BOB)
        assert placed["state"] == "failed" and placed["sip_status"] == 422, placed


def test_session_expires_grammar_and_the_uas_choice() -> None:
    from sipsec.sip import Request

    assert parse("1800;refresher=uas") == (1800, "uas")
    assert parse("90") == (90, None)
    for bad in ("", "abc", "-5", "0", None):
        assert parse(bad) is None
    invite = Request("INVITE", "sip:bob@biloxi.com", [("Supported", "timer"), ("Session-Expires", "4000")])
    assert answer(invite, 1800, 90) == SessionTimer(1800, "uac")  # lowered to ours, never below Min-SE
    assert answer(Request("INVITE", "sip:bob@biloxi.com", []), 1800, 90) == SessionTimer(1800, "uas")
    assert answer(Request("INVITE", "sip:b@x", [("Session-Expires", "60")]), 1800, 90) == 422
    assert answer(invite, 0, 90) is None
    assert expiry_after(1800) == 1768 and expiry_after(3) == 2
