"""The gateway's TCP listener is bounded by ``SIPSEC_GATEWAY_TCP_*``; its proxy is exempt.

Two domains over TCP (gateways <-> proxies); the biloxi gateway allows 2 connections per source.
A third from one loopback source is reset at accept and counted; calls through the proxy still work.
"""

from __future__ import annotations

import asyncio

from prometheus_client import REGISTRY
from sipsec.aio.transport import StreamTransport

from tests.integration.gateway.harness import TwoDomains, call, login, wait_for

ALICE = "sip:alice@atlanta.com"
BOB = "sip:bob@biloxi.com"


def _rejected() -> float:
    return REGISTRY.get_sample_value("sipsec_sip_connections_rejected_total",
                                     {"transport": "TCP", "reason": "per_source_limit"}) or 0.0


async def test_per_source_limit_on_the_gateway_and_the_proxy_is_exempt() -> None:
    async with TwoDomains(tcp=True, gateway_overrides={"biloxi.com": {"tcp_max_per_source": 2}}) as net:
        gw = net.biloxi.gateway
        assert gw.secure is not None
        tcp = gw.secure.endpoint.transports["TCP"]
        assert isinstance(tcp, StreamTransport)
        assert tcp.connection_limits.max_per_source == 2
        assert net.biloxi.host in tcp.connection_limits.peers  # the proxy's address
        host, port = tcp.local_address
        before = _rejected()
        opened = [await asyncio.open_connection(host, port, local_addr=("127.0.0.9", 0)) for _ in range(3)]
        try:
            reader = opened[2][0]
            try:
                refused = await asyncio.wait_for(reader.read(1), 2) == b""
            except ConnectionResetError:
                refused = True
            assert refused
            await wait_for(lambda: _rejected() == before + 1)
            assert tcp.connections_from("127.0.0.9") == 2
            await login(net.atlanta, "alice")
            await login(net.biloxi, "bob", auto_answer=True)
            placed = await call(net.atlanta, ALICE, BOB)
            assert placed["state"] == "established" and placed["secure"], placed
            assert (await net.atlanta.client.delete(f"/v1/calls/{placed['id']}")).json()["sip_status"] == 200
        finally:
            for _, writer in opened:
                writer.close()
