"""An INVITE branch that rang and then fell silent is CANCELled (RFC 3261 §16.8), never just dropped.

The INVITE client transaction signals Timer C (``TransactionTimeout(timer="C")``) when a
provisional came and then nothing for ``timer_c``; the proxy must CANCEL that branch
downstream and answer 408 upstream. Short timers are injected so the test takes a second.
"""

from __future__ import annotations

import asyncio

from sipsec.sip import Request, Response, TimerSettings, make_response
from sipsec_proxy.locator import BindRequest
from sipsec_proxy.server import create_proxy_server

from tests.integration.proxy.test_proxy_core import Peer, _config, request

SHORT_C = TimerSettings(timer_c=0.4)


async def _requests(peer: Peer, method: str, timeout: float) -> list[Request]:
    """The ``method`` requests ``peer`` received within ``timeout``."""
    got: list[Request] = []
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while loop.time() < end:
        try:
            msg = await peer.recv(timeout=max(0.01, end - loop.time()))
        except TimeoutError:
            break
        if isinstance(msg, Request) and msg.method == method:
            got.append(msg)
    return got


async def test_a_branch_that_rang_then_fell_silent_is_cancelled_and_answered_408() -> None:
    proxy = create_proxy_server(_config(auth="none"), timers=SHORT_C)
    await proxy.start()
    caller, callee = Peer(), Peer()
    try:
        await proxy.locator.bind("sip:bob@atlanta.com", BindRequest(f"sip:bob@127.0.0.1:{callee.port}", 600),
                                 "c1", 1, "")
        caller.send(request("INVITE", "sip:bob@atlanta.com", caller, to="sip:bob@atlanta.com", call_id="ring-1"),
                    proxy.udp_address)
        invite = None
        while invite is None:
            msg = await callee.recv(timeout=3.0)
            if isinstance(msg, Request) and msg.method == "INVITE":
                invite = msg
        data = make_response(invite, 180, to_tag="callee1").to_bytes()
        callee.send(data, proxy.udp_address)  # it rings, then says nothing more
        cancels = await _requests(callee, "CANCEL", timeout=2.0)
        assert cancels, "the proxy never CANCELled the branch that rang"
        assert cancels[0].call_id == "ring-1" and cancels[0].cseq.method == "CANCEL"
        final: Response | None = None
        while final is None:
            msg = await caller.recv(timeout=3.0)
            if isinstance(msg, Response) and msg.status >= 200:
                final = msg
        assert final.status == 408
    finally:
        caller.close()
        callee.close()
        await proxy.stop(0)

