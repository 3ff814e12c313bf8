"""The proxy fails fast and loud: a request it cannot forward, or cannot route because a
dependency is down, gets a final response at once (RFC 3261 §8.1.3.1, §16.7 step 6,
§21.5.4), never silence.

Real sockets throughout: a TCP port that refuses connections, a UDP port nobody listens on,
a real location service (gRPC on port 0) that the test stops, a TCP listener that accepts
but never speaks gRPC (a location service past its deadline), and a real redis-server that
the test pauses (SIGSTOP: past the deadline) and stops.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
from collections.abc import AsyncIterator

import pytest
from sipsec.sip import Request, Response, TimerSettings, make_response
from sipsec_location.config import LocationConfig
from sipsec_location.server import LocationServer, create_location_server
from sipsec_proxy.locator import BindRequest
from sipsec_proxy.server import ProxyServer, create_proxy_server

from tests.conftest import RedisServer
from tests.integration.proxy.test_proxy_core import Peer, _config, request
from tests.sipp import free_port_on

#: Short transaction timers: Timer B/F = 64*T1 = 1.28 s.
SHORT = TimerSettings(t1=0.02, t2=0.16, t4=0.2, timer_d_unreliable=0.2)

BOB = "sip:bob@atlanta.com"


def _invite(client: Peer, call_id: str, *, ruri: str = BOB, extra: str = "") -> str:
    return request("INVITE", ruri, client, to=BOB, call_id=call_id, extra=extra)


async def _final(client: Peer, timeout: float) -> Response:
    """The first final response ``client`` receives within ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while True:
        msg = await client.recv(timeout=max(0.01, end - loop.time()))
        if isinstance(msg, Response) and msg.status >= 200:
            return msg


async def _table_empties(proxy: ProxyServer, timeout: float) -> bool:
    core = proxy.core
    assert core is not None
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while core.transaction_count and loop.time() < end:
        await asyncio.sleep(0.02)
    return core.transaction_count == 0 and core.scheduled_timers == 0


def _rejections(proxy: ProxyServer, reason: str) -> float:
    return float(proxy.metrics.rejections.labels(reason)._value.get())


@pytest.fixture
async def client() -> AsyncIterator[Peer]:
    peer = Peer()
    yield peer
    peer.close()


async def test_invite_to_a_contact_refusing_tcp_is_answered_503_at_once(client: Peer) -> None:
    # default timers: Timer B is 32 s, so an answer within 2 s comes from the refused connect
    proxy = create_proxy_server(_config(auth="none", tcp_listen="127.0.0.1:0"))
    await proxy.start()
    try:
        closed = free_port_on("127.0.0.1", socket.SOCK_STREAM)  # nothing listens: connect refused
        await proxy.locator.bind(BOB, BindRequest(f"sip:bob@127.0.0.1:{closed};transport=tcp", 600), "c1", 1, "")
        loop = asyncio.get_running_loop()
        started = loop.time()
        client.send(_invite(client, "refused-1"), proxy.udp_address)
        final = await _final(client, timeout=2.0)
        assert final.status == 503
        assert loop.time() - started < 2.0
        assert final.headers.get("Retry-After") is None  # the callee's hop is down, not this proxy
        assert final.call_id == "refused-1" and final.cseq.method == "INVITE"
        assert _rejections(proxy, "transport-error") == 1
        assert await _table_empties(proxy, timeout=1.0)
    finally:
        await proxy.stop(0)


