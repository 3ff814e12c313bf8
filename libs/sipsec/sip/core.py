"""A sans-IO SIP endpoint core: the transaction table, message routing to transactions
(§17.1.3, §17.2.3), CANCEL handling (§9) and one timer heap for all transactions.

The asyncio shell feeds ``receive_datagram`` / ``receive_message``, transmits
``datagrams_to_send()`` (``(bytes, addr)`` pairs), arms one timer at ``get_timer()`` and
calls ``handle_timer(now)``; the TU pops ``next_event()``. Messages that cannot be
handled are dropped with a fixed reason, counted in ``dropped`` and reported as
:class:`~sipsec.sip.events.MessageDropped`.
"""

from __future__ import annotations

import heapq
import itertools
from collections import Counter, deque
from typing import Any

from .errors import LocalProtocolError, RemoteProtocolError
from .events import (
    CancelReceived,
    Event,
    MessageDropped,
    RequestReceived,
    ResponseReceived,
    TransactionTimeout,
)
from .message import Request, Response, generate_tag, make_response
from .parser import parse_message
from .timers import DEFAULT_TIMERS, TimerSettings
from .transaction import (
    ClientTransaction,
    Datagram,
    ServerTransaction,
    Transaction,
    TransactionState,
    client_transaction_key,
    server_transaction_key,
)

__all__ = ["SipCore"]

_S = TransactionState


class _Retransmit2xx:
    """§13.3.1.4: a UAS core retransmits its 2xx to INVITE (T1, doubling to T2) until the
    ACK arrives or the transaction's Timer L (64*T1) ends it."""

    __slots__ = ("ack_key", "interval", "response", "sched", "txn")

    def __init__(self, txn: ServerTransaction, response: Response, interval: float) -> None:
        self.txn = txn
        self.response = response
        self.interval = interval
        self.sched: float | None = None
        self.ack_key = (response.call_id, response.to_tag, response.from_tag, response.cseq.seq)


def _validate_views(msg: Request | Response) -> None:
    """Check what matching, ACK/CANCEL building and dialogs key on: Call-ID and the
    From/To tags (RemoteProtocolError on the first bad one). The From/To URIs and other
    headers stay lazily parsed (the parser's design): a TU reading them must be ready
    for RemoteProtocolError."""
    msg.call_id  # noqa: B018
    msg.from_tag  # noqa: B018
    msg.to_tag  # noqa: B018


def _merge_key(req: Request) -> tuple[str | None, str, int, str]:
    cseq = req.cseq
    return (req.from_tag, req.call_id, cseq.seq, cseq.method)


