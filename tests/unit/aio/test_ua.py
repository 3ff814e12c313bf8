"""The endpoint shell and the minimal UA in process: call flows, timers, errors (no sipp)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sipsec.aio.endpoint import SipEndpoint
from sipsec.aio.transport import Peer
from sipsec.sip.core import SipCore
from sipsec.sip.message import Request, Response
from sipsec.sip.parser import parse_message
from sipsec.sip.timers import TimerSettings

from tests.sipua import CallFailed, CallState, UserAgent
from tests.unit.aio._certs import make_certificate

pytestmark = pytest.mark.timeout(30)

TIMEOUT = 5.0
FAST = TimerSettings(t1=0.01, t2=0.04, t4=0.05, timer_d_unreliable=0.05)


async def make_ua(user: str, *, timers: TimerSettings = FAST, tls_dir: Path | None = None,
                  auto_answer: bool = True) -> UserAgent:
    endpoint = SipEndpoint(SipCore(timers=timers, ua=True))
    await endpoint.listen_udp("127.0.0.1", 0)
    await endpoint.listen_tcp("127.0.0.1", 0)
    if tls_dir is not None:
        cert = make_certificate(tls_dir)
        await endpoint.listen_tcp(
            "127.0.0.1", 0, server_ssl=cert.server_context(), client_ssl=cert.client_context()
        )
    ua = UserAgent(endpoint, user=user, auto_answer=auto_answer)
    endpoint.start()
    return ua


@pytest.fixture
async def pair(tmp_path: Path) -> AsyncIterator[tuple[UserAgent, UserAgent]]:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    alice = await make_ua("alice", tls_dir=tmp_path / "a")
    bob = await make_ua("bob", tls_dir=tmp_path / "b")
    # each side trusts the other's self-signed certificate
    for me, other, d in ((alice, bob, tmp_path / "b"), (bob, alice, tmp_path / "a")):
        tls = me.endpoint.transport("TLS")
        ctx = tls.client_ssl
        assert ctx is not None
        ctx.load_verify_locations(cafile=str(d / "cert.pem"))
        del other
    try:
        yield alice, bob
    finally:
        await alice.endpoint.close()
        await bob.endpoint.close()


@pytest.mark.parametrize("transport", ["UDP", "TCP", "TLS"])
async def test_call_between_two_uas(pair, transport: str) -> None:
    alice, bob = pair
    host, port = bob.endpoint.transport(transport).local_address
    scheme = "sips" if transport == "TLS" else "sip"
    param = "" if transport == "UDP" else f";transport={transport.lower()}"
    call = await alice.call(f"{scheme}:bob@{host}:{port}{param}", timeout=TIMEOUT)
    assert call.state is CallState.ESTABLISHED
    assert call.statuses == [100, 180, 200]
    assert call.peer.transport == transport
    incoming = bob.calls[call.call_id]
    await asyncio.wait_for(incoming.established.wait(), TIMEOUT)
    assert incoming.statuses == [180, 200]
    assert b"m=audio" in incoming.remote_sdp and b"m=audio" in call.remote_sdp
    assert await alice.hangup(call, timeout=TIMEOUT) == 200
    await asyncio.wait_for(incoming.ended.wait(), TIMEOUT)
    assert incoming.state is CallState.TERMINATED
    assert alice.completed_calls == 1 and bob.completed_calls == 1
    assert not alice.dialogs and not bob.dialogs


async def test_rejected_call_raises_with_status(pair) -> None:
    alice, _ = pair
    bob = await make_ua("bob2", auto_answer=False)
    try:
        host, port = bob.endpoint.transport("UDP").local_address
        task = asyncio.create_task(alice.call(f"sip:bob@{host}:{port}", timeout=TIMEOUT))
        ringing = await asyncio.wait_for(bob.incoming.get(), TIMEOUT)
        assert ringing.state is CallState.CALLING
        bob.reject(ringing, 486)
        with pytest.raises(CallFailed) as info:
            await task
        assert info.value.status == 486
        # the INVITE client transaction ACKed the 486 itself (§17.1.1.3): Bob's server
        # transaction reaches Confirmed and then ends; nothing is left waiting there.
        assert ringing.state is CallState.TERMINATED and ringing.final_status == 486
    finally:
        await bob.endpoint.close()


async def test_unanswered_invite_is_retransmitted_then_times_out() -> None:
    """One timer drives Timer A retransmissions and Timer B (64*T1) on UDP."""
    alice = await make_ua("alice", timers=TimerSettings(t1=0.02, t2=0.08, t4=0.1))
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind(("127.0.0.1", 0))
    silent.setblocking(False)
    try:
        port = silent.getsockname()[1]
        with pytest.raises(CallFailed) as info:
            await alice.call(f"sip:nobody@127.0.0.1:{port}", timeout=TIMEOUT)
        assert info.value.status == 408
        received: list[bytes] = []
        while True:
            try:
                received.append(silent.recv(65535))
            except BlockingIOError:
                break
        # A fires at T1, 3T1, 7T1, 15T1, 31T1 and 63T1 before B at 64T1.
        assert 5 <= len(received) <= 7  # late loop wake-ups can push the last A past B
        assert len({parse_message(d).via[0].branch for d in received}) == 1
        # every retransmission came from a separate firing of the one timer handle
        assert alice.endpoint.timer.fired >= len(received) - 1
        assert alice.endpoint.timer.deadline == alice.endpoint.core.get_timer()
    finally:
        silent.close()
        await alice.endpoint.close()


async def test_call_over_tcp_to_a_closed_port_fails_fast() -> None:
    alice = await make_ua("alice")
    dead = socket.socket()
    dead.bind(("127.0.0.1", 0))
    port = dead.getsockname()[1]
    dead.close()
    try:
        with pytest.raises(CallFailed) as info:
            await alice.call(f"sip:bob@127.0.0.1:{port};transport=tcp", timeout=TIMEOUT)
        assert info.value.status == 503  # §17.1.4 transport error, not a timeout
    finally:
        await alice.endpoint.close()


class RawPeer:
    """A bare UDP socket speaking SIP by hand, to observe exactly what the UA sends."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.setblocking(False)
        self.port = self.sock.getsockname()[1]

    async def recv(self) -> Response | Request:
        loop = asyncio.get_running_loop()
        data = await asyncio.wait_for(loop.sock_recv(self.sock, 65535), TIMEOUT)
        return parse_message(data)

    def send(self, text: str, to: tuple[str, int]) -> None:
        self.sock.sendto(text.replace("\n", "\r\n").encode(), to)

    def request(self, method: str, to: tuple[str, int], *, branch: str, cseq: int = 1,
                to_tag: str = "", call_id: str = "raw-1", body: str = "") -> str:
        tag = f";tag={to_tag}" if to_tag else ""
        return (
            f"{method} sip:ua@{to[0]}:{to[1]} SIP/2.0\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{self.port};branch={branch}\n"
            "Max-Forwards: 70\n"
            f"From: <sip:raw@127.0.0.1:{self.port}>;tag=raw\n"
            f"To: <sip:ua@{to[0]}>{tag}\n"
            f"Call-ID: {call_id}\n"
            f"CSeq: {cseq} {method}\n"
            f"Contact: <sip:raw@127.0.0.1:{self.port}>\n"
            f"Content-Length: {len(body)}\n\n{body}"
        )

    def close(self) -> None:
        self.sock.close()


