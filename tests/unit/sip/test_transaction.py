"""RFC 3261 §17 transactions driven one by one with a hand-advanced clock."""

from __future__ import annotations

import pytest
from sipsec.sip.errors import LocalProtocolError
from sipsec.sip.events import (
    RequestReceived,
    ResponseReceived,
    TransactionTerminated,
    TransactionTimeout,
    TransportError,
)
from sipsec.sip.message import Request, make_response
from sipsec.sip.parser import parse_message
from sipsec.sip.timers import Timer, TimerSettings
from sipsec.sip.transaction import (
    ClientTransaction,
    ServerTransaction,
    TransactionState,
    build_ack_for_error,
    build_cancel,
    client_transaction_key,
    server_transaction_key,
)

S = TransactionState


def request(method: str = "INVITE", branch: str = "z9hG4bK776asdhds", extra: str = "") -> Request:
    raw = (
        f"{method} sip:bob@biloxi.com SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP pc33.atlanta.com;branch={branch}\r\n"
        "Via: SIP/2.0/UDP 10.0.0.1:5070;branch=z9hG4bKlower\r\n"
        "Max-Forwards: 70\r\n"
        "Route: <sip:p1.atlanta.com;lr>, <sip:p2.biloxi.com;lr>\r\n"
        "To: Bob <sip:bob@biloxi.com>\r\n"
        "From: Alice <sip:alice@atlanta.com>;tag=1928301774\r\n"
        "Call-ID: a84b4c76e66710@pc33.atlanta.com\r\n"
        f"CSeq: 314159 {method}\r\n"
        "Contact: <sip:alice@pc33.atlanta.com>\r\n"
        f"{extra}"
        "Content-Length: 0\r\n\r\n"
    )
    msg = parse_message(raw.encode())
    assert isinstance(msg, Request)
    return msg


def drain_events(tx: ClientTransaction | ServerTransaction) -> list[object]:
    out = []
    while (ev := tx.next_event()) is not None:
        out.append(ev)
    return out


def run_timers(tx: ClientTransaction | ServerTransaction, until: float) -> list[float]:
    """Fire timers up to ``until``; the times at which something was sent."""
    sent_at = []
    while (deadline := tx.get_timer()) is not None and deadline <= until:
        tx.handle_timer(deadline)
        if tx.datagrams_to_send():
            sent_at.append(deadline)
    return sent_at


# --- INVITE client (§17.1.1, RFC 6026) ---------------------------------------------------------


def test_timer_a_doubles_and_timer_b_times_out_over_udp() -> None:
    tx = ClientTransaction(request(), reliable=False, now=0.0, addr=("192.0.2.2", 5060))
    first = tx.datagrams_to_send()
    assert len(first) == 1 and first[0][1] == ("192.0.2.2", 5060)
    assert first[0][0].startswith(b"INVITE sip:bob@biloxi.com SIP/2.0\r\n")
    assert tx.get_timer() == 0.5
    sent_at = run_timers(tx, 100.0)
    # A: T1, 2T1, 4T1, ... (no cap); B = 64*T1 = 32 s ends it
    assert sent_at == [0.5, 1.5, 3.5, 7.5, 15.5, 31.5]
    assert tx.state is S.TERMINATED and tx.get_timer() is None
    events = drain_events(tx)
    assert isinstance(events[0], TransactionTimeout) and events[0].timer == "B"
    assert isinstance(events[1], TransactionTerminated)


def test_retransmissions_reuse_the_same_bytes() -> None:
    tx = ClientTransaction(request(), reliable=False, now=0.0)
    data0 = tx.datagrams_to_send()[0][0]
    tx.handle_timer(0.5)
    data1 = tx.datagrams_to_send()[0][0]
    assert data0 is data1


def test_no_retransmission_over_reliable_transport() -> None:
    tx = ClientTransaction(request(), reliable=True, now=0.0)
    tx.datagrams_to_send()
    assert tx.get_timer() == 32.0  # only Timer B
    tx.handle_timer(32.0)
    assert tx.datagrams_to_send() == []
    assert tx.state is S.TERMINATED


