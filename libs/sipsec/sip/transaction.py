"""RFC 3261 §17 client and server transactions (with RFC 6026) as transition tables, sans-IO.

All four state machines live in this module as explicit ``(state, input) -> transition``
tables (h11 ``_state.py`` style), so a reviewer can check them against RFC 3261
Figures 5–8 as updated by RFC 6026 Figures 5 and 7. Every (state, input) pair a machine
can see has an entry: a transition, an explicit ignore (absorb), or caller misuse.

Shape (aioquic style): a transaction is created with its request, the transport's
reliability and ``now``; it is fed with ``receive_response`` / ``receive_request`` /
``send_response`` / ``transport_error`` / ``handle_timer``; it hands back
``datagrams_to_send()`` (``(bytes, addr)`` pairs, serialised once, retransmissions reuse
the bytes), ``next_event()`` for the transaction user (TU), and ``get_timer()`` (the next
absolute deadline or None). Nothing here reads a clock or touches a socket.
"""

from __future__ import annotations

import functools
from collections import deque
from collections.abc import Callable
from enum import IntEnum
from typing import Any, NamedTuple

from .errors import LocalProtocolError, RemoteProtocolError
from .events import (
    Event,
    RequestReceived,
    ResponseReceived,
    TransactionTerminated,
    TransactionTimeout,
    TransportError,
)
from .headers import Headers
from .message import Request, Response
from .timers import DEFAULT_TIMERS, Timer, TimerSettings

__all__ = [
    "INPUTS",
    "INVITE_CLIENT_TABLE",
    "INVITE_SERVER_TABLE",
    "MAGIC_COOKIE",
    "NON_INVITE_CLIENT_TABLE",
    "NON_INVITE_SERVER_TABLE",
    "STATES",
    "TABLES",
    "Action",
    "ClientTransaction",
    "Input",
    "Kind",
    "ServerTransaction",
    "Transaction",
    "TransactionState",
    "Transition",
    "build_ack_for_error",
    "build_cancel",
    "client_transaction_key",
    "server_transaction_key",
    "to_dot",
]

MAGIC_COOKIE = "z9hG4bK"  # RFC 3261 §8.1.1.7: branch prefix of RFC 3261-compliant requests


class Kind(IntEnum):
    """The four transaction state machines (RFC 3261 §17)."""

    INVITE_CLIENT = 0  # §17.1.1, RFC 6026 §7.2 (Figure 5)
    NON_INVITE_CLIENT = 1  # §17.1.2 (Figure 6)
    INVITE_SERVER = 2  # §17.2.1, RFC 6026 §7.1 (Figure 7)
    NON_INVITE_SERVER = 3  # §17.2.2 (Figure 8)


class TransactionState(IntEnum):
    """Transaction states; each machine uses the subset its figure shows."""

    CALLING = 0  # §17.1.1.2: INVITE client, request sent, no response yet (Timers A, B)
    TRYING = 1  # §17.1.2.2 non-INVITE client (Timers E, F); §17.2.2 non-INVITE server
    PROCEEDING = 2  # §17.1.1.2 / §17.1.2.2 provisional received; §17.2.1 / §17.2.2 server
    COMPLETED = 3  # final 300-699 (INVITE) or any final (non-INVITE); absorbs retransmits
    CONFIRMED = 4  # §17.2.1: INVITE server got the ACK for its 300-699 (Timer I)
    ACCEPTED = 5  # RFC 6026 §7.1 / §7.2: 2xx to INVITE sent / received (Timers L, M)
    TERMINATED = 6  # §17.1.1.2, §17.2.1 ...: the transaction is over and can be removed


class Input(IntEnum):
    """Everything that can happen to a transaction."""

    RECV_1XX = 0  # client: provisional response from the network
    RECV_2XX = 1  # client: 2xx from the network
    RECV_FINAL = 2  # client: 300-699 from the network
    RECV_REQUEST = 3  # server: retransmission of the request from the network
    RECV_ACK = 4  # server (INVITE): ACK from the network
    SEND_1XX = 5  # server: the TU passes a provisional response
    SEND_2XX = 6  # server: the TU passes a 2xx
    SEND_FINAL = 7  # server: the TU passes a 300-699
    TRANSPORT_ERROR = 8  # the shell could not send (§17.1.4, §17.2.4)
    TIMER_A = 9
    TIMER_B = 10
    TIMER_D = 11
    TIMER_E = 12
    TIMER_F = 13
    TIMER_G = 14
    TIMER_H = 15
    TIMER_I = 16
    TIMER_J = 17
    TIMER_K = 18
    TIMER_L = 19
    TIMER_M = 20
    TIMER_C = 21


class Action(IntEnum):
    """Side effects a transition performs, in the order listed in the table."""

    SEND_REQUEST = 0  # (re)transmit the request
    SEND_ACK = 1  # build (once) and send the ACK for a 300-699 (§17.1.1.3)
    SEND_RESPONSE = 2  # transmit the response the TU passed; remember it as the last
    RESEND_RESPONSE = 3  # retransmit the last response sent, if any
    PASS_TO_TU = 4  # deliver the response (client) or the ACK (server) to the TU
    INFORM_TIMEOUT = 5  # TransactionTimeout to the TU (B, F: treat as 408; H: no ACK)
    INFORM_TRANSPORT_ERROR = 6
    STOP_RETRANSMIT = 7  # cancel Timer A / E / G
    STOP_TIMEOUT = 8  # cancel Timer B (leaving Calling)
    BACKOFF_A = 9  # Timer A := 2 * A (§17.1.1.2)
    BACKOFF_E = 10  # Timer E := min(2 * E, T2) (§17.1.2.2, Trying)
    RESET_E_T2 = 11  # Timer E := T2 (§17.1.2.2, Proceeding)
    BACKOFF_G = 12  # Timer G := min(2 * G, T2) (§17.2.1)
    START_G = 13  # Timer G := T1, unreliable transports only
    START_D = 14
    START_H = 15
    START_I = 16
    START_J = 17
    START_K = 18
    START_L = 19
    START_M = 20
    START_C = 21  # (re)start Timer C: INVITE client in Proceeding (§16.6 step 11, §9.1)
    START_B = 22  # Timer B := 64*T1 once Timer C fired: the §9.1 wait for a final response