async def test_uas_retransmits_2xx_until_ack_then_handles_bye() -> None:
    bob = await make_ua("bob")
    raw = RawPeer()
    to = bob.endpoint.transport("UDP").local_address
    try:
        raw.send(raw.request("INVITE", to, branch="z9hG4bK-inv"), to)
        statuses = [(await raw.recv()).status for _ in range(3)]  # type: ignore[union-attr]
        assert statuses == [100, 180, 200]
        again = await raw.recv()  # no ACK yet: the UA core retransmits the 2xx (§13.3.1.4)
        assert isinstance(again, Response) and again.status == 200
        tag = again.to.tag
        assert tag
        call = bob.calls["raw-1"]
        assert call.state is CallState.ANSWERED
        raw.send(raw.request("ACK", to, branch="z9hG4bK-ack", to_tag=tag), to)
        await asyncio.wait_for(call.established.wait(), TIMEOUT)
        raw.send(raw.request("BYE", to, branch="z9hG4bK-bye", cseq=2, to_tag=tag), to)
        while True:  # skip 2xx retransmissions that crossed the ACK
            msg = await raw.recv()
            assert isinstance(msg, Response)
            if msg.cseq.method == "BYE":
                break
        assert msg.status == 200
        await asyncio.wait_for(call.ended.wait(), TIMEOUT)
    finally:
        raw.close()
        await bob.endpoint.close()