class SipCore:
    """Owns client and server transactions and routes messages to them.

    ``ua=True`` (a user agent core): CANCEL for an unanswered INVITE also answers the
    INVITE with 487 (§9.2), a CANCEL matching nothing gets 481, 2xx to INVITE are
    retransmitted until ACKed (§13.3.1.4), and an INVITE gets 100 Trying at once when
    ``auto_trying``; an out-of-dialog request that matches a live transaction's From tag,
    Call-ID and CSeq but not its branch is a merged request and gets 482 (§8.2.2.2).
    ``ua=False`` (a proxy core): CANCEL gets 200 and a
    :class:`CancelReceived` event, an unmatched CANCEL goes to the TU; 2xx retransmission is
    left to the UAS.
    """

    def __init__(
        self,
        *,
        timers: TimerSettings = DEFAULT_TIMERS,
        ua: bool = True,
        auto_trying: bool = True,
    ) -> None:
        self.timers = timers
        self.ua = ua
        self.auto_trying = auto_trying
        self.client_transactions: dict[Any, ClientTransaction] = {}
        self.server_transactions: dict[Any, ServerTransaction] = {}
        self.dropped: Counter[str] = Counter()
        self.rejected: Counter[str] = Counter()  # requests the core answered itself, by reason
        # §8.2.2.2 (UA mode): (From tag, Call-ID, CSeq, method) of out-of-dialog requests
        # with a live server transaction, to spot the same request arriving by another path.
        self._merged: dict[tuple[str | None, str, int, str], ServerTransaction] = {}
        self._out: list[Datagram] = []
        self._events: deque[Event] = deque()
        self._heap: list[tuple[float, int, Any]] = []
        self._seq = itertools.count()
        self._pending_cancel: set[ClientTransaction] = set()
        self._retx: dict[ServerTransaction, _Retransmit2xx] = {}
        # (Call-ID, To tag, From tag, CSeq) of each 2xx being retransmitted: an ACK for a
        # 2xx has its own branch (§17.1.1.3), so it is matched by dialog and CSeq.
        self._retx_by_ack: dict[tuple[str, str | None, str | None, int], _Retransmit2xx] = {}

    # -- queues and timers ------------------------------------------------------------------

    def datagrams_to_send(self) -> list[Datagram]:
        """Hand over and clear the ``(bytes, addr)`` pairs to transmit."""
        out = self._out[:]
        self._out.clear()
        return out

    def next_event(self) -> Event | None:
        return self._events.popleft() if self._events else None

    def get_timer(self) -> float | None:
        """The earliest deadline of any transaction (or 2xx retransmission), or None."""
        heap = self._heap
        while heap:
            deadline, _, obj = heap[0]
            if obj.sched == deadline:
                return deadline
            heapq.heappop(heap)  # stale entry: the timer was re-armed or cancelled
        return None

    def handle_timer(self, now: float) -> None:
        heap = self._heap
        while heap and heap[0][0] <= now:
            deadline, _, obj = heapq.heappop(heap)
            if obj.sched != deadline:
                continue
            obj.sched = None
            if isinstance(obj, _Retransmit2xx):
                self._fire_2xx(obj, now)
            else:
                obj.handle_timer(now)

    def _schedule(self, obj: Any, deadline: float | None) -> None:
        if deadline != obj.sched:
            obj.sched = deadline
            if deadline is not None:
                heapq.heappush(self._heap, (deadline, next(self._seq), obj))

    def _on_change(self, txn: Transaction) -> None:
        if txn.state is _S.TERMINATED:
            txn.sched = None
            if isinstance(txn, ClientTransaction):
                if self.client_transactions.get(txn.key) is txn:
                    del self.client_transactions[txn.key]
                self._pending_cancel.discard(txn)
            elif isinstance(txn, ServerTransaction):
                if self.server_transactions.get(txn.key) is txn:
                    del self.server_transactions[txn.key]
                if self._merged:
                    mkey = _merge_key(txn.request)
                    if self._merged.get(mkey) is txn:
                        del self._merged[mkey]
                retx = self._retx.pop(txn, None)
                if retx is not None:
                    retx.sched = None
                    self._retx_by_ack.pop(retx.ack_key, None)
                    # §13.3.1.4: no ACK within 64*T1; the TU should end the session (BYE).
                    self._events.append(TransactionTimeout(txn, "L"))
            return
        self._schedule(txn, txn.get_timer())

    # -- outgoing ---------------------------------------------------------------------------

    def send_request(
        self, request: Request, addr: Any, now: float, *, reliable: bool = False
    ) -> ClientTransaction | None:
        """Send ``request`` to ``addr`` in a new client transaction (None for an ACK, which
        is sent as is). The request must carry its top Via with a fresh branch."""
        if request.method == "ACK":
            self._out.append((request.to_bytes(), addr))
            return None
        key = client_transaction_key(request)
        if key is None:
            raise LocalProtocolError("the request needs a top Via with a branch")
        if key in self.client_transactions:
            raise LocalProtocolError("a client transaction with this branch exists")
        txn = ClientTransaction(
            request, reliable, now,
            timers=self.timers, addr=addr, out=self._out, events=self._events,
            on_change=self._on_change,
        )  # fmt: skip
        self.client_transactions[key] = txn
        self._on_change(txn)
        return txn

    def send_stateless(self, message: Request | Response, addr: Any) -> None:
        """Transmit a message outside any transaction (a proxy's stray 2xx or ACK)."""
        self._out.append((message.to_bytes(), addr))

    def send_response(self, txn: ServerTransaction, response: Response, now: float) -> None:
        """Answer through ``txn``; in UA mode a 2xx to INVITE is retransmitted until ACKed
        (§13.3.1.4, on every transport: a later hop may be UDP)."""
        txn.send_response(response, now)
        if (
            self.ua
            and txn.request.method == "INVITE"
            and 200 <= response.status < 300
            and txn.state is _S.ACCEPTED
            and txn not in self._retx
        ):
            retx = _Retransmit2xx(txn, response, self.timers.t1)
            self._retx[txn] = retx
            self._retx_by_ack[retx.ack_key] = retx
            self._schedule(retx, now + retx.interval)

    def _fire_2xx(self, retx: _Retransmit2xx, now: float) -> None:
        txn = retx.txn
        if self._retx.get(txn) is not retx or txn.state is not _S.ACCEPTED:
            return
        txn.send_response(retx.response, now)
        retx.interval = min(retx.interval * 2, self.timers.t2)
        self._schedule(retx, now + retx.interval)

    def _stop_2xx(self, retx: _Retransmit2xx | None) -> None:
        if retx is not None:
            retx.sched = None
            self._retx.pop(retx.txn, None)
            self._retx_by_ack.pop(retx.ack_key, None)

    def cancel(self, invite: ClientTransaction, now: float) -> ClientTransaction | None:
        """§9.1: cancel a pending INVITE. Sends the CANCEL now if a provisional response
        was received; defers it until one arrives while in Calling; does nothing (None)
        once a final response was received."""
        if invite.request.method != "INVITE":
            raise LocalProtocolError("only an INVITE can be cancelled")
        if invite.cancel_requested:
            return None  # already sent or pending: one CANCEL per INVITE
        if invite.state is _S.CALLING:
            invite.cancel_requested = True
            self._pending_cancel.add(invite)
            return None
        if invite.state is not _S.PROCEEDING:
            return None
        invite.cancel_requested = True
        return self.send_request(invite.build_cancel(), invite.addr, now, reliable=invite.reliable)

    # -- incoming ---------------------------------------------------------------------------

    def receive_datagram(
        self, data: bytes, addr: Any, now: float, *, reliable: bool = False
    ) -> None:
        """Parse and handle one datagram (or one framed stream message)."""
        try:
            msg = parse_message(data)
        except RemoteProtocolError as exc:
            self._drop(exc.reason, addr)
            return
        self.receive_message(msg, addr, now, reliable=reliable)

    def receive_message(
        self, msg: Request | Response, addr: Any, now: float, *, reliable: bool = False
    ) -> None:
        """Route a parsed message to its transaction, or create a server transaction."""
        if isinstance(msg, Response):
            self._receive_response(msg, addr, now)
        else:
            self._receive_request(msg, addr, now, reliable)

    def _drop(self, reason: str, addr: Any) -> None:
        self.dropped[reason] += 1
        self._events.append(MessageDropped(reason, addr))

    def _receive_response(self, resp: Response, addr: Any, now: float) -> None:
        try:
            key = client_transaction_key(resp)
            # the views an ACK or the TU needs: validated before any transaction sees them
            _validate_views(resp)
        except RemoteProtocolError as exc:
            self._drop(exc.reason, addr)
            return
        txn = self.client_transactions.get(key) if key is not None else None
        if txn is None:
            # §18.1.2 / RFC 6026 §8.4: no transaction: the core decides (a proxy forwards
            # a 2xx statelessly, a UAC re-ACKs it within its dialog).
            self._events.append(ResponseReceived(resp, None, addr))
            return
        txn.receive_response(resp, now)
        if txn in self._pending_cancel and resp.status < 200:
            self._pending_cancel.discard(txn)
            self.send_request(txn.build_cancel(), txn.addr, now, reliable=txn.reliable)
        elif resp.status >= 200:
            self._pending_cancel.discard(txn)

    def _merged_request(self, req: Request, txn: ServerTransaction, now: float) -> bool:
        """§8.2.2.2: answer 482 (and say True) when an out-of-dialog request arrived already by
        another path (a forked copy: same From tag, Call-ID and CSeq, another branch) while that
        copy's transaction lives; otherwise remember this one."""
        mkey = _merge_key(req)
        other = self._merged.get(mkey)
        if other is not None and other.state is not _S.TERMINATED:
            self.rejected["merged-request"] += 1
            txn.send_response(make_response(req, 482, to_tag=generate_tag()), now)
            return True
        self._merged[mkey] = txn
        return False

    def _receive_request(self, req: Request, addr: Any, now: float, reliable: bool) -> None:
        try:
            cseq = req.cseq
            if cseq.method != req.method:
                raise RemoteProtocolError("cseq-method-mismatch", 400)
            key = server_transaction_key(req)
            req.call_id  # noqa: B018 - validates Call-ID before a transaction keeps it
            txn = self.server_transactions.get(key)
            if txn is None:  # new to the TU
                _validate_views(req)
        except RemoteProtocolError as exc:
            self._reject_malformed(req, exc, addr)
            return
        if txn is not None:
            if req.method == "ACK":
                self._stop_2xx(self._retx.get(txn))
            txn.receive_request(req, now)
            return
        method = req.method
        if method == "ACK":
            # The ACK for a 2xx (its own branch, §17.1.1.3): in UA mode it ends the 2xx
            # retransmission it acknowledges; a proxy forwards it statelessly.
            retx = self._retx_by_ack.get((req.call_id, req.to_tag, req.from_tag, req.cseq.seq))
            self._stop_2xx(retx)
            self._events.append(RequestReceived(req, None if retx is None else retx.txn, addr))
            return
        txn = ServerTransaction(
            req, reliable, now,
            timers=self.timers, addr=addr, key=key, out=self._out, events=self._events,
            on_change=self._on_change,
        )  # fmt: skip
        self.server_transactions[key] = txn
        if method == "CANCEL":
            self._receive_cancel(txn, now)
            return
        if self.ua and req.to_tag is None and self._merged_request(req, txn, now):
            return
        if method == "INVITE" and self.auto_trying:
            txn.send_response(make_response(req, 100), now)
        self._events.append(RequestReceived(req, txn, addr))

    def _receive_cancel(self, cancel_txn: ServerTransaction, now: float) -> None:
        """§9.2: 200 to the CANCEL when it matches an INVITE server transaction (and 487
        to the INVITE in UA mode if unanswered); 481 (UA) or TU decision (proxy) when not."""
        cancel = cancel_txn.request
        invite = self.server_transactions.get(server_transaction_key(cancel, "INVITE"))
        if invite is None:
            if self.ua:
                cancel_txn.send_response(make_response(cancel, 481, to_tag=generate_tag()), now)
            else:
                self._events.append(RequestReceived(cancel, cancel_txn, cancel_txn.addr))
            return
        last = invite.last_response
        to_tag = (last.to_tag if last is not None else None) or generate_tag()
        cancel_txn.send_response(make_response(cancel, 200, to_tag=to_tag), now)
        answered = False
        if self.ua and not invite.final_sent and invite.state is _S.PROCEEDING:
            invite.send_response(make_response(invite.request, 487, to_tag=to_tag), now)
            answered = True
        self._events.append(CancelReceived(cancel, invite, answered))

    def _reject_malformed(self, req: Request, exc: RemoteProtocolError, addr: Any) -> None:
        """Answer a malformed request statelessly with its status hint when a response can
        be built (an ACK is never answered), and count it."""
        self._drop(exc.reason, addr)
        if req.method == "ACK":
            return
        try:
            resp = make_response(req, exc.status_hint)
            self._out.append((resp.to_bytes(), addr))
        except (RemoteProtocolError, LocalProtocolError):
            return

    # -- introspection -----------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.client_transactions) + len(self.server_transactions)
