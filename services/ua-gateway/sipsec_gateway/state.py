"""A gateway call and its typed state machine (the INVITE dialog states of RFC 3261 §12, §13, §15).

:class:`CallState` is where a call stands; :data:`TRANSITIONS` is the only set of moves
:meth:`Call.move` allows (anything else raises :class:`InvalidTransition`, a bug, never a
network input). What used to be loose flags are typed fields of :class:`Call`:
``acked`` (UAS: the ACK for our 2xx arrived, §13.3.1.4), ``cancel_requested`` (UAC: a
CANCEL went out, so a 2xx that crosses it is ACKed and ended with BYE, §9.1 / §15) and
``counted`` (the call is in the ``sipsec_gateway_dialogs`` gauge).
"""

from __future__ import annotations

import asyncio
import enum
import time
from dataclasses import dataclass, field
from typing import Any, Final

from sipsec.aio import Peer
from sipsec.envelope import DialogKey
from sipsec.sip import Request
from sipsec.sip.dialog import Dialog
from sipsec.sip.transaction import Transaction

from sipsec_gateway.sessiontimer import SessionTimer

__all__ = ["TRANSITIONS", "Call", "CallFailed", "CallState", "InvalidTransition", "TraceEntry"]


class CallState(enum.Enum):
    """Where a call stands (the control API shows ``value``)."""

    CALLING = "calling"  # INVITE sent / received, no final response yet
    RINGING = "ringing"  # a 180/183 was sent or received (an early dialog may exist, §12.1)
    ESTABLISHED = "established"  # 2xx sent or received (ACK follows, §13.2.2.4 / §13.3.1.4)
    ENDED = "ended"  # ended by BYE after it was established (§15)
    FAILED = "failed"  # the INVITE got a final error, timed out or was cancelled


#: The moves a call may make; ENDED and FAILED are final.
TRANSITIONS: Final[dict[CallState, frozenset[CallState]]] = {
    CallState.CALLING: frozenset({CallState.RINGING, CallState.ESTABLISHED, CallState.FAILED}),
    CallState.RINGING: frozenset({CallState.RINGING, CallState.ESTABLISHED, CallState.FAILED}),
    CallState.ESTABLISHED: frozenset({CallState.ENDED}),
    CallState.ENDED: frozenset(),
    CallState.FAILED: frozenset(),
}

#: States in which a call still holds resources (transactions, a dialog, a bridge).
LIVE: Final = frozenset({CallState.CALLING, CallState.RINGING, CallState.ESTABLISHED})


class InvalidTransition(RuntimeError):
    """A call was asked to make a move :data:`TRANSITIONS` does not allow (a gateway bug)."""