class Transition(NamedTuple):
    """One table entry: the next state and the actions; ``misuse`` marks a TU error."""

    next_state: TransactionState
    actions: tuple[Action, ...] = ()
    misuse: str | None = None


S = TransactionState
In = Input
A = Action


def _go(state: TransactionState, *actions: Action) -> Transition:
    return Transition(state, actions)


def _ignore(state: TransactionState) -> Transition:
    """Explicitly absorbed: stay in ``state``, do nothing."""
    return Transition(state, ())


def _misuse(state: TransactionState, why: str) -> Transition:
    return Transition(state, (), why)


_NO_SEND_AFTER_FINAL = "a final response was already sent"
_TERMINATED = "the transaction is terminated"

# --- RFC 3261 §17.1.1.2 Figure 5, as replaced by RFC 6026 §7.2 Figure 5 ------------------
INVITE_CLIENT_TABLE: dict[tuple[TransactionState, Input], Transition] = {
    (S.CALLING, In.TIMER_A): _go(S.CALLING, A.SEND_REQUEST, A.BACKOFF_A),
    (S.CALLING, In.TIMER_B): _go(S.TERMINATED, A.INFORM_TIMEOUT),
    (S.CALLING, In.TIMER_D): _ignore(S.CALLING),
    (S.CALLING, In.TIMER_M): _ignore(S.CALLING),
    (S.CALLING, In.TIMER_C): _ignore(S.CALLING),
    (S.CALLING, In.RECV_1XX): _go(
        S.PROCEEDING, A.STOP_RETRANSMIT, A.STOP_TIMEOUT, A.START_C, A.PASS_TO_TU
    ),
    (S.CALLING, In.RECV_2XX): _go(S.ACCEPTED, A.STOP_RETRANSMIT, A.START_M, A.PASS_TO_TU),
    (S.CALLING, In.RECV_FINAL): _go(
        S.COMPLETED, A.STOP_RETRANSMIT, A.SEND_ACK, A.START_D, A.PASS_TO_TU
    ),
    (S.CALLING, In.TRANSPORT_ERROR): _go(S.TERMINATED, A.INFORM_TRANSPORT_ERROR),
    # Proceeding: no retransmissions. Figure 5 gives it no timer, so a far end that went
    # silent after a provisional would hold the transaction forever: Timer C, restarted
    # by each provisional (§16.7 step 2), tells the TU to cancel (§9.1, §16.8), and the
    # transaction is destroyed 64*T1 later (Timer B) unless a final response comes (§9.1).
    (S.PROCEEDING, In.TIMER_A): _ignore(S.PROCEEDING),
    (S.PROCEEDING, In.TIMER_C): _go(S.PROCEEDING, A.INFORM_TIMEOUT, A.START_B),
    (S.PROCEEDING, In.TIMER_B): _go(S.TERMINATED),
    (S.PROCEEDING, In.TIMER_D): _ignore(S.PROCEEDING),
    (S.PROCEEDING, In.TIMER_M): _ignore(S.PROCEEDING),
    (S.PROCEEDING, In.RECV_1XX): _go(S.PROCEEDING, A.START_C, A.PASS_TO_TU),
    (S.PROCEEDING, In.RECV_2XX): _go(S.ACCEPTED, A.START_M, A.PASS_TO_TU),
    (S.PROCEEDING, In.RECV_FINAL): _go(S.COMPLETED, A.SEND_ACK, A.START_D, A.PASS_TO_TU),
    (S.PROCEEDING, In.TRANSPORT_ERROR): _go(S.TERMINATED, A.INFORM_TRANSPORT_ERROR),
    # Completed: absorb response retransmissions, re-ACK each 300-699 (§17.1.1.2).
    (S.COMPLETED, In.TIMER_A): _ignore(S.COMPLETED),
    (S.COMPLETED, In.TIMER_B): _ignore(S.COMPLETED),
    (S.COMPLETED, In.TIMER_D): _go(S.TERMINATED),
    (S.COMPLETED, In.TIMER_M): _ignore(S.COMPLETED),
    (S.COMPLETED, In.TIMER_C): _ignore(S.COMPLETED),
    (S.COMPLETED, In.RECV_1XX): _ignore(S.COMPLETED),
    (S.COMPLETED, In.RECV_2XX): _ignore(S.COMPLETED),
    (S.COMPLETED, In.RECV_FINAL): _go(S.COMPLETED, A.SEND_ACK),
    (S.COMPLETED, In.TRANSPORT_ERROR): _go(S.TERMINATED, A.INFORM_TRANSPORT_ERROR),
    # Accepted (RFC 6026 §7.2): every 2xx retransmission goes to the TU, which re-ACKs.
    (S.ACCEPTED, In.TIMER_A): _ignore(S.ACCEPTED),
    (S.ACCEPTED, In.TIMER_B): _ignore(S.ACCEPTED),
    (S.ACCEPTED, In.TIMER_D): _ignore(S.ACCEPTED),
    (S.ACCEPTED, In.TIMER_M): _go(S.TERMINATED),
    (S.ACCEPTED, In.TIMER_C): _ignore(S.ACCEPTED),
    (S.ACCEPTED, In.RECV_1XX): _ignore(S.ACCEPTED),
    (S.ACCEPTED, In.RECV_2XX): _go(S.ACCEPTED, A.PASS_TO_TU),
    (S.ACCEPTED, In.RECV_FINAL): _ignore(S.ACCEPTED),
    (S.ACCEPTED, In.TRANSPORT_ERROR): _ignore(S.ACCEPTED),
}

