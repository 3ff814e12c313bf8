"""A caller core and a callee core against each other in memory (RFC 3665 flows).

No sockets and no sleeps: datagrams move between two :class:`SipCore` objects through a
list, the clock is a float advanced by hand to the next timer, and a drop rule loses
chosen datagrams to exercise retransmission and timeouts.
"""

from __future__ import annotations

from collections.abc import Callable

from sipsec.sip.core import SipCore
from sipsec.sip.dialog import Dialog
from sipsec.sip.events import (
    CancelReceived,
    Event,
    MessageDropped,
    RequestReceived,
    ResponseReceived,
    TransactionTimeout,
)
from sipsec.sip.headers import Headers
from sipsec.sip.message import Request, Response, generate_branch, make_response
from sipsec.sip.parser import parse_message
from sipsec.sip.transaction import ClientTransaction, ServerTransaction, TransactionState

S = TransactionState
ALICE, BOB = "alice", "bob"


def label(data: bytes) -> str:
    msg = parse_message(data)
    if isinstance(msg, Request):
        return msg.method
    return f"{msg.status}/{msg.cseq.method}"


class Net:
    """Two cores, a wire log and a clock."""

    def __init__(self, alice: SipCore, bob: SipCore) -> None:
        self.now = 0.0
        self.cores = {ALICE: alice, BOB: bob}
        self.wire: list[tuple[float, str, str, str]] = []  # (time, src, what, fate)
        self.drop: Callable[[str, str, int], bool] = lambda src, what, n: False
        self._count: dict[tuple[str, str], int] = {}
        self.handlers: dict[str, Callable[[Event], None]] = {}
        self.reliable = False  # True: both sides behave as over TCP/TLS

    def flush(self) -> None:
        busy = True
        while busy:
            busy = False
            for src, core in self.cores.items():
                for data, dst in core.datagrams_to_send():
                    busy = True
                    what = label(data)
                    n = self._count.get((src, what), 0)
                    self._count[(src, what)] = n + 1
                    if self.drop(src, what, n):
                        self.wire.append((self.now, src, what, "lost"))
                        continue
                    self.wire.append((self.now, src, what, "ok"))
                    self.cores[dst].receive_datagram(data, src, self.now, reliable=self.reliable)
                while (ev := core.next_event()) is not None:
                    busy = True
                    self.handlers[src](ev)

    def advance(self, until: float) -> None:
        """Run every timer due up to ``until`` (in deadline order), then set the clock."""
        self.flush()
        while True:
            deadlines = [(t, n) for n, c in self.cores.items() if (t := c.get_timer()) is not None]
            if not deadlines:
                break
            t, name = min(deadlines)
            if t > until:
                break
            self.now = t
            self.cores[name].handle_timer(t)
            self.flush()
        self.now = until

    def sent(self, src: str | None = None, fate: str | None = None) -> list[str]:
        return [w for (_t, s, w, f) in self.wire if (src is None or s == src)
                and (fate is None or f == fate)]  # fmt: skip

    def times(self, src: str, what: str) -> list[float]:
        return [t for (t, s, w, _f) in self.wire if s == src and w == what]


class Caller:
    """Alice's UA: INVITE, ACK each 2xx within the dialog, BYE."""

    def __init__(self, net: Net, core: SipCore) -> None:
        self.net, self.core = net, core
        self.events: list[Event] = []
        self.dialog: Dialog | None = None
        self.invite: ClientTransaction | None = None
        self.acks_sent = 0
        net.handlers[ALICE] = self.on_event

    def via(self) -> str:
        return f"SIP/2.0/UDP pc33.atlanta.com;branch={generate_branch()}"

    def send_invite(self) -> ClientTransaction:
        h = Headers()
        h.add("Via", self.via())
        h.add("Max-Forwards", "70")
        h.add("To", "Bob <sip:bob@biloxi.com>")
        h.add("From", "Alice <sip:alice@atlanta.com>;tag=9fxced76sl")
        h.add("Call-ID", "3848276298220188511@atlanta.example.com")
        h.add("CSeq", "1 INVITE")
        h.add("Contact", "<sip:alice@client.atlanta.example.com;transport=udp>")
        h.add("Content-Type", "application/sdp")
        req = Request("INVITE", "sip:bob@biloxi.com", h, b"v=0\r\n")
        txn = self.core.send_request(req, BOB, self.net.now, reliable=self.net.reliable)
        assert txn is not None
        self.invite = txn
        return txn

    def on_event(self, ev: Event) -> None:
        self.events.append(ev)
        if isinstance(ev, ResponseReceived) and ev.response.cseq.method == "INVITE":
            resp = ev.response
            assert self.invite is not None
            if 101 <= resp.status < 300 and resp.to.tag:
                if self.dialog is None:
                    self.dialog = Dialog.from_uac_response(self.invite.request, resp)
                else:
                    self.dialog.receive_response(self.invite.request, resp)
            if 200 <= resp.status < 300:
                assert self.dialog is not None
                ack = self.dialog.create_ack(self.via())
                self.core.send_request(ack, BOB, self.net.now)
                self.acks_sent += 1

    def send_bye(self) -> ClientTransaction:
        assert self.dialog is not None
        bye = self.dialog.create_request("BYE", self.via())
        txn = self.core.send_request(bye, BOB, self.net.now, reliable=self.net.reliable)
        assert txn is not None
        return txn

    def responses(self, method: str) -> list[int]:
        return [e.response.status for e in self.events
                if isinstance(e, ResponseReceived) and e.response.cseq.method == method]  # fmt: skip


