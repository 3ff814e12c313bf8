"""The legacy side as a B2BUA, with sipsec's test-driver UA as the phones: answer, hang-up, CANCEL.

Every user with a phone side has a phone password (generated at login and shown once when
none is given); the phones register and call with Digest credentials.
"""

from __future__ import annotations

import asyncio

import pytest
from sipsec.aio import Peer, SipEndpoint
from sipsec.sip.digest import DigestClient

from tests.integration.gateway.harness import Domain, TwoDomains, call, login, wait_for
from tests.sipua import CallFailed, UserAgent
from tests.sipua import CallState as PhoneState

ALICE = "sip:alice@atlanta.com"
BOB = "sip:bob@biloxi.com"


async def _phone(domain: Domain, user: str, password: str, *, auto_answer: bool) -> tuple[UserAgent, SipEndpoint]:
    endpoint = SipEndpoint()
    await endpoint.listen_udp(domain.host, 0)
    endpoint.start()
    ua = UserAgent(endpoint, user=user, auto_answer=auto_answer)
    host, port = domain.gateway.plain_address or ("", 0)
    resp = await ua.register(f"sip:{host}:{port}", f"sip:{user}@{domain.name}", expires=300,
                             peer=Peer("UDP", host, port), credentials=DigestClient(user, password))
    assert resp.status == 200, resp
    return ua, endpoint


async def test_phone_answers_a_secured_call_and_the_far_end_hangs_up() -> None:
    async with TwoDomains() as net:
        await login(net.atlanta, "alice")
        bob = await login(net.biloxi, "bob")
        phone, endpoint = await _phone(net.biloxi, "bob", bob["phone_password"], auto_answer=True)
        net.push(endpoint.close)
        placed = await call(net.atlanta, ALICE, BOB)
        assert placed["state"] == "established" and placed["secure"]
        ringing = next(iter(phone.calls.values()))
        assert ringing.state is PhoneState.ESTABLISHED
        assert ringing.invite.from_.uri.user == "alice"  # the phone sees plain SIP from alice
        assert b"m=audio" in ringing.remote_sdp  # alice's SDP, relayed through the secured leg
        assert (await net.atlanta.client.delete(f"/v1/calls/{placed['id']}")).json()["sip_status"] == 200
        await wait_for(lambda: ringing.state is PhoneState.TERMINATED)


async def test_caller_hangs_up_while_the_phone_rings_cancel_reaches_it() -> None:
    async with TwoDomains() as net:
        await login(net.atlanta, "alice")
        bob = await login(net.biloxi, "bob")
        phone, endpoint = await _phone(net.biloxi, "bob", bob["phone_password"], auto_answer=False)
        net.push(endpoint.close)
        placed = await call(net.atlanta, ALICE, BOB, wait=False)
        incoming = await asyncio.wait_for(phone.incoming.get(), 5)
        alice_call = net.atlanta.gateway.find_call(placed["id"])
        assert alice_call is not None
        await wait_for(lambda: alice_call.state.value == "ringing")
        hung = await net.atlanta.client.delete(f"/v1/calls/{placed['id']}")
        assert hung.status_code == 200 and hung.json()["sip_status"] == 487
        await wait_for(lambda: alice_call.state.value == "failed")
        assert alice_call.status == 487
        await wait_for(lambda: incoming.state is PhoneState.TERMINATED)
        assert 487 in incoming.statuses


async def test_phone_calls_out_and_the_gateway_refuses_unknown_phone_users() -> None:
    async with TwoDomains() as net:
        alice = await login(net.atlanta, "alice")
        await login(net.biloxi, "bob", auto_answer=True)
        phone, endpoint = await _phone(net.atlanta, "alice", alice["phone_password"], auto_answer=True)
        net.push(endpoint.close)
        host, port = net.atlanta.gateway.plain_address or ("", 0)
        out = await phone.call("sip:bob@biloxi.com", peer=Peer("UDP", host, port), timeout=10,
                               credentials=DigestClient("alice", alice["phone_password"]))
        assert out.state is PhoneState.ESTABLISHED and out.final_status == 200
        far = [c for c in net.atlanta.gateway.secure.calls.values() if c.direction == "outgoing"]
        assert len(far) == 1 and far[0].secure and far[0].state.value == "established"
        assert await phone.hangup(out) == 200
        await wait_for(lambda: far[0].state.value == "ended")
        # a phone whose user is not logged in on the gateway cannot register (it gets the same
        # challenge as everyone, and no credentials of its own pass it)
        stranger = UserAgent(endpoint, user="mallory")
        refused = await stranger.register(f"sip:{host}:{port}", "sip:mallory@atlanta.com",
                                          peer=Peer("UDP", host, port),
                                          credentials=DigestClient("mallory", "a guess"))
        assert refused.status == 401
        assert "sip:mallory@atlanta.com" not in net.atlanta.gateway.phones


async def test_phone_password_requires_digest_on_register_and_invite() -> None:
    async with TwoDomains() as net:
        await login(net.atlanta, "alice", phone_password="phone secret 1")
        await login(net.biloxi, "bob", auto_answer=True)
        endpoint = SipEndpoint()
        await endpoint.listen_udp("127.0.0.2", 0)
        endpoint.start()
        net.push(endpoint.close)
        phone = UserAgent(endpoint, user="alice")
        host, port = net.atlanta.gateway.plain_address or ("", 0)
        gw = Peer("UDP", host, port)
        anonymous = await phone.register(f"sip:{host}:{port}", ALICE, peer=gw)
        assert anonymous.status == 401 and "Digest" in (anonymous.headers.get("WWW-Authenticate") or "")
        wrong = await phone.register(f"sip:{host}:{port}", ALICE, peer=gw,
                                     credentials=DigestClient("alice", "not it"))
        assert wrong.status == 401
        right = await phone.register(f"sip:{host}:{port}", ALICE, peer=gw,
                                     credentials=DigestClient("alice", "phone secret 1"))
        assert right.status == 200
        assert net.atlanta.gateway.phones[ALICE].peer.port == endpoint.transport("UDP").local_address[1]
        with pytest.raises(CallFailed) as err:
            await phone.call("sip:bob@biloxi.com", peer=gw, timeout=10)
        assert err.value.status == 407  # an unauthenticated phone places no call in alice's name
        assert not [c for c in net.atlanta.gateway.secure.calls.values() if c.direction == "outgoing"]
        assert net.atlanta.gateway.metrics.sample("sipsec_gateway_envelope_rejections_total",
                                                  reason="phone-auth") == 1
