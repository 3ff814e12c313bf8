"""A next hop that dies after its 100 Trying: the proxy answers 503 at once, not after Timer C.

Real sockets: bob's contact is a TCP listener that reads the forwarded INVITE, answers
``100 Trying`` on the connection and then closes it (a proxy or phone killed mid-call). The
response can no longer come back on that connection, so the INVITE's client transaction gets a
transport error (RFC 3261 §17.1.4) and the caller a 503 (§16.7 step 6) — before, it waited for
Timer C (3 minutes). A connection that stays open keeps its transaction waiting.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from sipsec.sip import Request, make_response, parse_message
from sipsec_proxy.locator import BindRequest
from sipsec_proxy.server import ProxyServer, create_proxy_server

from tests.integration.proxy.test_fail_fast import BOB, _final, _invite, _table_empties
from tests.integration.proxy.test_proxy_core import Peer, _config


class TryingHop:
    """A TCP hop that answers each INVITE 100 Trying, then closes (``close_after``) or stays."""

    def __init__(self, close_after: bool) -> None:
        self.close_after = close_after
        self.server: asyncio.Server | None = None
        self.port = 0
        self.got = asyncio.Event()
        self._writers: list[asyncio.StreamWriter] = []

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.append(writer)
        head = await reader.readuntil(b"\r\n\r\n")
        msg = parse_message(head)
        assert isinstance(msg, Request)
        writer.write(make_response(msg, 100).to_bytes())
        await writer.drain()
        self.got.set()
        if self.close_after:
            writer.transport.abort()  # reset: the hop is gone

    async def close(self) -> None:
        for w in self._writers:
            w.transport.abort()
        if self.server is not None:
            self.server.close()


@pytest.fixture
async def client() -> AsyncIterator[Peer]:
    peer = Peer()
    yield peer
    peer.close()


@pytest.fixture
async def proxy() -> AsyncIterator[ProxyServer]:
    server = create_proxy_server(_config(auth="none", tcp_listen="127.0.0.1:0"))
    await server.start()
    yield server
    await server.stop(0)


async def test_a_hop_that_closes_after_100_trying_gets_503_at_once(client: Peer, proxy: ProxyServer) -> None:
    hop = TryingHop(close_after=True)
    await hop.start()
    try:
        await proxy.locator.bind(BOB, BindRequest(f"sip:bob@127.0.0.1:{hop.port};transport=tcp", 600), "c1", 1, "")
        loop = asyncio.get_running_loop()
        started = loop.time()
        client.send(_invite(client, "lost-1"), proxy.udp_address)
        final = await _final(client, timeout=5.0)
        assert hop.got.is_set()
        assert final.status == 503 and final.cseq.method == "INVITE"
        assert loop.time() - started < 2.0  # Timer C is 3 minutes
        assert await _table_empties(proxy, timeout=1.0)
    finally:
        await hop.close()


async def test_a_hop_that_keeps_its_connection_keeps_the_transaction(client: Peer, proxy: ProxyServer) -> None:
    hop = TryingHop(close_after=False)
    await hop.start()
    try:
        await proxy.locator.bind(BOB, BindRequest(f"sip:bob@127.0.0.1:{hop.port};transport=tcp", 600), "c1", 1, "")
        client.send(_invite(client, "kept-1"), proxy.udp_address)
        await asyncio.wait_for(hop.got.wait(), 3.0)
        with pytest.raises(TimeoutError):
            await _final(client, timeout=1.0)
        assert proxy.core is not None and proxy.core.transaction_count >= 1
    finally:
        await hop.close()