async def test_uas_answers_options_405_and_481() -> None:
    bob = await make_ua("bob")
    raw = RawPeer()
    to = bob.endpoint.transport("UDP").local_address
    try:
        raw.send(raw.request("OPTIONS", to, branch="z9hG4bK-o", call_id="o"), to)
        resp = await raw.recv()
        assert isinstance(resp, Response) and resp.status == 200
        assert "INVITE" in (resp.headers.get("Allow") or "")
        raw.send(raw.request("MESSAGE", to, branch="z9hG4bK-m", call_id="m"), to)
        resp = await raw.recv()
        assert isinstance(resp, Response) and resp.status == 405
        raw.send(raw.request("BYE", to, branch="z9hG4bK-b", call_id="nope", to_tag="x"), to)
        resp = await raw.recv()
        assert isinstance(resp, Response) and resp.status == 481
    finally:
        raw.close()
        await bob.endpoint.close()


async def test_endpoint_counts_handler_errors_and_keeps_running() -> None:
    from prometheus_client import REGISTRY

    endpoint = SipEndpoint(SipCore(timers=FAST))
    await endpoint.listen_udp("127.0.0.1", 0)
    seen: list[str] = []

    def handler(event: object) -> None:
        seen.append(type(event).__name__)
        raise RuntimeError("bug in the TU")

    endpoint.handler = handler  # type: ignore[assignment]
    endpoint.start()
    raw = RawPeer()
    to = endpoint.transport("UDP").local_address
    before = REGISTRY.get_sample_value(
        "sipsec_sip_messages_dropped_total", {"transport": "UDP", "reason": "handler_error"}
    ) or 0.0
    try:
        raw.send(raw.request("OPTIONS", to, branch="z9hG4bK-1", call_id="h1"), to)
        raw.send(raw.request("OPTIONS", to, branch="z9hG4bK-2", call_id="h2"), to)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + TIMEOUT
        while endpoint.processed < 2 and loop.time() < deadline:
            await asyncio.sleep(0.002)
        assert seen == ["RequestReceived", "RequestReceived"]
        after = REGISTRY.get_sample_value(
            "sipsec_sip_messages_dropped_total", {"transport": "UDP", "reason": "handler_error"}
        )
        assert after == before + 2
    finally:
        raw.close()
        await endpoint.close()


def test_peer_for_uri() -> None:
    from sipsec.sip.uri import parse_uri
    from sipsec_gateway.routing import peer_for_uri

    assert peer_for_uri(parse_uri("sip:a@127.0.0.2")) == Peer("UDP", "127.0.0.2", 5060)
    assert peer_for_uri(parse_uri("sip:a@127.0.0.2:7;transport=tcp")) == Peer("TCP", "127.0.0.2", 7)
    assert peer_for_uri(parse_uri("sips:a@127.0.0.2")) == Peer("TLS", "127.0.0.2", 5061)


