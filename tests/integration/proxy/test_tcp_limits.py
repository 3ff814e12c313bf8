"""The proxy's TCP connection limits, set through its real configuration (``SIPSEC_PROXY_TCP_*``):
real sockets from several loopback source addresses against a started proxy."""

from __future__ import annotations

import asyncio
import urllib.request

import pytest
from prometheus_client import REGISTRY
from sipsec.aio.transport import StreamTransport
from sipsec_proxy.config import ConfigError, ProxyConfig, parse_args
from sipsec_proxy.server import ProxyServer, create_proxy_server

from tests.integration.gateway.harness import wait_for

ENV = {
    "SIPSEC_PROXY_DOMAINS": "atlanta.com",
    "SIPSEC_PROXY_LISTEN": "127.0.0.1:0",
    "SIPSEC_PROXY_TCP_LISTEN": "127.0.0.1:0",
    "SIPSEC_PROXY_METRICS_HOST": "127.0.0.1",
    "SIPSEC_PROXY_METRICS_PORT": "0",
    "SIPSEC_PROXY_AUTH": "none",
    "SIPSEC_PROXY_TCP_MAX_PER_SOURCE": "4",
    "SIPSEC_PROXY_PEERS": "127.0.0.7",
    "SIPSEC_PROXY_ROUTES": "biloxi.com=127.0.0.8:5060;transport=tcp",
}


def _rejected(reason: str) -> float:
    return REGISTRY.get_sample_value("sipsec_sip_connections_rejected_total",
                                     {"transport": "TCP", "reason": reason}) or 0.0


async def _connect(server: ProxyServer, source: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    host, port = server.address("TCP")
    return await asyncio.open_connection(host, port, local_addr=(source, 0))


async def _refused(reader: asyncio.StreamReader) -> bool:
    """Whether the proxy closed (reset) this connection: EOF or a reset within a second."""
    try:
        return await asyncio.wait_for(reader.read(1), 1.0) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


async def test_fifth_connection_from_one_source_is_refused_another_source_accepted() -> None:
    config = parse_args([], ENV)
    assert config.tcp_max_per_source == 4
    server = create_proxy_server(config)
    await server.start()
    writers: list[asyncio.StreamWriter] = []
    try:
        tcp = server.transports["TCP"]
        assert isinstance(tcp, StreamTransport)
        limits = tcp.connection_limits
        assert limits.max_per_source == 4 and limits.max_connections == 1024
        assert set(limits.peers) == {"127.0.0.7", "127.0.0.8"}  # SIPSEC_PROXY_PEERS and the route's host
        before = _rejected("per_source_limit")
        first = [await _connect(server, "127.0.0.5") for _ in range(4)]
        writers += [w for _, w in first]
        await wait_for(lambda: tcp.connections_from("127.0.0.5") == 4)
        reader, writer = await _connect(server, "127.0.0.5")
        writers.append(writer)
        assert await _refused(reader)
        assert _rejected("per_source_limit") == before + 1
        assert tcp.connections_from("127.0.0.5") == 4
        for r, _ in first:  # the four admitted ones stay open
            assert not await _refused(r)
        _, other = await _connect(server, "127.0.0.6")  # another source still gets in
        writers.append(other)
        await wait_for(lambda: tcp.connections_from("127.0.0.6") == 1)
        peer = [await _connect(server, "127.0.0.7") for _ in range(6)]  # a configured peer: no per-source cap
        writers += [w for _, w in peer]
        await wait_for(lambda: tcp.connections_from("127.0.0.7") == 6)
        assert _rejected("per_source_limit") == before + 1
        assert server.metrics_port is not None
        url = f"http://127.0.0.1:{server.metrics_port}/metrics"
        text = await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=5).read().decode())
        assert 'sipsec_sip_connections_rejected_total{reason="per_source_limit",transport="TCP"}' in text
    finally:
        for w in writers:
            w.close()
        await server.stop(drain=0)


@pytest.mark.parametrize(("variable", "value"), [
    ("SIPSEC_PROXY_TCP_MAX_PER_SOURCE", "0"),
    ("SIPSEC_PROXY_TCP_RESERVED_FOR_PEERS", "1024"),
    ("SIPSEC_PROXY_TCP_IDLE_TIMEOUT_S", "0"),
    ("SIPSEC_PROXY_TCP_HEADER_TIMEOUT_S", "-1"),
])
def test_bad_limits_are_configuration_errors(variable: str, value: str) -> None:
    with pytest.raises(ConfigError, match=r"SIPSEC_PROXY_TCP_"):
        ProxyConfig.from_env({**ENV, variable: value})
