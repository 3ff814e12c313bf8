"""``UdpTransport.listen`` socket options the proxy's workers use: SO_REUSEPORT and SO_RCVBUF."""

from __future__ import annotations

import asyncio
import socket

import pytest
from sipsec.aio.transport import InboundQueue, UdpTransport


async def test_reuse_port_shares_the_port_and_both_receive() -> None:
    queue = InboundQueue(64)
    first = await UdpTransport.listen(queue, "127.0.0.1", 0, reuse_port=True)
    port = first.local_address[1]
    second = await UdpTransport.listen(queue, "127.0.0.1", port, reuse_port=True)
    try:
        assert second.local_address == ("127.0.0.1", port)
        for transport in (first, second):
            sock = transport._transport.get_extra_info("socket")  # type: ignore[union-attr]
            assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT) == 1
        for i in range(8):  # different source ports: the kernel spreads them over both sockets
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.sendto(f"OPTIONS sip:x@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bKr{i}\r\n"
                         f"From: <sip:a@b>;tag=1\r\nTo: <sip:x@127.0.0.1>\r\nCall-ID: r{i}\r\n"
                         f"CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n".encode(),
                         ("127.0.0.1", port))
        got = [await asyncio.wait_for(queue.get(), 2) for _ in range(8)]
        assert sorted(item.message.call_id for item in got) == [f"r{i}" for i in range(8)]
    finally:
        await first.close()
        await second.close()


async def test_without_reuse_port_the_second_bind_fails() -> None:
    queue = InboundQueue(8)
    first = await UdpTransport.listen(queue, "127.0.0.1", 0)
    try:
        sock = first._transport.get_extra_info("socket")  # type: ignore[union-attr]
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT) == 0
        with pytest.raises(OSError):
            await UdpTransport.listen(queue, "127.0.0.1", first.local_address[1])
    finally:
        await first.close()


async def test_rcvbuf_is_applied() -> None:
    queue = InboundQueue(8)
    transport = await UdpTransport.listen(queue, "127.0.0.1", 0, rcvbuf=65536)
    try:
        sock = transport._transport.get_extra_info("socket")  # type: ignore[union-attr]
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) == 2 * 65536  # Linux doubles it
        assert transport.local_address[1] > 0
    finally:
        await transport.close()