# --- RFC 3261 §17.1.2.2 Figure 6 -----------------------------------------------------------
_NI_CLIENT_FINAL = (A.STOP_RETRANSMIT, A.START_K, A.PASS_TO_TU)
NON_INVITE_CLIENT_TABLE: dict[tuple[TransactionState, Input], Transition] = {
    (S.TRYING, In.TIMER_E): _go(S.TRYING, A.SEND_REQUEST, A.BACKOFF_E),
    (S.TRYING, In.TIMER_F): _go(S.TERMINATED, A.INFORM_TIMEOUT),
    (S.TRYING, In.TIMER_K): _ignore(S.TRYING),
    (S.TRYING, In.RECV_1XX): _go(S.PROCEEDING, A.PASS_TO_TU),
    (S.TRYING, In.RECV_2XX): _go(S.COMPLETED, *_NI_CLIENT_FINAL),
    (S.TRYING, In.RECV_FINAL): _go(S.COMPLETED, *_NI_CLIENT_FINAL),
    (S.TRYING, In.TRANSPORT_ERROR): _go(S.TERMINATED, A.INFORM_TRANSPORT_ERROR),
    (S.PROCEEDING, In.TIMER_E): _go(S.PROCEEDING, A.SEND_REQUEST, A.RESET_E_T2),
    (S.PROCEEDING, In.TIMER_F): _go(S.TERMINATED, A.INFORM_TIMEOUT),
    (S.PROCEEDING, In.TIMER_K): _ignore(S.PROCEEDING),
    (S.PROCEEDING, In.RECV_1XX): _go(S.PROCEEDING, A.PASS_TO_TU),
    (S.PROCEEDING, In.RECV_2XX): _go(S.COMPLETED, *_NI_CLIENT_FINAL),
    (S.PROCEEDING, In.RECV_FINAL): _go(S.COMPLETED, *_NI_CLIENT_FINAL),
    (S.PROCEEDING, In.TRANSPORT_ERROR): _go(S.TERMINATED, A.INFORM_TRANSPORT_ERROR),
    # Completed: buffer response retransmissions for Timer K (T4 UDP, 0 reliable).
    (S.COMPLETED, In.TIMER_E): _ignore(S.COMPLETED),
    (S.COMPLETED, In.TIMER_F): _ignore(S.COMPLETED),
    (S.COMPLETED, In.TIMER_K): _go(S.TERMINATED),
    (S.COMPLETED, In.RECV_1XX): _ignore(S.COMPLETED),
    (S.COMPLETED, In.RECV_2XX): _ignore(S.COMPLETED),
    (S.COMPLETED, In.RECV_FINAL): _ignore(S.COMPLETED),
    (S.COMPLETED, In.TRANSPORT_ERROR): _ignore(S.COMPLETED),
}

