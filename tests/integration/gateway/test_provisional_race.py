"""A phone's 180 and 200 close together: the 180, still being sealed when the 200 has gone
out, is dropped (a 1xx after the final answer is obsolete, RFC 3261 §17.2.1) — it must not
raise in the INVITE server transaction and end an answered call (seen under load in the
container deployment: a BYE ~90 ms after the ACK)."""

from __future__ import annotations

import asyncio
from typing import Any

from sipsec.aio import Peer
from sipsec.sip import Response
from sipsec.sip.digest import DigestClient

from tests.integration.gateway.harness import TwoDomains, login
from tests.integration.gateway.test_bridge_faults import BOB, _phone
from tests.sipua import CallState


async def test_a_provisional_overtaken_by_the_answer_is_dropped_and_the_call_stays_up(monkeypatch: Any) -> None:
    async with TwoDomains() as net:
        alice_pw = (await login(net.atlanta, "alice"))["phone_password"]
        bob_pw = (await login(net.biloxi, "bob"))["phone_password"]
        alice = await _phone(net, net.atlanta, "alice", alice_pw)
        await _phone(net, net.biloxi, "bob", bob_pw)  # answers at once: 180 then 200
        agent = net.biloxi.gateway.secure
        real_seal = agent._seal  # noqa: SLF001
        slowed: list[int] = []

        async def slow_provisional_seal(call: Any, message: Any, **kw: Any) -> Any:
            if isinstance(message, Response) and message.status < 200:
                slowed.append(message.status)
                await asyncio.sleep(0.4)  # the 200 is sealed and sent meanwhile
            return await real_seal(call, message, **kw)

        monkeypatch.setattr(agent, "_seal", slow_provisional_seal)
        host, port = net.atlanta.gateway.plain_address or ("", 0)
        out = await alice.call(BOB, peer=Peer("UDP", host, port), timeout=15,
                               credentials=DigestClient("alice", alice_pw))
        assert out.state is CallState.ESTABLISHED
        await asyncio.sleep(1.0)  # the late 180 is past; nothing ends the call
        assert slowed, "the callee gateway relayed the phone's provisional"
        assert out.state is CallState.ESTABLISHED, "an overtaken 180 ended the answered call"
        live = [c for c in agent.calls.values() if c.live]
        assert live and all(c.state.name == "ESTABLISHED" for c in live)
