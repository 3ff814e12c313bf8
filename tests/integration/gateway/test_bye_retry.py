"""A BYE that failed is sent again until the far end has it: the callee's proxy down when the
caller hangs up (503 from the hop before it), then back; a restarted gateway answers 503 for
an in-dialog request until its users are logged in again.

Real PKG, location, proxies and gateways of both domains on loopback (the harness)."""

from __future__ import annotations

import asyncio

from sipsec_gateway.calls import _bye_retryable
from sipsec_gateway.state import CallState
from sipsec_proxy import ProxyServer
from sipsec_proxy.server import make_locator

from tests.integration.gateway.harness import TwoDomains, call, login, wait_for

ALICE = "sip:alice@atlanta.com"
BOB = "sip:bob@biloxi.com"


def test_which_answers_are_retried() -> None:
    assert _bye_retryable(503, "Service Unavailable") and _bye_retryable(408, "")
    assert _bye_retryable(500, "Server Internal Error") and _bye_retryable(403, "Clock Skew")
    assert not _bye_retryable(200, "OK") and not _bye_retryable(481, "Call/Transaction Does Not Exist")
    assert not _bye_retryable(403, "Forbidden") and not _bye_retryable(404, "Not Found")


async def test_a_bye_refused_while_the_callee_proxy_is_down_arrives_once_it_is_back() -> None:
    async with TwoDomains() as net:
        await login(net.atlanta, "alice")
        await login(net.biloxi, "bob", auto_answer=True)
        placed = await call(net.atlanta, ALICE, BOB)
        assert placed["state"] == "established", placed
        bob_side = net.biloxi.gateway.secure
        assert bob_side is not None
        bob = next(c for c in bob_side.calls.values() if c.direction == "incoming")
        assert bob.state is CallState.ESTABLISHED
        await wait_for(lambda: bob.acked, 5.0)  # the ACK passed the proxy before it goes

        old = net.biloxi.proxy
        await old.stop(0)  # the callee's proxy is gone: the BYE's hop answers 503 (ICMP unreachable)
        hung = await net.atlanta.client.delete(f"/v1/calls/{placed['id']}")
        assert hung.status_code == 200, hung.text
        assert hung.json()["sip_status"] in (408, 500, 503), hung.json()
        await asyncio.sleep(1.5)  # retries while it is down fail too; bob's call stays up meanwhile
        assert bob.state is CallState.ESTABLISHED, (bob.reason, [(e.direction, e.inner[:60]) for e in bob.trace or []])
        metrics = net.atlanta.gateway.metrics
        assert metrics.sample("sipsec_gateway_bye_retries_total", outcome="failed") >= 1

        back = ProxyServer(old.config, make_locator(old.config), verifier=old.verifier)  # same address and location service
        await back.start()
        net.push(back.stop, 0)
        await wait_for(lambda: bob.state is CallState.ENDED, 10.0)  # the next retry (≤ 4 s later) arrives
        assert bob.reason == "remote hangup"
        await wait_for(lambda: metrics.sample("sipsec_gateway_bye_retries_total", outcome="answered") == 1, 5.0)
        assert metrics.sample("sipsec_gateway_bye_retries_total", outcome="gave-up") == 0


async def test_no_retry_when_switched_off() -> None:
    async with TwoDomains(gateway_overrides={"atlanta.com": {"bye_retry_s": 0}}) as net:
        await login(net.atlanta, "alice")
        await login(net.biloxi, "bob", auto_answer=True)
        placed = await call(net.atlanta, ALICE, BOB)
        assert placed["state"] == "established", placed
        await net.biloxi.proxy.stop(0)
        hung = await net.atlanta.client.delete(f"/v1/calls/{placed['id']}")
        assert hung.json()["sip_status"] in (408, 500, 503), hung.json()
        await asyncio.sleep(1.5)
        assert net.atlanta.gateway.metrics.sample("sipsec_gateway_bye_retries_total", outcome="failed") == 0


async def test_an_in_dialog_request_while_restoring_users_gets_503_retry_after() -> None:
    async with TwoDomains() as net:
        await login(net.atlanta, "alice")
        await login(net.biloxi, "bob", auto_answer=True)
        placed = await call(net.atlanta, ALICE, BOB)
        assert placed["state"] == "established", placed
        gateway = net.biloxi.gateway
        keys = gateway.users.pop(BOB)  # as after a restart: bob not logged in again yet
        gateway._restoring = asyncio.get_running_loop().create_future()  # type: ignore[assignment]
        try:
            hung = await net.atlanta.client.delete(f"/v1/calls/{placed['id']}")
            # 503 at the gateway; the proxy passes a 503 on as 500 (RFC 3261 §16.7 step 6): both retried
            assert hung.json()["sip_status"] in (500, 503), hung.json()
            assert gateway.metrics.sample("sipsec_gateway_messages_dropped_total", kind="request", reason="restoring") >= 1
        finally:
            gateway.users[BOB] = keys
            gateway._restoring.set_result(None)  # type: ignore[attr-defined]
        bob = next(c for c in gateway.secure.calls.values() if c.direction == "incoming")  # type: ignore[union-attr]
        await wait_for(lambda: bob.state is CallState.ENDED, 10.0)  # the retry finds bob again
