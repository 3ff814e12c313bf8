"""Per-Call-ID ordering of an agent's events: in order within a Call-ID, concurrent across them."""

from __future__ import annotations

import asyncio

from sipsec.sip.events import Event, RequestReceived
from sipsec.sip.message import Request
from sipsec_gateway.ordering import PerCallId, event_call_id


def _event(call_id: str, n: int) -> RequestReceived:
    req = Request("OPTIONS", "sip:a@x", [("Via", f"SIP/2.0/UDP 127.0.0.1;branch=z9hG4bK{call_id}{n}"),
                                         ("From", "<sip:b@y>;tag=1"), ("To", "<sip:a@x>"),
                                         ("Call-ID", call_id), ("CSeq", f"{n} OPTIONS")])
    return RequestReceived(req, None, None)  # type: ignore[arg-type]


async def test_events_of_one_call_id_run_in_order_others_concurrently() -> None:
    seen: list[tuple[str, int]] = []
    gate = asyncio.Event()
    failed: list[Event] = []

    async def handle(event: Event) -> None:
        assert isinstance(event, RequestReceived)
        cid, n = event.request.call_id, event.request.cseq.seq
        if (cid, n) == ("slow", 1):
            await gate.wait()  # the slow call's first event holds only its own chain
        if n == 3:
            raise RuntimeError("injected")
        seen.append((cid, n))

    chain = PerCallId("test", handle, failed.append)
    chain.running = True
    for n in (1, 2, 3):
        chain.submit(_event("slow", n))
        chain.submit(_event("fast", n))
    for _ in range(20):
        await asyncio.sleep(0)
    assert seen == [("fast", 1), ("fast", 2)]
    gate.set()
    for _ in range(20):
        await asyncio.sleep(0)
    assert seen == [("fast", 1), ("fast", 2), ("slow", 1), ("slow", 2)]
    assert sorted(event_call_id(e) for e in failed) == ["fast", "slow"]  # the raising events, reported
    await chain.close()
    chain.submit(_event("late", 1))  # closed: dropped
    await asyncio.sleep(0)
    assert ("late", 1) not in seen