# --- RFC 3261 §17.2.1 Figure 7, as replaced by RFC 6026 §7.1 Figure 7 ----------------------
INVITE_SERVER_TABLE: dict[tuple[TransactionState, Input], Transition] = {
    # Proceeding: a retransmitted INVITE gets the last provisional again.
    (S.PROCEEDING, In.RECV_REQUEST): _go(S.PROCEEDING, A.RESEND_RESPONSE),
    (S.PROCEEDING, In.RECV_ACK): _ignore(S.PROCEEDING),
    (S.PROCEEDING, In.SEND_1XX): _go(S.PROCEEDING, A.SEND_RESPONSE),
    (S.PROCEEDING, In.SEND_2XX): _go(S.ACCEPTED, A.SEND_RESPONSE, A.START_L),
    (S.PROCEEDING, In.SEND_FINAL): _go(S.COMPLETED, A.SEND_RESPONSE, A.START_G, A.START_H),
    (S.PROCEEDING, In.TRANSPORT_ERROR): _go(S.TERMINATED, A.INFORM_TRANSPORT_ERROR),
    (S.PROCEEDING, In.TIMER_G): _ignore(S.PROCEEDING),
    (S.PROCEEDING, In.TIMER_H): _ignore(S.PROCEEDING),
    (S.PROCEEDING, In.TIMER_I): _ignore(S.PROCEEDING),
    (S.PROCEEDING, In.TIMER_L): _ignore(S.PROCEEDING),
    # Completed: retransmit the 300-699 on G and on every INVITE, until ACK or Timer H.
    (S.COMPLETED, In.RECV_REQUEST): _go(S.COMPLETED, A.RESEND_RESPONSE),
    (S.COMPLETED, In.RECV_ACK): _go(S.CONFIRMED, A.STOP_RETRANSMIT, A.START_I),
    (S.COMPLETED, In.SEND_1XX): _misuse(S.COMPLETED, _NO_SEND_AFTER_FINAL),
    (S.COMPLETED, In.SEND_2XX): _misuse(S.COMPLETED, _NO_SEND_AFTER_FINAL),
    (S.COMPLETED, In.SEND_FINAL): _misuse(S.COMPLETED, _NO_SEND_AFTER_FINAL),
    (S.COMPLETED, In.TRANSPORT_ERROR): _go(S.TERMINATED, A.INFORM_TRANSPORT_ERROR),
    (S.COMPLETED, In.TIMER_G): _go(S.COMPLETED, A.RESEND_RESPONSE, A.BACKOFF_G),
    (S.COMPLETED, In.TIMER_H): _go(S.TERMINATED, A.INFORM_TIMEOUT),
    (S.COMPLETED, In.TIMER_I): _ignore(S.COMPLETED),
    (S.COMPLETED, In.TIMER_L): _ignore(S.COMPLETED),
    # Confirmed: absorb ACK retransmissions until Timer I (T4 UDP, 0 reliable).
    (S.CONFIRMED, In.RECV_REQUEST): _ignore(S.CONFIRMED),
    (S.CONFIRMED, In.RECV_ACK): _ignore(S.CONFIRMED),
    (S.CONFIRMED, In.SEND_1XX): _misuse(S.CONFIRMED, _NO_SEND_AFTER_FINAL),
    (S.CONFIRMED, In.SEND_2XX): _misuse(S.CONFIRMED, _NO_SEND_AFTER_FINAL),
    (S.CONFIRMED, In.SEND_FINAL): _misuse(S.CONFIRMED, _NO_SEND_AFTER_FINAL),
    (S.CONFIRMED, In.TRANSPORT_ERROR): _ignore(S.CONFIRMED),
    (S.CONFIRMED, In.TIMER_G): _ignore(S.CONFIRMED),
    (S.CONFIRMED, In.TIMER_H): _ignore(S.CONFIRMED),
    (S.CONFIRMED, In.TIMER_I): _go(S.TERMINATED),
    (S.CONFIRMED, In.TIMER_L): _ignore(S.CONFIRMED),
    # Accepted (RFC 6026 §7.1): absorb INVITEs, pass ACKs up, pass the TU's 2xx
    # retransmissions down, until Timer L.
    (S.ACCEPTED, In.RECV_REQUEST): _ignore(S.ACCEPTED),
    (S.ACCEPTED, In.RECV_ACK): _go(S.ACCEPTED, A.PASS_TO_TU),
    (S.ACCEPTED, In.SEND_1XX): _misuse(S.ACCEPTED, _NO_SEND_AFTER_FINAL),
    (S.ACCEPTED, In.SEND_2XX): _go(S.ACCEPTED, A.SEND_RESPONSE),
    (S.ACCEPTED, In.SEND_FINAL): _misuse(S.ACCEPTED, _NO_SEND_AFTER_FINAL),
    (S.ACCEPTED, In.TRANSPORT_ERROR): _go(S.ACCEPTED, A.INFORM_TRANSPORT_ERROR),
    (S.ACCEPTED, In.TIMER_G): _ignore(S.ACCEPTED),
    (S.ACCEPTED, In.TIMER_H): _ignore(S.ACCEPTED),
    (S.ACCEPTED, In.TIMER_I): _ignore(S.ACCEPTED),
    (S.ACCEPTED, In.TIMER_L): _go(S.TERMINATED),
}

# --- RFC 3261 §17.2.2 Figure 8 -------------------------------------------------------------
NON_INVITE_SERVER_TABLE: dict[tuple[TransactionState, Input], Transition] = {
    # Trying: retransmissions are discarded until the TU answers.
    (S.TRYING, In.RECV_REQUEST): _ignore(S.TRYING),
    (S.TRYING, In.SEND_1XX): _go(S.PROCEEDING, A.SEND_RESPONSE),
    (S.TRYING, In.SEND_2XX): _go(S.COMPLETED, A.SEND_RESPONSE, A.START_J),
    (S.TRYING, In.SEND_FINAL): _go(S.COMPLETED, A.SEND_RESPONSE, A.START_J),
    (S.TRYING, In.TRANSPORT_ERROR): _ignore(S.TRYING),
    (S.TRYING, In.TIMER_J): _ignore(S.TRYING),
    (S.PROCEEDING, In.RECV_REQUEST): _go(S.PROCEEDING, A.RESEND_RESPONSE),
    (S.PROCEEDING, In.SEND_1XX): _go(S.PROCEEDING, A.SEND_RESPONSE),
    (S.PROCEEDING, In.SEND_2XX): _go(S.COMPLETED, A.SEND_RESPONSE, A.START_J),
    (S.PROCEEDING, In.SEND_FINAL): _go(S.COMPLETED, A.SEND_RESPONSE, A.START_J),
    (S.PROCEEDING, In.TRANSPORT_ERROR): _go(S.TERMINATED, A.INFORM_TRANSPORT_ERROR),
    (S.PROCEEDING, In.TIMER_J): _ignore(S.PROCEEDING),
    (S.COMPLETED, In.RECV_REQUEST): _go(S.COMPLETED, A.RESEND_RESPONSE),
    (S.COMPLETED, In.SEND_1XX): _misuse(S.COMPLETED, _NO_SEND_AFTER_FINAL),
    (S.COMPLETED, In.SEND_2XX): _misuse(S.COMPLETED, _NO_SEND_AFTER_FINAL),
    (S.COMPLETED, In.SEND_FINAL): _misuse(S.COMPLETED, _NO_SEND_AFTER_FINAL),
    (S.COMPLETED, In.TRANSPORT_ERROR): _go(S.TERMINATED, A.INFORM_TRANSPORT_ERROR),
    (S.COMPLETED, In.TIMER_J): _go(S.TERMINATED),
}