def test_provisional_stops_retransmission_and_timer_b() -> None:
    req = request()
    tx = ClientTransaction(req, reliable=False, now=0.0)
    tx.datagrams_to_send()
    tx.receive_response(make_response(req, 180, to_tag="bobtag"), 0.2)
    assert tx.state is S.PROCEEDING
    # neither A (0.5 s) nor B (32 s) runs on; only Timer C, the Proceeding bound
    assert tx.get_timer() == 0.2 + TimerSettings().timer_c
    tx.handle_timer(33.0)
    assert tx.datagrams_to_send() == [] and tx.state is S.PROCEEDING
    ev = drain_events(tx)
    assert isinstance(ev[0], ResponseReceived) and ev[0].response.status == 180


def test_error_response_is_acked_and_retransmissions_absorbed() -> None:
    req = request()
    tx = ClientTransaction(req, reliable=False, now=0.0)
    tx.datagrams_to_send()
    resp = make_response(req, 486, to_tag="bobtag")
    tx.receive_response(resp, 1.0)
    assert tx.state is S.COMPLETED
    ((ack_bytes, _),) = tx.datagrams_to_send()
    ack = parse_message(ack_bytes)
    assert isinstance(ack, Request) and ack.method == "ACK"
    # §17.1.1.3: R-URI, Call-ID, From, CSeq number of the INVITE; To of the response;
    # one Via = the INVITE's top Via; the INVITE's Route headers.
    assert str(ack.uri) == "sip:bob@biloxi.com"
    assert ack.cseq.seq == 314159 and ack.cseq.method == "ACK"
    assert ack.to.tag == "bobtag" and ack.from_.tag == "1928301774"
    assert [v.branch for v in ack.via] == ["z9hG4bK776asdhds"]
    assert [str(r.uri) for r in ack.route] == ["sip:p1.atlanta.com;lr", "sip:p2.biloxi.com;lr"]
    assert ack.body == b""
    assert [type(e) for e in drain_events(tx)] == [ResponseReceived]
    # retransmitted 486: the same ACK again, nothing to the TU
    tx.receive_response(resp, 2.0)
    assert tx.datagrams_to_send() == [(ack_bytes, None)]
    assert drain_events(tx) == []
    # Timer D (32 s on UDP)
    assert tx.get_timer() == 33.0
    tx.handle_timer(33.0)
    assert tx.state is S.TERMINATED


def test_timer_d_is_zero_over_reliable_transport() -> None:
    req = request()
    tx = ClientTransaction(req, reliable=True, now=0.0)
    tx.receive_response(make_response(req, 404, to_tag="x"), 1.0)
    assert tx.state is S.TERMINATED
    assert [type(e) for e in drain_events(tx)] == [ResponseReceived, TransactionTerminated]


def test_2xx_moves_to_accepted_and_retransmissions_reach_the_tu() -> None:
    req = request()
    tx = ClientTransaction(req, reliable=False, now=0.0)
    tx.datagrams_to_send()
    ok = make_response(req, 200, to_tag="bobtag")
    tx.receive_response(ok, 1.0)
    assert tx.state is S.ACCEPTED
    assert tx.datagrams_to_send() == []  # the transaction never ACKs a 2xx
    tx.receive_response(ok, 1.5)
    tx.receive_response(make_response(req, 180, to_tag="bobtag"), 1.6)  # absorbed
    statuses = [e.response.status for e in drain_events(tx) if isinstance(e, ResponseReceived)]
    assert statuses == [200, 200]
    assert tx.get_timer() == 1.0 + 32.0  # Timer M = 64*T1
    tx.handle_timer(33.0)
    assert tx.state is S.TERMINATED


def test_transport_error_terminates_and_informs_the_tu() -> None:
    tx = ClientTransaction(request(), reliable=False, now=0.0)
    tx.transport_error(0.0)
    assert tx.state is S.TERMINATED
    assert [type(e) for e in drain_events(tx)] == [TransportError, TransactionTerminated]


