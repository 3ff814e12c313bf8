"""Peers configured by host name (a container's or pod's service name): the proxy resolves
them when it starts and again later, so a peer that starts after the proxy, or comes back with
another address, is still a trusted source (not rate-limited as an unknown one) and exempt
from the per-source connection cap. Real proxy sockets; the resolver is the event loop's."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest
import sipsec_proxy.server as proxy_server
from sipsec.aio.transport import StreamTransport
from sipsec_proxy.server import ProxyServer, create_proxy_server

from tests.integration.proxy.test_proxy_core import _config


@pytest.fixture
async def later_name(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[dict[str, list[str]]]:
    """``peer.test`` resolves to what the test puts in the returned table (nothing at first)."""
    table: dict[str, list[str]] = {"peer.test": []}
    loop = asyncio.get_running_loop()
    real = loop.getaddrinfo

    async def getaddrinfo(host: str, *args: Any, **kw: Any) -> list[Any]:
        if host in table:
            if not table[host]:
                raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (ip, 0)) for ip in table[host]]
        return await real(host, *args, **kw)

    monkeypatch.setattr(loop, "getaddrinfo", getaddrinfo)
    monkeypatch.setattr(proxy_server, "PEER_RETRY_S", 0.05)
    monkeypatch.setattr(proxy_server, "PEER_REFRESH_S", 0.05)
    yield table


async def _started(**kw: object) -> ProxyServer:
    server = create_proxy_server(_config(auth="none", tcp_listen="127.0.0.1:0", **kw))
    await server.start()
    return server


async def _until(predicate: Any, timeout: float = 3.0) -> bool:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True


async def test_a_peer_name_that_resolves_only_later_becomes_trusted(later_name: dict[str, list[str]]) -> None:
    proxy = await _started(peers="peer.test:5070")
    try:
        core = proxy.core
        assert core is not None
        now = asyncio.get_running_loop().time()
        assert not core.trusted_source("127.0.0.77", now), "nothing resolved yet: an unknown source"
        later_name["peer.test"] = ["127.0.0.77"]  # the peer's container starts
        assert await _until(lambda: core.trusted_source("127.0.0.77", asyncio.get_running_loop().time()))
        tcp = proxy.transports["TCP"]
        assert isinstance(tcp, StreamTransport)
        assert "127.0.0.77" in tcp.connection_limits.peers
        later_name["peer.test"] = ["127.0.0.78"]  # restarted with another address
        assert await _until(lambda: not core.trusted_source("127.0.0.77", asyncio.get_running_loop().time()))
        assert core.trusted_source("127.0.0.78", asyncio.get_running_loop().time())
        assert tcp.connection_limits.peers[-1:] == ("127.0.0.78",)
    finally:
        await proxy.stop(0)


async def test_ip_literal_peers_need_no_resolving(later_name: dict[str, list[str]]) -> None:
    proxy = await _started(peers="127.0.0.9:5070")
    try:
        assert proxy.core is not None
        assert proxy.core.trusted_source("127.0.0.9", 0.0)
        assert len(proxy._tasks) == 1, "no resolver task for literal peers"  # noqa: SLF001
    finally:
        await proxy.stop(0)