async def test_udp_to_a_closed_port_gets_a_final_response_and_the_table_empties(client: Peer) -> None:
    proxy = create_proxy_server(_config(auth="none"), timers=SHORT)
    await proxy.start()
    try:
        closed = free_port_on("127.0.0.1", socket.SOCK_DGRAM)  # nothing listens: ICMP port unreachable
        await proxy.locator.bind(BOB, BindRequest(f"sip:bob@127.0.0.1:{closed}", 600), "c1", 1, "")
        client.send(_invite(client, "closed-udp-1"), proxy.udp_address)
        client.send(request("MESSAGE", BOB, client, to=BOB, call_id="closed-udp-2"), proxy.udp_address)
        finals = {}
        for _ in range(2):
            resp = await _final(client, timeout=64 * SHORT.t1 + 2.0)
            finals[resp.cseq.method] = resp.status
        # what the transport can see: an ICMP error (503) or nothing until Timer B/F (408)
        assert set(finals) == {"INVITE", "MESSAGE"}
        assert all(status in (408, 503) for status in finals.values()), finals
        assert await _table_empties(proxy, timeout=2.0)
    finally:
        await proxy.stop(0)


@pytest.fixture
async def location() -> AsyncIterator[tuple[LocationServer, int]]:
    server, port = create_location_server(LocationConfig(listen="127.0.0.1:0", metrics_port=-1, drain_seconds=0))
    await server.start()
    yield server, port
    await server.stop(0)


async def test_location_stopped_is_503_with_retry_after_within_the_deadline(
        location: tuple[LocationServer, int], client: Peer, caplog: pytest.LogCaptureFixture) -> None:
    server, port = location
    deadline = 1.0
    proxy = create_proxy_server(_config(auth="none", location=f"127.0.0.1:{port}", location_cache_ms=0,
                                        location_timeout_s=deadline, retry_after_s=7))
    await proxy.start()
    try:
        callee = Peer()
        try:
            await proxy.locator.bind(BOB, BindRequest(f"sip:bob@127.0.0.1:{callee.port}", 600), "c1", 1, "")
        finally:
            callee.close()
        await server.stop(0)  # the location service goes away
        caplog.set_level(logging.WARNING, logger="sipsec.proxy")
        loop = asyncio.get_running_loop()
        for i in range(3):
            started = loop.time()
            client.send(_invite(client, f"no-location-{i}"), proxy.udp_address)
            final = await _final(client, timeout=deadline + 2.0)
            assert final.status == 503 and final.headers.get("Retry-After") == "7"
            assert loop.time() - started < deadline + 0.5
        # a CANCEL matching no INVITE here is routed like its INVITE (§16.10): answered too
        client.send(request("CANCEL", BOB, client, to=BOB, call_id="no-location-cancel"), proxy.udp_address)
        final = await _final(client, timeout=deadline + 2.0)
        assert (final.status, final.cseq.method, final.headers.get("Retry-After")) == (503, "CANCEL", "7")
        assert _rejections(proxy, "location-error") == 4
        lines = [r.getMessage() for r in caplog.records if "location service" in r.getMessage()]
        assert len(lines) == 1, lines  # a burst is logged once, not once per request
        assert "UNAVAILABLE" in lines[0] or "DEADLINE_EXCEEDED" in lines[0], lines
        assert "error: error" not in lines[0]
    finally:
        await proxy.stop(0)


async def test_a_location_service_past_its_deadline_is_503_and_logged_with_the_status(
        client: Peer, caplog: pytest.LogCaptureFixture) -> None:
    mute = socket.socket(socket.AF_INET, socket.SOCK_STREAM)  # accepts connections, never answers
    mute.bind(("127.0.0.1", 0))
    mute.listen(16)
    deadline = 0.5
    proxy = create_proxy_server(_config(auth="none", location=f"127.0.0.1:{mute.getsockname()[1]}",
                                        location_cache_ms=0, location_timeout_s=deadline))
    await proxy.start()
    try:
        caplog.set_level(logging.WARNING, logger="sipsec.proxy")
        loop = asyncio.get_running_loop()
        started = loop.time()
        client.send(_invite(client, "slow-location"), proxy.udp_address)
        final = await _final(client, timeout=deadline + 2.0)
        assert final.status == 503 and final.headers.get("Retry-After") == "5"
        assert loop.time() - started < deadline + 0.5
        lines = [r.getMessage() for r in caplog.records if "location service" in r.getMessage()]
        assert len(lines) == 1 and "DEADLINE_EXCEEDED" in lines[0], lines
    finally:
        await proxy.stop(0)
        mute.close()


