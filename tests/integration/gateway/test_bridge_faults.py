"""Every failure of a bridged call ends both legs, and the caller hears only what the callee's phone does.

alice's phone (test-driver UA on 127.0.0.2) calls bob@biloxi.com through the atlanta gateway;
bob's phone (on 127.0.0.3) is registered with the biloxi gateway and answers. Each step of
that double bridge is made to raise in turn; afterwards both phones hold no call, and neither
gateway holds a live call or counts a dialog.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import pytest
from sipsec.aio import Peer, SipEndpoint
from sipsec.sip import Request, parse_message
from sipsec.sip.digest import DigestClient, select_challenge
from sipsec.sip.timers import TimerSettings

from tests.integration.gateway.harness import Domain, TwoDomains, call, login, wait_for
from tests.sipua import CallFailed, CallState, UserAgent

ALICE = "sip:alice@atlanta.com"
BOB = "sip:bob@biloxi.com"


async def _phone(net: TwoDomains, domain: Domain, user: str, password: str, *, auto_answer: bool = True,
                 register: bool = True) -> UserAgent:
    endpoint = SipEndpoint()
    await endpoint.listen_udp(domain.host, 0)
    endpoint.start()
    net.push(endpoint.close)
    ua = UserAgent(endpoint, user=user, auto_answer=auto_answer)
    if register:
        host, port = domain.gateway.plain_address or ("", 0)
        resp = await ua.register(f"sip:{host}:{port}", f"sip:{user}@{domain.name}", expires=300,
                                 peer=Peer("UDP", host, port), credentials=DigestClient(user, password))
        assert resp.status == 200, resp
    return ua


def _live(domain: Domain) -> list[Any]:
    gw = domain.gateway
    return [c for agent in (gw.secure, gw.plain) if agent is not None for c in agent.calls.values() if c.live]


def _dialogs(domain: Domain) -> float:
    m = domain.gateway.metrics
    return sum(m.sample("sipsec_gateway_dialogs", secure=s) for s in ("true", "false"))


def _phone_idle(ua: UserAgent) -> bool:
    return all(c.state is CallState.TERMINATED for c in ua.calls.values())


async def _boom(*_: Any, **__: Any) -> None:
    raise RuntimeError("injected fault")


# (domain, object, method): every step of the bridged call, on both gateways
STEPS = [
    ("atlanta.com", "gateway", "_phone_calls"),  # the phone's INVITE reaches its gateway
    ("atlanta.com", "gateway", "_start_call"),  # the secured leg is placed
    ("atlanta.com", "secure", "invite"),  # the secured INVITE is sealed and sent
    ("atlanta.com", "secure", "save"),  # the secured leg is established (shared state)
    ("atlanta.com", "plain", "ring"),  # the far ringing is relayed to the phone
    ("atlanta.com", "plain", "answer"),  # the far answer is relayed to the phone
    ("biloxi.com", "gateway", "on_incoming"),  # the secured INVITE reaches the callee's gateway
    ("biloxi.com", "gateway", "_call_phone"),  # the callee's phone is called
    ("biloxi.com", "plain", "invite"),  # the plain INVITE to the phone is sent
    ("biloxi.com", "secure", "ring"),  # the phone's ringing is relayed to the caller
    ("biloxi.com", "secure", "answer"),  # the phone's answer is relayed to the caller
    ("biloxi.com", "secure", "save"),  # the answered secured leg is kept for replicas
]


@pytest.mark.parametrize(("domain", "target", "method"), STEPS, ids=[f"{d.split('.')[0]}-{t}-{m}" for d, t, m in STEPS])
async def test_a_fault_at_any_step_releases_both_phones(domain: str, target: str, method: str,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    async with TwoDomains() as net:
        alice_pw = (await login(net.atlanta, "alice"))["phone_password"]
        bob_pw = (await login(net.biloxi, "bob"))["phone_password"]
        alice = await _phone(net, net.atlanta, "alice", alice_pw)
        bob = await _phone(net, net.biloxi, "bob", bob_pw, auto_answer=False)
        gw = net[domain].gateway
        monkeypatch.setattr(gw if target == "gateway" else getattr(gw, target), method, _boom)
        host, port = net.atlanta.gateway.plain_address or ("", 0)
        placing = asyncio.ensure_future(alice.call(BOB, peer=Peer("UDP", host, port), timeout=15,
                                                   credentials=DigestClient("alice", alice_pw)))

        async def answer() -> None:  # bob's phone answers whatever reaches it (after its own 180)
            incoming = await bob.incoming.get()
            if incoming.state is not CallState.TERMINATED:
                bob.answer(incoming)
        answering = asyncio.ensure_future(answer())
        try:
            out = await placing
        except CallFailed as exc:
            assert exc.status >= 400
        else:  # answered, then ended by the gateway that failed
            await wait_for(lambda: out.state is CallState.TERMINATED, 10)
        await wait_for(lambda: _phone_idle(alice) and _phone_idle(bob), 10)
        await wait_for(lambda: not _live(net.atlanta) and not _live(net.biloxi), 10)
        assert _dialogs(net.atlanta) == _dialogs(net.biloxi) == 0
        answering.cancel()
        await asyncio.gather(answering, return_exceptions=True)


@pytest.mark.parametrize(("from_", "contact"), [
    ("<sip:alice@127.0.0.2>", "<sip:alice@127.0.0.2:{port}>"),  # no From tag
    ("<sip:alice@127.0.0.2>;tag=a1", "<not a sip uri>"),  # a Contact that is no SIP URI
], ids=["no-from-tag", "bad-contact"])
async def test_a_malformed_phone_invite_ends_the_secured_leg(from_: str, contact: str) -> None:
    """The finding as reported: a phone INVITE without From tag, or with a bad Contact, made
    answering the phone raise after the secured leg was up; now the secured leg is ended (BYE)
    and the phone gets a final answer."""
    async with TwoDomains() as net:
        alice_pw = (await login(net.atlanta, "alice"))["phone_password"]
        await login(net.biloxi, "bob", auto_answer=True)
        host, port = net.atlanta.gateway.plain_address or ("", 0)
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.2", 0))
        sock.setblocking(False)
        net.push(_close, sock)
        me = sock.getsockname()[1]
        loop = asyncio.get_running_loop()

        def invite(cseq: int, auth: str | None) -> bytes:
            lines = [f"INVITE {BOB} SIP/2.0",
                     f"Via: SIP/2.0/UDP 127.0.0.2:{me};branch=z9hG4bKnotag{cseq}",
                     "Max-Forwards: 70", f"From: {from_}", f"To: <{BOB}>",
                     "Call-ID: malformed@127.0.0.2", f"CSeq: {cseq} INVITE",
                     "Contact: " + contact.format(port=me)]
            if auth:
                lines.append(f"Proxy-Authorization: {auth}")
            return ("\r\n".join(lines) + "\r\nContent-Length: 0\r\n\r\n").encode()

        async def final() -> Any:
            while True:
                data = await asyncio.wait_for(loop.sock_recv(sock, 65535), 10)
                msg = parse_message(data)
                if not isinstance(msg, Request) and msg.status >= 200:
                    return msg

        await loop.sock_sendto(sock, invite(1, None), (host, port))
        challenged = await final()
        assert challenged.status == 407
        creds = DigestClient("alice", alice_pw).authorize(
            select_challenge(challenged.headers.get_all_raw("Proxy-Authenticate")), "INVITE", BOB)
        await loop.sock_sendto(sock, invite(2, creds.to_header()), (host, port))
        answered = await final()
        assert answered.status >= 400  # not the 200: the gateway could not answer this INVITE
        await wait_for(lambda: not _live(net.atlanta) and not _live(net.biloxi), 10)
        assert _dialogs(net.atlanta) == _dialogs(net.biloxi) == 0
        far = [c for c in net.atlanta.gateway.secure.calls.values() if c.direction == "outgoing"]
        assert len(far) == 1 and far[0].state.value == "ended"  # it was up, and was ended by BYE


async def _close(sock: socket.socket) -> None:
    sock.close()


async def test_the_caller_hears_no_ringing_from_an_unreachable_phone() -> None:
    async with TwoDomains() as net:
        await login(net.atlanta, "alice")
        bob_pw = (await login(net.biloxi, "bob"))["phone_password"]
        # bob's phone registers, then goes away: its address answers nothing
        bob = await _phone(net, net.biloxi, "bob", bob_pw)
        await bob.endpoint.close()
        plain = net.biloxi.gateway.plain
        assert plain is not None
        plain.endpoint.core.timers = TimerSettings(t1=0.01, t2=0.04, t4=0.05)  # Timer B in 0.64 s
        placed = await call(net.atlanta, ALICE, BOB)
        assert placed["state"] == "failed" and placed["sip_status"] >= 400, placed
        alice_call = net.atlanta.gateway.find_call(placed["id"])
        assert alice_call is not None and alice_call.trace is not None
        statuses = [int(e.inner.split(b" ", 2)[1]) if e.inner else int(e.outer.split(b" ", 2)[1])
                    for e in alice_call.trace if e.direction == "received"]
        assert not [s for s in statuses if 100 < s < 200], statuses  # no 180 before the phone rang
        assert statuses[-1] == placed["sip_status"]


async def test_the_phone_s_own_ringing_reaches_the_caller() -> None:
    async with TwoDomains() as net:
        await login(net.atlanta, "alice")
        bob_pw = (await login(net.biloxi, "bob"))["phone_password"]
        bob = await _phone(net, net.biloxi, "bob", bob_pw, auto_answer=False)
        placed = await call(net.atlanta, ALICE, BOB, wait=False)
        ringing = await asyncio.wait_for(bob.incoming.get(), 5)
        alice_call = net.atlanta.gateway.find_call(placed["id"])
        assert alice_call is not None
        await wait_for(lambda: alice_call.state.value == "ringing")
        bob.answer(ringing)
        await wait_for(lambda: alice_call.state.value == "established")
        assert (await net.atlanta.client.delete(f"/v1/calls/{placed['id']}")).json()["sip_status"] == 200
