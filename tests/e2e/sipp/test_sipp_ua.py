"""The asyncio UA against real sipp processes over loopback (built-in uac/uas scenarios)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sipsec.aio.endpoint import SipEndpoint

from tests.sipp import Sipp, SippResult
from tests.sipua import CallState, UserAgent

SCENARIOS = Path(__file__).parent / "scenarios"

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(90)]


@pytest.fixture
async def ua() -> AsyncIterator[UserAgent]:
    endpoint = SipEndpoint()
    await endpoint.listen_udp("127.0.0.1", 0)
    await endpoint.listen_tcp("127.0.0.1", 0)
    agent = UserAgent(endpoint, user="sipsec")
    endpoint.start()
    try:
        yield agent
    finally:
        await endpoint.close()


def ok(result: SippResult, calls: int) -> None:
    result.assert_ok(calls=calls)


def _messages(result: SippResult) -> str:
    return (result.workdir / "messages.log").read_text(errors="replace")


async def test_answers_a_call_from_sipp_uac(ua: UserAgent) -> None:
    target = ua.endpoint.transport("UDP").local_address
    sipp = Sipp("uac", remote=target, calls=1, timeout_s=20)
    try:
        sipp.start()
        result = await sipp.wait_async()
        ok(result, 1)
        log = _messages(result)
        # sipp saw the whole UAS side of the flow from us
        for line in ("SIP/2.0 100 Trying", "SIP/2.0 180 Ringing", "SIP/2.0 200 OK"):
            assert line in log
        assert ua.completed_calls == 1
        assert not ua.dialogs  # the BYE ended the dialog
    finally:
        sipp.cleanup()


async def test_places_a_call_to_sipp_uas(ua: UserAgent) -> None:
    with Sipp("uas", calls=1, timeout_s=20) as sipp:
        call = await ua.call(f"sip:service@{sipp.local_host}:{sipp.local_port}", timeout=10)
        assert call.state is CallState.ESTABLISHED
        assert call.statuses == [180, 200]  # sipp's uas sends no 100
        assert b"m=audio" in call.remote_sdp
        status = await ua.hangup(call, timeout=10)
        assert status == 200
        assert call.ended.is_set()
        result = await sipp.wait_async()
        ok(result, 1)
        assert "ACK sip:" in _messages(result)


@pytest.mark.parametrize("transport", ["u1", "t1"])
async def test_full_flow_with_100_trying(ua: UserAgent, transport: str) -> None:
    """INVITE / 100 / 180 / 200 / ACK / BYE / 200 against a sipp UAS that sends 100 Trying."""
    with Sipp(str(SCENARIOS / "uas_trying.xml"), transport=transport, calls=1, timeout_s=20) as sipp:
        suffix = ";transport=tcp" if transport == "t1" else ""
        call = await ua.call(f"sip:service@{sipp.local_host}:{sipp.local_port}{suffix}", timeout=10)
        assert call.statuses == [100, 180, 200]
        assert call.peer.transport == ("TCP" if transport == "t1" else "UDP")
        assert call.acks_sent == 1
        assert await ua.hangup(call, timeout=10) == 200
        assert call.statuses == [100, 180, 200, 200]
        result = await sipp.wait_async()
        ok(result, 1)
        log = _messages(result)
        order = [log.index(m) for m in ("INVITE sip:", "SIP/2.0 100", "SIP/2.0 180", "SIP/2.0 200", "ACK sip:", "BYE sip:")]
        assert order == sorted(order)


async def test_sipp_uac_load_forty_calls(ua: UserAgent) -> None:
    """40 calls at 20 calls/s: transaction and dialog matching keep concurrent calls apart."""
    target = ua.endpoint.transport("UDP").local_address
    sipp = Sipp("uac", remote=target, calls=40, rate=20, timeout_s=30, trace_msg=False)
    try:
        sipp.start()
        result = await sipp.wait_async()
        ok(result, 40)
        assert result.unexpected_messages == 0
        assert ua.completed_calls == 40
        assert not ua.dialogs and not ua.calls
    finally:
        sipp.cleanup()


async def test_places_concurrent_calls_to_sipp_uas(ua: UserAgent) -> None:
    n = 5
    # sipp on another loopback address (127.0.0.2): Linux routes all of 127/8 to lo
    with Sipp("uas", local_host="127.0.0.2", calls=n, timeout_s=25, trace_msg=False) as sipp:
        uri = f"sip:service@{sipp.local_host}:{sipp.local_port}"
        calls = await asyncio.gather(*(ua.call(uri, timeout=10) for _ in range(n)))
        assert len({c.call_id for c in calls}) == n
        statuses = await asyncio.gather(*(ua.hangup(c, timeout=10) for c in calls))
        assert statuses == [200] * n
        ok(await sipp.wait_async(), n)
    assert ua.completed_calls == n


async def test_answers_sipp_uac_over_tcp(ua: UserAgent) -> None:
    target = ua.endpoint.transport("TCP").local_address
    sipp = Sipp("uac", remote=target, transport="t1", calls=3, rate=10, timeout_s=20)
    try:
        sipp.start()
        result = await sipp.wait_async()
        ok(result, 3)
        assert ua.completed_calls == 3
        tcp = ua.endpoint.transport("TCP")
        assert tcp.bytes_received > 0
    finally:
        sipp.cleanup()


async def test_harness_reports_failure_when_nobody_answers() -> None:
    """The harness itself: a UAC with nobody listening times out and is reported failed."""
    from tests.sipp import free_port_on

    dead = ("127.0.0.1", free_port_on())
    sipp = Sipp("uac", remote=dead, calls=1, timeout_s=2, extra_args=["-max_retrans", "1"])
    try:
        sipp.start()
        result = await sipp.wait_async()
        assert result.returncode == 1  # sipp: at least one call failed
        assert result.failed_calls == 1 and result.successful_calls == 0
        assert result.stats["FailedMaxUDPRetrans(C)"] == "1"
        with pytest.raises(AssertionError):
            result.assert_ok(calls=1)
    finally:
        sipp.cleanup(keep_failed=False)
