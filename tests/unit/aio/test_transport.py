"""Transports on real loopback sockets: parsing, §18.2 routing, malformed input, queue, TCP framing, TLS."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from prometheus_client import REGISTRY
from sipsec.aio.transport import (
    InboundQueue,
    Peer,
    StreamTransport,
    UdpTransport,
    build_error_response,
    response_destination,
)
from sipsec.sip.message import Request, Response, make_response
from sipsec.sip.parser import Limits, parse_message

from tests.unit.aio._certs import make_certificate

pytestmark = pytest.mark.timeout(30)

TIMEOUT = 5.0


def options(
    branch: str = "z9hG4bK-t1",
    host: str = "127.0.0.1",
    port: int = 5999,
    via_params: str = ";rport",
    cseq: str = "1 OPTIONS",
    call_id: str = "cid-1@test",
) -> bytes:
    return (
        "OPTIONS sip:bob@127.0.0.1 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {host}:{port};branch={branch}{via_params}\r\n"
        "Max-Forwards: 70\r\n"
        "From: <sip:alice@127.0.0.1>;tag=a1\r\n"
        "To: <sip:bob@127.0.0.1>\r\n"
        f"Call-ID: {call_id}\r\n"
        f"CSeq: {cseq}\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def wait_until(predicate: Callable[[], bool], timeout: float = TIMEOUT) -> None:
    """Poll a condition on the loop (event-driven waits with a deadline, no fixed sleeps)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.002)