class Callee:
    """Bob's UA: rings on INVITE (if ``ring``), answers when told, 200s BYE."""

    def __init__(self, net: Net, core: SipCore, *, ring: bool = True) -> None:
        self.net, self.core = net, core
        self.ring = ring
        self.events: list[Event] = []
        self.invite: ServerTransaction | None = None
        self.dialog: Dialog | None = None
        self.tag = "8321234356"
        net.handlers[BOB] = self.on_event

    def on_event(self, ev: Event) -> None:
        self.events.append(ev)
        if isinstance(ev, RequestReceived) and ev.transaction is not None:
            req = ev.request
            if req.method == "INVITE":
                self.invite = ev.transaction
                if self.ring:
                    self.core.send_response(ev.transaction, self.response(180), self.net.now)
            elif req.method == "BYE":
                assert self.dialog is not None and self.dialog.matches(req)
                status = self.dialog.receive_request(req) or 200
                self.dialog.terminate()
                self.core.send_response(ev.transaction, make_response(req, status), self.net.now)

    def response(self, status: int) -> Response:
        assert self.invite is not None
        resp = make_response(self.invite.request, status, to_tag=self.tag)
        resp.headers.add("Contact", "<sip:bob@client.biloxi.example.com>")
        return resp

    def answer(self) -> None:
        ok = self.response(200)
        assert self.invite is not None
        self.dialog = Dialog.from_uas_response(self.invite.request, ok)
        self.core.send_response(self.invite, ok, self.net.now)

    def requests(self) -> list[str]:
        return [e.request.method for e in self.events if isinstance(e, RequestReceived)]


def setup(
    *, ring: bool = True, auto_trying: bool = True
) -> tuple[Net, Caller, Callee, SipCore, SipCore]:
    a, b = SipCore(), SipCore(auto_trying=auto_trying)
    net = Net(a, b)
    return net, Caller(net, a), Callee(net, b, ring=ring), a, b


# --- RFC 3665 §3.1 Successful Session Establishment -----------------------------------------


def test_basic_call_invite_100_180_200_ack_bye_200() -> None:
    net, alice, bob, a, b = setup()
    alice.send_invite()
    net.flush()
    assert net.sent() == ["INVITE", "100/INVITE", "180/INVITE"]
    assert alice.dialog is not None and alice.dialog.state.value == "early"
    net.advance(2.0)  # ringing: nothing is retransmitted while Proceeding
    assert net.sent() == ["INVITE", "100/INVITE", "180/INVITE"]
    bob.answer()
    net.flush()
    assert net.sent()[3:] == ["200/INVITE", "ACK"]
    assert alice.dialog.state.value == "confirmed"
    assert alice.dialog.remote_target is not None
    assert str(alice.dialog.remote_target) == "sip:bob@client.biloxi.example.com"
    assert bob.requests() == ["INVITE", "ACK"]
    net.advance(10.0)
    assert net.sent()[5:] == []  # the ACK stopped Bob's 2xx retransmission
    alice.send_bye()
    net.flush()
    assert net.sent()[5:] == ["BYE", "200/BYE"]
    assert alice.responses("INVITE") == [100, 180, 200]
    assert alice.responses("BYE") == [200]
    # every transaction ends and the cores forget them
    net.advance(100.0)
    assert len(a) == 0 and len(b) == 0
    assert a.get_timer() is None and b.get_timer() is None


