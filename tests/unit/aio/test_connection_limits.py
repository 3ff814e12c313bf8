"""TCP/TLS connection hygiene on real loopback sockets: per-source and global caps, the
reserved budget for configured peers, idle and header-read timeouts, TLS handshakes."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from prometheus_client import REGISTRY
from sipsec.aio.transport import ConnectionLimits, InboundQueue, Peer, StreamTransport
from sipsec.sip.message import Request, make_response

from tests.unit.aio._certs import make_certificate

pytestmark = pytest.mark.timeout(60)

TIMEOUT = 10.0
OTHER_SOURCE = "127.0.0.2"  # loopback is a /8: a second source address on this machine


def options(branch: str, transport: str = "TCP") -> bytes:
    return (
        "OPTIONS sip:bob@127.0.0.1 SIP/2.0\r\n"
        f"Via: SIP/2.0/{transport} 127.0.0.1:5999;branch={branch}\r\n"
        "Max-Forwards: 70\r\nFrom: <sip:alice@127.0.0.1>;tag=a1\r\nTo: <sip:bob@127.0.0.1>\r\n"
        f"Call-ID: {branch}@test\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    ).encode()


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def rejected(reason: str, transport: str = "TCP") -> float:
    return metric("sipsec_sip_connections_rejected_total", transport=transport, reason=reason)


def closed(reason: str, transport: str = "TCP") -> float:
    return metric("sipsec_sip_connections_closed_total", transport=transport, reason=reason)


async def wait_until(predicate: Callable[[], bool], timeout: float = TIMEOUT) -> None:
    """Poll a condition on the loop with a deadline (no fixed sleeps)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.005)


