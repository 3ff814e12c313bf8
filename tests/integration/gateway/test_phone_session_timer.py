"""RFC 4028 session timers on the phone leg, for a phone that says ``Supported: timer``.

A phone that calls out with ``Supported: timer`` and a ``Session-Expires`` offer gets the timer in
the gateway's 200 (``refresher=uac``: the phone refreshes); when it vanishes (no refresh comes)
the gateway ends the call by itself, with BYE on both legs. A phone that says nothing of timers
gets none. A phone whose REGISTER said ``Supported: timer`` is offered a timer in the INVITEs to it.
Short intervals (3 s, Min-SE 2 s; the defaults are 1800 s and 90 s).
"""

from __future__ import annotations

import asyncio
from typing import Any

from sipsec.aio import Peer, SipEndpoint
from sipsec.sip import Request, Response
from sipsec.sip.digest import DigestClient
from sipsec_gateway.calls import CallState
from sipsec_gateway.sessiontimer import expiry_after

from tests.integration.gateway.harness import Domain, TwoDomains, call, login, wait_for
from tests.sipua import CallState as PhoneState
from tests.sipua import UserAgent

ALICE = "sip:alice@atlanta.com"
BOB = "sip:bob@biloxi.com"
SHORT = {"session_expires_s": 3, "min_se_s": 2}


async def _phone(domain: Domain, user: str, password: str, *, timer: bool) -> tuple[UserAgent, SipEndpoint]:
    """A phone registered on ``domain``'s plain side; ``timer``: its REGISTER says Supported: timer."""
    endpoint = SipEndpoint()
    await endpoint.listen_udp(domain.host, 0)
    endpoint.start()
    ua = UserAgent(endpoint, user=user, auto_answer=True)
    host, port = domain.gateway.plain_address or ("", 0)
    aor = f"sip:{user}@{domain.name}"
    headers = [("Expires", "300")] + ([("Supported", "timer")] if timer else [])
    resp = await ua.request("REGISTER", f"sip:{host}:{port}", peer=Peer("UDP", host, port), to=aor, from_aor=aor,
                            headers=headers, credentials=DigestClient(user, password))
    assert resp.status == 200, resp
    return ua, endpoint


def _collecting(phone: UserAgent, finals: list[Response]) -> None:
    """Collect the final responses to the phone's INVITEs in ``finals``."""
    seen = phone._on_invite_response

    def response(call: Any, txn: Any, resp: Response) -> None:
        if resp.status >= 200:
            finals.append(resp)
        seen(call, txn, resp)

    phone._on_invite_response = response  # type: ignore[method-assign]


def _offering_timer(phone: UserAgent) -> None:
    """The phone's INVITEs say ``Supported: timer`` and offer 3 s, the phone refreshing (the test
    UA itself never refreshes: it is a phone that vanished, as the gateway sees it)."""
    send = phone._invite

    async def invite(request: Request, *args: Any) -> Any:
        request.headers.add("Supported", "timer")
        request.headers.add("Session-Expires", "3;refresher=uac")
        return await send(request, *args)

    phone._invite = invite  # type: ignore[method-assign]


async def test_a_phone_that_supports_timers_and_vanishes_is_hung_up_by_the_gateway() -> None:
    async with TwoDomains(gateway_overrides={"atlanta.com": SHORT, "biloxi.com": SHORT}) as net:
        alice = await login(net.atlanta, "alice")
        await login(net.biloxi, "bob", auto_answer=True)
        phone, endpoint = await _phone(net.atlanta, "alice", alice["phone_password"], timer=False)
        net.push(endpoint.close)
        finals: list[Response] = []
        _collecting(phone, finals)
        _offering_timer(phone)
        host, port = net.atlanta.gateway.plain_address or ("", 0)
        out = await phone.call(BOB, peer=Peer("UDP", host, port), timeout=10,
                               credentials=DigestClient("alice", alice["phone_password"]))
        assert out.state is PhoneState.ESTABLISHED
        ok = finals[-1]
        assert ok.status == 200 and ok.headers.get("Session-Expires") == "3;refresher=uac", ok
        assert ok.headers.get("Require") == "timer"
        far = next(c for c in net.atlanta.gateway.secure.calls.values() if c.direction == "outgoing")
        bob = next(c for c in net.biloxi.gateway.secure.calls.values() if c.direction == "incoming")
        assert far.state is CallState.ESTABLISHED
        # the phone never refreshes: the gateway ends the call itself, BYE to the phone and to bob
        await wait_for(lambda: out.state is PhoneState.TERMINATED, expiry_after(3) + 2.0)
        await wait_for(lambda: far.state is CallState.ENDED and bob.state is CallState.ENDED, 5.0)
        assert bob.reason == "remote hangup"
        assert net.atlanta.gateway.metrics.sample("sipsec_gateway_session_timer_expiries_total") == 1


async def test_a_phone_that_says_nothing_of_timers_gets_none() -> None:
    async with TwoDomains(gateway_overrides={"atlanta.com": SHORT, "biloxi.com": SHORT}) as net:
        alice = await login(net.atlanta, "alice")
        await login(net.biloxi, "bob", auto_answer=True)
        phone, endpoint = await _phone(net.atlanta, "alice", alice["phone_password"], timer=False)
        net.push(endpoint.close)
        finals: list[Response] = []
        _collecting(phone, finals)
        host, port = net.atlanta.gateway.plain_address or ("", 0)
        out = await phone.call(BOB, peer=Peer("UDP", host, port), timeout=10,
                               credentials=DigestClient("alice", alice["phone_password"]))
        assert finals[-1].status == 200 and finals[-1].headers.get("Session-Expires") is None
        await asyncio.sleep(expiry_after(3) + 1.0)  # past the interval: no timer runs on this leg
        assert out.state is PhoneState.ESTABLISHED
        assert net.atlanta.gateway.metrics.sample("sipsec_gateway_session_timer_expiries_total") == 0
        assert await phone.hangup(out) == 200


async def test_a_phone_registered_with_timer_support_is_offered_a_timer() -> None:
    async with TwoDomains(gateway_overrides={"atlanta.com": SHORT, "biloxi.com": SHORT}) as net:
        await login(net.atlanta, "alice")
        bob = await login(net.biloxi, "bob")
        phone, endpoint = await _phone(net.biloxi, "bob", bob["phone_password"], timer=True)
        net.push(endpoint.close)
        assert net.biloxi.gateway.phones[BOB].timer
        placed = await call(net.atlanta, ALICE, BOB)
        assert placed["state"] == "established", placed
        ringing = next(iter(phone.calls.values()))
        assert ringing.invite.headers.get("Session-Expires") == "3;refresher=uac"
        assert ringing.invite.headers.get("Supported") == "timer"
        assert (await net.atlanta.client.delete(f"/v1/calls/{placed['id']}")).json()["sip_status"] == 200

        # registered again without it: the INVITEs to it offer none
        host, port = net.biloxi.gateway.plain_address or ("", 0)
        resp = await phone.register(f"sip:{host}:{port}", BOB, expires=300, peer=Peer("UDP", host, port),
                                    credentials=DigestClient("bob", bob["phone_password"]))
        assert resp.status == 200 and not net.biloxi.gateway.phones[BOB].timer
        again = await call(net.atlanta, ALICE, BOB)
        latest = next(c for c in phone.calls.values() if c.invite.call_id != ringing.invite.call_id)
        assert latest.invite.headers.get("Session-Expires") is None
        assert (await net.atlanta.client.delete(f"/v1/calls/{again['id']}")).json()["sip_status"] == 200
