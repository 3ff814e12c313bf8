"""The gateway's user-agent core: calls (INVITE dialogs) on one SIP endpoint, plain or secured per call.

One :class:`Agent` runs each side of the gateway: the *secured* side (toward the proxy:
every message of a secured call is sealed before the transaction layer sends it and opened
after the transaction layer received it, so transactions, retransmissions and proxies only
ever see outer messages) and the *plain* side (toward legacy phones: the same code with no
envelope). Opening and sealing are async (dialog store, replay cache, a crypto-worker
engine), so the endpoint's events are handled by tasks: in arrival order *per Call-ID* (the
messages of one dialog never overtake each other) and concurrently across calls
(:mod:`sipsec_gateway.ordering`).

The module works with :mod:`sipsec_gateway.state` (the call and its typed state machine),
:mod:`sipsec_gateway.secured` (the one open path and the one seal path) and
:mod:`sipsec_gateway.shared` (the dialog state replicas share).

A proxy retargets the Request-URI of a dialog's first request to the registered Contact
(RFC 3261 §16.5) while the envelope binds the Request-URI the caller wrote (the AOR): the
callee's gateway accepts the request when the received Request-URI is one of its own
contacts, and checks the binding against the AOR in the outer To, which the caller's
gateway always dials as the Request-URI. (The outer Record-Route: :mod:`sipsec_gateway.secured`.)

Every exception while handling a call's event ends that call (and, through the owner, the
call bridged to it): a final response or BYE on one leg, CANCEL or BYE on the other.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Awaitable
from typing import Any, Protocol

from sipsec.aio import Peer, SipEndpoint
from sipsec.aio.pending import PendingRequests
from sipsec.engine import CryptoEngine, EngineUnavailable, InProcessEngine
from sipsec.envelope import EnvelopeError, SigningPolicy, advertise, is_secured
from sipsec.ibc import IbcError, canonical_aor
from sipsec.sip import Request, Response, SipError, SipURI, parse_uri
from sipsec.sip.dialog import Dialog, next_hop
from sipsec.sip.events import (
    CancelReceived,
    Event,
    RequestReceived,
    ResponseReceived,
    TransactionTimeout,
    TransportError,
)
from sipsec.sip.message import generate_branch, generate_call_id, generate_tag, make_response
from sipsec.sip.transaction import ClientTransaction, ServerTransaction, Transaction
from sipsec.stores.envelope import DialogStore, ReplayCache

from sipsec_gateway.metrics import GatewayMetrics
from sipsec_gateway.ordering import PerCallId, call_id_of
from sipsec_gateway.routing import peer_for_uri
from sipsec_gateway.secured import Refused, SecuredIO
from sipsec_gateway.shared import SharedState, dialog_from_record
from sipsec_gateway.state import Call, CallFailed, CallState, TraceEntry
from sipsec_gateway.store import CallStore

__all__ = ["ALLOW", "Agent", "AgentOwner", "Call", "CallFailed", "CallState", "TraceEntry"]

log = logging.getLogger("sipsec.gateway.calls")

ALLOW = "INVITE, ACK, BYE, CANCEL, OPTIONS"
_RESPONSE_TIMEOUT_S = 32.0


class Crypto(Protocol):
    """What the secured side needs from its owner per local user."""

    def keyring(self) -> Any: ...


class AgentOwner(Protocol):
    """The gateway, as seen by an agent: users, policies and call events."""

    def user_keys(self, aor: str) -> Crypto | None: ...

    def user_for_uri(self, uri: object) -> str | None: ...

    def contact_user(self, aor: str, dialog: str | None = None) -> str: ...

    async def ensure_peer(self, domain: str) -> bool: ...

    async def on_incoming(self, agent: Agent, call: Call, txn: ServerTransaction) -> None: ...

    async def on_plain_request(self, agent: Agent, request: Request, txn: ServerTransaction) -> bool: ...

    def admit_phone(self, request: Request, txn: ServerTransaction) -> bool: ...

    def on_provisional(self, call: Call, response: Response) -> None: ...

    def on_established(self, call: Call) -> None: ...

    def on_ended(self, call: Call) -> None: ...

    def allows_plain(self, aor: str) -> bool: ...


def _aor_or_none(uri: object) -> str | None:
    try:
        return str(canonical_aor(str(uri)))
    except (IbcError, SipError, ValueError):
        return None


class Agent:
    """The calls of one side of the gateway over one :class:`SipEndpoint`.

    ``secured=True``: calls may be secured (per call) with the envelope; ``dialogs`` and
    ``replay`` are the envelope's stores (shared by replicas in Redis). ``outbound`` is
    where out-of-dialog requests go (the proxy); None = to the Request-URI.
    """

    def __init__(
        self,
        endpoint: SipEndpoint,
        owner: AgentOwner,
        metrics: GatewayMetrics,
        *,
        side: str,
        secured: bool,
        dialogs: DialogStore,
        replay: ReplayCache,
        outbound: Peer | None = None,
        signing: SigningPolicy = SigningPolicy.EVERY_MESSAGE,
        dialog_ttl_s: float = 43200.0,
        trace_calls: int = 200,
        trace_ttl_s: float = 0.0,
        keep_calls: int = 1000,
        call_store: CallStore | None = None,
        engine: CryptoEngine | None = None,
        advertise: str = "",
        transport: str = "UDP",
    ) -> None:
        self.advertise = advertise
        self.transport_name = transport.upper()
        self.endpoint = endpoint
        self.engine: CryptoEngine = engine if engine is not None else InProcessEngine()
        self.owner = owner
        self.metrics = metrics
        self.side = side
        self.secured = secured
        self.dialogs = dialogs
        self.replay = replay
        self.outbound = outbound
        self.signing = signing
        self.dialog_ttl_s = dialog_ttl_s
        self.trace_calls = trace_calls
        self.trace_ttl_s = trace_ttl_s  # > 0: a trace is dropped this long after its call began
        self._trace_timer: asyncio.TimerHandle | None = None
        self.call_store = call_store
        self.shared = SharedState(dialogs, call_store, dialog_ttl_s)
        self.io = SecuredIO(metrics, self.shared, replay, signing=signing, dialog_ttl_s=dialog_ttl_s,
                            engine=self.engine)
        self.calls: dict[str, Call] = {}  # by API id
        self._by_txn: dict[Transaction, Call] = {}
        self._by_outer_cid: dict[str, Call] = {}  # by _cid_key(outer Call-ID, local AOR)
        self._outgoing_cid: dict[str, Call] = {}  # calls we placed, by outer Call-ID (re-ACK)
        self._requests = PendingRequests(endpoint, CallFailed)  # out-of-dialog (REGISTER)
        self.events = PerCallId(side, self._handle, self._after_fault)
        self._recent: list[str] = []  # ids of calls with traces, oldest first
        self.keep_calls = keep_calls
        self._finished: list[str] = []  # ids of ended/failed calls, oldest first
        endpoint.handler = self.events.submit

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> None:
        self.events.running = True

    async def close(self) -> None:
        if self._trace_timer is not None:
            self._trace_timer.cancel()
            self._trace_timer = None
        await self.events.close()

    def spawn(self, coro: Awaitable[Any]) -> asyncio.Task[Any]:
        return self.events.spawn(coro)

    @property
    def address(self) -> tuple[str, int]:
        """Where this side is reached: the advertised host (or the bound one) and the bound port."""
        host, port = self.endpoint.transport(self.transport_name).local_address
        return (self.advertise or str(host)), int(port)

    def contact_uri(self, aor: str, dialog: str | None = None) -> str:
        """Our Contact for ``aor``: on the secured side an opaque user part (the outer Contact
        must not name the user) — the registered one, or with ``dialog`` (the inner Call-ID) the
        dialog's own, fresh per call (``sipsec_gateway.contacts``) —, on the plain side the user's own name."""
        host, port = self.address
        user = self.owner.contact_user(aor, dialog) if self.secured else aor.split(":", 1)[-1].split("@", 1)[0]
        params = "" if self.transport_name == "UDP" else f";transport={self.transport_name.lower()}"
        return f"sip:{user}@{host}:{port}{params}"

    def new_call(self, *, direction: str, local_aor: str, peer_aor: str, secure: bool,
                 call_id: str | None = None, local_tag: str | None = None) -> Call:
        call = Call(
            id=secrets.token_hex(8), side=self.side, direction=direction, local_aor=local_aor,
            peer_aor=peer_aor, secure=secure, call_id=call_id or generate_call_id(),
            local_tag=local_tag or generate_tag(),
        )
        if self.trace_calls > 0:
            call.trace = []
            self._recent.append(call.id)
            if len(self._recent) > self.trace_calls:
                old = self.calls.get(self._recent.pop(0))
                if old is not None:
                    old.trace = None
        self.calls[call.id] = call
        if call.trace is not None:
            self.expire_traces()
        return call

    def expire_traces(self, now: float | None = None) -> None:
        """Drop the traces of calls begun more than ``trace_ttl_s`` ago (the decrypted messages
        are kept no longer), and arm one timer for the next to expire."""
        if self.trace_ttl_s <= 0:
            return
        now = time.time() if now is None else now
        while self._recent:
            call = self.calls.get(self._recent[0])
            if call is not None and call.trace is not None and call.created + self.trace_ttl_s > now:
                break
            self._recent.pop(0)
            if call is not None:
                call.trace = None
        if self._recent and self._trace_timer is None:  # armed for the oldest: still the oldest, or earlier
            first = self.calls[self._recent[0]]
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # not in a loop (a test's direct call): the next call expires them
                return
            self._trace_timer = loop.call_later(max(0.0, first.created + self.trace_ttl_s - now) + 0.001,
                                                self._trace_tick)

    def _trace_tick(self) -> None:
        self._trace_timer = None
        self.expire_traces()

    def _cid_key(self, call_id: str, aor: str) -> str:
        """Calls are found by outer Call-ID *and* local AOR on the secured side: caller and
        callee of a call between two users of this gateway share the outer Call-ID."""
        return f"{call_id}|{aor}" if self.secured else call_id

    def _map(self, call: Call, outer_call_id: str) -> None:
        call.outer_call_id = outer_call_id
        self._by_outer_cid[self._cid_key(outer_call_id, call.local_aor)] = call
        if call.direction == "outgoing":
            self._outgoing_cid[outer_call_id] = call

    def _unmap(self, call: Call) -> None:
        if not call.outer_call_id:
            return
        key = self._cid_key(call.outer_call_id, call.local_aor)
        if self._by_outer_cid.get(key) is call:
            del self._by_outer_cid[key]
        if self._outgoing_cid.get(call.outer_call_id) is call:
            del self._outgoing_cid[call.outer_call_id]

    def _retire(self, call: Call) -> None:
        """Keep the last ``keep_calls`` finished calls for the API; forget older ones entirely."""
        self._finished.append(call.id)
        while len(self._finished) > self.keep_calls:
            old = self.calls.pop(self._finished.pop(0), None)
            if old is None:
                continue
            for txn in old.txns:
                self._by_txn.pop(txn, None)
            self._unmap(old)
            old.bridge = None

    # -- sending -------------------------------------------------------------------------------

    def _record(self, call: Call | None, direction: str, outer: Request | Response,
                inner: Request | Response | None, signer: str | None, size: int) -> None:
        if self.side == "secure":
            self.metrics.child(self.metrics.wire_bytes, direction).inc(size)
        if call is None:
            return
        if direction == "sent":
            call.bytes_sent += size
            call.messages_sent += 1
        else:
            call.bytes_received += size
            call.messages_received += 1
        if call.trace is not None:
            secured = inner is not None and inner is not outer
            call.trace.append(TraceEntry(direction, time.time(), outer.to_bytes(),
                                         inner.to_bytes() if secured and inner is not None else None,
                                         signer, secured))

    def _keyring(self, call: Call) -> Any:
        keys = self.owner.user_keys(call.local_aor)
        if keys is None:
            raise CallFailed(403, "the user is not logged in on this gateway")
        return keys.keyring()

    async def _seal(self, call: Call, inner: Request | Response, *, first: bool = False,
                    in_reply_to: Request | None = None) -> Request | Response:
        """The message to send for ``inner``: sealed when the call is secured, else itself."""
        if not call.secure:
            return inner
        keyring = self._keyring(call)
        if first:
            sealing = await self.io.seal(inner, keyring, call.peer_aor)
            call.key = sealing.dialog
            self._map(call, sealing.dialog.outer_call_id())
        else:
            assert call.key is not None
            sealing = await self.io.seal(inner, keyring, call.key, in_reply_to=in_reply_to)
        call.add_crypto(sealing.op, sealing.seconds)
        return sealing.message

    async def _send_request(self, call: Call | None, inner: Request, dest: Peer, *,
                            first: bool = False) -> ClientTransaction | None:
        outer = await self._seal(call, inner, first=first) if call is not None else inner
        assert isinstance(outer, Request)
        if call is not None and first and call.key is not None:
            await self.shared.put_key(call.local_aor, call.key)
        if call is not None and not call.secure and call.outer_call_id != inner.call_id:
            self._map(call, inner.call_id)
        size = len(outer.to_bytes())
        txn = self.endpoint.send_request(outer, dest)
        self._record(call, "sent", outer, inner, None, size)
        if txn is not None and call is not None:
            self._by_txn[txn] = call
            call.txns.append(txn)
        if inner.method == "ACK" and call is not None:
            call.ack_outer, call.ack_peer = outer, dest
        if inner.method == "INVITE" and call is not None and inner.to.tag is None:
            call.invite_outer = outer
            call.invite_txn = txn
        return txn

    async def _respond(self, call: Call | None, txn: ServerTransaction, inner: Response) -> None:
        outer: Request | Response = inner
        if call is not None and call.secure:
            outer = await self._seal(call, inner, in_reply_to=txn.request)
        size = len(outer.to_bytes())
        assert isinstance(outer, Response)
        self.endpoint.send_response(txn, outer)
        self._record(call, "sent", outer, inner, None, size)

    def respond_plain(self, txn: ServerTransaction, status: int, reason: str | None = None,
                      headers: list[tuple[str, str]] | None = None) -> None:
        """Answer a request statefully, unsecured (errors before a message could be opened)."""
        if txn.final_sent:
            return
        resp = make_response(txn.request, status, reason, to_tag=generate_tag() if status > 100 else None)
        for name, value in headers or []:
            resp.headers.add(name, value)
        self.endpoint.send_response(txn, resp)

    def via(self) -> str:
        host, port = self.address
        return f"SIP/2.0/{self.transport_name} {host}:{port};branch={generate_branch()};rport"

    # -- placing calls -------------------------------------------------------------------------

    def build_invite(self, call: Call, target: str, sdp: bytes, from_display: str | None = None,
                     to_text: str | None = None) -> Request:
        uri = parse_uri(target)
        local = f"<{call.local_aor}>" if from_display is None else f"{from_display} <{call.local_aor}>"
        h: list[tuple[str, str]] = [
            ("Via", self.via()), ("Max-Forwards", "70"),
            ("From", f"{local};tag={call.local_tag}"), ("To", to_text or f"<{target}>"),
            ("Call-ID", call.call_id), ("CSeq", "1 INVITE"),
            ("Contact", f"<{self.contact_uri(call.local_aor, call.call_id)}>"), ("Allow", ALLOW),
        ]
        if sdp:
            h.append(("Content-Type", "application/sdp"))
        invite = Request("INVITE", uri, h, sdp)
        if call.secure or self.secured:
            advertise(invite)
        return invite

    async def invite(self, call: Call, target: str, sdp: bytes, *, dest: Peer | None = None,
                     to_text: str | None = None) -> None:
        """Send the call's INVITE to ``target`` (an AOR or contact URI); returns once it is sent.

        Raises :class:`CallFailed` when it cannot be sent (unknown peer domain and the policy
        forbids plain...). The outcome arrives on ``call.setup_done``.
        """
        loop = asyncio.get_running_loop()
        call.setup_done = loop.create_future()
        call.local_sdp = sdp
        if dest is None:
            dest = self.outbound or peer_for_uri(parse_uri(target), self.transport_name)
        call.dest = dest
        invite = self.build_invite(call, target, sdp, to_text=to_text)
        call.invite = invite
        call.started = time.perf_counter()
        try:
            await self._send_request(call, invite, dest, first=call.secure)
        except (EnvelopeError, IbcError, EngineUnavailable) as exc:
            raise CallFailed(500, f"cannot secure the INVITE: {type(exc).__name__}: {exc}") from None

    async def wait_setup(self, call: Call, timeout: float) -> None:
        assert call.setup_done is not None
        try:
            await asyncio.wait_for(asyncio.shield(call.setup_done), timeout)
        except TimeoutError:
            self.cancel(call)
            self._fail(call, 408, "no final response in time")
            raise CallFailed(408, "no final response in time") from None

    def cancel(self, call: Call) -> None:
        txn = call.invite_txn
        if isinstance(txn, ClientTransaction) and not txn.terminated:
            self.endpoint.cancel(txn)

    async def hangup(self, call: Call, timeout: float = _RESPONSE_TIMEOUT_S) -> int:
        """End the call: BYE when established, CANCEL while ringing out, 480/487 while ringing in."""
        if call.state is CallState.ESTABLISHED and call.dialog is not None:
            bye = call.dialog.create_request("BYE", self.via())
            dest = self._in_dialog_peer(bye, call)
            call.bye_done = asyncio.get_running_loop().create_future()
            self._end(call, None, "local hangup")
            try:
                await self._send_request(call, bye, dest)
                return await asyncio.wait_for(asyncio.shield(call.bye_done), timeout)
            except TimeoutError:
                return 408
        if call.live and call.direction == "outgoing":
            call.cancel_requested = True  # a 2xx that crosses the CANCEL is ended with BYE
            self.cancel(call)
            return 487
        if call.live and isinstance(call.invite_txn, ServerTransaction) and call.invite is not None:
            await self.reject(call, 480, "Temporarily Unavailable")
            return 480
        return call.status or 0

    def _in_dialog_peer(self, request: Request, call: Call) -> Peer:
        try:
            return peer_for_uri(next_hop(request), self.transport_name)
        except SipError:
            assert call.dest is not None
            return call.dest

    # -- answering -----------------------------------------------------------------------------

    async def ring(self, call: Call, status: int = 180, sdp: bytes = b"") -> None:
        """Send a provisional response (180 Ringing, or the status a bridged phone sent, with
        its early-media SDP, RFC 3261 §13.3.1.1) to an incoming call that has no final answer."""
        txn = call.invite_txn
        assert isinstance(txn, ServerTransaction) and call.invite is not None
        if txn.final_sent or not call.live or call.state is CallState.ESTABLISHED:
            return
        resp = make_response(call.invite, status, to_tag=call.local_tag)
        resp.headers.add("Contact", f"<{self.contact_uri(call.local_aor, call.call_id)}>")
        if sdp:
            resp.headers.add("Content-Type", "application/sdp")
            resp.body = sdp
        await self._respond(call, txn, resp)
        call.move(CallState.RINGING)

    async def answer(self, call: Call, sdp: bytes) -> None:
        """Send 200 OK with ``sdp`` to a ringing incoming call."""
        txn = call.invite_txn
        if not isinstance(txn, ServerTransaction) or txn.final_sent or call.invite is None or not call.live:
            raise CallFailed(409, "the call is not ringing")
        ok = make_response(call.invite, 200, to_tag=call.local_tag)
        for rr in call.invite.headers.get_all_raw("Record-Route"):
            ok.headers.add("Record-Route", rr)
        ok.headers.add("Contact", f"<{self.contact_uri(call.local_aor, call.call_id)}>")
        ok.headers.add("Allow", ALLOW)
        if call.secure:
            advertise(ok)
        if sdp:
            ok.headers.add("Content-Type", "application/sdp")
            ok.body = sdp
        call.dialog = Dialog.from_uas_response(call.invite, ok)
        call.local_sdp = sdp
        await self._respond(call, txn, ok)
        call.status = 200
        call.move(CallState.ESTABLISHED)
        call.setup_s = time.perf_counter() - call.started
        self.metrics.child(self.metrics.call_setups, "answered", _b(call.secure)).inc()
        self.metrics.child(self.metrics.dialogs, _b(call.secure)).inc()
        call.counted = True
        self.owner.on_established(call)

    async def reject(self, call: Call, status: int, reason: str | None = None) -> None:
        """Answer an incoming call that has no final response yet with ``status`` (and fail it)."""
        txn = call.invite_txn
        if not isinstance(txn, ServerTransaction) or txn.final_sent or call.invite is None:
            return
        resp = make_response(call.invite, status, reason, to_tag=call.local_tag)
        try:
            await self._respond(call, txn, resp)
        finally:  # even when sealing the answer failed, the call is over
            self._fail(call, status, resp.reason)

    async def abort(self, call: Call, status: int = 500, reason: str = "Server Internal Error") -> None:
        """End ``call`` whatever state it is in, after a fault: BYE when established, CANCEL
        while ringing out, ``status`` while ringing in; the owner then ends the bridged leg.

        Never raises: a step that fails again falls back to a plain answer, and the call is
        always marked over."""
        try:
            if not call.live:
                return
            if call.state is CallState.ESTABLISHED:
                await self.hangup(call, timeout=_RESPONSE_TIMEOUT_S)
            elif call.direction == "outgoing":
                call.cancel_requested = True
                self.cancel(call)
                self._fail(call, status, reason)
            else:
                await self.reject(call, status, reason)
        except Exception:  # noqa: BLE001 - the fault path itself failed: fall back below
            log.warning("%s side: ending a call after a fault failed", self.side, exc_info=True)
        if call.live:
            txn = call.invite_txn
            if isinstance(txn, ServerTransaction):
                try:
                    self.respond_plain(txn, status, reason)
                except Exception:  # noqa: BLE001 - nothing more can be sent on this leg
                    log.warning("%s side: no final response possible", self.side, exc_info=True)
            if call.state is CallState.ESTABLISHED:
                self._end(call, status, reason)
            else:
                self._fail(call, status, reason)

    # -- the event loop ------------------------------------------------------------------------

    def _after_fault(self, event: Event) -> None:
        """A fault while handling ``event``: end its call (and so the bridged one), or at
        least answer its request with 500 (RFC 3261 §21.5.1)."""
        txn = getattr(event, "transaction", None) or getattr(event, "invite", None)
        call = self._by_txn.get(txn) if txn is not None else None
        if call is None and isinstance(event, RequestReceived):
            call = self._by_outer_cid.get(self._cid_key(call_id_of(event.request) or "",
                                                        self._local_user_or_none(event.request) or ""))
        if isinstance(txn, ServerTransaction) and (call is None or txn is not call.invite_txn):
            try:
                self.respond_plain(txn, 500, "Server Internal Error")
            except Exception:  # noqa: BLE001 - nothing more can be sent
                log.warning("%s side: no 500 possible", self.side, exc_info=True)
        if call is not None:
            # not awaited: a BYE's response comes back on this Call-ID, queued behind this task
            self.spawn(self.abort(call))

    def _local_user_or_none(self, outer: Request) -> str | None:
        try:
            return self._local_user(outer)
        except Exception:  # noqa: BLE001 - a malformed request names no user
            return None

    async def _handle(self, event: Event) -> None:
        if isinstance(event, RequestReceived):
            await self._on_request(event.request, event.transaction, event.addr)
        elif isinstance(event, ResponseReceived):
            await self._on_response(event.response, event.transaction)
        elif isinstance(event, CancelReceived):
            call = self._by_txn.get(event.invite)
            if call is not None and call.live and call.state is not CallState.ESTABLISHED:
                self._fail(call, 487, "Request Terminated")
        elif isinstance(event, TransactionTimeout) and event.timer == "C":
            self._on_timer_c(event.transaction)
        elif isinstance(event, TransactionTimeout | TransportError):
            self._on_failure(event.transaction, 408 if isinstance(event, TransactionTimeout) else 503)

    def _on_timer_c(self, txn: Transaction) -> None:
        """An outgoing INVITE got a provisional response and then nothing for Timer C (RFC 3261
        §16.6 step 11): CANCEL it (§9.1) and fail the call with 408 (§16.8), which ends the
        bridged leg. The transaction lives on for the CANCEL's 487 (or a 2xx crossing it,
        then ended with BYE); its Timer B later ends it without another failure."""
        call = self._by_txn.get(txn)
        if call is None or txn is not call.invite_txn or not call.live:
            return
        call.cancel_requested = True  # a 2xx that crosses the CANCEL is ended with BYE
        self.cancel(call)
        self._fail(call, 408, "Request Timeout")

    def _on_failure(self, txn: Transaction, status: int) -> None:
        if self._requests.fail(txn, status):
            return
        call = self._by_txn.pop(txn, None)
        if call is None:
            return
        if txn is call.invite_txn and call.direction == "outgoing" and call.state is not CallState.ESTABLISHED:
            self._fail(call, status, "INVITE failed")
        elif txn is call.invite_txn and call.state is CallState.ESTABLISHED and not call.acked:
            self.spawn(self.hangup(call))  # §13.3.1.4: our 2xx was never ACKed; end the session with BYE
        elif call.bye_done is not None and not call.bye_done.done():
            call.bye_done.set_result(status)

    # responses (UAC)

    async def _open_response(self, call: Call, outer: Response) -> tuple[Response | None, str | None]:
        """The inner response, or (None, None) to drop it; plain responses pass as they are."""
        if not call.secure or not is_secured(outer):
            return outer, None
        keys = self.owner.user_keys(call.local_aor)
        if keys is None:
            return None, None
        try:
            opening = await self.io.open(outer, keys.keyring(), call.local_aor)
        except Refused:
            return None, None
        call.add_crypto(opening.op, opening.seconds)
        inner = opening.message
        assert isinstance(inner, Response)
        return inner, opening.signer

    async def _on_response(self, outer: Response, txn: ClientTransaction | None) -> None:
        if txn is None:  # a 2xx retransmission after the INVITE transaction ended: re-ACK
            self._resend_ack(self._outgoing_cid.get(call_id_of(outer) or ""))
            return
        if self._requests.resolve(txn, outer):
            return
        call = self._by_txn.get(txn)
        if call is None:
            return
        method = txn.request.method
        if method == "INVITE" and call.state is CallState.ESTABLISHED and 200 <= outer.status < 300:
            self._resend_ack(call)  # a retransmitted 2xx
            return
        size = len(outer.to_bytes())
        if outer.status == 100:
            self._record(call, "received", outer, outer, None, size)
            return
        inner, signer = await self._open_response(call, outer)
        if inner is None:
            return
        if call.secure and inner is outer and (outer.status < 300):
            # an unsecured 1xx/2xx for a secured call: never trust it (a 2xx could hijack the call)
            self.metrics.rejections.labels("not-secured").inc()
            return
        self._record(call, "received", outer, inner, signer, size)
        if method == "INVITE":
            await self._on_invite_response(call, txn, inner)
        elif method == "BYE" and inner.status >= 200:
            self._bye_answered(txn, call, inner.status)

    def _resend_ack(self, call: Call | None) -> None:
        """ACK a retransmitted 2xx again with the ACK sent for the first (RFC 3261 §13.2.2.4)."""
        if call is not None and call.ack_outer is not None and call.ack_peer is not None:
            self.endpoint.send_request(call.ack_outer, call.ack_peer)

    def _bye_answered(self, txn: ClientTransaction, call: Call, status: int) -> None:
        """Our BYE got its final response: the hang-up waiting for it learns the status."""
        self._by_txn.pop(txn, None)
        if call.bye_done is not None and not call.bye_done.done():
            call.bye_done.set_result(status)

    async def _on_invite_response(self, call: Call, txn: ClientTransaction, resp: Response) -> None:
        status = resp.status
        assert call.invite is not None
        if not call.live:
            if 200 <= status < 300:
                await self._end_crossing_2xx(call, resp)
            return
        if status < 200:
            if status > 100 and call.state in (CallState.CALLING, CallState.RINGING):
                call.move(CallState.RINGING)
                self.owner.on_provisional(call, resp)
            return
        if status >= 300:
            if call.secure and status in (415, 420, 493) and self.owner.allows_plain(call.local_aor) \
                    and not call.retried_plain and resp is not None:
                await self._retry_plain(call)
                return
            self._fail(call, status, resp.reason)
            return
        await self._on_invite_2xx(call, resp)

    async def _on_invite_2xx(self, call: Call, resp: Response) -> None:
        """The 2xx that establishes an outgoing call: confirm the dialog, ACK (§13.2.2.4), keep it."""
        assert call.invite is not None
        status = resp.status
        try:
            if call.dialog is None:
                call.dialog = Dialog.from_uac_response(call.invite, resp)
            else:
                call.dialog.receive_response(call.invite, resp)
        except SipError as exc:
            log.warning("unusable 2xx: %s", exc)
            self._fail(call, 502, "unusable 2xx")
            return
        call.remote_sdp = resp.body
        call.status = status
        call.reason = resp.reason
        call.setup_s = time.perf_counter() - call.started
        call.move(CallState.ESTABLISHED)
        self.metrics.child(self.metrics.call_setups, "answered", _b(call.secure)).inc()
        self.metrics.child(self.metrics.setup_latency, _b(call.secure)).observe(call.setup_s)
        self.metrics.child(self.metrics.dialogs, _b(call.secure)).inc()
        call.counted = True
        if call.setup_done is not None and not call.setup_done.done():
            call.setup_done.set_result(None)
        ack = call.dialog.create_ack(self.via())
        await self._send_request(call, ack, self._in_dialog_peer(ack, call))
        await self.save(call)
        if call.cancel_requested:
            self.spawn(self.hangup(call))
            return
        self.owner.on_established(call)

    async def _end_crossing_2xx(self, call: Call, resp: Response) -> None:
        """A 2xx for a call already failed (it crossed our CANCEL, or the call was aborted):
        ACK it and end the session at once with BYE (RFC 3261 §13.2.2.4, §15)."""
        assert call.invite is not None
        if call.ack_outer is not None and call.ack_peer is not None:  # already done: re-ACK only
            self.endpoint.send_request(call.ack_outer, call.ack_peer)
            return
        dialog = Dialog.from_uac_response(call.invite, resp)
        call.dialog = dialog
        ack = dialog.create_ack(self.via())
        await self._send_request(call, ack, self._in_dialog_peer(ack, call))
        bye = dialog.create_request("BYE", self.via())
        await self._send_request(call, bye, self._in_dialog_peer(bye, call))
        dialog.terminate()

    async def _retry_plain(self, call: Call) -> None:
        """prefer-secure: the callee cannot open; resend the INVITE unsecured (same Call-ID, CSeq + 1)."""
        assert call.invite is not None
        self.metrics.fallbacks.inc()
        call.retried_plain = True
        self._unmap(call)
        call.secure = False
        call.outer_call_id = None
        call.key = None
        invite = call.invite.copy()
        invite.headers.set("Via", self.via())
        invite.headers.set("CSeq", f"{call.invite.cseq.seq + 1} INVITE")
        call.invite = invite
        assert call.dest is not None
        await self._send_request(call, invite, call.dest)

    def _fail(self, call: Call, status: int, reason: str) -> None:
        if not call.live:
            return
        if call.state is CallState.ESTABLISHED:
            self._end(call, status, reason)
            return
        call.status = status
        call.reason = reason
        call.move(CallState.FAILED)
        outcome = "timeout" if status == 408 else "cancelled" if status == 487 else "failed"
        self.metrics.child(self.metrics.call_setups, outcome, _b(call.secure)).inc()
        if call.setup_done is not None and not call.setup_done.done():
            call.setup_done.set_exception(CallFailed(status, reason))
            call.setup_done.exception()  # retrieved: a caller that stopped waiting is no error
        call.ended.set()
        self._retire(call)
        self.owner.on_ended(call)

    def _end(self, call: Call, status: int | None, reason: str) -> None:
        if call.state is not CallState.ESTABLISHED:
            return
        call.move(CallState.ENDED)
        call.reason = reason
        if call.dialog is not None:
            call.dialog.terminate()
        if call.counted:
            call.counted = False
            self.metrics.child(self.metrics.dialogs, _b(call.secure)).dec()
        call.ended.set()
        self._retire(call)
        self.spawn(self.shared.forget(call))
        self.owner.on_ended(call)

    # requests (UAS)

    async def _on_request(self, outer: Request, txn: ServerTransaction | None, addr: Any) -> None:
        size = len(outer.to_bytes())
        if outer.method == "ACK":
            await self._on_ack(outer, size)
            return
        if txn is None:
            return
        if outer.method == "CANCEL":
            return  # the core answered it (200 + 487) and reports CancelReceived
        if self.side == "plain" and outer.to_tag is None and not self.owner.admit_phone(outer, txn):
            # one 503 (RFC 3261 §21.5.4), never retransmitted: the transaction is abandoned at
            # once, so a flood from a (possibly spoofed) source draws one answer per request
            self.respond_plain(txn, 503, "Service Unavailable", [("Retry-After", "5")])
            txn.terminate()
            return
        secured = is_secured(outer)
        if secured and not self.secured:
            self.respond_plain(txn, 415, "Unsupported Media Type", [("Accept", "application/sdp")])
            return
        addressed = self._local_user(outer)
        call = self._by_outer_cid.get(self._cid_key(call_id_of(outer) or "", addressed or "")) if outer.to_tag else None
        if secured:
            await self._on_secured_request(outer, txn, call, addressed, size)
        else:
            await self._on_unsecured_request(outer, txn, call, addressed, size)

    async def _on_unsecured_request(self, outer: Request, txn: ServerTransaction, call: Call | None,
                                    addressed: str | None, size: int) -> None:
        """An unsecured request: refused where a secured one is required, else handled as is."""
        if self.side == "plain" and outer.method != "INVITE" and outer.to_tag is None:
            if await self.owner.on_plain_request(self, outer, txn):
                return
        local = call.local_aor if call is not None else addressed
        if call is None and local is not None and self.side == "secure" and not self.owner.allows_plain(local):
            # an unsecured request for a secure-only user is answered as the proxy answers one for
            # a user it does not know (404): a scan (INVITE, OPTIONS, ...) cannot tell who exists
            self.metrics.plain_dropped.inc()
            self.metrics.rejections.labels("policy").inc()
            self.respond_plain(txn, 404, "Not Found")
            return
        if call is not None and call.secure:
            self.metrics.rejections.labels("not-secured").inc()
            self.respond_plain(txn, 403, "Secured Dialog")
            return
        if outer.to_tag is None and outer.method == "INVITE":
            peer = _aor_or_none(outer.from_.uri) or str(outer.from_.uri)
            call = self.new_call(direction="incoming", local_aor=local or "", peer_aor=peer, secure=False,
                                 call_id=outer.call_id)
            self._map(call, outer.call_id)
        self._record(call, "received", outer, outer, None, size)
        await self._on_inner_request(call, outer, txn, secured=False)

    async def _on_secured_request(self, outer: Request, txn: ServerTransaction, call: Call | None,
                                  addressed: str | None, size: int) -> None:
        """A secured request: open it for its local user (a dialog's first request creates the call)."""
        local = call.local_aor if call is not None else addressed
        keys = self.owner.user_keys(local) if local else None
        if keys is None or local is None:
            self.respond_plain(txn, 404, "Not Found")
            return
        to_open = self._undo_retarget(outer) if outer.to_tag is None else outer
        try:
            opening = await self.io.open(to_open, keys.keyring(), local)
        except Refused as refused:
            self.respond_plain(txn, refused.status, refused.phrase, self._warning(refused))
            return
        inner = opening.message
        assert isinstance(inner, Request)
        if opening.first:
            if inner.method != "INVITE":
                self.respond_plain(txn, 405, "Method Not Allowed", [("Allow", ALLOW)])
                return
            call = self.new_call(direction="incoming", local_aor=local or "", peer_aor=opening.dialog.peer_aor,
                                 secure=True, call_id=inner.call_id)
            call.key = opening.dialog
            self._map(call, outer.call_id)
        if call is not None:
            call.add_crypto(opening.op, opening.seconds)
        self._record(call, "received", outer, inner, opening.signer, size)
        await self._on_inner_request(call, inner, txn, secured=True)

    def _warning(self, refused: Refused) -> list[tuple[str, str]] | None:
        """A binding rejection names the field class that differed: ``Warning: 399 <our host>
        "outer-mismatch: contact"`` (RFC 3261 §20.43), so an interop engineer can tell which
        intermediary rewrite caused it; other rejections say nothing of why."""
        if refused.warning is None:
            return None
        return [("Warning", f'399 {self.address[0]} "{refused.warning}"')]

    def _local_user(self, outer: Request) -> str | None:
        """The local AOR a request is for: its To AOR if that is a user here, else the Request-URI's user."""
        to = _aor_or_none(outer.to.uri)
        if to is not None and self.owner.user_keys(to) is not None:
            return to
        return self.owner.user_for_uri(outer.uri)

    def _undo_retarget(self, outer: Request) -> Request:
        """The outer request with the Request-URI the caller dialled (its To URI) when a proxy
        retargeted it to one of our contacts (see the module docstring)."""
        uri = outer.uri
        to_uri = outer.to.uri
        if str(uri) == str(to_uri):
            return outer
        host, port = self.address
        if not (isinstance(uri, SipURI) and uri.host == host and (uri.port or 5060) == port):
            return outer  # not retargeted to us: let the binding check decide
        copy = outer.copy()
        copy.uri = to_uri
        return copy

    async def _on_inner_request(self, call: Call | None, req: Request, txn: ServerTransaction,
                                *, secured: bool) -> None:
        method = req.method
        if req.to.tag is None:
            await self._on_out_of_dialog(call, req, txn)
            return
        if call is None or call.dialog is None:
            if secured and method == "BYE":
                await self._bye_from_store(req, txn)
                return
            self.respond_plain(txn, 481, "Call/Transaction Does Not Exist")
            return
        reject = call.dialog.receive_request(req)
        if reject is not None:
            await self._respond(call, txn, make_response(req, reject))
            return
        if method == "BYE":
            await self._respond(call, txn, make_response(req, 200))
            self._end(call, None, "remote hangup")
            return
        if method == "INVITE":
            ok = make_response(req, 200)
            ok.headers.add("Contact", f"<{self.contact_uri(call.local_aor, call.call_id)}>")
            if call.local_sdp:
                ok.headers.add("Content-Type", "application/sdp")
                ok.body = call.local_sdp
            await self._respond(call, txn, ok)
            return
        if method == "OPTIONS":
            await self._respond(call, txn, make_response(req, 200))
            return
        resp = make_response(req, 405)
        resp.headers.add("Allow", ALLOW)
        await self._respond(call, txn, resp)

    async def _on_out_of_dialog(self, call: Call | None, req: Request, txn: ServerTransaction) -> None:
        """A request outside a dialog: an INVITE starts an incoming call, OPTIONS is answered
        (RFC 3261 §11.2), anything else gets 405."""
        if req.method == "INVITE" and call is not None:
            call.invite = req
            call.invite_txn = txn
            call.remote_sdp = req.body
            call.dest = txn.addr if isinstance(txn.addr, Peer) else None
            self._by_txn[txn] = call
            call.txns.append(txn)
            await self.owner.on_incoming(self, call, txn)
            return
        if req.method == "OPTIONS":
            ok = make_response(req, 200, to_tag=generate_tag())
            ok.headers.add("Allow", ALLOW)
            if self.secured:
                advertise(ok)
            self.endpoint.send_response(txn, ok)
            return
        self.respond_plain(txn, 405, "Method Not Allowed", [("Allow", ALLOW)])

    async def _on_ack(self, outer: Request, size: int) -> None:
        call = self._by_outer_cid.get(self._cid_key(call_id_of(outer) or "", self._local_user(outer) or ""))
        if call is None:
            return
        inner: Request | None = outer
        signer = None
        if call.secure:
            keys = self.owner.user_keys(call.local_aor)
            if keys is None or not is_secured(outer):
                return
            try:
                opening = await self.io.open(outer, keys.keyring(), call.local_aor, retransmission_ok=True)
            except Refused:
                return
            assert isinstance(opening.message, Request)
            inner = opening.message
            signer = opening.signer
        self._record(call, "received", outer, inner, signer, size)
        if call.direction == "incoming" and call.state is CallState.ESTABLISHED and not call.acked:
            call.acked = True
            await self.save(call)
            if call.hold_s is not None:
                self.spawn(self._hold_then_hangup(call, call.hold_s))

    async def _hold_then_hangup(self, call: Call, hold_s: float) -> None:
        await asyncio.sleep(hold_s)
        if call.state is CallState.ESTABLISHED:
            await self.hangup(call)

    # -- dialog state shared by replicas -------------------------------------------------------

    async def save(self, call: Call) -> None:
        """Keep what another replica needs to continue this dialog (hang up, answer a BYE)."""
        await self.shared.save(call)

    async def _bye_from_store(self, req: Request, txn: ServerTransaction) -> None:
        """A BYE for a dialog another replica established: answer it from the shared state."""
        record = await self.shared.by_call_id(req.call_id)
        key = await self.shared.key_of(record) if record is not None else None
        if record is None or key is None:
            self.respond_plain(txn, 481, "Call/Transaction Does Not Exist")
            return
        call = self.new_call(direction=record["direction"], local_aor=record["local_aor"],
                             peer_aor=record["peer_aor"], secure=True, call_id=record["call_id"])
        call.key = key
        call.move(CallState.ESTABLISHED)
        call.move(CallState.ENDED)
        call.reason = "remote hangup (continued from another replica)"
        await self._respond(call, txn, make_response(req, 200))
        await self.shared.delete(record)
        call.ended.set()
        self._retire(call)

    async def hangup_from_store(self, record: dict[str, Any]) -> int:
        """Send the BYE of a dialog another replica established (the shared state has all it needs)."""
        key = await self.shared.key_of(record)
        if key is None:
            raise CallFailed(410, "the dialog key has expired")
        call = self.new_call(direction=record["direction"], local_aor=record["local_aor"],
                             peer_aor=record["peer_aor"], secure=True, call_id=record["call_id"])
        call.id = record["id"]
        self.calls[call.id] = call
        call.key = key
        call.dialog = dialog_from_record(record)
        call.move(CallState.ESTABLISHED)
        self._map(call, key.outer_call_id())
        return await self.hangup(call)

    # -- out-of-dialog non-INVITE requests (REGISTER) ------------------------------------------

    async def request(self, outer: Request, dest: Peer, timeout: float = _RESPONSE_TIMEOUT_S) -> Response:
        """Send ``outer`` in a client transaction; its final response (CallFailed 408 without one)."""
        return await self._requests.send(outer, dest, timeout)


def _b(flag: bool) -> str:
    return "true" if flag else "false"
