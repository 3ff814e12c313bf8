"""Property: every RFC 3261 §17 transaction ends by its timers alone once the far end is silent.

The transactions are driven by a hand-advanced clock through an owner that learns of
deadlines *only* from the ``on_change`` hook (the way a proxy's timer heap does), so a
timer that a transaction starts without signalling it — the first timers of a client
transaction were such — would leave it alive for ever and fail these properties.
"""

from __future__ import annotations

import heapq
import itertools
from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st
from sipsec.sip.core import SipCore
from sipsec.sip.events import TransactionTerminated, TransactionTimeout
from sipsec.sip.message import Request, make_response
from sipsec.sip.parser import parse_message
from sipsec.sip.timers import TimerSettings
from sipsec.sip.transaction import ClientTransaction, ServerTransaction, Transaction

METHODS = ["INVITE", "OPTIONS", "BYE", "REGISTER", "MESSAGE"]


def request(method: str, branch: str = "z9hG4bKprop") -> Request:
    msg = parse_message(
        (
            f"{method} sip:bob@biloxi.example SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP pc33.atlanta.example;branch={branch}\r\n"
            "Max-Forwards: 70\r\nTo: <sip:bob@biloxi.example>\r\n"
            "From: <sip:alice@atlanta.example>;tag=a1\r\nCall-ID: prop-1\r\n"
            f"CSeq: 1 {method}\r\nContent-Length: 0\r\n\r\n"
        ).encode()
    )
    assert isinstance(msg, Request)
    return msg


class Owner:
    """A shell with one timer heap, fed only by ``on_change`` (like the proxy's)."""

    def __init__(self) -> None:
        self.heap: list[tuple[float, int, Transaction]] = []
        self.seq = itertools.count()
        self.fired = 0

    def changed(self, tx: Transaction) -> None:
        at = tx.get_timer()
        if at is not None:
            heapq.heappush(self.heap, (at, next(self.seq), tx))

    def advance(self, now: float) -> None:
        """Fire, at its own deadline, every timer due by ``now``."""
        while self.heap and self.heap[0][0] <= now:
            at, _, tx = heapq.heappop(self.heap)
            if tx.get_timer() != at:
                continue  # re-armed or stopped since: a newer entry (if any) is in the heap
            tx.handle_timer(at)
            self.fired += 1

    def run_silent(self) -> float | None:
        """Let time pass with no input until no timer is left; the last firing time."""
        last = None
        while self.heap:
            last = self.heap[0][0]
            self.advance(last)
        return last


timer_settings = st.builds(
    lambda t1, t2_factor, t4, c: TimerSettings(t1=t1, t2=t1 * t2_factor, t4=t4, timer_c=c),
    st.sampled_from([0.05, 0.5, 1.0, 2.0]),
    st.sampled_from([1, 2, 8]),
    st.sampled_from([0.5, 5.0]),
    st.sampled_from([1.0, 30.0, 240.0]),
)
gaps = st.floats(min_value=0.0, max_value=300.0, allow_nan=False)


@dataclass(frozen=True)
class ClientScript:
    provisionals: list[tuple[float, int]]  # (gap, status) before any final
    final: tuple[float, int] | None
    retransmissions: list[float]  # gaps before each repeat of the final


client_scripts = st.builds(
    ClientScript,
    st.lists(st.tuples(gaps, st.sampled_from([100, 180, 183])), max_size=6),
    st.none() | st.tuples(gaps, st.sampled_from([200, 302, 404, 486, 503, 603])),
    st.lists(gaps, max_size=3),
)


def silence_bound(timers: TimerSettings) -> float:
    """The longest any client state may wait with no input (Timer C then §9.1's 64*T1)."""
    return max(timers.timer_c + 64 * timers.t1, 64 * timers.t1, timers.timer_d_unreliable, timers.t4)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(METHODS), st.booleans(), timer_settings, client_scripts)