def test_basic_call_over_a_reliable_transport() -> None:
    net, alice, bob, a, b = setup()
    net.reliable = True
    alice.send_invite()
    net.flush()
    bob.answer()
    net.flush()
    assert net.sent() == ["INVITE", "100/INVITE", "180/INVITE", "200/INVITE", "ACK"]
    assert a.get_timer() == 32.0  # only Timer M of the INVITE (no A, no D)
    bye = alice.send_bye()
    net.flush()
    # Timers K and J are zero on reliable transports: both BYE transactions are gone
    assert bye.state is S.TERMINATED
    assert not any(t.request.method == "BYE" for t in b.server_transactions.values())
    net.advance(100.0)
    assert net.sent()[5:] == ["BYE", "200/BYE"]  # nothing was ever retransmitted
    assert len(a) == 0 and len(b) == 0


def test_bye_cseq_is_above_invite_and_tags_match() -> None:
    net, alice, bob, a, b = setup()
    alice.send_invite()
    net.flush()
    bob.answer()
    net.flush()
    bye = alice.send_bye().request
    assert bye.cseq.seq == 2 and bye.to.tag == bob.tag and bye.from_.tag == "9fxced76sl"
    assert str(bye.uri) == "sip:bob@client.biloxi.example.com"


# --- CANCEL (RFC 3665 §3.8 Unsuccessful No Answer) --------------------------------------------


def test_cancel_gets_200_and_the_invite_gets_487_and_is_acked() -> None:
    net, alice, bob, a, b = setup()
    inv = alice.send_invite()
    net.flush()
    cancel_txn = a.cancel(inv, net.now)
    assert cancel_txn is not None
    assert a.cancel(inv, net.now) is None  # one CANCEL per INVITE
    net.flush()
    assert net.sent() == [
        "INVITE", "100/INVITE", "180/INVITE", "CANCEL", "200/CANCEL", "487/INVITE", "ACK",
    ]  # fmt: skip
    assert alice.responses("CANCEL") == [200]
    assert alice.responses("INVITE") == [100, 180, 487]
    cancels = [e for e in bob.events if isinstance(e, CancelReceived)]
    assert len(cancels) == 1 and cancels[0].answered_487 and cancels[0].invite is bob.invite
    assert bob.invite is not None and bob.invite.state is S.CONFIRMED
    # the 487 carries the tag of the 180 (same early dialog)
    assert alice.dialog is not None and alice.dialog.id.remote_tag == bob.tag
    net.advance(100.0)
    assert len(a) == 0 and len(b) == 0


def test_cancel_before_any_provisional_waits_for_one() -> None:
    net, alice, bob, a, b = setup(ring=False, auto_trying=False)
    inv = alice.send_invite()
    net.flush()
    assert a.cancel(inv, net.now) is None  # §9.1: no provisional yet: must wait
    net.flush()
    assert "CANCEL" not in net.sent()
    assert bob.invite is not None
    b.send_response(bob.invite, bob.response(180), net.now)
    net.flush()
    assert net.sent(ALICE) == ["INVITE", "CANCEL", "ACK"]
    assert alice.responses("INVITE") == [180, 487]


def test_cancel_for_unknown_transaction_gets_481() -> None:
    net, alice, bob, a, b = setup()
    inv = alice.send_invite()
    net.drop = lambda src, what, n: src == ALICE and what == "INVITE"
    net.flush()
    a.send_request(inv.build_cancel(), BOB, net.now)
    net.flush()
    assert alice.responses("CANCEL") == [481]


def test_cancel_after_final_response_does_nothing() -> None:
    net, alice, bob, a, b = setup()
    inv = alice.send_invite()
    net.flush()
    bob.answer()
    net.flush()
    assert a.cancel(inv, net.now) is None
    net.flush()
    assert "CANCEL" not in net.sent()


# --- lost packets -----------------------------------------------------------------------------


def test_lost_invites_are_retransmitted_with_timer_a_doubling() -> None:
    net, alice, bob, a, b = setup()
    net.drop = lambda src, what, n: src == ALICE and what == "INVITE" and n < 4
    alice.send_invite()
    net.advance(20.0)
    # sent at 0, lost; Timer A: +0.5, +1, +2, +4 ... the fifth copy gets through
    assert net.times(ALICE, "INVITE") == [0.0, 0.5, 1.5, 3.5, 7.5]
    assert net.sent(ALICE, "lost") == ["INVITE"] * 4
    assert alice.responses("INVITE") == [100, 180]
    assert bob.requests() == ["INVITE"]