STATES: dict[Kind, tuple[TransactionState, ...]] = {
    Kind.INVITE_CLIENT: (S.CALLING, S.PROCEEDING, S.COMPLETED, S.ACCEPTED, S.TERMINATED),
    Kind.NON_INVITE_CLIENT: (S.TRYING, S.PROCEEDING, S.COMPLETED, S.TERMINATED),
    Kind.INVITE_SERVER: (S.PROCEEDING, S.COMPLETED, S.CONFIRMED, S.ACCEPTED, S.TERMINATED),
    Kind.NON_INVITE_SERVER: (S.TRYING, S.PROCEEDING, S.COMPLETED, S.TERMINATED),
}
"""The states each machine's figure shows."""

INPUTS: dict[Kind, tuple[Input, ...]] = {
    Kind.INVITE_CLIENT: (
        In.RECV_1XX, In.RECV_2XX, In.RECV_FINAL, In.TRANSPORT_ERROR,
        In.TIMER_A, In.TIMER_B, In.TIMER_D, In.TIMER_M, In.TIMER_C,
    ),
    Kind.NON_INVITE_CLIENT: (
        In.RECV_1XX, In.RECV_2XX, In.RECV_FINAL, In.TRANSPORT_ERROR,
        In.TIMER_E, In.TIMER_F, In.TIMER_K,
    ),
    Kind.INVITE_SERVER: (
        In.RECV_REQUEST, In.RECV_ACK, In.SEND_1XX, In.SEND_2XX, In.SEND_FINAL,
        In.TRANSPORT_ERROR, In.TIMER_G, In.TIMER_H, In.TIMER_I, In.TIMER_L,
    ),
    Kind.NON_INVITE_SERVER: (
        In.RECV_REQUEST, In.SEND_1XX, In.SEND_2XX, In.SEND_FINAL, In.TRANSPORT_ERROR,
        In.TIMER_J,
    ),
}  # fmt: skip
"""The inputs each machine can be given."""


def _add_terminated(
    table: dict[tuple[TransactionState, Input], Transition], kind: Kind
) -> dict[tuple[TransactionState, Input], Transition]:
    """Terminated absorbs everything from the network and timers; TU sends are misuse."""
    for inp in INPUTS[kind]:
        if inp in (In.SEND_1XX, In.SEND_2XX, In.SEND_FINAL):
            table[(S.TERMINATED, inp)] = _misuse(S.TERMINATED, _TERMINATED)
        else:
            table[(S.TERMINATED, inp)] = _ignore(S.TERMINATED)
    return table


TABLES: dict[Kind, dict[tuple[TransactionState, Input], Transition]] = {
    Kind.INVITE_CLIENT: _add_terminated(INVITE_CLIENT_TABLE, Kind.INVITE_CLIENT),
    Kind.NON_INVITE_CLIENT: _add_terminated(NON_INVITE_CLIENT_TABLE, Kind.NON_INVITE_CLIENT),
    Kind.INVITE_SERVER: _add_terminated(INVITE_SERVER_TABLE, Kind.INVITE_SERVER),
    Kind.NON_INVITE_SERVER: _add_terminated(NON_INVITE_SERVER_TABLE, Kind.NON_INVITE_SERVER),
}
"""The four machines: ``TABLES[kind][(state, input)] -> Transition``."""


def to_dot(kind: Kind) -> str:
    """A Graphviz rendering of one machine's table (ignored inputs and misuse left out),
    for checking against the RFC figure."""
    lines = [f'digraph "{kind.name}" {{']
    for (state, inp), tr in TABLES[kind].items():
        if tr.misuse is None and (tr.actions or tr.next_state is not state):
            label = inp.name + "".join(f"\\n{a.name}" for a in tr.actions)
            lines.append(f'  {state.name} -> {tr.next_state.name} [label="{label}"];')
    lines.append("}")
    return "\n".join(lines)


_NOT_IN_FIGURE = Transition(S.TERMINATED, (), "input not defined for this machine")


def _compile(table: dict[tuple[TransactionState, Input], Transition]) -> list[list[Transition]]:
    """Flatten a table to ``[state][input]`` lists (two index operations per event)."""
    flat = [[_NOT_IN_FIGURE] * len(Input) for _ in TransactionState]
    for (state, inp), tr in table.items():
        flat[state][inp] = tr
    return flat


_COMPILED: dict[Kind, list[list[Transition]]] = {k: _compile(t) for k, t in TABLES.items()}

_TIMER_INPUT: dict[Timer, Input] = {t: Input[f"TIMER_{t.name}"] for t in Timer}
_INPUT_TIMER: dict[Input, Timer] = {v: k for k, v in _TIMER_INPUT.items()}
_START_TIMER: dict[Action, Timer] = {
    A.START_D: Timer.D, A.START_H: Timer.H, A.START_I: Timer.I, A.START_J: Timer.J,
    A.START_K: Timer.K, A.START_L: Timer.L, A.START_M: Timer.M, A.START_C: Timer.C,
    A.START_B: Timer.B,
}  # fmt: skip


# --- matching (§17.1.3, §17.2.3) -----------------------------------------------------------


def client_transaction_key(msg: Request | Response) -> tuple[str, str] | None:
    """§17.1.3: a response matches the client transaction with its top Via branch and
    CSeq method. None when the message has no branch (it cannot match)."""
    top = msg.top_via
    if top is None:
        return None
    branch = top.branch
    if not branch:
        return None
    return (branch, msg.cseq.method)