async def raw_connect(address: tuple[str, int], source: str = "127.0.0.1") -> socket.socket:
    """A plain non-blocking client socket bound to ``source``, connected to ``address``."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    sock.bind((source, 0))
    await asyncio.get_running_loop().sock_connect(sock, address)
    return sock


async def round_trip(transport: StreamTransport, queue: InboundQueue, source: str, branch: str) -> None:
    """A request from ``source`` reaches the queue and its 200 comes back on the connection."""
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection(*transport.local_address, local_addr=(source, 0)), TIMEOUT
    )
    try:
        writer.write(options(branch, transport.name))
        await writer.drain()
        item = await asyncio.wait_for(queue.get(), TIMEOUT)
        assert isinstance(item.message, Request) and item.message.via[0].branch == branch
        assert item.peer.host == source
        transport.send(make_response(item.message, 200, to_tag="t"),
                       transport.response_peer(item.message, item.peer))
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT)
        assert head.startswith(b"SIP/2.0 200 OK")
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def closed_by_server(sock: socket.socket, timeout: float = TIMEOUT) -> bool:
    """Read until the server closes (EOF or reset)."""
    loop = asyncio.get_running_loop()
    try:
        while True:
            data = await asyncio.wait_for(loop.sock_recv(sock, 4096), timeout)
            if not data:
                return True
    except (ConnectionResetError, BrokenPipeError):
        return True


@pytest.fixture
async def listen() -> AsyncIterator[Callable[..., object]]:
    opened: list[StreamTransport] = []

    async def make(limits: ConnectionLimits | None = None, **kwargs: object) -> tuple[StreamTransport, InboundQueue]:
        queue = InboundQueue(64)
        transport = await StreamTransport.listen(queue, "127.0.0.1", 0, connection_limits=limits,
                                                 **kwargs)  # type: ignore[arg-type]
        opened.append(transport)
        return transport, queue

    try:
        yield make
    finally:
        for transport in opened:
            await transport.close()


async def test_1100_idle_sockets_from_one_source_do_not_block_another(listen) -> None:
    """The attack of a TCP exhaustion flood: with the default limits, one source holds at
    most its per-source share and the others keep connecting."""
    transport, queue = await listen()  # the secure defaults
    cap = transport.connection_limits.max_per_source
    refused = rejected("per_source_limit")
    socks: list[socket.socket] = []
    try:
        for _ in range(1100):
            with contextlib.suppress(ConnectionError):
                socks.append(await raw_connect(transport.local_address))
        await wait_until(lambda: rejected("per_source_limit") >= refused + 1100 - cap)
        assert transport.connections_from("127.0.0.1") == cap
        assert transport.connection_count == cap
        await round_trip(transport, queue, OTHER_SOURCE, "z9hG4bK-other-source")
    finally:
        for sock in socks:
            sock.close()
    await wait_until(lambda: transport.connection_count == 0)


async def test_a_slowloris_connection_is_closed_after_the_header_timeout(listen) -> None:
    transport, queue = await listen(ConnectionLimits(header_timeout=0.4, idle_timeout=60))
    before = closed("header_timeout")
    sock = await raw_connect(transport.local_address)
    loop = asyncio.get_running_loop()
    request = options("z9hG4bK-slow")
    try:
        sent = 0
        with contextlib.suppress(ConnectionError, BrokenPipeError):
            while sent < len(request) - 1 and closed("header_timeout") == before:
                await loop.sock_sendall(sock, request[sent:sent + 8])  # a trickle, never the end
                sent += 8
                await asyncio.sleep(0.05)
        assert await closed_by_server(sock)
        assert closed("header_timeout") == before + 1
        assert queue.qsize() == 0 and transport.connection_count == 0
    finally:
        sock.close()


async def test_a_connection_that_never_speaks_is_closed_by_the_header_timeout(listen) -> None:
    transport, _ = await listen(ConnectionLimits(header_timeout=0.3, idle_timeout=60))
    before = closed("header_timeout")
    sock = await raw_connect(transport.local_address)
    try:
        assert await closed_by_server(sock)
        assert closed("header_timeout") == before + 1
    finally:
        sock.close()


async def test_a_complete_message_then_silence_is_closed_by_the_idle_timeout(listen) -> None:
    transport, queue = await listen(ConnectionLimits(header_timeout=0.2, idle_timeout=0.6))
    idle, header = closed("idle_timeout"), closed("header_timeout")
    sock = await raw_connect(transport.local_address)
    loop = asyncio.get_running_loop()
    try:
        await loop.sock_sendall(sock, options("z9hG4bK-idle"))
        item = await asyncio.wait_for(queue.get(), TIMEOUT)
        assert isinstance(item.message, Request)
        # keep-alives count as traffic (RFC 5626 §3.5.1): three pings past the header timeout
        for _ in range(3):
            await asyncio.sleep(0.1)
            await loop.sock_sendall(sock, b"\r\n\r\n")
            assert await asyncio.wait_for(loop.sock_recv(sock, 2), TIMEOUT) == b"\r\n"
        assert transport.connection_count == 1
        assert await closed_by_server(sock)
        assert closed("idle_timeout") == idle + 1 and closed("header_timeout") == header
    finally:
        sock.close()


async def test_the_per_source_cap_counts_by_source(listen) -> None:
    transport, queue = await listen(ConnectionLimits(max_per_source=3))
    before = rejected("per_source_limit")
    socks = [await raw_connect(transport.local_address) for _ in range(3)]
    try:
        await wait_until(lambda: transport.connections_from("127.0.0.1") == 3)
        extra = await raw_connect(transport.local_address)
        socks.append(extra)
        assert await closed_by_server(extra)
        assert rejected("per_source_limit") == before + 1
        await round_trip(transport, queue, OTHER_SOURCE, "z9hG4bK-second-source")
    finally:
        for sock in socks:
            sock.close()


async def test_a_configured_peer_connects_when_the_global_cap_is_reached(listen) -> None:
    limits = ConnectionLimits(max_connections=8, reserved_for_peers=2, max_per_source=100,
                              peers=(OTHER_SOURCE,))
    transport, queue = await listen(limits)
    before = rejected("global_limit")
    socks = [await raw_connect(transport.local_address) for _ in range(6)]
    try:
        await wait_until(lambda: transport.connection_count == 6)
        # the unreserved budget is spent: anyone else is refused ...
        extra = await raw_connect(transport.local_address)
        socks.append(extra)
        assert await closed_by_server(extra)
        assert rejected("global_limit") == before + 1
        # ... but the configured peer still gets in, past the others' share
        await round_trip(transport, queue, OTHER_SOURCE, "z9hG4bK-peer")
        await wait_until(lambda: transport.connection_count == 6)
    finally:
        for sock in socks:
            sock.close()


async def test_outbound_connections_are_never_refused(listen) -> None:
    a, _ = await listen(ConnectionLimits(max_connections=1, reserved_for_peers=0, max_per_source=1))
    b, qb = await listen()
    blocker = await raw_connect(a.local_address)  # a's whole budget
    try:
        await wait_until(lambda: a.connection_count == 1)
        a.send(options("z9hG4bK-out"), Peer("TCP", *b.local_address))
        item = await asyncio.wait_for(qb.get(), TIMEOUT)
        assert item.message.via[0].branch == "z9hG4bK-out"
        assert a.connection_count == 2
    finally:
        blocker.close()


def _user_timeouts_ms(transport: StreamTransport) -> list[int]:
    out = []
    for conn in transport._open:
        assert conn.transport is not None
        sock = conn.transport.get_extra_info("socket")
        out.append(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT))
    return out


async def test_connections_give_up_on_data_unacknowledged_past_the_limit(listen) -> None:
    """Both ends of a connection (opened and accepted) carry ``TCP_USER_TIMEOUT`` =
    ``unacked_timeout``: a peer cut off by the network is dropped in seconds (the owner then
    answers 503 and the next message opens a new connection), not after minutes of backed-off
    retransmissions that new messages would queue behind once the network is back."""
    a, _ = await listen(ConnectionLimits(unacked_timeout=2.5))
    b, qb = await listen()
    a.send(options("z9hG4bK-unacked"), Peer("TCP", *b.local_address))
    item = await asyncio.wait_for(qb.get(), TIMEOUT)
    assert item.message.via[0].branch == "z9hG4bK-unacked"
    assert _user_timeouts_ms(a) == [2500]  # opened by a
    assert _user_timeouts_ms(b) == [10_000]  # accepted by b, with the default limits


async def test_tls_handshakes_are_capped_and_timed_out(listen, tmp_path: Path) -> None:
    """TLS starts only after admission: silent TCP connects to the TLS port count against
    the caps and are closed after the header timeout; a real client still gets through."""
    cert = make_certificate(tmp_path)
    transport, queue = await listen(ConnectionLimits(max_per_source=2, header_timeout=0.5),
                                    server_ssl=cert.server_context())
    assert transport.name == "TLS"
    refused, failed = rejected("per_source_limit", "TLS"), closed("tls_handshake_failed", "TLS")
    timed_out = closed("header_timeout", "TLS")
    silent = [await raw_connect(transport.local_address) for _ in range(2)]
    try:
        await wait_until(lambda: transport.connection_count == 2)
        third = await raw_connect(transport.local_address)
        silent.append(third)
        assert await closed_by_server(third)
        assert rejected("per_source_limit", "TLS") == refused + 1
        for sock in silent[:2]:
            assert await closed_by_server(sock)
        assert (closed("tls_handshake_failed", "TLS") - failed) + (
            closed("header_timeout", "TLS") - timed_out) == 2
        await wait_until(lambda: transport.connection_count == 0)
    finally:
        for sock in silent:
            sock.close()
    client_ctx = cert.client_context()
    reader, writer = await asyncio.wait_for(asyncio.open_connection(
        *transport.local_address, ssl=client_ctx, server_hostname="localhost"), TIMEOUT)
    try:
        writer.write(options("z9hG4bK-tls-ok", "TLS"))
        await writer.drain()
        item = await asyncio.wait_for(queue.get(), TIMEOUT)
        assert item.message.via[0].branch == "z9hG4bK-tls-ok"
    finally:
        writer.close()
        with contextlib.suppress(OSError, ssl.SSLError):
            await writer.wait_closed()


async def test_bad_bytes_after_a_good_message_close_the_stream_after_delivering_it(listen) -> None:
    transport, queue = await listen()
    before = closed("framing_error")
    sock = await raw_connect(transport.local_address)
    try:
        bad = b"OPTIONS sip:b@x SIP/2.0\r\nVia: SIP/2.0/TCP h;branch=z9hG4bKbad\r\n\r\n"  # no length
        await asyncio.get_running_loop().sock_sendall(sock, options("z9hG4bK-good") + bad)
        item = await asyncio.wait_for(queue.get(), TIMEOUT)
        assert item.message.via[0].branch == "z9hG4bK-good"
        assert await closed_by_server(sock)
        assert closed("framing_error") == before + 1
    finally:
        sock.close()


def test_limits_are_validated() -> None:
    with pytest.raises(ValueError):
        ConnectionLimits(max_connections=4, reserved_for_peers=4)
    with pytest.raises(ValueError):
        ConnectionLimits(header_timeout=0)
    with pytest.raises(ValueError):
        ConnectionLimits(unacked_timeout=0)
    with pytest.raises(ValueError):
        ConnectionLimits(peers=("not-an-address",))
    assert ConnectionLimits.with_peers(["10.0.0.0/8"]).peers == ("10.0.0.0/8",)