def test_lost_non_invite_retransmitted_with_timer_e_capped_at_t2() -> None:
    net, alice, bob, a, b = setup()
    alice.send_invite()
    net.flush()
    bob.answer()
    net.flush()
    net.drop = lambda src, what, n: src == ALICE and what == "BYE" and n < 6
    start = net.now
    alice.send_bye()
    net.advance(60.0)
    times = [round(t - start, 6) for t in net.times(ALICE, "BYE")]
    assert times == [0.0, 0.5, 1.5, 3.5, 7.5, 11.5, 15.5]  # 0.5, 1, 2, 4, 4, 4
    assert alice.responses("BYE") == [200]


def test_lost_final_response_to_non_invite_is_resent_from_the_server_transaction() -> None:
    net, alice, bob, a, b = setup()
    alice.send_invite()
    net.flush()
    bob.answer()
    net.flush()
    net.drop = lambda src, what, n: src == BOB and what == "200/BYE" and n == 0
    alice.send_bye()
    net.advance(5.0)
    assert net.sent(ALICE).count("BYE") == 2
    assert net.sent(BOB).count("200/BYE") == 2
    assert bob.requests().count("BYE") == 1  # the retransmitted BYE never reached the TU
    assert alice.responses("BYE") == [200]


def test_retransmitted_invite_is_absorbed_and_last_provisional_resent() -> None:
    net, alice, bob, a, b = setup(auto_trying=False)
    net.drop = lambda src, what, n: src == BOB and what == "180/INVITE" and n == 0
    alice.send_invite()
    net.flush()
    assert net.sent() == ["INVITE", "180/INVITE"]  # 180 lost: Alice still Calling
    net.advance(0.5)
    assert net.sent() == ["INVITE", "180/INVITE", "INVITE", "180/INVITE"]
    assert bob.requests() == ["INVITE"]
    assert alice.responses("INVITE") == [180]
    assert alice.invite is not None and alice.invite.state is S.PROCEEDING


def test_lost_ack_makes_callee_retransmit_2xx_and_caller_reacks() -> None:
    net, alice, bob, a, b = setup()
    alice.send_invite()
    net.flush()
    net.drop = lambda src, what, n: src == ALICE and what == "ACK" and n == 0
    bob.answer()
    net.advance(10.0)
    assert net.sent(BOB).count("200/INVITE") == 2  # original + one retransmission at T1
    assert net.times(BOB, "200/INVITE")[1] == 0.5
    assert alice.acks_sent == 2
    assert bob.requests() == ["INVITE", "ACK"]
    # RFC 6026: the 2xx retransmission went to the TU through the Accepted transaction
    assert alice.invite is not None
    statuses = [e.response.status for e in alice.events
                if isinstance(e, ResponseReceived) and e.transaction is alice.invite]  # fmt: skip
    assert statuses == [100, 180, 200, 200]


def test_2xx_retransmissions_stop_after_64_t1_without_ack() -> None:
    net, alice, bob, a, b = setup()
    alice.send_invite()
    net.flush()
    net.drop = lambda src, what, n: src == ALICE and what == "ACK"
    bob.answer()
    net.advance(100.0)
    times = net.times(BOB, "200/INVITE")
    assert times[:6] == [0.0, 0.5, 1.5, 3.5, 7.5, 11.5]
    assert max(times) < 32.0
    timeouts = [e for e in bob.events if isinstance(e, TransactionTimeout)]
    assert [t.timer for t in timeouts] == ["L"]  # the TU should now send BYE (§13.3.1.4)


# --- timeouts ---------------------------------------------------------------------------------


def test_invite_to_nobody_times_out_with_timer_b() -> None:
    net, alice, bob, a, b = setup()
    net.drop = lambda src, what, n: True
    alice.send_invite()
    net.advance(100.0)
    assert net.times(ALICE, "INVITE") == [0.0, 0.5, 1.5, 3.5, 7.5, 15.5, 31.5]
    timeouts = [e for e in alice.events if isinstance(e, TransactionTimeout)]
    assert len(timeouts) == 1 and timeouts[0].timer == "B"
    r408 = timeouts[0].as_response()  # §8.1.3.1: the TU treats it as a 408
    assert r408.status == 408 and r408.cseq.method == "INVITE"
    assert len(a) == 0


def test_bye_to_nobody_times_out_with_timer_f() -> None:
    net, alice, bob, a, b = setup()
    alice.send_invite()
    net.flush()
    bob.answer()
    net.flush()
    net.drop = lambda src, what, n: src == ALICE and what == "BYE"
    alice.send_bye()
    start = net.now
    net.advance(start + 100.0)
    timeouts = [e for e in alice.events if isinstance(e, TransactionTimeout)]
    assert [t.timer for t in timeouts] == ["F"]
    assert net.sent(ALICE).count("BYE") == 11