def test_ack_needs_no_client_transaction() -> None:
    with pytest.raises(LocalProtocolError):
        ClientTransaction(request("ACK"), reliable=False, now=0.0)


def test_custom_t1_t2() -> None:
    timers = TimerSettings(t1=0.1, t2=0.4, t4=1.0)
    tx = ClientTransaction(request("OPTIONS"), reliable=False, now=10.0, timers=timers)
    tx.datagrams_to_send()
    sent_at = run_timers(tx, 100.0)
    assert [round(t - 10.0, 6) for t in sent_at[:5]] == [0.1, 0.3, 0.7, 1.1, 1.5]
    assert timers.duration(Timer.F, reliable=False) == pytest.approx(6.4)
    assert timers.duration(Timer.K, reliable=True) == 0.0
    with pytest.raises(ValueError):
        TimerSettings(t1=5.0, t2=4.0)


# --- non-INVITE client (§17.1.2) --------------------------------------------------------------


def test_timer_e_doubles_up_to_t2_then_timer_f() -> None:
    tx = ClientTransaction(request("OPTIONS"), reliable=False, now=0.0)
    tx.datagrams_to_send()
    sent_at = run_timers(tx, 100.0)
    assert sent_at == [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    events = drain_events(tx)
    assert isinstance(events[0], TransactionTimeout) and events[0].timer == "F"


def test_timer_e_is_t2_in_proceeding() -> None:
    req = request("BYE")
    tx = ClientTransaction(req, reliable=False, now=0.0)
    tx.datagrams_to_send()
    tx.handle_timer(0.5)  # first retransmission, next E = 1.0 s
    tx.receive_response(make_response(req, 100), 0.6)
    assert tx.state is S.PROCEEDING
    sent_at = run_timers(tx, 12.0)
    assert sent_at == [1.5, 5.5, 9.5]  # after the pending E fires, E = T2 = 4 s


def test_non_invite_final_then_timer_k() -> None:
    req = request("REGISTER")
    tx = ClientTransaction(req, reliable=False, now=0.0)
    tx.datagrams_to_send()
    tx.receive_response(make_response(req, 200, to_tag="t"), 0.1)
    assert tx.state is S.COMPLETED and tx.get_timer() == pytest.approx(5.1)  # K = T4
    tx.receive_response(make_response(req, 200, to_tag="t"), 0.2)
    assert [type(e) for e in drain_events(tx)] == [ResponseReceived]
    tx.handle_timer(5.1)
    assert tx.state is S.TERMINATED


# --- INVITE server (§17.2.1, RFC 6026) -----------------------------------------------------------


def test_invite_server_resends_last_provisional_on_retransmission() -> None:
    req = request()
    tx = ServerTransaction(req, reliable=False, now=0.0)
    assert tx.state is S.PROCEEDING
    tx.receive_request(req, 0.1)  # nothing sent yet: nothing to resend
    assert tx.datagrams_to_send() == []
    tx.send_response(make_response(req, 180, to_tag="b"), 0.2)
    ((ringing, _),) = tx.datagrams_to_send()
    tx.receive_request(req, 0.5)
    assert tx.datagrams_to_send() == [(ringing, None)]
    assert drain_events(tx) == []  # retransmissions never reach the TU


def test_invite_server_error_response_timer_g_then_ack_then_timer_i() -> None:
    req = request()
    tx = ServerTransaction(req, reliable=False, now=0.0)
    tx.send_response(make_response(req, 486, to_tag="b"), 0.0)
    tx.datagrams_to_send()
    assert tx.state is S.COMPLETED
    sent_at = run_timers(tx, 12.0)
    assert sent_at == [0.5, 1.5, 3.5, 7.5, 11.5]  # G = min(2G, T2)
    ack = build_ack_for_error(req, tx.last_response)  # type: ignore[arg-type]
    tx.receive_request(ack, 12.0)
    assert tx.state is S.CONFIRMED
    tx.receive_request(ack, 12.5)  # absorbed
    assert tx.datagrams_to_send() == [] and drain_events(tx) == []
    assert tx.get_timer() == 17.0  # I = T4
    tx.handle_timer(17.0)
    assert tx.state is S.TERMINATED


def test_invite_server_timer_h_without_ack() -> None:
    req = request()
    tx = ServerTransaction(req, reliable=True, now=0.0)
    tx.send_response(make_response(req, 603, to_tag="b"), 0.0)
    assert tx.get_timer() == 32.0  # no G on a reliable transport, H = 64*T1
    tx.handle_timer(32.0)
    events = drain_events(tx)
    assert isinstance(events[0], TransactionTimeout) and events[0].timer == "H"
    assert tx.state is S.TERMINATED


def test_invite_server_accepted_absorbs_invites_and_passes_acks() -> None:
    req = request()
    tx = ServerTransaction(req, reliable=False, now=0.0)
    ok = make_response(req, 200, to_tag="b")
    tx.send_response(ok, 0.0)
    assert tx.state is S.ACCEPTED
    tx.datagrams_to_send()
    tx.receive_request(req, 0.5)  # absorbed: the TU retransmits 2xx, not the transaction
    assert tx.datagrams_to_send() == []
    tx.send_response(ok, 0.5)  # the TU's retransmission passes through
    assert len(tx.datagrams_to_send()) == 1
    ack = request("ACK", branch="z9hG4bKack2xx")
    tx.receive_request(ack, 0.7)
    events = drain_events(tx)
    assert isinstance(events[0], RequestReceived) and events[0].request is ack
    with pytest.raises(LocalProtocolError):
        tx.send_response(make_response(req, 180, to_tag="b"), 0.8)
    assert tx.get_timer() == 32.0  # Timer L
    tx.handle_timer(32.0)
    assert tx.state is S.TERMINATED
    with pytest.raises(LocalProtocolError):
        tx.send_response(ok, 40.0)


def test_server_rejects_status_out_of_range_and_ack() -> None:
    with pytest.raises(LocalProtocolError):
        ServerTransaction(request("ACK"), reliable=False, now=0.0)


# --- non-INVITE server (§17.2.2) ------------------------------------------------------------


def test_non_invite_server_absorbs_then_resends_final_until_timer_j() -> None:
    req = request("OPTIONS")
    tx = ServerTransaction(req, reliable=False, now=0.0)
    assert tx.state is S.TRYING
    tx.receive_request(req, 0.5)  # Trying: discarded
    assert tx.datagrams_to_send() == []
    tx.send_response(make_response(req, 200, to_tag="b"), 1.0)
    ((ok, _),) = tx.datagrams_to_send()
    tx.receive_request(req, 1.5)
    assert tx.datagrams_to_send() == [(ok, None)]
    with pytest.raises(LocalProtocolError):
        tx.send_response(make_response(req, 500, to_tag="b"), 1.6)
    assert tx.get_timer() == 33.0  # J = 64*T1 on UDP
    tx.handle_timer(33.0)
    assert tx.state is S.TERMINATED


def test_non_invite_server_reliable_terminates_at_once() -> None:
    req = request("BYE")
    tx = ServerTransaction(req, reliable=True, now=0.0)
    tx.send_response(make_response(req, 200, to_tag="b"), 0.0)
    assert tx.state is S.TERMINATED
    assert len(tx.datagrams_to_send()) == 1


# --- keys and CANCEL ------------------------------------------------------------------------


def test_matching_keys() -> None:
    inv = request()
    ack = request("ACK")
    cancel = build_cancel(inv)
    assert server_transaction_key(ack) == server_transaction_key(inv)
    assert server_transaction_key(cancel) != server_transaction_key(inv)
    assert server_transaction_key(cancel, "INVITE") == server_transaction_key(inv)
    resp = make_response(inv, 180)
    assert client_transaction_key(resp) == client_transaction_key(inv)
    assert client_transaction_key(make_response(cancel, 200)) != client_transaction_key(inv)
    # RFC 2543 peers (no magic cookie): matched on R-URI, From tag, Call-ID, CSeq, top Via
    old = request(branch="1234")
    old_ack = request("ACK", branch="1234")
    assert server_transaction_key(old)[0] == "rfc2543"
    assert server_transaction_key(old_ack) == server_transaction_key(old)


def test_build_cancel_follows_section_9_1() -> None:
    inv = request(extra="Content-Type: application/sdp\r\n")
    cancel = build_cancel(inv)
    assert cancel.method == "CANCEL"
    assert str(cancel.uri) == str(inv.uri)
    assert cancel.call_id == inv.call_id
    assert cancel.cseq.seq == inv.cseq.seq and cancel.cseq.method == "CANCEL"
    assert str(cancel.to) == str(inv.to) and cancel.to.tag is None
    assert str(cancel.from_) == str(inv.from_)
    assert [v.branch for v in cancel.via] == ["z9hG4bK776asdhds"]
    assert len(cancel.route) == 2
    assert cancel.content_type is None
    with pytest.raises(LocalProtocolError):
        build_cancel(request("ACK"))


def test_client_transaction_cancel_uses_its_request() -> None:
    tx = ClientTransaction(request(), reliable=False, now=0.0)
    assert tx.build_cancel().cseq.method == "CANCEL"


def test_terminate_by_tu() -> None:
    tx = ClientTransaction(request(), reliable=False, now=0.0)
    tx.receive_response(make_response(tx.request, 100), 0.1)
    # Figure 5 leaves Proceeding to the TU; only the Timer C backstop bounds it here
    assert tx.get_timer() == 0.1 + TimerSettings().timer_c
    tx.terminate()
    assert tx.state is S.TERMINATED and tx.get_timer() is None
    assert isinstance(drain_events(tx)[-1], TransactionTerminated)


def test_timer_c_bounds_an_invite_left_in_proceeding() -> None:
    """Figure 5 gives Proceeding no timer: Timer C (restarted by each provisional) tells the
    TU to cancel (§9.1, §16.8), and 64*T1 later the transaction is destroyed (§9.1)."""
    timers = TimerSettings(timer_c=100.0)
    req = request()
    tx = ClientTransaction(req, reliable=True, now=0.0, timers=timers)
    tx.receive_response(make_response(req, 180, to_tag="b"), 1.0)
    tx.receive_response(make_response(req, 183, to_tag="b"), 50.0)  # restarts Timer C
    assert tx.get_timer() == 150.0
    drain_events(tx)
    tx.handle_timer(150.0)
    assert tx.state is S.PROCEEDING
    (timeout,) = drain_events(tx)
    assert isinstance(timeout, TransactionTimeout) and timeout.timer == "C"
    assert timeout.as_response().status == 408
    assert tx.get_timer() == 150.0 + 64 * timers.t1
    tx.handle_timer(150.0 + 64 * timers.t1)
    assert tx.state is S.TERMINATED
    assert [type(e) for e in drain_events(tx)] == [TransactionTerminated]


def test_a_final_response_after_timer_c_still_completes_the_invite() -> None:
    timers = TimerSettings(timer_c=10.0)
    req = request()
    tx = ClientTransaction(req, reliable=False, now=0.0, timers=timers)
    tx.receive_response(make_response(req, 180, to_tag="b"), 0.1)
    tx.handle_timer(10.1)  # Timer C: the TU cancels; the 487 comes within 64*T1
    tx.datagrams_to_send()
    tx.receive_response(make_response(req, 487, to_tag="b"), 12.0)
    assert tx.state is S.COMPLETED and len(tx.datagrams_to_send()) == 1  # the ACK (§17.1.1.3)
    assert tx.get_timer() == 12.0 + timers.timer_d_unreliable