def server_transaction_key(req: Request, method: str | None = None) -> tuple[Any, ...]:
    """§17.2.3: the key of the server transaction a request belongs to.

    For an RFC 3261 branch (magic cookie): branch, top Via sent-by, and method (ACK
    maps to INVITE). ``method`` overrides the method (a CANCEL looks up its INVITE with
    ``method="INVITE"``). For an RFC 2543 request (no magic cookie) the key is built
    from Request-URI, From tag, Call-ID, CSeq number, method and the top Via.
    RemoteProtocolError (400 ``missing-via``) when the request has no Via.
    """
    m = method or req.method
    if m == "ACK":
        m = "INVITE"
    top = req.top_via
    if top is None:
        raise RemoteProtocolError("missing-via", 400)
    branch = top.branch
    if branch and branch.startswith(MAGIC_COOKIE):
        return (branch, top.host.lower(), top.port, m)
    return (
        "rfc2543",
        str(req.uri),
        req.from_tag,
        req.call_id,
        req.cseq.seq,
        m,
        f"{top.transport} {top.host.lower()}:{top.port}",
    )


# --- requests the transaction layer builds ------------------------------------------------


def _first_raw(msg: Request | Response, name: str) -> str:
    value = msg.headers.get(name)
    if value is None:
        raise LocalProtocolError(f"message has no {name} header")
    return value


def build_ack_for_error(request: Request, response: Response) -> Request:
    """§17.1.1.3: the ACK a client INVITE transaction sends for a 300-699 response.

    Request-URI, Call-ID, From and CSeq number of the INVITE, To of the response (its
    tag), a single Via equal to the INVITE's top Via, and the INVITE's Route headers.
    """
    h = Headers()
    h.add("Via", request.headers.get_all("Via")[0])
    h.add("Max-Forwards", "70")
    for route in request.headers.get_all("Route"):
        h.add("Route", route)
    h.add("From", _first_raw(request, "From"))
    h.add("To", _first_raw(response, "To"))
    h.add("Call-ID", request.call_id)
    h.add("CSeq", f"{request.cseq.seq} ACK")
    return Request("ACK", request.uri, h)


def build_cancel(request: Request) -> Request:
    """§9.1: a CANCEL for ``request`` (Request-URI, Call-ID, To, From, CSeq number, the
    single top Via and the Route headers of the request; method CANCEL)."""
    if request.method in ("ACK", "CANCEL"):
        raise LocalProtocolError(f"a {request.method} cannot be cancelled")
    h = Headers()
    h.add("Via", request.headers.get_all("Via")[0])
    h.add("Max-Forwards", "70")
    for route in request.headers.get_all("Route"):
        h.add("Route", route)
    h.add("From", _first_raw(request, "From"))
    h.add("To", _first_raw(request, "To"))
    h.add("Call-ID", request.call_id)
    h.add("CSeq", f"{request.cseq.seq} CANCEL")
    return Request("CANCEL", request.uri, h)


# --- the transaction objects ---------------------------------------------------------------

Datagram = tuple[bytes, Any]
_ONE_SHOT = (
    Timer.B, Timer.C, Timer.D, Timer.F, Timer.H, Timer.I, Timer.J, Timer.K, Timer.L, Timer.M,
)  # fmt: skip


@functools.lru_cache(maxsize=64)
def _durations(timers: TimerSettings, reliable: bool) -> tuple[float, ...]:
    """One-shot timer durations indexed by :class:`Timer` (computed once per setting)."""
    table = [0.0] * len(Timer)
    for t in _ONE_SHOT:
        table[t] = timers.duration(t, reliable)
    return tuple(table)


ChangeHook = Callable[["Transaction"], None]


