"""A flood meeting a slow location service: the proxy keeps a bounded amount of work in flight.

Every INVITE to a user of the domain costs the proxy a location lookup. When the location
service falls behind (a flood of unique users, or a service that hangs), lookups for untrusted
sources must not pile up: each one holds a task, a gRPC call and a server transaction, and
before the bound a 20 s flood left thousands of them in flight and the proxy's memory grown
for good. Here the location service is a real TCP listener that accepts and never answers, so
the proxy's real gRPC client waits for its deadline."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest
from sipsec.sip import Response
from sipsec_proxy.core import PENDING_KINDS
from sipsec_proxy.server import ProxyServer

import tests.integration.proxy.test_proxy_core as core
from tests.integration.proxy.test_proxy_core import _proxy, request
from tests.integration.proxy.test_unauthenticated_sources import SourceAt, _invite

started = core.started

CAP = 6
FLOOD = 40  # each answered 100 then 503: what one loopback socket's default buffer holds at once


@pytest.fixture
async def hung_location() -> AsyncIterator[str]:
    """A gRPC target that accepts connections and never says a word (no HTTP/2 SETTINGS)."""
    held: list[asyncio.StreamWriter] = []

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)
        with contextlib.suppress(Exception):
            while await reader.read(65536):
                pass

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"127.0.0.1:{port}"
    finally:
        for w in held:
            w.close()
        server.close()


async def _finals(peer: SourceAt, want: int, timeout: float) -> list[Response]:
    """Final responses until ``want`` of them arrived or ``timeout`` passed (then what came)."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    got: list[Response] = []
    while len(got) < want:
        left = end - loop.time()
        if left <= 0:
            break
        try:
            msg = await peer.recv(left)
        except TimeoutError:
            break
        if isinstance(msg, Response) and msg.status >= 200:
            got.append(msg)
    return got


def _pending_gauge(proxy: ProxyServer, kind: str) -> float | None:
    return proxy.metrics.registry.get_sample_value("sipsec_proxy_untrusted_pending", {"kind": kind})


async def test_lookups_in_flight_for_untrusted_sources_are_bounded(started: list[ProxyServer],
                                                                   hung_location: str) -> None:
    flooder, peer = SourceAt("127.0.0.6"), SourceAt("127.0.0.5")
    proxy = await _proxy(started, auth="none", location=hung_location, location_cache_ms=0,
                         untrusted_pending=CAP, peers="127.0.0.5")
    core_ = proxy.core
    assert core_ is not None
    try:
        for n in range(FLOOD):
            flooder.send(_invite(flooder, f"flood{n}", n), proxy.udp_address)
        # a configured peer is not counted against the untrusted sources' bound
        peer.send(_invite(peer, "bob", 0), proxy.udp_address)
        # a REGISTER has a bound of its own: the INVITE flood does not starve it
        flooder.send(request("REGISTER", "sip:atlanta.com", flooder, to="sip:carol@atlanta.com",
                             frm="sip:carol@atlanta.com", call_id="reg-during-flood",
                             extra=f"Contact: <sip:carol@127.0.0.6:{flooder.port}>\r\nExpires: 600\r\n")
                     .replace("127.0.0.1:", "127.0.0.6:"), proxy.udp_address)
        busy = await _finals(flooder, FLOOD - CAP, 1.5)
        # all but CAP answered at once: 503 with Retry-After (RFC 3261 §21.5.4), each once
        assert len(busy) == FLOOD - CAP
        assert {r.status for r in busy} == {503} and {r.headers.get("Retry-After") for r in busy} == {"5"}
        assert len({r.call_id for r in busy}) == FLOOD - CAP
        assert "reg-during-flood" not in {r.call_id for r in busy}
        assert core_.untrusted_pending == {"route": CAP, "register": 1}
        assert _pending_gauge(proxy, "route") == CAP and _pending_gauge(proxy, "register") == 1
        assert len(core_._tasks) == CAP + 2  # the flood's CAP, the peer's lookup, the REGISTER's bind
        assert proxy.metrics.rejections.labels("overload")._value.get() == FLOOD - CAP
        # the refused requests kept no transaction: only those still waiting for the location service
        assert core_.transaction_count == CAP + 2
        # the location client's deadline (2 s) ends the rest: 503 each, and nothing is left behind
        late = await _finals(flooder, CAP + 1, 4.0)
        assert len(late) == CAP + 1 and {r.status for r in late} == {503}
        await asyncio.sleep(0.05)
        assert core_.untrusted_pending == dict.fromkeys(PENDING_KINDS, 0)
        assert _pending_gauge(proxy, "route") == 0 and not core_._tasks
        assert [c for c in core_._server.values() if c.inbound.peer.host == "127.0.0.6"] == []
    finally:
        flooder.close()
        peer.close()


async def test_after_the_bound_is_freed_new_requests_are_admitted_again(started: list[ProxyServer],
                                                                        hung_location: str) -> None:
    flooder = SourceAt("127.0.0.6")
    proxy = await _proxy(started, auth="none", location=hung_location, location_cache_ms=0, untrusted_pending=2)
    assert proxy.core is not None
    try:
        for round_ in range(2):  # the count goes back to zero, so the second round is admitted like the first
            for n in range(5):
                flooder.send(_invite(flooder, f"r{round_}u{n}", round_ * 10 + n), proxy.udp_address)
            got = await _finals(flooder, 5, 4.0)
            assert sorted(r.status for r in got) == [503] * 5
            assert proxy.metrics.rejections.labels("overload")._value.get() == 3 * (round_ + 1)
            assert proxy.metrics.rejections.labels("location-error")._value.get() == 2 * (round_ + 1)
            await asyncio.sleep(0.05)
            assert proxy.core.untrusted_pending["route"] == 0
    finally:
        flooder.close()


def test_the_bound_is_a_positive_setting() -> None:
    from sipsec.config import ConfigError
    from sipsec_proxy.config import ProxyConfig

    assert ProxyConfig().untrusted_pending == 64
    with pytest.raises(ConfigError, match="untrusted_pending"):
        ProxyConfig(untrusted_pending=0)