async def test_caller_cancels_a_ringing_call(pair) -> None:
    alice, _ = pair
    bob = await make_ua("bob3", auto_answer=False)
    try:
        host, port = bob.endpoint.transport("UDP").local_address
        task = asyncio.create_task(alice.call(f"sip:bob@{host}:{port}", timeout=TIMEOUT))
        ringing = await asyncio.wait_for(bob.incoming.get(), TIMEOUT)
        outgoing = alice.calls[ringing.call_id]
        await asyncio.wait_for(_until(lambda: 180 in outgoing.statuses), TIMEOUT)
        alice.cancel(outgoing)
        with pytest.raises(CallFailed) as info:
            await task
        assert info.value.status == 487  # §9.2: the UAS core answered the INVITE with 487
        await asyncio.wait_for(ringing.ended.wait(), TIMEOUT)
        assert ringing.final_status == 487
    finally:
        await bob.endpoint.close()


async def _until(predicate) -> None:
    while not predicate():
        await asyncio.sleep(0.002)


async def test_register_answers_a_digest_challenge() -> None:
    """REGISTER → 401 (SHA-256 challenge) → REGISTER with Authorization → 200, via a tiny
    registrar built on the same endpoint shell (as the proxy does)."""
    from sipsec.sip.digest import DigestClient, DigestCredentials, DigestError, DigestServer
    from sipsec.sip.events import RequestReceived
    from sipsec.sip.message import make_response

    server = DigestServer("atlanta.example", b"0123456789abcdef0123456789abcdef")
    registrar = SipEndpoint(SipCore(timers=FAST, ua=True))
    await registrar.listen_udp("127.0.0.1", 0)
    seen: list[int] = []

    def handle(event: object) -> None:
        if not isinstance(event, RequestReceived) or event.transaction is None:
            return
        req = event.request
        value = req.headers.get("Authorization")
        now = registrar.now()
        if value is None:
            resp = make_response(req, 401, to_tag="reg")
            for ch in server.challenges(now):
                resp.headers.add("WWW-Authenticate", ch.to_header())
        else:
            try:
                server.verify(DigestCredentials.parse(value), req.method, now, password="secret")
                resp = make_response(req, 200, to_tag="reg")
                resp.headers.add("Contact", req.headers.get("Contact") or "")
            except DigestError:
                resp = make_response(req, 403, to_tag="reg")
        seen.append(resp.status)
        registrar.send_response(event.transaction, resp)

    registrar.handler = handle  # type: ignore[assignment]
    registrar.start()
    alice = await make_ua("alice")
    try:
        host, port = registrar.transport("UDP").local_address
        good = await alice.register(f"sip:{host}:{port}", "sip:alice@atlanta.example",
                                    credentials=DigestClient("alice", "secret"), timeout=TIMEOUT)
        assert good.status == 200
        assert good.cseq.seq == 2 and good.cseq.method == "REGISTER"
        assert "sip:alice@127.0.0.1" in (good.headers.get("Contact") or "")
        bad = await alice.register(f"sip:{host}:{port}", "sip:alice@atlanta.example",
                                   credentials=DigestClient("alice", "wrong"), timeout=TIMEOUT)
        assert bad.status == 403
        none = await alice.register(f"sip:{host}:{port}", "sip:alice@atlanta.example", timeout=TIMEOUT)
        assert none.status == 401  # no credentials: the challenge is returned as is
        assert seen == [401, 200, 401, 403, 401]
        options = await alice.request("OPTIONS", f"sip:{host}:{port}", timeout=TIMEOUT)
        assert options.status == 401  # this registrar challenges everything
    finally:
        await alice.endpoint.close()
        await registrar.close()


async def test_request_to_a_silent_peer_times_out() -> None:
    alice = await make_ua("alice")
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind(("127.0.0.1", 0))
    try:
        with pytest.raises(CallFailed) as info:
            await alice.request("OPTIONS", f"sip:x@127.0.0.1:{silent.getsockname()[1]}", timeout=TIMEOUT)
        assert info.value.status == 408  # Timer F (64*T1) fired in the core
    finally:
        silent.close()
        await alice.endpoint.close()
