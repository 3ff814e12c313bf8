"""A UDP next hop that is a closed port ends in a fast 503, not 408 after Timer B (32 s).

Real sockets: the proxy forwards to a registered contact on a UDP port nobody listens on; the
kernel answers ICMP port unreachable, the proxy's UDP socket (``IP_RECVERR``) reads it back from
its error queue with the head of the datagram that failed, and the INVITE's client transaction
gets a transport error (RFC 3261 §8.1.3.1, §16.7 step 6). Default timers: an answer within 2 s
can only come from the ICMP error. A message too long for ICMP to quote whole is matched by
the head it quotes (request line and top Via).
"""

from __future__ import annotations

import asyncio
import socket
import sys
from collections.abc import AsyncIterator

import pytest
from sipsec_proxy.locator import BindRequest
from sipsec_proxy.server import ProxyServer, create_proxy_server

from tests.integration.proxy.test_fail_fast import BOB, _final, _invite, _table_empties
from tests.integration.proxy.test_proxy_core import Peer, _config
from tests.sipp import free_port_on

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="IP_RECVERR is Linux's")


@pytest.fixture
async def client() -> AsyncIterator[Peer]:
    peer = Peer()
    yield peer
    peer.close()


@pytest.fixture
async def proxy() -> AsyncIterator[ProxyServer]:
    server = create_proxy_server(_config(auth="none"))
    await server.start()
    yield server
    await server.stop(0)


@pytest.mark.parametrize("padding", [0, 3000], ids=["short", "longer-than-icmp-quotes"])
async def test_invite_to_a_closed_udp_port_is_answered_503_at_once(client: Peer, proxy: ProxyServer,
                                                                   padding: int) -> None:
    closed = free_port_on("127.0.0.1", socket.SOCK_DGRAM)  # nothing listens: ICMP port unreachable
    await proxy.locator.bind(BOB, BindRequest(f"sip:bob@127.0.0.1:{closed}", 600), "c1", 1, "")
    extra = f"Subject: {'x' * padding}\r\n" if padding else ""
    loop = asyncio.get_running_loop()
    started = loop.time()
    client.send(_invite(client, f"icmp-{padding}", extra=extra), proxy.udp_address)
    final = await _final(client, timeout=3.0)
    assert final.status == 503, final.status
    assert loop.time() - started < 2.0  # Timer B is 32 s here
    assert final.call_id == f"icmp-{padding}" and final.cseq.method == "INVITE"
    assert await _table_empties(proxy, timeout=1.0)


async def test_a_reachable_udp_hop_is_not_failed_by_an_unrelated_icmp_error(client: Peer,
                                                                           proxy: ProxyServer) -> None:
    callee = Peer()
    try:
        await proxy.locator.bind(BOB, BindRequest(f"sip:bob@127.0.0.1:{callee.port}", 600), "c1", 1, "")
        client.send(_invite(client, "live-1"), proxy.udp_address)
        invite = await callee.recv(timeout=2.0)
        # an ICMP error for another datagram of the proxy (a response to a vanished client)
        gone = Peer()
        gone_port = gone.port
        gone.close()
        client.send(_invite(client, "live-2").replace(f"127.0.0.1:{client.port};", f"127.0.0.1:{gone_port};"),
                    proxy.udp_address)
        await asyncio.sleep(0.5)
        assert invite is not None
        assert proxy.core is not None and proxy.core.transaction_count >= 1  # live-1 still waits
        with pytest.raises(TimeoutError):
            await _final(client, timeout=0.3)  # nothing final for live-1: its hop is alive
    finally:
        callee.close()
