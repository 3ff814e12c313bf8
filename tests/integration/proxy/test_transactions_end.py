"""Forwarded transactions end by their timers alone when the far end is silent (RFC 3261 §17.1).

The proxy schedules each transaction's next deadline with the event loop's ``call_at`` (no
polling); with short timers injected (T1 = 20 ms, so Timer B/F = 64*T1 = 1.28 s) a burst
of relayed requests to a host that never answers must leave an empty transaction table and
no armed timer once Timers F and B have fired: UDP and TCP, INVITE and non-INVITE.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import pytest
from sipsec.sip import Response, TimerSettings
from sipsec_proxy.locator import BindRequest
from sipsec_proxy.server import ProxyServer, create_proxy_server

from tests.integration.proxy.test_proxy_core import Peer, _config, request

SHORT = TimerSettings(t1=0.02, t2=0.16, t4=0.2, timer_d_unreliable=0.2)
TIMER_F = 64 * SHORT.t1


@pytest.fixture
async def proxy() -> AsyncIterator[ProxyServer]:
    server = create_proxy_server(_config(auth="none", tcp_listen="127.0.0.1:0", max_transactions=2000),
                                 timers=SHORT)
    await server.start()
    yield server
    await server.stop(0)


async def _collect(client: Peer, count: int, timeout: float) -> list[int]:
    """Final statuses received until ``count`` arrived or ``timeout`` passed."""
    statuses: list[int] = []
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while len(statuses) < count and loop.time() < end:
        try:
            msg = await client.recv(timeout=max(0.01, end - loop.time()))
        except TimeoutError:
            break
        if isinstance(msg, Response) and msg.status >= 200:
            statuses.append(msg.status)
    return statuses


async def test_600_relayed_options_to_a_silent_host_leave_an_empty_table(proxy: ProxyServer) -> None:
    core = proxy.core
    assert core is not None
    silent_udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # bound, never answers
    silent_udp.bind(("127.0.0.1", 0))
    silent_tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)  # accepts, never answers
    silent_tcp.bind(("127.0.0.1", 0))
    silent_tcp.listen(64)
    client = Peer()
    # 660 answers arrive together when Timers F and B fire: room for all of them while the test
    # is busy (the kernel caps this at twice net.core.rmem_max, ~416 KiB by default)
    client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
    try:
        uport, tport = silent_udp.getsockname()[1], silent_tcp.getsockname()[1]
        await proxy.locator.bind("sip:udp@atlanta.com", BindRequest(f"sip:udp@127.0.0.1:{uport}", 600), "c1", 1, "")
        await proxy.locator.bind("sip:tcp@atlanta.com",
                                 BindRequest(f"sip:tcp@127.0.0.1:{tport};transport=tcp", 600), "c2", 1, "")
        sent = 0
        for i in range(600):
            client.send(request("OPTIONS", "sip:udp@atlanta.com", client, to="sip:udp@atlanta.com",
                                call_id=f"opt-{i}"), proxy.udp_address)
            sent += 1
            if i % 100 == 99:
                await asyncio.sleep(0.01)  # let the proxy drain its socket buffer
        for i in range(20):
            for user in ("udp", "tcp"):
                client.send(request("INVITE", f"sip:{user}@atlanta.com", client, to=f"sip:{user}@atlanta.com",
                                    call_id=f"inv-{user}-{i}"), proxy.udp_address)
                sent += 1
        for i in range(20):
            client.send(request("OPTIONS", "sip:tcp@atlanta.com", client, to="sip:tcp@atlanta.com",
                                call_id=f"opt-tcp-{i}"), proxy.udp_address)
            sent += 1
        # they are all in flight at once (server + client transactions), once the proxy, on this
        # test's event loop, has read the burst: on a busy machine that takes more than 0.3 s
        # (539 transactions by then in one CI run), so watch for it until Timer F could fire
        loop = asyncio.get_running_loop()
        peak, until = 0, loop.time() + TIMER_F
        while peak <= 600 and loop.time() < until:
            await asyncio.sleep(0.01)
            peak = max(peak, core.transaction_count)
        assert peak > 600
        assert core.scheduled_timers > 0
        statuses = await _collect(client, sent, timeout=TIMER_F + 6.0)
        assert len(statuses) == sent and set(statuses) == {408}  # Timer F / B: 408 upstream
        await asyncio.sleep(4 * SHORT.t4 + 0.5)  # Timer K/D and the server side's J/H
        assert core.transaction_count == 0
        assert core.scheduled_timers == 0
        assert proxy.metrics.registry.get_sample_value("sipsec_proxy_active_transactions") == 0
    finally:
        client.close()
        silent_udp.close()
        silent_tcp.close()


async def test_udp_requests_are_retransmitted_on_timer_e(proxy: ProxyServer) -> None:
    """§17.1.2.2: Timer E retransmits a forwarded non-INVITE over UDP until Timer F (no polling)."""
    far = Peer()
    client = Peer()
    try:
        await proxy.locator.bind("sip:bob@atlanta.com", BindRequest(f"sip:bob@127.0.0.1:{far.port}", 600), "c", 1, "")
        client.send(request("OPTIONS", "sip:bob@atlanta.com", client, to="sip:bob@atlanta.com", call_id="rt-1"),
                    proxy.udp_address)
        copies = 0
        try:
            while True:
                await far.recv(timeout=TIMER_F + 0.5)
                copies += 1
        except TimeoutError:
            pass
        # E: T1, 2T1, 4T1, then T2 (=8T1) until 64*T1: 1 + 3 + 7 = ~11 transmissions
        assert 8 <= copies <= 12
        assert (await client.final(timeout=2.0)).status == 408
    finally:
        far.close()
        client.close()
