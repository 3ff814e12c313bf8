"""The gateway's typed call state machine and its phone-side limits, without any I/O."""

from __future__ import annotations

import pytest
from sipsec_gateway.phoneguard import GuardSettings, PhoneGuard
from sipsec_gateway.state import LIVE, TRANSITIONS, Call, CallState, InvalidTransition, LiveCount


def _call() -> Call:
    return Call(id="c1", side="secure", direction="outgoing", local_aor="sip:a@x", peer_aor="sip:b@y",
                secure=True, call_id="cid", local_tag="t")


def test_only_the_table_s_moves_are_allowed() -> None:
    for start, allowed in TRANSITIONS.items():
        for to in CallState:
            call = _call()
            call.state = start
            if to in allowed:
                call.move(to)
                assert call.state is to
            else:
                with pytest.raises(InvalidTransition):
                    call.move(to)
                assert call.state is start
    assert not TRANSITIONS[CallState.ENDED] and not TRANSITIONS[CallState.FAILED]


def test_the_live_count_follows_every_move() -> None:
    """Admission (SIPSEC_GATEWAY_MAX_CALL_LEGS) reads a count kept by the moves, not a scan of
    every call held: along every path of the table the count is the number of live calls."""
    count = LiveCount()
    calls = []
    for start, allowed in TRANSITIONS.items():
        for to in allowed:
            call = _call()
            call.state = start
            call.count_in(count)
            call.count_in(count)  # counted once
            calls.append(call)
            assert count.value == sum(c.live for c in calls)
            call.move(to)
            assert count.value == sum(c.live for c in calls)
            for further in TRANSITIONS[to]:
                call.move(further)
                assert count.value == sum(c.live for c in calls)
                break
    assert count.value == sum(c.state in LIVE for c in calls)

    fresh = LiveCount()
    a, b = _call(), _call()
    a.count_in(fresh)
    b.count_in(fresh)
    assert fresh.value == 2  # new calls are CALLING: live
    a.move(CallState.RINGING)
    a.move(CallState.ESTABLISHED)
    assert fresh.value == 2
    a.move(CallState.ENDED)
    b.move(CallState.FAILED)
    assert fresh.value == 0


def test_a_call_is_live_until_ended_or_failed() -> None:
    call = _call()
    assert call.live
    call.move(CallState.RINGING)
    call.move(CallState.ESTABLISHED)
    assert call.live and not call.acked and not call.cancel_requested and not call.counted
    call.move(CallState.ENDED)
    assert not call.live


def test_back_off_doubles_per_user_and_source_and_spares_other_sources() -> None:
    guard = PhoneGuard(GuardSettings(free_failures=2, backoff_s=1.0, max_backoff_s=4.0, rate=0))
    for _ in range(2):
        assert not guard.blocked("alice", "10.0.0.9", 0.0)
        guard.failed("alice", "10.0.0.9", 0.0)
    assert not guard.blocked("alice", "10.0.0.9", 0.0)  # two free failures, no wait yet
    guard.failed("alice", "10.0.0.9", 0.0)  # third: 1 s
    assert guard.blocked("alice", "10.0.0.9", 0.5) and not guard.blocked("alice", "10.0.0.9", 1.0)
    guard.failed("alice", "10.0.0.9", 1.0)  # fourth: 2 s
    assert guard.blocked("alice", "10.0.0.9", 2.9) and not guard.blocked("alice", "10.0.0.9", 3.0)
    for t in (3.0, 7.0, 11.0):  # capped at 4 s
        guard.failed("alice", "10.0.0.9", t)
    assert guard.blocked("alice", "10.0.0.9", 14.9) and not guard.blocked("alice", "10.0.0.9", 15.0)
    assert not guard.blocked("alice", "10.0.0.2", 12.0)  # the real user's address
    assert not guard.blocked("bob", "10.0.0.9", 12.0)  # another name from the same address
    guard.succeeded("alice", "10.0.0.9")
    assert not guard.blocked("alice", "10.0.0.9", 12.0)


def test_a_source_s_failure_budget_covers_every_name_and_renews_per_window() -> None:
    guard = PhoneGuard(GuardSettings(free_failures=10, source_failures=3, window_s=60.0, rate=0))
    for i in range(3):
        guard.failed(f"user{i}", "10.0.0.9", 1.0)
    assert guard.blocked("anyone", "10.0.0.9", 2.0) and not guard.blocked("anyone", "10.0.0.8", 2.0)
    assert not guard.blocked("anyone", "10.0.0.9", 61.0)


def test_rate_of_unauthenticated_requests_is_a_token_bucket_per_source() -> None:
    guard = PhoneGuard(GuardSettings(rate=2.0, burst=3.0))
    assert [guard.admit("10.0.0.9", 0.0) for _ in range(4)] == [True, True, True, False]
    assert guard.admit("10.0.0.8", 0.0)  # another source has its own bucket
    assert guard.admit("10.0.0.9", 0.5) and not guard.admit("10.0.0.9", 0.5)  # one token per 0.5 s
    assert PhoneGuard(GuardSettings(rate=0)).admit("10.0.0.9", 0.0)  # 0 = no limit


def test_tables_are_bounded() -> None:
    guard = PhoneGuard(GuardSettings(max_entries=100))
    for i in range(1000):
        source = f"10.0.{i // 256}.{i % 256}"
        guard.admit(source, 0.0)
        guard.failed(f"user{i}", source, 0.0)
    assert guard.entries <= 300