# --- garbage and strays ------------------------------------------------------------------------


def test_garbage_is_dropped_and_counted() -> None:
    a = SipCore()
    a.receive_datagram(b"\x00\x01 not sip at all", "peer", 0.0)
    a.receive_datagram(b"OPTIONS sip:x@y SIP/2.0\r\nVia: nonsense\r\n\r\n", "peer", 0.0)
    events = []
    while (ev := a.next_event()) is not None:
        events.append(ev)
    assert len(events) == 2 and all(isinstance(e, MessageDropped) for e in events)
    assert sum(a.dropped.values()) == 2
    assert all(reason and " " not in reason for reason in a.dropped)  # fixed labels
    assert a.datagrams_to_send() == [] and len(a) == 0


def test_inconsistent_request_gets_400_statelessly() -> None:
    a = SipCore()
    h = Headers()
    h.add("Via", "SIP/2.0/UDP h;branch=z9hG4bKx")
    h.add("To", "<sip:x@y>")
    h.add("From", "<sip:a@b>;tag=1")
    h.add("Call-ID", "c")
    h.add("CSeq", "1 INVITE")
    a.receive_message(Request("OPTIONS", "sip:x@y", h), "peer", 0.0)
    assert a.dropped["cseq-method-mismatch"] == 1
    out = a.datagrams_to_send()
    assert len(out) == 1 and out[0][0].startswith(b"SIP/2.0 400 ") and out[0][1] == "peer"
    assert len(a) == 0


def test_stray_response_goes_to_the_tu_without_transaction() -> None:
    a = SipCore()
    h = Headers()
    h.add("Via", "SIP/2.0/UDP h;branch=z9hG4bKgone")
    h.add("To", "<sip:x@y>;tag=2")
    h.add("From", "<sip:a@b>;tag=1")
    h.add("Call-ID", "c")
    h.add("CSeq", "1 INVITE")
    a.receive_message(Response(200, "OK", h), "peer", 0.0)
    ev = a.next_event()
    assert isinstance(ev, ResponseReceived) and ev.transaction is None


def test_proxy_mode_cancel_is_answered_200_and_reported() -> None:
    p = SipCore(ua=False)
    inv = parse_message(
        b"INVITE sip:bob@biloxi.com SIP/2.0\r\nVia: SIP/2.0/UDP h:5060;branch=z9hG4bKp1\r\n"
        b"To: <sip:bob@biloxi.com>\r\nFrom: <sip:a@b>;tag=1\r\nCall-ID: c1\r\n"
        b"CSeq: 7 INVITE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    )
    assert isinstance(inv, Request)
    p.receive_message(inv, "up", 0.0)
    ev = p.next_event()
    assert isinstance(ev, RequestReceived) and ev.transaction is not None
    from sipsec.sip.transaction import build_cancel

    p.receive_message(build_cancel(inv), "up", 0.1)
    ev2 = p.next_event()
    assert isinstance(ev2, CancelReceived) and not ev2.answered_487
    sent = [label(d) for d, _ in p.datagrams_to_send()]
    assert sent == ["100/INVITE", "200/CANCEL"]  # the 487 comes from downstream


def test_merged_request_gets_482() -> None:
    """§8.2.2.2: the same INVITE forked back to the UAS through another branch."""
    b = SipCore()
    first = (
        b"INVITE sip:bob@biloxi.com SIP/2.0\r\nVia: SIP/2.0/UDP p1.example.com;branch=z9hG4bKa\r\n"
        b"To: <sip:bob@biloxi.com>\r\nFrom: <sip:a@atlanta.com>;tag=77\r\nCall-ID: m1\r\n"
        b"CSeq: 1 INVITE\r\nMax-Forwards: 69\r\nContact: <sip:a@h>\r\nContent-Length: 0\r\n\r\n"
    )
    b.receive_datagram(first, "p1", 0.0)
    b.receive_datagram(
        first.replace(b"p1.example.com;branch=z9hG4bKa", b"p2.example.com;branch=z9hG4bKb"),
        "p2",
        0.1,
    )
    sent = [(label(d), addr) for d, addr in b.datagrams_to_send()]
    assert sent == [("100/INVITE", "p1"), ("482/INVITE", "p2")]
    requests = []
    while (ev := b.next_event()) is not None:
        if isinstance(ev, RequestReceived):
            requests.append(ev.addr)
    assert requests == ["p1"]
    assert b.rejected["merged-request"] == 1
    b.handle_timer(100.0)
    assert len(b) == 1  # only the first INVITE, still waiting for its TU
