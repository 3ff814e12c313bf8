"""A 2xx the callee's gateway signed with a skewed clock (outside the 300 s window) is refused
by the caller's gateway (``403 Clock Skew`` to its caller), and still ACKed and ended with a
signed BYE (RFC 3261 §13.2.2.4): the callee's side is released at once, not after 64*T1.

Real PKG, location, proxies and gateways of both domains on loopback (the harness)."""

from __future__ import annotations

import time
from typing import Any

import pytest
from sipsec.sip import Response
from sipsec_gateway import secured
from sipsec_gateway.state import CallState

from tests.integration.gateway.harness import TwoDomains, login, wait_for

ALICE = "sip:alice@atlanta.com"
BOB = "sip:bob@biloxi.com"


async def test_a_2xx_refused_as_stale_is_acked_and_ended_with_bye(monkeypatch: pytest.MonkeyPatch) -> None:
    real_seal = secured.seal_async

    async def seal(message: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(message, Response) and message.status == 200 and message.cseq.method == "INVITE":
            kwargs["now"] = time.time() + 400  # the callee's clock 400 s ahead when it answers
        return await real_seal(message, *args, **kwargs)

    monkeypatch.setattr(secured, "seal_async", seal)
    async with TwoDomains() as net:
        await login(net.atlanta, "alice")
        await login(net.biloxi, "bob", auto_answer=True)
        placed = await net.atlanta.client.post("/v1/calls", json={"from": ALICE, "to": BOB})
        assert placed.status_code == 201, placed.text
        doc = placed.json()
        assert (doc["state"], doc["sip_status"], doc["reason"]) == ("failed", 403, "Clock Skew"), doc
        bob_side = net.biloxi.gateway.secure
        assert bob_side is not None
        bob = next(c for c in bob_side.calls.values() if c.direction == "incoming")
        await wait_for(lambda: bob.state is CallState.ENDED, 5.0)  # not 64*T1 = 32 s
        assert bob.acked and bob.reason == "remote hangup", (bob.acked, bob.reason)
        rejections = net.atlanta.gateway.metrics.sample("sipsec_gateway_envelope_rejections_total", reason="stale")
        assert rejections >= 1