class Transaction:
    """Common machinery: table dispatch, the two timer slots, output and event queues.

    A transaction runs at most two timers at once: a retransmission timer (A, E or G)
    and a one-shot timer (B, C, D, F, H, I, J, K, L or M); both are plain floats.
    ``out`` and ``events`` may be shared by many transactions (an endpoint core passes
    its own), in which case ``datagrams_to_send``/``next_event`` drain the shared queues.
    """

    __slots__ = (
        "kind", "state", "request", "reliable", "addr", "key", "timers",
        "_flat", "_out", "_events", "_request_bytes", "_on_change",
        "_rt_at", "_rt_interval", "_rt_input", "_to_at", "_to_input", "_immediate",
        "last_response", "_last_response_bytes", "_ack_bytes", "_msg", "sched", "_durations",
    )  # fmt: skip

    kind: Kind
    state: TransactionState

    def __init__(
        self,
        kind: Kind,
        state: TransactionState,
        request: Request,
        reliable: bool,
        *,
        timers: TimerSettings = DEFAULT_TIMERS,
        addr: Any = None,
        key: Any = None,
        out: list[Datagram] | None = None,
        events: deque[Event] | None = None,
        on_change: ChangeHook | None = None,
    ) -> None:
        self.kind = kind
        self.state = state
        self.request = request
        self.reliable = reliable
        self.addr = addr
        self.key = key
        self.timers = timers
        self._durations = _durations(timers, reliable)
        self._flat = _COMPILED[kind]
        self._out: list[Datagram] = [] if out is None else out
        self._events: deque[Event] = deque() if events is None else events
        self._on_change = on_change
        self._request_bytes: bytes | None = None
        self._rt_at: float | None = None
        self._rt_interval = 0.0
        self._rt_input = In.TIMER_A
        self._to_at: float | None = None
        self._to_input = In.TIMER_B
        self._immediate: Input | None = None
        self.last_response: Response | None = None
        self._last_response_bytes: bytes | None = None
        self._ack_bytes: bytes | None = None
        self._msg: Any = None
        self.sched: float | None = None  # bookkeeping for an owner's timer heap

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.kind.name} {self.state.name} key={self.key!r}>"

    # -- shell-facing API --

    @property
    def terminated(self) -> bool:
        return self.state is S.TERMINATED

    def get_timer(self) -> float | None:
        """The next absolute deadline at which ``handle_timer`` must be called, or None."""
        rt, to = self._rt_at, self._to_at
        if rt is None:
            return to
        if to is None or rt < to:
            return rt
        return to

    def handle_timer(self, now: float) -> None:
        """Fire every timer whose deadline is ``<= now`` (one-shot first on a tie)."""
        while True:
            rt, to = self._rt_at, self._to_at
            if to is not None and to <= now and (rt is None or to <= rt):
                self._to_at = None
                self._apply(self._to_input, None, now)
            elif rt is not None and rt <= now:
                self._rt_at = None
                self._apply(self._rt_input, None, now)
            else:
                break
        self._changed()

    def transport_error(self, now: float) -> None:
        """The shell failed to send this transaction's message (§17.1.4, §17.2.4)."""
        self._apply(In.TRANSPORT_ERROR, None, now)
        self._changed()

    def terminate(self) -> None:
        """Abandon the transaction now (e.g. the TU's Timer C fired on a stuck INVITE)."""
        if self.state is not S.TERMINATED:
            self._enter_terminated()
        self._changed()

    def datagrams_to_send(self) -> list[Datagram]:
        """Hand over and clear the ``(bytes, addr)`` pairs to transmit."""
        out = self._out[:]
        self._out.clear()
        return out

    def next_event(self) -> Event | None:
        """Pop the next event for the TU, or None."""
        return self._events.popleft() if self._events else None

    # -- table machinery --

    def _changed(self) -> None:
        if self._on_change is not None:
            self._on_change(self)

    def _apply(self, inp: Input, msg: Any, now: float) -> None:
        tr = self._flat[self.state][inp]
        if tr.misuse is not None:
            raise LocalProtocolError(
                f"{self.kind.name} transaction in {self.state.name}: {inp.name}: {tr.misuse}"
            )
        self._msg = msg
        for action in tr.actions:
            _ACTIONS[action](self, now)
        self._msg = None
        if tr.next_state is not self.state:
            if tr.next_state is S.TERMINATED:
                self._enter_terminated()
                return
            self.state = tr.next_state
        imm = self._immediate
        if imm is not None:  # a zero-length timer (reliable transport) fires at once
            self._immediate = None
            self._apply(imm, None, now)

    def _enter_terminated(self) -> None:
        self.state = S.TERMINATED
        self._rt_at = None
        self._to_at = None
        self._immediate = None
        self._events.append(TransactionTerminated(self))

    def _start_oneshot(self, timer: Timer, now: float) -> None:
        duration = self._durations[timer]
        self._to_input = _TIMER_INPUT[timer]
        if duration <= 0.0:
            self._to_at = None
            self._immediate = self._to_input
        else:
            self._to_at = now + duration

    def _start_retransmit(self, inp: Input, now: float) -> None:
        """Start A/E/G at T1 — on unreliable transports only."""
        if self.reliable:
            return
        self._rt_input = inp
        self._rt_interval = self.timers.t1
        self._rt_at = now + self._rt_interval


# -- action implementations (one small function each; dispatch by list index) --


def _send_request(tx: Transaction, now: float) -> None:
    data = tx._request_bytes
    if data is None:
        data = tx._request_bytes = tx.request.to_bytes()
    tx._out.append((data, tx.addr))


def _send_ack(tx: Transaction, now: float) -> None:
    data = tx._ack_bytes
    if data is None:
        data = tx._ack_bytes = build_ack_for_error(tx.request, tx._msg).to_bytes()
    tx._out.append((data, tx.addr))


def _send_response(tx: Transaction, now: float) -> None:
    resp: Response = tx._msg
    data = resp.to_bytes()
    tx.last_response = resp
    tx._last_response_bytes = data
    tx._out.append((data, tx.addr))


def _resend_response(tx: Transaction, now: float) -> None:
    data = tx._last_response_bytes
    if data is not None:
        tx._out.append((data, tx.addr))


def _pass_to_tu(tx: Transaction, now: float) -> None:
    msg = tx._msg
    if isinstance(tx, ClientTransaction):
        tx._events.append(ResponseReceived(msg, tx, tx.addr))
    elif isinstance(tx, ServerTransaction):
        tx._events.append(RequestReceived(msg, tx, tx.addr))


def _inform_timeout(tx: Transaction, now: float) -> None:
    tx._events.append(TransactionTimeout(tx, _INPUT_TIMER[tx._to_input].name))


def _inform_transport_error(tx: Transaction, now: float) -> None:
    tx._events.append(TransportError(tx))


def _stop_retransmit(tx: Transaction, now: float) -> None:
    tx._rt_at = None


def _stop_timeout(tx: Transaction, now: float) -> None:
    tx._to_at = None


def _backoff_a(tx: Transaction, now: float) -> None:
    tx._rt_interval *= 2
    tx._rt_at = now + tx._rt_interval


def _backoff_capped(tx: Transaction, now: float) -> None:
    tx._rt_interval = min(tx._rt_interval * 2, tx.timers.t2)
    tx._rt_at = now + tx._rt_interval


def _reset_e_t2(tx: Transaction, now: float) -> None:
    tx._rt_interval = tx.timers.t2
    tx._rt_at = now + tx._rt_interval


def _start_g(tx: Transaction, now: float) -> None:
    tx._start_retransmit(In.TIMER_G, now)