async def test_an_established_call_goes_on_without_the_location_service(
        location: tuple[LocationServer, int], client: Peer) -> None:
    server, port = location
    proxy = create_proxy_server(_config(auth="none", location=f"127.0.0.1:{port}", location_cache_ms=0))
    await proxy.start()
    callee = Peer()
    try:
        contact = f"sip:bob@127.0.0.1:{callee.port}"
        await proxy.locator.bind(BOB, BindRequest(contact, 600), "c1", 1, "")
        client.send(_invite(client, "dialog-1", extra=f"Contact: <sip:alice@127.0.0.1:{client.port}>\r\n"),
                    proxy.udp_address)
        invite = None
        while invite is None:
            msg = await callee.recv(timeout=3.0)
            if isinstance(msg, Request) and msg.method == "INVITE":
                invite = msg
        record_route = invite.headers.get_all("Record-Route")
        assert record_route
        ok = make_response(invite, 200, to_tag="callee1")
        for rr in record_route:
            ok.headers.add("Record-Route", rr)
        ok.headers.add("Contact", f"<{contact}>")
        callee.send(ok.to_bytes(), proxy.udp_address)
        assert (await _final(client, timeout=3.0)).status == 200
        await server.stop(0)  # location goes away; the dialog's route set needs none
        routes = "".join(f"Route: {rr}\r\n" for rr in reversed(record_route))
        bye = request("BYE", contact, client, to=f"{BOB};tag=callee1", call_id="dialog-1", cseq=2, extra=routes)
        client.send(bye.replace(f"To: <{BOB};tag=callee1>", f"To: <{BOB}>;tag=callee1"), proxy.udp_address)
        got = None
        while got is None:
            msg = await callee.recv(timeout=3.0)
            if isinstance(msg, Request) and msg.method == "BYE":
                got = msg
        assert got.call_id == "dialog-1"
        callee.send(make_response(got, 200).to_bytes(), proxy.udp_address)
        assert (await _final(client, timeout=3.0)).status == 200
        assert _rejections(proxy, "location-error") == 0
    finally:
        callee.close()
        await proxy.stop(0)


async def test_redis_paused_then_stopped_is_503_with_retry_after(
        client: Peer, caplog: pytest.LogCaptureFixture) -> None:
    redis = RedisServer()  # a real redis-server of this test's own: it is paused and stopped
    deadline = 0.5
    proxy = create_proxy_server(_config(auth="none", location="redis", redis_url=redis.url, location_cache_ms=0,
                                        location_timeout_s=deadline))
    try:
        await proxy.start()
        callee = Peer()
        try:
            await proxy.locator.bind(BOB, BindRequest(f"sip:bob@127.0.0.1:{callee.port}", 600), "c1", 1, "")
        finally:
            callee.close()
        caplog.set_level(logging.WARNING, logger="sipsec.proxy")
        loop = asyncio.get_running_loop()
        redis.proc.send_signal(signal.SIGSTOP)  # hung: every command waits past the deadline
        try:
            started = loop.time()
            client.send(_invite(client, "redis-paused"), proxy.udp_address)
            final = await _final(client, timeout=deadline + 2.0)
            assert final.status == 503 and final.headers.get("Retry-After") == "5"
            assert loop.time() - started < deadline + 0.5
        finally:
            redis.proc.send_signal(signal.SIGCONT)
        lines = [r.getMessage() for r in caplog.records if "location service" in r.getMessage()]
        assert len(lines) == 1 and "DEADLINE_EXCEEDED" in lines[0], lines
        redis.stop()  # gone: connections refused
        started = loop.time()
        client.send(_invite(client, "redis-stopped"), proxy.udp_address)
        final = await _final(client, timeout=deadline + 2.0)
        assert final.status == 503 and final.headers.get("Retry-After") == "5"
        assert loop.time() - started < deadline + 0.5
        assert _rejections(proxy, "location-error") == 2
    finally:
        await proxy.stop(0)
        redis.stop()