class CallFailed(Exception):
    """A call could not be placed or failed; ``status`` is the SIP status that ended it."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"{status} {reason}")
        self.status = status
        self.reason = reason


@dataclass(frozen=True)
class TraceEntry:
    """One message of a call as this gateway sent or received it: outer bytes, and the inner
    message with its verified signer when the message was secured."""

    direction: str  # "sent" / "received"
    at: float  # unix seconds
    outer: bytes
    inner: bytes | None
    signer: str | None
    secured: bool


@dataclass(eq=False)
class LiveCount:
    """How many calls of one side are live (CALLING, RINGING, ESTABLISHED), kept by
    :meth:`Call.move`, so that admission need not look at every call held."""

    value: int = 0


@dataclass(eq=False)
class Call:
    """One call (INVITE dialog) of one side of the gateway."""

    id: str
    side: str  # "secure" or "plain"
    direction: str  # "outgoing" or "incoming"
    local_aor: str
    peer_aor: str
    secure: bool
    call_id: str  # inner Call-ID
    local_tag: str
    state: CallState = CallState.CALLING
    created: float = field(default_factory=time.time)
    started: float = field(default_factory=time.perf_counter)
    status: int | None = None
    reason: str = ""
    setup_s: float | None = None
    invite: Request | None = None  # inner INVITE
    invite_outer: Request | None = None
    invite_txn: Transaction | None = None
    dest: Peer | None = None
    dialog: Dialog | None = None
    key: DialogKey | None = None
    outer_call_id: str | None = None
    local_sdp: bytes = b""
    remote_sdp: bytes = b""
    ack_outer: Request | None = None
    ack_peer: Peer | None = None
    crypto: dict[str, list[float]] = field(default_factory=dict)
    bytes_sent: int = 0
    bytes_received: int = 0
    messages_sent: int = 0
    messages_received: int = 0
    trace: list[TraceEntry] | None = None
    retried_plain: bool = False
    hold_s: float | None = None
    bridge: Call | None = None
    txns: list[Transaction] = field(default_factory=list)
    acked: bool = False  # UAS: the ACK for our 2xx arrived
    cancel_requested: bool = False  # UAC: CANCEL sent; a crossing 2xx is ended with BYE
    counted: bool = False  # in the dialogs gauge
    setup_done: asyncio.Future[None] | None = None
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    bye_done: asyncio.Future[int] | None = None
    refused: str = ""  # the envelope reason the last response that did not open was refused for
    bye_phrase: str = ""  # the reason phrase of the last final answer to our BYE
    session: SessionTimer | None = None  # RFC 4028 session timer, once negotiated
    session_handle: asyncio.TimerHandle | None = None  # the next refresh, or the expiry
    adopted_bridge: str | None = None  # continued from a record: the record id of the leg bridged to it
    offer_timer: bool = False  # a phone leg placed to a phone that supports session timers
    setup_kept: bool = False  # a phone leg whose setup record is in the store (deleted when it fails)
    live_count: LiveCount | None = field(default=None, repr=False)  # its side's count, once counted

    @property
    def live(self) -> bool:
        return self.state in LIVE

    def count_in(self, count: LiveCount) -> None:
        """Counts this call in ``count`` while it is live (and from now on as it moves)."""
        if self.live_count is None:
            self.live_count = count
            if self.live:
                count.value += 1

    def move(self, to: CallState) -> None:
        """Make the move to ``to``; raises :class:`InvalidTransition` unless :data:`TRANSITIONS` allows it."""
        if to not in TRANSITIONS[self.state]:
            raise InvalidTransition(f"call {self.id}: {self.state.value} -> {to.value}")
        was = self.state in LIVE
        self.state = to
        if self.live_count is not None and was != (to in LIVE):
            self.live_count.value += -1 if was else 1

    def add_crypto(self, op: str, seconds: float) -> None:
        self.crypto.setdefault(op, []).append(seconds)

    def summary(self) -> dict[str, Any]:
        """What the control API shows for this call (state and cost)."""
        ops = {
            op: {"count": len(v), "total_ms": round(sum(v) * 1e3, 3), "mean_ms": round(sum(v) / len(v) * 1e3, 3)}
            for op, v in sorted(self.crypto.items()) if v
        }
        return {
            "id": self.id,
            "side": self.side,
            "direction": self.direction,
            "from": self.local_aor if self.direction == "outgoing" else self.peer_aor,
            "to": self.peer_aor if self.direction == "outgoing" else self.local_aor,
            "secure": self.secure,
            "state": self.state.value,
            "sip_status": self.status,
            "reason": self.reason,
            "created": self.created,
            "setup_ms": None if self.setup_s is None else round(self.setup_s * 1e3, 3),
            "crypto": ops,
            "crypto_total_ms": round(sum(sum(v) for v in self.crypto.values()) * 1e3, 3),
            "wire": {
                "bytes_sent": self.bytes_sent, "bytes_received": self.bytes_received,
                "bytes_total": self.bytes_sent + self.bytes_received,
                "messages_sent": self.messages_sent, "messages_received": self.messages_received,
            },
            "retried_plain": self.retried_plain,
        }