def test_every_client_transaction_ends_by_timers_alone(
    method: str, reliable: bool, timers: TimerSettings, script: ClientScript
) -> None:
    req = request(method)
    owner = Owner()
    tx = ClientTransaction(req, reliable, 0.0, timers=timers, on_change=owner.changed)
    assert owner.heap, "the first timers must reach the owner"
    now = last_input = 0.0
    inputs = [*script.provisionals]
    if script.final is not None:
        inputs.append(script.final)
        inputs.extend((gap, script.final[1]) for gap in script.retransmissions)
    for gap, status in inputs:
        now += gap
        owner.advance(now)
        if tx.terminated:
            break
        tx.receive_response(make_response(req, status, to_tag="b1"), now)
        last_input = now
    owner.advance(now)
    end = owner.run_silent()
    assert tx.terminated
    if end is not None:
        assert end - last_input <= silence_bound(timers) + 1e-9
    # retransmissions are at least T1 apart within 64*T1: at most 64 and a timeout per phase
    assert owner.fired <= 66 * (len(inputs) + 1)
    events = []
    while (ev := tx.next_event()) is not None:
        events.append(ev)
    assert sum(isinstance(e, TransactionTerminated) for e in events) == 1
    assert tx.get_timer() is None


@dataclass(frozen=True)
class ServerScript:
    before: list[tuple[float, str]]  # (gap, "request" | "1xx") before the TU's final
    final: tuple[float, int]
    after: list[tuple[float, str]]  # (gap, "request" | "ack" | "2xx-again")


server_scripts = st.builds(
    ServerScript,
    st.lists(st.tuples(gaps, st.sampled_from(["request", "1xx"])), max_size=5),
    st.tuples(gaps, st.sampled_from([200, 202, 302, 404, 486, 500, 603])),
    st.lists(st.tuples(gaps, st.sampled_from(["request", "ack", "2xx-again"])), max_size=4),
)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(METHODS), st.booleans(), timer_settings, server_scripts)
def test_every_server_transaction_ends_by_timers_alone_once_answered(
    method: str, reliable: bool, timers: TimerSettings, script: ServerScript
) -> None:
    """Once the TU has answered, a silent client cannot keep a server transaction alive."""
    req = request(method)
    invite = method == "INVITE"
    ack = request("ACK")
    owner = Owner()
    tx = ServerTransaction(req, reliable, 0.0, timers=timers, on_change=owner.changed)
    now = 0.0
    for gap, what in script.before:
        now += gap
        owner.advance(now)
        if what == "request":
            tx.receive_request(req, now)
        else:
            tx.send_response(make_response(req, 180, to_tag="b1"), now)
    now += script.final[0]
    owner.advance(now)
    final = make_response(req, script.final[1], to_tag="b1")
    if not tx.terminated:
        tx.send_response(final, now)
    last_input = now
    for gap, what in script.after:
        now += gap
        owner.advance(now)
        if tx.terminated:
            break
        if what == "request":
            tx.receive_request(req, now)
        elif what == "ack" and invite:
            tx.receive_request(ack, now)
        elif what == "2xx-again" and invite and final.status < 300:
            tx.send_response(final, now)  # RFC 6026 Accepted: the TU retransmits its 2xx
        last_input = now
    owner.advance(now)
    end = owner.run_silent()
    assert tx.terminated
    if end is not None:
        assert end - last_input <= 64 * timers.t1 + timers.t4 + 1e-9
    assert tx.get_timer() is None


@settings(max_examples=100, deadline=None)
@given(
    st.booleans(),
    st.booleans(),
    timer_settings,
    st.lists(st.tuples(st.sampled_from(METHODS), client_scripts), min_size=1, max_size=6),
)
def test_the_core_table_returns_to_empty(
    ua: bool, reliable: bool, timers: TimerSettings, calls: list[tuple[str, ClientScript]]
) -> None:
    """A :class:`SipCore` sending many requests to a far end that goes silent forgets them all."""
    core = SipCore(timers=timers, ua=ua)
    now = 0.0
    sent = []
    for i, (method, script) in enumerate(calls):
        req = request(method, branch=f"z9hG4bKcore{i}")
        tx = core.send_request(req, ("192.0.2.1", 5060), now, reliable=reliable)
        assert tx is not None
        sent.append((tx, req, script))
    for tx, req, script in sent:
        for gap, status in script.provisionals[:2]:
            now += min(gap, 1.0)
            while (at := core.get_timer()) is not None and at <= now:
                core.handle_timer(at)
            if not tx.terminated:
                core.receive_message(make_response(req, status, to_tag="b1"), ("192.0.2.1", 5060), now)
    while (at := core.get_timer()) is not None:
        now = at
        core.handle_timer(at)
    assert len(core) == 0
    timeouts = 0
    while (ev := core.next_event()) is not None:
        timeouts += isinstance(ev, TransactionTimeout)
    assert timeouts >= 1  # a silent far end is reported, never just forgotten
