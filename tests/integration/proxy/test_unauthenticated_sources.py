"""Unauthenticated sources: per-source rate limit (in the spirit of Kamailio's ``pike``), answers
sent once with no transaction kept, bounded tables, and answers that tell no user from another."""

from __future__ import annotations

import asyncio
import socket

from sipsec.sip import Response, parse_message
from sipsec_proxy.server import ProxyServer

import tests.integration.proxy.test_proxy_core as core
from tests.integration.proxy.test_proxy_core import Peer, _proxy, request

started = core.started
client = core.client


class SourceAt(Peer):
    """A UDP client bound to a chosen loopback address (one "source" for the limiter)."""

    def __init__(self, host: str) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((host, 0))
        self.sock.setblocking(False)
        self.port = self.sock.getsockname()[1]
        self.seq = 0
        self.host = host


async def _drain(peer: Peer, quiet: float) -> list[Response]:
    """Every response until ``quiet`` seconds pass without one."""
    got: list[Response] = []
    loop = asyncio.get_running_loop()
    while True:
        try:
            data = await asyncio.wait_for(loop.sock_recv(peer.sock, 70000), quiet)
        except TimeoutError:
            return got
        msg = parse_message(data)
        assert isinstance(msg, Response)
        got.append(msg)


def _invite(peer: Peer, user: str, n: int) -> str:
    return (request("INVITE", f"sip:{user}@atlanta.com", peer, to=f"sip:{user}@atlanta.com",
                    call_id=f"flood-{peer.port}-{n}")
            .replace("Via: SIP/2.0/UDP 127.0.0.1:", f"Via: SIP/2.0/UDP {getattr(peer, 'host', '127.0.0.1')}:"))


async def test_a_flood_is_rate_limited_answered_once_and_leaves_no_transaction(started: list[ProxyServer]) -> None:
    trusted = SourceAt("127.0.0.5")
    flooder = SourceAt("127.0.0.6")
    proxy = await _proxy(started, auth="none", rate_limit=20, rate_burst=30, peers="127.0.0.5")
    assert proxy.core is not None
    try:
        for n in range(200):
            flooder.send(_invite(flooder, f"user{n}", n), proxy.udp_address)
            trusted.send(_invite(trusted, f"user{n}", n), proxy.udp_address)
        # past Timer G's first retransmissions (0.5, 1.5 s); both sockets read at once
        flood, answered = await asyncio.gather(_drain(flooder, 1.6), _drain(trusted, 1.6))
        finals = [r for r in flood if r.status >= 200]
        # the untrusted source: its burst (30) and what refilled meanwhile, each answered exactly once
        assert 30 <= len(finals) <= 45 and {r.status for r in finals} == {404}
        assert len({r.call_id for r in finals}) == len(finals)  # no retransmitted answers
        assert proxy.metrics.rejections.labels("rate-limited")._value.get() >= 150
        # the configured peer: every request answered, statefully (the 404s are retransmitted until ACKed)
        assert len({r.call_id for r in answered if r.status == 404}) == 200
        # nothing kept for the untrusted source; the peer's INVITE transactions wait for their ACKs
        flooders = [ctx for ctx in proxy.core._server.values() if ctx.inbound.peer.host == "127.0.0.6"]
        assert flooders == []
        # its ACKs are absorbed (To-tag of ours) without a lookup or a forward
        for r in finals[:5]:
            ack = (f"ACK sip:x@atlanta.com SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.6:{flooder.port};branch="
                   f"{r.via[0].branch}\r\nMax-Forwards: 70\r\nFrom: {r.headers.get('From')}\r\nTo: "
                   f"{r.headers.get('To')}\r\nCall-ID: {r.call_id}\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n")
            flooder.send(ack, proxy.udp_address)
        await asyncio.sleep(0.2)
        assert proxy.metrics.rejections.labels("not-found")._value.get() == len(finals) + 200
    finally:
        trusted.close()
        flooder.close()


async def test_the_limiter_table_is_bounded(started: list[ProxyServer]) -> None:
    proxy = await _proxy(started, auth="none", rate_limit=5, rate_burst=5, rate_sources=16)
    assert proxy.core is not None
    sources = [SourceAt(f"127.0.1.{i}") for i in range(1, 41)]
    try:
        for s in sources:
            s.send(request("OPTIONS", "sip:atlanta.com", s, to="sip:atlanta.com", call_id=f"b-{s.port}")
                   .replace("127.0.0.1:", f"{s.host}:"), proxy.udp_address)
        await asyncio.sleep(0.3)
        assert len(proxy.core.limiter) == 16
        assert proxy.core.transaction_count == 0  # the 200s to untrusted sources keep nothing
    finally:
        for s in sources:
            s.close()


async def test_unknown_and_unreachable_users_get_the_same_answers(started: list[ProxyServer], client: Peer) -> None:
    """bob is a user of the domain (digest credentials) but not registered; mallory does not exist."""
    proxy = await _proxy(started)
    answers: dict[str, list[Response]] = {}
    for user in ("bob", "mallory"):
        for method in ("INVITE", "OPTIONS", "MESSAGE"):
            client.send(request(method, f"sip:{user}@atlanta.com", client, to=f"sip:{user}@atlanta.com",
                                call_id=f"{method}-{user}"), proxy.udp_address)
            answers.setdefault(method, []).append(await client.final())
    for method, (bob, mallory) in answers.items():
        assert bob.status == mallory.status == 404, method
        assert bob.reason == mallory.reason
        assert [n for n, _ in bob.headers.items()] == [n for n, _ in mallory.headers.items()]


async def test_untrusted_sources_share_one_budget_and_registered_sources_are_exempt(
        started: list[ProxyServer]) -> None:
    """A flood spread over many addresses, each under its own rate, still gets one common budget;
    the address of an authenticated (digest) REGISTER is one of ours and is not limited."""
    proxy = await _proxy(started, rate_limit=1000, rate_burst=1000, untrusted_rate=5, untrusted_burst=20)
    phone = SourceAt("127.0.0.7")
    spread = [SourceAt(f"127.0.2.{i}") for i in range(1, 9)]
    try:
        ok = await core._authorised_register(proxy, phone, "bob", "bob-secret")  # 2 requests of the budget
        assert ok.status == 200
        for s in spread:
            for n in range(10):
                s.send(request("OPTIONS", "sip:atlanta.com", s, to="sip:atlanta.com", call_id=f"sp-{s.port}-{n}")
                       .replace("127.0.0.1:", f"{s.host}:"), proxy.udp_address)
        for n in range(40):
            phone.send(request("OPTIONS", "sip:atlanta.com", phone, to="sip:atlanta.com", call_id=f"ph-{n}")
                       .replace("127.0.0.1:", "127.0.0.7:"), proxy.udp_address)
        answers = await asyncio.gather(*(_drain(s, 0.4) for s in spread))
        answered = sum(len(a) for a in answers)
        assert 18 <= answered <= 22  # the common burst (20, 2 spent by the REGISTER), plus what refilled
        assert len(await _drain(phone, 0.4)) == 40  # the registered phone: every request answered
        assert proxy.metrics.rejections.labels("rate-limited")._value.get() >= 58
    finally:
        phone.close()
        for s in spread:
            s.close()