class UdpClient(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.received: asyncio.Queue[bytes] = asyncio.Queue()
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.received.put_nowait(data)

    @property
    def port(self) -> int:
        assert self.transport is not None
        return int(self.transport.get_extra_info("sockname")[1])


@pytest.fixture
async def udp() -> AsyncIterator[tuple[UdpTransport, UdpClient, InboundQueue]]:
    queue = InboundQueue(16)
    transport = await UdpTransport.listen(queue, "127.0.0.1", 0)
    loop = asyncio.get_running_loop()
    _, client = await loop.create_datagram_endpoint(UdpClient, local_addr=("127.0.0.1", 0))
    try:
        yield transport, client, queue
    finally:
        assert client.transport is not None
        client.transport.close()
        await transport.close()


def sendto(client: UdpClient, data: bytes, transport: UdpTransport) -> None:
    assert client.transport is not None
    client.transport.sendto(data, transport.local_address)


async def test_udp_request_is_queued_with_received_and_rport(udp) -> None:
    transport, client, queue = udp
    # sent-by names another host: received= and the filled rport (RFC 3581 §4) are stamped.
    sendto(client, options(host="192.0.2.7", port=5999), transport)
    item = await asyncio.wait_for(queue.get(), TIMEOUT)
    assert isinstance(item.message, Request)
    assert item.peer == Peer("UDP", "127.0.0.1", client.port)
    top = item.message.via[0]
    assert top.received == "127.0.0.1"
    assert top.rport == client.port
    # §18.2.2 / RFC 3581: the response goes back to the source address and port.
    resp = make_response(item.message, 200)
    assert response_destination(resp, "UDP") == ("127.0.0.1", client.port)
    transport.send(resp, transport.response_peer(item.message, item.peer))
    data = await asyncio.wait_for(client.received.get(), TIMEOUT)
    answer = parse_message(data)
    assert isinstance(answer, Response) and answer.status == 200
    assert answer.via[0].rport == client.port


async def test_udp_malformed_request_with_readable_via_gets_400(udp) -> None:
    transport, client, queue = udp
    answered = metric("sipsec_sip_bad_requests_answered_total", transport="UDP", status="400")
    dropped = metric("sipsec_sip_messages_dropped_total", transport="UDP", reason="bad-cseq")
    sendto(client, options(cseq="one OPTIONS"), transport)
    data = await asyncio.wait_for(client.received.get(), TIMEOUT)
    # The bad CSeq is copied as received (§8.2.6.1), so check the raw answer.
    assert data.startswith(b"SIP/2.0 400 Bad Request\r\n")
    assert b"\r\nCall-ID: cid-1@test\r\n" in data
    assert b"branch=z9hG4bK-t1" in data
    assert b'Warning: 399 sipsec "bad-cseq"' in data
    assert metric("sipsec_sip_bad_requests_answered_total", transport="UDP", status="400") == answered + 1
    assert metric("sipsec_sip_messages_dropped_total", transport="UDP", reason="bad-cseq") == dropped + 1
    assert queue.qsize() == 0


async def test_udp_bad_request_uri_gets_a_parseable_400(udp) -> None:
    transport, client, queue = udp
    bad = options().replace(b"OPTIONS sip:bob@127.0.0.1 SIP/2.0", b"OPTIONS sip:bob@@ SIP/2.0")
    sendto(client, bad, transport)
    answer = parse_message(await asyncio.wait_for(client.received.get(), TIMEOUT))
    assert isinstance(answer, Response) and answer.status == 400
    assert answer.call_id == "cid-1@test"
    assert answer.via[0].branch == "z9hG4bK-t1"
    assert answer.cseq.method == "OPTIONS"
    assert answer.to.tag
    assert queue.qsize() == 0


async def test_udp_garbage_is_dropped_and_counted_without_answer(udp) -> None:
    transport, client, queue = udp
    total_before = _total_dropped("UDP")
    sendto(client, b"\x00\x01 this is not SIP at all\r\n\r\n", transport)
    # A good message sent after it is processed after it (one socket, one loop, in order).
    sendto(client, options(branch="z9hG4bK-after"), transport)
    item = await asyncio.wait_for(queue.get(), TIMEOUT)
    assert item.message.via[0].branch == "z9hG4bK-after"
    assert _total_dropped("UDP") == total_before + 1
    assert client.received.empty()  # nothing was answered


@pytest.mark.parametrize(
    "start",
    ["INV@ITE sip:bob@127.0.0.1 SIP/2.0", "OPTIONS sip:bob@127.0.0.1", "\x01\x02 not a start line"],
)
async def test_udp_request_with_a_broken_start_line_but_readable_via_gets_400(udp, start: str) -> None:
    """The README's promise: any request whose Via can be read is answered, to its source."""
    transport, client, queue = udp
    answered = metric("sipsec_sip_bad_requests_answered_total", transport="UDP", status="400")
    data = options(branch="z9hG4bK-broken", host="192.0.2.99").replace(
        b"OPTIONS sip:bob@127.0.0.1 SIP/2.0", start.encode())
    sendto(client, data, transport)
    reply = await asyncio.wait_for(client.received.get(), TIMEOUT)  # to the source, not 192.0.2.99
    assert reply.startswith(b"SIP/2.0 400 Bad Request\r\n") and b"branch=z9hG4bK-broken" in reply
    assert metric("sipsec_sip_bad_requests_answered_total", transport="UDP", status="400") == answered + 1
    assert queue.qsize() == 0


def _total_dropped(transport: str) -> float:
    total = 0.0
    for family in REGISTRY.collect():
        if family.name != "sipsec_sip_messages_dropped":
            continue
        for sample in family.samples:
            if sample.name.endswith("_total") and sample.labels.get("transport") == transport:
                total += sample.value
    return total


async def test_udp_malformed_response_is_dropped_not_answered(udp) -> None:
    transport, client, queue = udp
    before = metric("sipsec_sip_messages_dropped_total", transport="UDP", reason="malformed_response")
    sendto(client, b"SIP/2.0 2OO OK\r\nVia: SIP/2.0/UDP 127.0.0.1:1;branch=z9hG4bKx\r\n\r\n", transport)
    sendto(client, options(branch="z9hG4bK-next"), transport)
    await asyncio.wait_for(queue.get(), TIMEOUT)
    assert metric("sipsec_sip_messages_dropped_total", transport="UDP", reason="malformed_response") == before + 1
    assert client.received.empty()


async def test_udp_oversize_datagram_answered_513(udp) -> None:
    transport, client, queue = udp
    transport.limits = Limits(max_message_bytes=600)
    big = options().replace(b"Content-Length: 0\r\n", b"X-Pad: " + b"a" * 700 + b"\r\nContent-Length: 0\r\n")
    sendto(client, big, transport)
    data = await asyncio.wait_for(client.received.get(), TIMEOUT)
    answer = parse_message(data)
    assert isinstance(answer, Response) and answer.status == 513


async def test_udp_queue_overflow_drops_and_counts() -> None:
    queue = InboundQueue(2)
    transport = await UdpTransport.listen(queue, "127.0.0.1", 0)
    before = metric("sipsec_sip_messages_dropped_total", transport="UDP", reason="queue_full")
    received = metric("sipsec_sip_messages_received_total", transport="UDP", kind="request")
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            for i in range(5):
                s.sendto(options(branch=f"z9hG4bK-q{i}"), transport.local_address)
            await wait_until(lambda: queue.dropped == 3)
        assert queue.qsize() == 2
        assert metric("sipsec_sip_messages_dropped_total", transport="UDP", reason="queue_full") == before + 3
        assert metric("sipsec_sip_messages_received_total", transport="UDP", kind="request") == received + 2
        first = queue.get_nowait()
        assert first.message.via[0].branch == "z9hG4bK-q0"  # FIFO; the newest were dropped
    finally:
        await transport.close()


async def test_udp_keepalive_crlf_is_ignored(udp) -> None:
    transport, client, queue = udp
    dropped = _total_dropped("UDP")
    sendto(client, b"\r\n\r\n", transport)
    sendto(client, options(branch="z9hG4bK-ka"), transport)
    item = await asyncio.wait_for(queue.get(), TIMEOUT)
    assert item.message.via[0].branch == "z9hG4bK-ka"
    assert _total_dropped("UDP") == dropped


def test_response_destination_rules() -> None:
    def resp(via: str) -> Response:
        r = Response(200, "OK")
        r.headers.add("Via", via)
        return r

    # received + rport with value (RFC 3581 §4)
    assert response_destination(resp("SIP/2.0/UDP a.example:5070;received=192.0.2.1;rport=4000"), "UDP") == ("192.0.2.1", 4000)
    # received without rport: sent-by port
    assert response_destination(resp("SIP/2.0/UDP a.example:5070;received=192.0.2.1"), "UDP") == ("192.0.2.1", 5070)
    # maddr wins (§18.2.2)
    assert response_destination(resp("SIP/2.0/UDP a.example;maddr=239.1.1.1;received=192.0.2.1"), "UDP") == ("239.1.1.1", 5060)
    # plain sent-by, default ports per transport
    assert response_destination(resp("SIP/2.0/UDP 192.0.2.9"), "UDP") == ("192.0.2.9", 5060)
    assert response_destination(resp("SIP/2.0/TLS 192.0.2.9"), "TLS") == ("192.0.2.9", 5061)


def test_build_error_response_needs_a_readable_via() -> None:
    assert build_error_response(options(cseq="x"), 400, "bad-cseq") is not None
    no_via = options().replace(b"Via: SIP/2.0/UDP 127.0.0.1:5999;branch=z9hG4bK-t1;rport\r\n", b"")
    assert build_error_response(no_via, 400, "missing-via") is None
    bad_via = options().replace(b"SIP/2.0/UDP 127.0.0.1:5999", b"garbage")
    assert build_error_response(bad_via, 400, "bad-via") is None
    assert build_error_response(b"SIP/2.0 200 OK\r\n\r\n", 400, "x") is None
    bad_ack = options(cseq="x").replace(b"OPTIONS sip:", b"ACK sip:")
    assert build_error_response(bad_ack, 400, "bad-cseq") is None  # never answer an ACK


# --- TCP ---------------------------------------------------------------------------------


@pytest.fixture
async def tcp() -> AsyncIterator[tuple[StreamTransport, InboundQueue]]:
    queue = InboundQueue(16)
    transport = await StreamTransport.listen(queue, "127.0.0.1", 0)
    try:
        yield transport, queue
    finally:
        await transport.close()


def tcp_options(branch: str, body: bytes = b"") -> bytes:
    head = options(branch=branch, via_params="").replace(b"SIP/2.0/UDP", b"SIP/2.0/TCP")
    if body:
        head = head.replace(b"Content-Length: 0", b"Content-Type: text/plain\r\nContent-Length: %d" % len(body))
    return head + body


async def test_tcp_two_messages_in_one_segment(tcp) -> None:
    transport, queue = tcp
    reader, writer = await asyncio.open_connection(*transport.local_address)
    try:
        writer.write(tcp_options("z9hG4bK-a", b"hello") + tcp_options("z9hG4bK-b"))
        await writer.drain()
        first = await asyncio.wait_for(queue.get(), TIMEOUT)
        second = await asyncio.wait_for(queue.get(), TIMEOUT)
        assert [first.message.via[0].branch, second.message.via[0].branch] == ["z9hG4bK-a", "z9hG4bK-b"]
        assert first.message.body == b"hello"
        assert first.peer.transport == "TCP"
        assert first.peer == second.peer
    finally:
        writer.close()
        await writer.wait_closed()


async def test_tcp_message_split_across_segments(tcp) -> None:
    transport, queue = tcp
    reader, writer = await asyncio.open_connection(*transport.local_address)
    try:
        data = tcp_options("z9hG4bK-split", b"0123456789")
        cut = [7, len(data) // 2, len(data) - 3]  # inside the start line, headers and body
        pieces = [data[: cut[0]], data[cut[0] : cut[1]], data[cut[1] : cut[2]], data[cut[2] :]]
        for piece in pieces[:-1]:
            seen = transport.bytes_received
            writer.write(piece)
            await writer.drain()
            # wait until the transport has consumed this piece before sending the next one
            await wait_until(lambda seen=seen, piece=piece: transport.bytes_received >= seen + len(piece))
            assert queue.qsize() == 0
        writer.write(pieces[-1])
        await writer.drain()
        item = await asyncio.wait_for(queue.get(), TIMEOUT)
        assert item.message.via[0].branch == "z9hG4bK-split"
        assert item.message.body == b"0123456789"
    finally:
        writer.close()
        await writer.wait_closed()


async def test_tcp_response_reuses_the_request_connection(tcp) -> None:
    transport, queue = tcp
    reader, writer = await asyncio.open_connection(*transport.local_address)
    try:
        writer.write(tcp_options("z9hG4bK-reuse"))
        await writer.drain()
        item = await asyncio.wait_for(queue.get(), TIMEOUT)
        req = item.message
        assert isinstance(req, Request)
        transport.send(make_response(req, 200, to_tag="t"), transport.response_peer(req, item.peer))
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT)
        assert head.startswith(b"SIP/2.0 200 OK")
        assert transport.connection_count == 1
    finally:
        writer.close()
        await writer.wait_closed()


async def test_tcp_framing_error_is_counted_and_closes(tcp) -> None:
    transport, queue = tcp
    transport.limits = Limits(max_message_bytes=2000)
    reader, writer = await asyncio.open_connection(*transport.local_address)
    before = _total_dropped("TCP")
    try:
        writer.write(tcp_options("z9hG4bK-big").replace(b"Content-Length: 0", b"Content-Length: 99999"))
        await writer.drain()
        # the server answers what it can, then closes: read to EOF
        rest = await asyncio.wait_for(reader.read(), TIMEOUT)
        assert rest == b"" or rest.startswith(b"SIP/2.0 ")
        await wait_until(lambda: _total_dropped("TCP") == before + 1)
        assert queue.qsize() == 0
    finally:
        writer.close()
        await writer.wait_closed()


async def test_tcp_transport_to_transport_connection_reuse() -> None:
    qa, qb = InboundQueue(8), InboundQueue(8)
    a = await StreamTransport.listen(qa, "127.0.0.1", 0)
    b = await StreamTransport.listen(qb, "127.0.0.1", 0)
    try:
        req = parse_message(tcp_options("z9hG4bK-ab"))
        assert isinstance(req, Request)
        # two sends before the connect completes share one connection
        a.send(req, Peer("TCP", *b.local_address))
        a.send(req.copy(), Peer("TCP", *b.local_address))
        one = await asyncio.wait_for(qb.get(), TIMEOUT)
        await asyncio.wait_for(qb.get(), TIMEOUT)
        assert a.connection_count == 1 and b.connection_count == 1
        got = one.message
        assert isinstance(got, Request)
        b.send(make_response(got, 200, to_tag="x"), b.response_peer(got, one.peer))
        back = await asyncio.wait_for(qa.get(), TIMEOUT)
        assert isinstance(back.message, Response) and back.message.status == 200
        assert a.connection_count == 1 and b.connection_count == 1
    finally:
        await a.close()
        await b.close()


async def test_tcp_connect_failure_is_reported() -> None:
    queue = InboundQueue(4)
    failures: list[str] = []
    transport = await StreamTransport.listen(
        queue, "127.0.0.1", 0, on_send_error=lambda msg, peer, reason: failures.append(reason)
    )
    dead = socket.socket()
    dead.bind(("127.0.0.1", 0))
    port = dead.getsockname()[1]
    dead.close()  # nothing listens there now
    try:
        transport.send(tcp_options("z9hG4bK-dead"), Peer("TCP", "127.0.0.1", port))
        await wait_until(lambda: failures == ["connect_failed"])
    finally:
        await transport.close()


async def test_tls_round_trip(tmp_path: Path) -> None:
    cert = make_certificate(tmp_path)
    qa, qb = InboundQueue(8), InboundQueue(8)
    server = await StreamTransport.listen(
        qb, "127.0.0.1", 0, server_ssl=cert.server_context(), client_ssl=cert.client_context()
    )
    client = await StreamTransport.listen(
        qa, "127.0.0.1", 0, server_ssl=cert.server_context(), client_ssl=cert.client_context()
    )
    try:
        assert server.name == "TLS" and client.name == "TLS"
        req = parse_message(tcp_options("z9hG4bK-tls").replace(b"SIP/2.0/TCP", b"SIP/2.0/TLS"))
        assert isinstance(req, Request)
        client.send(req, Peer("TLS", *server.local_address))
        item = await asyncio.wait_for(qb.get(), TIMEOUT)
        assert item.peer.transport == "TLS"
        got = item.message
        assert isinstance(got, Request) and got.via[0].branch == "z9hG4bK-tls"
        server.send(make_response(got, 200, to_tag="s"), server.response_peer(got, item.peer))
        back = await asyncio.wait_for(qa.get(), TIMEOUT)
        assert isinstance(back.message, Response) and back.message.status == 200
    finally:
        await client.close()
        await server.close()


async def test_tls_rejects_an_untrusted_server(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    trusted = make_certificate(tmp_path / "a")
    other = make_certificate(tmp_path / "b")
    failures: list[str] = []
    server = await StreamTransport.listen(InboundQueue(4), "127.0.0.1", 0, server_ssl=other.server_context())
    client = await StreamTransport.listen(
        InboundQueue(4), "127.0.0.1", 0, server_ssl=trusted.server_context(),
        client_ssl=trusted.client_context(),
        on_send_error=lambda msg, peer, reason: failures.append(reason),
    )
    try:
        client.send(tcp_options("z9hG4bK-x"), Peer("TLS", *server.local_address))
        await wait_until(lambda: failures == ["connect_failed"])
    finally:
        await client.close()
        await server.close()


async def test_tcp_full_queue_pushes_back_instead_of_dropping() -> None:
    """A stream never retransmits: with the queue full it stops reading and loses nothing."""
    queue = InboundQueue(2)
    transport = await StreamTransport.listen(queue, "127.0.0.1", 0)
    dropped = _total_dropped("TCP")
    reader, writer = await asyncio.open_connection(*transport.local_address)
    try:
        writer.write(b"".join(tcp_options(f"z9hG4bK-bp{i}") for i in range(6)))
        await writer.drain()
        await wait_until(queue.full)
        branches = []
        for _ in range(6):
            item = await asyncio.wait_for(queue.get(), TIMEOUT)
            branches.append(item.message.via[0].branch)
        assert branches == [f"z9hG4bK-bp{i}" for i in range(6)]
        assert queue.dropped == 0
        assert _total_dropped("TCP") == dropped
        # reading resumed: a later message still arrives
        writer.write(tcp_options("z9hG4bK-later"))
        await writer.drain()
        item = await asyncio.wait_for(queue.get(), TIMEOUT)
        assert item.message.via[0].branch == "z9hG4bK-later"
    finally:
        writer.close()
        await writer.wait_closed()
        await transport.close()


async def test_tcp_crlf_keepalive_gets_a_pong(tcp) -> None:
    transport, queue = tcp
    reader, writer = await asyncio.open_connection(*transport.local_address)
    try:
        writer.write(b"\r\n\r\n")
        await writer.drain()
        assert await asyncio.wait_for(reader.readexactly(2), TIMEOUT) == b"\r\n"
        writer.write(tcp_options("z9hG4bK-afterping"))
        await writer.drain()
        item = await asyncio.wait_for(queue.get(), TIMEOUT)
        assert item.message.via[0].branch == "z9hG4bK-afterping"
    finally:
        writer.close()
        await writer.wait_closed()


async def test_tcp_request_missing_call_id_gets_400_and_connection_stays(tcp) -> None:
    transport, queue = tcp
    reader, writer = await asyncio.open_connection(*transport.local_address)
    answered = metric("sipsec_sip_bad_requests_answered_total", transport="TCP", status="400")
    try:
        writer.write(tcp_options("z9hG4bK-nocid").replace(b"Call-ID: cid-1@test\r\n", b""))
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT)
        assert head.startswith(b"SIP/2.0 400 ")
        assert b"branch=z9hG4bK-nocid" in head
        assert metric("sipsec_sip_bad_requests_answered_total", transport="TCP", status="400") == answered + 1
        # the framing was intact, so the connection is still usable
        writer.write(tcp_options("z9hG4bK-fine"))
        await writer.drain()
        item = await asyncio.wait_for(queue.get(), TIMEOUT)
        assert item.message.via[0].branch == "z9hG4bK-fine"
    finally:
        writer.close()
        await writer.wait_closed()