def _make_start(timer: Timer) -> Callable[[Transaction, float], None]:
    def start(tx: Transaction, now: float) -> None:
        tx._start_oneshot(timer, now)

    return start


_ACTION_IMPL: dict[Action, Callable[[Transaction, float], None]] = {
    A.SEND_REQUEST: _send_request,
    A.SEND_ACK: _send_ack,
    A.SEND_RESPONSE: _send_response,
    A.RESEND_RESPONSE: _resend_response,
    A.PASS_TO_TU: _pass_to_tu,
    A.INFORM_TIMEOUT: _inform_timeout,
    A.INFORM_TRANSPORT_ERROR: _inform_transport_error,
    A.STOP_RETRANSMIT: _stop_retransmit,
    A.STOP_TIMEOUT: _stop_timeout,
    A.BACKOFF_A: _backoff_a,
    A.BACKOFF_E: _backoff_capped,
    A.RESET_E_T2: _reset_e_t2,
    A.BACKOFF_G: _backoff_capped,
    A.START_G: _start_g,
    **{action: _make_start(timer) for action, timer in _START_TIMER.items()},
}
_ACTIONS: list[Callable[[Transaction, float], None]] = [_ACTION_IMPL[a] for a in Action]


class ClientTransaction(Transaction):
    """A client transaction (§17.1): INVITE (Figure 5/RFC 6026) or non-INVITE (Figure 6).

    Creating it transmits the request and starts Timers A+B (INVITE) or E+F; A and E
    run on unreliable transports only. The constructor calls ``on_change`` once, like
    every later transition, so the owner schedules those first deadlines from
    ``get_timer()``. ``request`` must not be an ACK (§17.1: an ACK for a 2xx is sent by
    the TU without a transaction).
    """

    __slots__ = ("cancel_requested",)

    def __init__(
        self,
        request: Request,
        reliable: bool,
        now: float,
        *,
        timers: TimerSettings = DEFAULT_TIMERS,
        addr: Any = None,
        out: list[Datagram] | None = None,
        events: deque[Event] | None = None,
        on_change: ChangeHook | None = None,
    ) -> None:
        method = request.method
        if method == "ACK":
            raise LocalProtocolError("ACK is sent without a client transaction")
        invite = method == "INVITE"
        super().__init__(
            Kind.INVITE_CLIENT if invite else Kind.NON_INVITE_CLIENT,
            S.CALLING if invite else S.TRYING,
            request,
            reliable,
            timers=timers,
            addr=addr,
            key=client_transaction_key(request),
            out=out,
            events=events,
            on_change=on_change,
        )
        self.cancel_requested = False
        _send_request(self, now)
        if invite:
            self._start_retransmit(In.TIMER_A, now)
            self._start_oneshot(Timer.B, now)
        else:
            self._start_retransmit(In.TIMER_E, now)
            self._start_oneshot(Timer.F, now)
        # The first timers are signalled like every later one: an owner that learns of
        # deadlines only through ``on_change`` (a proxy's heap) must arm A/B or E/F now.
        self._changed()

    def receive_response(self, response: Response, now: float) -> None:
        """Feed a response that matched this transaction (§17.1.3)."""
        status = response.status
        inp = In.RECV_1XX if status < 200 else In.RECV_2XX if status < 300 else In.RECV_FINAL
        self._apply(inp, response, now)
        self._changed()

    def build_cancel(self) -> Request:
        """§9.1: the CANCEL for this INVITE (send it in its own client transaction)."""
        return build_cancel(self.request)


class ServerTransaction(Transaction):
    """A server transaction (§17.2): INVITE (Figure 7/RFC 6026) or non-INVITE (Figure 8).

    It starts in Proceeding (INVITE) or Trying (non-INVITE) holding the request; the TU
    answers with ``send_response``. Request retransmissions and ACKs that matched the
    transaction (§17.2.3) are fed with ``receive_request``.
    """

    __slots__ = ()

    def __init__(
        self,
        request: Request,
        reliable: bool,
        now: float,
        *,
        timers: TimerSettings = DEFAULT_TIMERS,
        addr: Any = None,
        key: Any = None,
        out: list[Datagram] | None = None,
        events: deque[Event] | None = None,
        on_change: ChangeHook | None = None,
    ) -> None:
        method = request.method
        if method == "ACK":
            raise LocalProtocolError("an ACK does not create a server transaction")
        invite = method == "INVITE"
        super().__init__(
            Kind.INVITE_SERVER if invite else Kind.NON_INVITE_SERVER,
            S.PROCEEDING if invite else S.TRYING,
            request,
            reliable,
            timers=timers,
            addr=addr,
            key=server_transaction_key(request) if key is None else key,
            out=out,
            events=events,
            on_change=on_change,
        )

    def receive_request(self, request: Request, now: float) -> None:
        """Feed a retransmission of the request, or (INVITE) an ACK, that matched."""
        self._apply(In.RECV_ACK if request.method == "ACK" else In.RECV_REQUEST, request, now)
        self._changed()

    def send_response(self, response: Response, now: float) -> None:
        """Transmit a response from the TU (LocalProtocolError if the state forbids it)."""
        status = response.status
        if status < 100 or status > 699:
            raise LocalProtocolError(f"status {status} out of range")
        inp = In.SEND_1XX if status < 200 else In.SEND_2XX if status < 300 else In.SEND_FINAL
        self._apply(inp, response, now)
        self._changed()

    @property
    def final_sent(self) -> bool:
        """Whether a final response has been sent."""
        last = self.last_response
        return last is not None and last.status >= 200
