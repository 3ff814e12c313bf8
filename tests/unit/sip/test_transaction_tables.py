"""The transaction tables against RFC 3261 Figures 5-8 as updated by RFC 6026."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sipsec.sip.errors import LocalProtocolError
from sipsec.sip.events import TransactionTerminated
from sipsec.sip.message import Request, Response, make_response
from sipsec.sip.parser import parse_message
from sipsec.sip.transaction import (
    INPUTS,
    STATES,
    TABLES,
    ClientTransaction,
    Input,
    Kind,
    ServerTransaction,
    TransactionState,
    to_dot,
)

S = TransactionState
I = Input  # noqa: E741

# Every arrow of the figures, typed from the RFC text independently of the module:
# (state, input, next state). Self-loops with an action are arrows too.
FIGURES: dict[Kind, set[tuple[S, Input, S]]] = {
    # RFC 6026 §7.2, Figure 5 (INVITE client transaction)
    Kind.INVITE_CLIENT: {
        (S.CALLING, I.TIMER_A, S.CALLING),  # Timer A fires / Reset A, INVITE sent
        (S.CALLING, I.TIMER_B, S.TERMINATED),  # Timer B fires / Inform TU
        (S.CALLING, I.TRANSPORT_ERROR, S.TERMINATED),  # Transport Err / Inform TU
        (S.CALLING, I.RECV_1XX, S.PROCEEDING),  # 1xx / 1xx to TU
        (S.CALLING, I.RECV_2XX, S.ACCEPTED),  # 2xx / 2xx to TU
        (S.CALLING, I.RECV_FINAL, S.COMPLETED),  # 300-699 / send ACK, resp. to TU
        (S.PROCEEDING, I.RECV_1XX, S.PROCEEDING),  # 1xx / 1xx to TU
        (S.PROCEEDING, I.RECV_2XX, S.ACCEPTED),
        (S.PROCEEDING, I.RECV_FINAL, S.COMPLETED),
        (S.PROCEEDING, I.TRANSPORT_ERROR, S.TERMINATED),  # §17.1.4
        (S.COMPLETED, I.RECV_FINAL, S.COMPLETED),  # 300-699 / send ACK
        (S.COMPLETED, I.TRANSPORT_ERROR, S.TERMINATED),  # Transport Err / Inform TU
        (S.COMPLETED, I.TIMER_D, S.TERMINATED),  # Timer D fires / -
        (S.ACCEPTED, I.RECV_2XX, S.ACCEPTED),  # 2xx / 2xx to TU
        (S.ACCEPTED, I.TIMER_M, S.TERMINATED),  # Timer M fires / -
    },
    # RFC 3261 §17.1.2.2, Figure 6 (non-INVITE client transaction)
    Kind.NON_INVITE_CLIENT: {
        (S.TRYING, I.TIMER_E, S.TRYING),
        (S.TRYING, I.TIMER_F, S.TERMINATED),
        (S.TRYING, I.TRANSPORT_ERROR, S.TERMINATED),
        (S.TRYING, I.RECV_1XX, S.PROCEEDING),
        (S.TRYING, I.RECV_2XX, S.COMPLETED),
        (S.TRYING, I.RECV_FINAL, S.COMPLETED),
        (S.PROCEEDING, I.TIMER_E, S.PROCEEDING),
        (S.PROCEEDING, I.TIMER_F, S.TERMINATED),
        (S.PROCEEDING, I.TRANSPORT_ERROR, S.TERMINATED),
        (S.PROCEEDING, I.RECV_1XX, S.PROCEEDING),
        (S.PROCEEDING, I.RECV_2XX, S.COMPLETED),
        (S.PROCEEDING, I.RECV_FINAL, S.COMPLETED),
        (S.COMPLETED, I.TIMER_K, S.TERMINATED),
    },
    # RFC 6026 §7.1, Figure 7 (INVITE server transaction)
    Kind.INVITE_SERVER: {
        (S.PROCEEDING, I.RECV_REQUEST, S.PROCEEDING),  # INVITE / send response
        (S.PROCEEDING, I.SEND_1XX, S.PROCEEDING),  # 101-199 from TU / send response
        (S.PROCEEDING, I.SEND_2XX, S.ACCEPTED),  # 2xx from TU / send response
        (S.PROCEEDING, I.SEND_FINAL, S.COMPLETED),  # 300-699 from TU / send response
        (S.PROCEEDING, I.TRANSPORT_ERROR, S.TERMINATED),
        (S.COMPLETED, I.RECV_REQUEST, S.COMPLETED),  # INVITE / send response
        (S.COMPLETED, I.TIMER_G, S.COMPLETED),  # Timer G fires / send response
        (S.COMPLETED, I.RECV_ACK, S.CONFIRMED),  # ACK / -
        (S.COMPLETED, I.TIMER_H, S.TERMINATED),  # Timer H fires / -
        (S.COMPLETED, I.TRANSPORT_ERROR, S.TERMINATED),
        (S.CONFIRMED, I.TIMER_I, S.TERMINATED),  # Timer I fires / -
        (S.ACCEPTED, I.RECV_ACK, S.ACCEPTED),  # ACK / to TU
        (S.ACCEPTED, I.SEND_2XX, S.ACCEPTED),  # 2xx from TU / send response
        (S.ACCEPTED, I.TRANSPORT_ERROR, S.ACCEPTED),  # Transport Err / Inform TU
        (S.ACCEPTED, I.TIMER_L, S.TERMINATED),  # Timer L fires / -
    },
    # RFC 3261 §17.2.2, Figure 8 (non-INVITE server transaction)
    Kind.NON_INVITE_SERVER: {
        (S.TRYING, I.SEND_1XX, S.PROCEEDING),
        (S.TRYING, I.SEND_2XX, S.COMPLETED),
        (S.TRYING, I.SEND_FINAL, S.COMPLETED),
        (S.PROCEEDING, I.SEND_1XX, S.PROCEEDING),
        (S.PROCEEDING, I.RECV_REQUEST, S.PROCEEDING),
        (S.PROCEEDING, I.SEND_2XX, S.COMPLETED),
        (S.PROCEEDING, I.SEND_FINAL, S.COMPLETED),
        (S.PROCEEDING, I.TRANSPORT_ERROR, S.TERMINATED),
        (S.COMPLETED, I.RECV_REQUEST, S.COMPLETED),
        (S.COMPLETED, I.TRANSPORT_ERROR, S.TERMINATED),
        (S.COMPLETED, I.TIMER_J, S.TERMINATED),
    },
}


@pytest.mark.parametrize("kind", list(Kind))
def test_every_state_input_pair_has_a_defined_outcome(kind: Kind) -> None:
    table = TABLES[kind]
    expected = {(s, i) for s in STATES[kind] for i in INPUTS[kind]}
    assert set(table) == expected
    for (_state, _inp), tr in table.items():
        assert tr.next_state in STATES[kind]


# Arrows beyond the figures, each from RFC text: Figure 5 gives Proceeding no timer, so
# Timer C (§16.6 step 11) tells the TU to cancel and §9.1's 64*T1 wait (Timer B) ends it.
EXTENSIONS: dict[Kind, set[tuple[S, Input, S]]] = {
    Kind.INVITE_CLIENT: {
        (S.PROCEEDING, I.TIMER_C, S.PROCEEDING),  # Timer C fires / Inform TU, start B
        (S.PROCEEDING, I.TIMER_B, S.TERMINATED),  # §9.1: no final 64*T1 after / -
    },
    Kind.NON_INVITE_CLIENT: set(),
    Kind.INVITE_SERVER: set(),
    Kind.NON_INVITE_SERVER: set(),
}


@pytest.mark.parametrize("kind", list(Kind))
def test_arrows_match_the_rfc_figure(kind: Kind) -> None:
    arrows = {
        (s, i, tr.next_state)
        for (s, i), tr in TABLES[kind].items()
        if tr.misuse is None and (tr.actions or tr.next_state is not s)
    }
    assert arrows == FIGURES[kind] | EXTENSIONS[kind]
    assert not FIGURES[kind] & EXTENSIONS[kind]


@pytest.mark.parametrize("kind", list(Kind))
def test_terminated_absorbs_network_and_timers_and_refuses_tu_sends(kind: Kind) -> None:
    for inp in INPUTS[kind]:
        tr = TABLES[kind][(S.TERMINATED, inp)]
        assert tr.next_state is S.TERMINATED and not tr.actions
        assert (tr.misuse is not None) == inp.name.startswith("SEND_")


def test_tu_cannot_send_after_a_final_response() -> None:
    for kind in (Kind.INVITE_SERVER, Kind.NON_INVITE_SERVER):
        for state in (S.COMPLETED, S.CONFIRMED):
            if state not in STATES[kind]:
                continue
            for inp in (I.SEND_1XX, I.SEND_2XX, I.SEND_FINAL):
                assert TABLES[kind][(state, inp)].misuse is not None
    # RFC 6026 §7.1: the TU's 2xx retransmissions pass through Accepted; nothing else does.
    assert TABLES[Kind.INVITE_SERVER][(S.ACCEPTED, I.SEND_2XX)].misuse is None
    assert TABLES[Kind.INVITE_SERVER][(S.ACCEPTED, I.SEND_FINAL)].misuse is not None


def test_ack_for_error_responses_is_sent_by_the_client_invite_transaction() -> None:
    table = TABLES[Kind.INVITE_CLIENT]
    for state in (S.CALLING, S.PROCEEDING, S.COMPLETED):
        assert "SEND_ACK" in {a.name for a in table[(state, I.RECV_FINAL)].actions}
    # a 2xx is never ACKed by the transaction (§17.1.1.3: the TU does it)
    for state in STATES[Kind.INVITE_CLIENT]:
        assert "SEND_ACK" not in {a.name for a in table[(state, I.RECV_2XX)].actions}


def test_dot_rendering_lists_every_arrow() -> None:
    for kind in Kind:
        dot = to_dot(kind)
        assert dot.count("->") == len(FIGURES[kind] | EXTENSIONS[kind])
        assert dot.startswith(f'digraph "{kind.name}"')


def test_sans_io_modules_import_no_io_and_read_no_clock() -> None:
    import subprocess
    import sys
    from pathlib import Path

    modules = ["transaction", "timers", "events", "dialog", "digest", "core"]
    code = (
        "import sys\n"
        + "".join(f"import sipsec.sip.{m}\n" for m in modules)
        + "bad = [m for m in ('asyncio', 'socket', 'grpc', 'redis', 'selectors') "
        "if m in sys.modules]\nprint(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
    import sipsec.sip

    pkg = Path(sipsec.sip.__file__).parent
    for m in modules:
        source = (pkg / f"{m}.py").read_text()
        for clock in ("import time", "from time", "datetime", "monotonic", "perf_counter"):
            assert clock not in source, (m, clock)


def _message(method: str) -> Request:
    msg = parse_message(
        (
            f"{method} sip:bob@biloxi.com SIP/2.0\r\n"
            "Via: SIP/2.0/UDP pc33.atlanta.com;branch=z9hG4bK776asdhds\r\n"
            "To: Bob <sip:bob@biloxi.com>\r\nFrom: <sip:alice@atlanta.com>;tag=19\r\n"
            f"Call-ID: a84b4c76e66710\r\nCSeq: 1 {method}\r\nContent-Length: 0\r\n\r\n"
        ).encode()
    )
    assert isinstance(msg, Request)
    return msg


_STATUS = {I.RECV_1XX: 180, I.RECV_2XX: 200, I.RECV_FINAL: 486,
           I.SEND_1XX: 180, I.SEND_2XX: 200, I.SEND_FINAL: 486}  # fmt: skip


@settings(max_examples=150, deadline=None)
@given(
    st.sampled_from(list(Kind)),
    st.booleans(),
    st.lists(st.integers(0, 100), max_size=25),
)
def test_random_input_sequences_follow_the_table(
    kind: Kind, reliable: bool, picks: list[int]
) -> None:
    invite = kind in (Kind.INVITE_CLIENT, Kind.INVITE_SERVER)
    req = _message("INVITE" if invite else "OPTIONS")
    client = kind in (Kind.INVITE_CLIENT, Kind.NON_INVITE_CLIENT)
    tx: ClientTransaction | ServerTransaction = (
        ClientTransaction(req, reliable, 0.0) if client else ServerTransaction(req, reliable, 0.0)
    )
    now = 0.0
    inputs = INPUTS[kind]
    for pick in picks:
        inp = inputs[pick % len(inputs)]
        before = tx.state
        tr = TABLES[kind][(before, inp)]
        if inp.name.startswith("TIMER_"):
            deadline = tx.get_timer()
            if deadline is None:
                continue
            now = max(now, deadline)
            tx.handle_timer(now)
        elif inp.name.startswith("RECV_") and client:
            assert isinstance(tx, ClientTransaction)
            tx.receive_response(make_response(req, _STATUS[inp], to_tag="t"), now)
        elif inp is I.RECV_REQUEST:
            assert isinstance(tx, ServerTransaction)
            tx.receive_request(req, now)
        elif inp is I.RECV_ACK:
            assert isinstance(tx, ServerTransaction)
            tx.receive_request(_message("ACK"), now)
        elif inp.name.startswith("SEND_"):
            assert isinstance(tx, ServerTransaction)
            resp = make_response(req, _STATUS[inp], to_tag="t")
            if tr.misuse is not None:
                with pytest.raises(LocalProtocolError):
                    tx.send_response(resp, now)
                assert tx.state is before
                continue
            tx.send_response(resp, now)
        else:
            tx.transport_error(now)
        if not inp.name.startswith("TIMER_"):
            # zero-length timers of reliable transports may end it at once
            assert tx.state in (tr.next_state, S.TERMINATED)
        assert tx.state in STATES[kind]
        if tx.state is S.TERMINATED:
            assert tx.get_timer() is None
        for data, _ in tx.datagrams_to_send():
            assert isinstance(parse_message(data), Request | Response)
    terminated = 0
    while (ev := tx.next_event()) is not None:
        terminated += isinstance(ev, TransactionTerminated)
    assert terminated == (1 if tx.state is S.TERMINATED else 0)
