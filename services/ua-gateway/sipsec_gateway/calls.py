"""The gateway's user-agent core: calls (INVITE dialogs) on one SIP endpoint, plain or secured per call.

One :class:`Agent` runs each side of the gateway: the *secured* side (toward the proxy:
every message of a secured call is sealed before the transaction layer sends it and opened
after the transaction layer received it, so transactions, retransmissions and proxies only
ever see outer messages) and the *plain* side (toward legacy phones: the same code with no
envelope). Opening and sealing are async (dialog store, replay cache, a crypto-worker
engine), so the endpoint's events are handled by tasks: in arrival order *per Call-ID* (the
messages of one dialog never overtake each other) and concurrently across calls.

Bindings between the outer and the inner message that routing changes on the way:

* a proxy retargets the Request-URI of a dialog's first request to the registered Contact
  (RFC 3261 §16.5) while the envelope binds the Request-URI the caller wrote (the AOR): the
  callee's gateway accepts the request when the received Request-URI is one of its own
  contacts, and checks the binding against the AOR in the outer To, which the caller's
  gateway always dials as the Request-URI;
* proxies add Record-Route to the *outer* request and the outer response copies it: it
  is copied into the inner message after opening, so the inner dialog learns its route set.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import secrets
import time
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Any, Protocol

from sipsec.aio import Peer, SipEndpoint, peer_for_uri
from sipsec.engine import CryptoEngine, EngineUnavailable, InProcessEngine
from sipsec.envelope import (
    DialogKey,
    EnvelopeError,
    RejectedEnvelope,
    SigningPolicy,
    advertise,
    is_secured,
    open_message,
    seal_async,
)
from sipsec.ibc import IbcError, canonical_aor
from sipsec.sip import Request, Response, SipError, SipURI, parse_uri
from sipsec.sip.dialog import Dialog, DialogId, DialogState, next_hop
from sipsec.sip.events import (
    CancelReceived,
    Event,
    RequestReceived,
    ResponseReceived,
    TransactionTimeout,
    TransportError,
)
from sipsec.sip.headers import parse_name_addr
from sipsec.sip.message import generate_branch, generate_call_id, generate_tag, make_response
from sipsec.sip.transaction import ClientTransaction, ServerTransaction, Transaction
from sipsec.stores.envelope import DialogStore, ReplayCache

from sipsec_gateway.metrics import GatewayMetrics
from sipsec_gateway.store import ScopedDialogStore

__all__ = ["ALLOW", "Agent", "AgentOwner", "Call", "CallFailed", "CallState", "TraceEntry"]

log = logging.getLogger("sipsec.gateway.calls")

ALLOW = "INVITE, ACK, BYE, CANCEL, OPTIONS"
_RESPONSE_TIMEOUT_S = 32.0


def _take_outer_route(outer: Request | Response, inner: Request | Response) -> None:
    """The route set is the one the proxies built on the *outer* message (§12.1): it replaces
    whatever Record-Route the sender copied into the inner one, so no hop is counted twice."""
    inner.headers.remove("Record-Route")
    for rr in outer.headers.get_all_raw("Record-Route"):
        inner.headers.add("Record-Route", rr)


class CallState(enum.Enum):
    """Where a call stands."""

    CALLING = "calling"  # INVITE sent / received, no final response yet
    RINGING = "ringing"  # a 180/183 was sent or received
    ESTABLISHED = "established"  # 2xx and ACK (UAS: the 2xx was sent; ACK follows)
    ENDED = "ended"  # ended by BYE after it was established
    FAILED = "failed"  # the INVITE got a final error, timed out or was cancelled


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
    extra: dict[str, Any] = field(default_factory=dict)
    setup_done: asyncio.Future[None] | None = None
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    bye_done: asyncio.Future[int] | None = None

    @property
    def live(self) -> bool:
        return self.state in (CallState.CALLING, CallState.RINGING, CallState.ESTABLISHED)

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


class Crypto(Protocol):
    """What the secured side needs from its owner per local user."""

    def keyring(self) -> Any: ...


class AgentOwner(Protocol):
    """The gateway, as seen by an agent: users, policies and call events."""

    def user_keys(self, aor: str) -> Crypto | None: ...

    def user_for_uri(self, uri: object) -> str | None: ...

    def contact_user(self, aor: str) -> str: ...

    async def ensure_peer(self, domain: str) -> bool: ...

    async def on_incoming(self, agent: Agent, call: Call, txn: ServerTransaction) -> None: ...

    async def on_plain_request(self, agent: Agent, request: Request, txn: ServerTransaction) -> bool: ...

    def on_ringing(self, call: Call) -> None: ...

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
        keep_calls: int = 1000,
        call_store: Any = None,
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
        self.call_store = call_store
        self.calls: dict[str, Call] = {}  # by API id
        self._by_txn: dict[Transaction, Call] = {}
        self._by_outer_cid: dict[str, Call] = {}  # by _cid_key(outer Call-ID, local AOR)
        self._outgoing_cid: dict[str, Call] = {}  # calls we placed, by outer Call-ID (re-ACK)
        self._scoped: dict[str, ScopedDialogStore] = {}
        self._requests: dict[Transaction, asyncio.Future[Response]] = {}
        self._tails: dict[str, asyncio.Task[None]] = {}  # last event task per Call-ID
        self._running = False
        self._tasks: set[asyncio.Task[Any]] = set()
        self._recent: list[str] = []  # ids of calls with traces, oldest first
        self.keep_calls = keep_calls
        self._finished: list[str] = []  # ids of ended/failed calls, oldest first
        endpoint.handler = self._dispatch

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> None:
        self._running = True

    async def close(self) -> None:
        self._running = False
        pending = [*self._tasks, *self._tails.values()]
        for task in pending:
            task.cancel()
        for task in pending:
            if task is not None:
                try:
                    await task
                except asyncio.CancelledError:
                    pass
                except Exception:  # noqa: BLE001 - shutting down: report, do not raise
                    log.warning("a %s-side task failed while closing", self.side, exc_info=True)
        self._tails.clear()

    def spawn(self, coro: Awaitable[Any]) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    @property
    def address(self) -> tuple[str, int]:
        """Where this side is reached: the advertised host (or the bound one) and the bound port."""
        host, port = self.endpoint.transport(self.transport_name).local_address
        return (self.advertise or str(host)), int(port)

    def contact_uri(self, aor: str) -> str:
        """Our Contact for ``aor``: on the secured side an opaque user part (the outer Contact
        must not name the user), on the plain side the user's own name."""
        host, port = self.address
        user = self.owner.contact_user(aor) if self.secured else aor.split(":", 1)[-1].split("@", 1)[0]
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
        return call

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

    def _dialogs(self, aor: str) -> ScopedDialogStore:
        scoped = self._scoped.get(aor)
        if scoped is None:
            scoped = self._scoped[aor] = ScopedDialogStore(self.dialogs, aor)
        return scoped

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
        t0 = time.perf_counter()
        if first:
            sealed = await seal_async(inner, keyring, call.peer_aor, self.signing, engine=self.engine)
            op = "seal_kem"
        else:
            assert call.key is not None
            sealed = await seal_async(inner, keyring, call.key, self.signing, engine=self.engine,
                                      in_reply_to=in_reply_to)
            op = "seal_kek"
        elapsed = time.perf_counter() - t0
        call.add_crypto(op, elapsed)
        self.metrics.child(self.metrics.crypto_seconds, op).observe(elapsed)
        if first:
            call.key = sealed.dialog
            self._map(call, sealed.dialog.outer_call_id())
        return sealed.message

    async def _send_request(self, call: Call | None, inner: Request, dest: Peer, *,
                            first: bool = False) -> ClientTransaction | None:
        outer = await self._seal(call, inner, first=first) if call is not None else inner
        assert isinstance(outer, Request)
        if call is not None and first and call.key is not None:
            await self._dialogs(call.local_aor).put(call.key, self.dialog_ttl_s, time.time())
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
            ("Contact", f"<{self.contact_uri(call.local_aor)}>"), ("Allow", ALLOW),
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
            call.extra["cancelled"] = True  # a 2xx that crosses the CANCEL is ended with BYE
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

    async def ring(self, call: Call) -> None:
        txn = call.invite_txn
        assert isinstance(txn, ServerTransaction) and call.invite is not None
        if txn.final_sent:
            return
        resp = make_response(call.invite, 180, to_tag=call.local_tag)
        resp.headers.add("Contact", f"<{self.contact_uri(call.local_aor)}>")
        call.state = CallState.RINGING
        await self._respond(call, txn, resp)

    async def answer(self, call: Call, sdp: bytes) -> None:
        """Send 200 OK with ``sdp`` to a ringing incoming call."""
        txn = call.invite_txn
        if not isinstance(txn, ServerTransaction) or txn.final_sent or call.invite is None:
            raise CallFailed(409, "the call is not ringing")
        ok = make_response(call.invite, 200, to_tag=call.local_tag)
        for rr in call.invite.headers.get_all_raw("Record-Route"):
            ok.headers.add("Record-Route", rr)
        ok.headers.add("Contact", f"<{self.contact_uri(call.local_aor)}>")
        ok.headers.add("Allow", ALLOW)
        if call.secure:
            advertise(ok)
        if sdp:
            ok.headers.add("Content-Type", "application/sdp")
            ok.body = sdp
        call.local_sdp = sdp
        call.dialog = Dialog.from_uas_response(call.invite, ok)
        call.status = 200
        call.state = CallState.ESTABLISHED
        call.setup_s = time.perf_counter() - call.started
        await self._respond(call, txn, ok)
        self.metrics.child(self.metrics.call_setups, "answered", _b(call.secure)).inc()
        self.metrics.child(self.metrics.dialogs, _b(call.secure)).inc()
        call.extra["counted"] = True
        self.owner.on_established(call)

    async def reject(self, call: Call, status: int, reason: str | None = None) -> None:
        txn = call.invite_txn
        if not isinstance(txn, ServerTransaction) or txn.final_sent or call.invite is None:
            return
        resp = make_response(call.invite, status, reason, to_tag=call.local_tag)
        await self._respond(call, txn, resp)
        self._fail(call, status, resp.reason)

    # -- the event loop ------------------------------------------------------------------------

    def _dispatch(self, event: Event) -> None:
        """The endpoint's handler: queue ``event`` behind the previous event of its Call-ID."""
        if not self._running:
            return
        key = _event_key(event)
        previous = self._tails.get(key)
        task = asyncio.get_running_loop().create_task(self._run(previous, event))
        self._tails[key] = task

        def done(t: asyncio.Task[None]) -> None:
            if self._tails.get(key) is t:
                del self._tails[key]

        task.add_done_callback(done)

    async def _run(self, previous: asyncio.Task[None] | None, event: Event) -> None:
        if previous is not None and not previous.done():
            await asyncio.wait({previous})
        try:
            await self._handle(event)
        except Exception:  # noqa: BLE001 - one bad event must not stop the side
            log.exception("%s side failed on %s", self.side, type(event).__name__)

    async def _handle(self, event: Event) -> None:
        if isinstance(event, RequestReceived):
            await self._on_request(event.request, event.transaction, event.addr)
        elif isinstance(event, ResponseReceived):
            await self._on_response(event.response, event.transaction)
        elif isinstance(event, CancelReceived):
            call = self._by_txn.get(event.invite)
            if call is not None and call.live and call.state is not CallState.ESTABLISHED:
                self._fail(call, 487, "Request Terminated")
        elif isinstance(event, TransactionTimeout | TransportError):
            self._on_failure(event.transaction, 408 if isinstance(event, TransactionTimeout) else 503)

    def _on_failure(self, txn: Transaction, status: int) -> None:
        pending = self._requests.pop(txn, None)
        if pending is not None and not pending.done():
            pending.set_exception(CallFailed(status, "request failed"))
            return
        call = self._by_txn.pop(txn, None)
        if call is None:
            return
        if txn is call.invite_txn and call.direction == "outgoing" and call.state is not CallState.ESTABLISHED:
            self._fail(call, status, "INVITE failed")
        elif txn is call.invite_txn and call.state is CallState.ESTABLISHED and not call.extra.get("acked"):
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
        t0 = time.perf_counter()
        try:
            opened = await open_message(outer, keys.keyring(), self._dialogs(call.local_aor), self.replay,
                                        policy=self.signing, dialog_ttl_s=self.dialog_ttl_s,
                                        engine=self.engine)
        except RejectedEnvelope as exc:
            self.metrics.rejections.labels(exc.reason).inc()
            log.info("rejected a secured %d: %s", outer.status, exc.reason)
            return None, None
        self._crypto(call, "open_kek", t0)
        inner = opened.message
        assert isinstance(inner, Response)
        _take_outer_route(outer, inner)
        return inner, opened.signer.aor if opened.signer else None

    def _crypto(self, call: Call, op: str, t0: float) -> None:
        elapsed = time.perf_counter() - t0
        call.add_crypto(op, elapsed)
        self.metrics.child(self.metrics.crypto_seconds, op).observe(elapsed)

    async def _on_response(self, outer: Response, txn: ClientTransaction | None) -> None:
        if txn is None:  # a 2xx retransmission after the INVITE transaction ended: re-ACK
            call = self._outgoing_cid.get(_call_id(outer) or "")
            if call is not None and call.ack_outer is not None and call.ack_peer is not None:
                self.endpoint.send_request(call.ack_outer, call.ack_peer)
            return
        pending = self._requests.get(txn)
        if pending is not None:
            if outer.status >= 200 and not pending.done():
                pending.set_result(outer)
            return
        call = self._by_txn.get(txn)
        if call is None:
            return
        method = txn.request.method
        if method == "INVITE" and call.state is CallState.ESTABLISHED and 200 <= outer.status < 300:
            if call.ack_outer is not None and call.ack_peer is not None:  # a retransmitted 2xx
                self.endpoint.send_request(call.ack_outer, call.ack_peer)
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
            self._by_txn.pop(txn, None)
            if call.bye_done is not None and not call.bye_done.done():
                call.bye_done.set_result(inner.status)

    async def _on_invite_response(self, call: Call, txn: ClientTransaction, resp: Response) -> None:
        status = resp.status
        assert call.invite is not None
        if status < 200:
            if status in (180, 183) and call.state is CallState.CALLING:
                call.state = CallState.RINGING
                self.owner.on_ringing(call)
            return
        if status >= 300:
            if call.secure and status in (415, 420, 493) and self.owner.allows_plain(call.local_aor) \
                    and not call.retried_plain and resp is not None:
                await self._retry_plain(call)
                return
            self._fail(call, status, resp.reason)
            return
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
        ack = call.dialog.create_ack(self.via())
        await self._send_request(call, ack, self._in_dialog_peer(ack, call))
        call.state = CallState.ESTABLISHED
        self.metrics.child(self.metrics.call_setups, "answered", _b(call.secure)).inc()
        self.metrics.child(self.metrics.setup_latency, _b(call.secure)).observe(call.setup_s)
        self.metrics.child(self.metrics.dialogs, _b(call.secure)).inc()
        call.extra["counted"] = True
        if call.setup_done is not None and not call.setup_done.done():
            call.setup_done.set_result(None)
        await self.save(call)
        if call.extra.get("cancelled"):
            self.spawn(self.hangup(call))
            return
        self.owner.on_established(call)

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
        call.state = CallState.FAILED
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
        call.state = CallState.ENDED
        call.reason = reason
        if call.dialog is not None:
            call.dialog.terminate()
        if call.extra.pop("counted", False):
            self.metrics.child(self.metrics.dialogs, _b(call.secure)).dec()
        call.ended.set()
        self._retire(call)
        self.spawn(self.forget(call))
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
        secured = is_secured(outer)
        if secured and not self.secured:
            self.respond_plain(txn, 415, "Unsupported Media Type", [("Accept", "application/sdp")])
            return
        addressed = self._local_user(outer)
        call = self._by_outer_cid.get(self._cid_key(_call_id(outer) or "", addressed or "")) if outer.to_tag else None
        if secured:
            local = call.local_aor if call is not None else addressed
            keys = self.owner.user_keys(local) if local else None
            if keys is None or local is None:
                self.respond_plain(txn, 404, "Not Found")
                return
            to_open = self._undo_retarget(outer) if outer.to_tag is None else outer
            t0 = time.perf_counter()
            try:
                opened = await open_message(to_open, keys.keyring(), self._dialogs(local), self.replay,
                                            policy=self.signing, dialog_ttl_s=self.dialog_ttl_s,
                                            engine=self.engine)
            except RejectedEnvelope as exc:
                self.metrics.rejections.labels(exc.reason).inc()
                log.info("rejected a secured %s: %s (%d)", outer.method, exc.reason, exc.status)
                self.respond_plain(txn, exc.status, _REJECT_REASON.get(exc.status))
                return
            except EnvelopeError as exc:
                self.metrics.rejections.labels("error").inc()
                log.warning("could not open a secured %s: %s", outer.method, exc)
                self.respond_plain(txn, 500, "Server Internal Error")
                return
            inner = opened.message
            assert isinstance(inner, Request)
            _take_outer_route(outer, inner)
            signer = opened.signer.aor if opened.signer else None
            elapsed = time.perf_counter() - t0
            op = "open_kem" if opened.first else "open_kek"
            self.metrics.child(self.metrics.crypto_seconds, op).observe(elapsed)
            if opened.first:
                if inner.method != "INVITE":
                    self.respond_plain(txn, 405, "Method Not Allowed", [("Allow", ALLOW)])
                    return
                call = self.new_call(direction="incoming", local_aor=local or "", peer_aor=opened.dialog.peer_aor,
                                     secure=True, call_id=inner.call_id)
                call.key = opened.dialog
                self._map(call, outer.call_id)
                call.add_crypto(op, elapsed)
            elif call is not None:
                call.add_crypto(op, elapsed)
            self._record(call, "received", outer, inner, signer, size)
            await self._on_inner_request(call, inner, txn, secured=True)
            return
        # an unsecured request
        if self.side == "plain" and outer.method != "INVITE" and outer.to_tag is None:
            if await self.owner.on_plain_request(self, outer, txn):
                return
        local = call.local_aor if call is not None else addressed
        if outer.method not in ("OPTIONS",) and call is None and local is not None \
                and self.side == "secure" and not self.owner.allows_plain(local):
            self.metrics.plain_dropped.inc()
            self.metrics.rejections.labels("policy").inc()
            self.respond_plain(txn, 606, "Not Acceptable", [("Warning", '399 sipsec "secured SIP required"')])
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
            if method == "INVITE" and call is not None:
                call.invite = req
                call.invite_txn = txn
                call.remote_sdp = req.body
                call.dest = txn.addr if isinstance(txn.addr, Peer) else None
                self._by_txn[txn] = call
                call.txns.append(txn)
                await self.owner.on_incoming(self, call, txn)
                return
            if method == "OPTIONS":
                ok = make_response(req, 200, to_tag=generate_tag())
                ok.headers.add("Allow", ALLOW)
                if self.secured:
                    advertise(ok)
                self.endpoint.send_response(txn, ok)
                return
            self.respond_plain(txn, 405, "Method Not Allowed", [("Allow", ALLOW)])
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
            ok.headers.add("Contact", f"<{self.contact_uri(call.local_aor)}>")
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

    async def _on_ack(self, outer: Request, size: int) -> None:
        call = self._by_outer_cid.get(self._cid_key(_call_id(outer) or "", self._local_user(outer) or ""))
        if call is None:
            return
        inner: Request | None = outer
        signer = None
        if call.secure:
            keys = self.owner.user_keys(call.local_aor)
            if keys is None or not is_secured(outer):
                return
            try:
                opened = await open_message(outer, keys.keyring(), self._dialogs(call.local_aor), self.replay,
                                            policy=self.signing, dialog_ttl_s=self.dialog_ttl_s,
                                            engine=self.engine)
            except RejectedEnvelope as exc:  # a retransmitted ACK repeats its nonce: "replay"
                if exc.reason != "replay":
                    self.metrics.rejections.labels(exc.reason).inc()
                return
            assert isinstance(opened.message, Request)
            inner = opened.message
            signer = opened.signer.aor if opened.signer else None
        self._record(call, "received", outer, inner, signer, size)
        if call.direction == "incoming" and call.state is CallState.ESTABLISHED and not call.extra.get("acked"):
            call.extra["acked"] = True
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
        if self.call_store is None or call.dialog is None or not call.secure or call.key is None:
            return
        d = call.dialog
        record = {
            "id": call.id, "direction": call.direction, "local_aor": call.local_aor,
            "peer_aor": call.peer_aor, "call_id": call.call_id, "key_id": call.key.key_id.hex(),
            "local": str(d.local), "remote": str(d.remote), "remote_target": str(d.remote_target),
            "route_set": [str(r) for r in d.route_set], "local_seq": d.local_seq or 0,
            "created": call.created, "setup_ms": None if call.setup_s is None else call.setup_s * 1e3,
        }
        await self.call_store.put(call.id, call.call_id, record, self.dialog_ttl_s)

    async def forget(self, call: Call) -> None:
        if self.call_store is not None and call.secure:
            await self.call_store.delete(call.id, call.call_id)

    async def _bye_from_store(self, req: Request, txn: ServerTransaction) -> None:
        """A BYE for a dialog another replica established: answer it from the shared state."""
        record = await self.call_store.by_call_id(req.call_id) if self.call_store is not None else None
        key = None
        if record is not None:
            key = await self._dialogs(record["local_aor"]).get(bytes.fromhex(record["key_id"]), time.time())
        if record is None or key is None:
            self.respond_plain(txn, 481, "Call/Transaction Does Not Exist")
            return
        call = self.new_call(direction=record["direction"], local_aor=record["local_aor"],
                             peer_aor=record["peer_aor"], secure=True, call_id=record["call_id"])
        call.key = key
        call.state = CallState.ENDED
        call.reason = "remote hangup (continued from another replica)"
        await self._respond(call, txn, make_response(req, 200))
        await self.call_store.delete(record["id"], record["call_id"])
        call.ended.set()
        self._retire(call)

    async def hangup_from_store(self, record: dict[str, Any]) -> int:
        """Send the BYE of a dialog another replica established (the shared state has all it needs)."""
        key = await self._dialogs(record["local_aor"]).get(bytes.fromhex(record["key_id"]), time.time())
        if key is None:
            raise CallFailed(410, "the dialog key has expired")
        call = self.new_call(direction=record["direction"], local_aor=record["local_aor"],
                             peer_aor=record["peer_aor"], secure=True, call_id=record["call_id"])
        call.id = record["id"]
        self.calls[call.id] = call
        call.key = key
        local, remote = parse_name_addr(record["local"]), parse_name_addr(record["remote"])
        dialog = Dialog(
            DialogId(record["call_id"], local.tag or "", remote.tag or ""),
            DialogState.CONFIRMED, local=local, remote=remote,
            remote_target=parse_uri(record["remote_target"]),
            route_set=[parse_name_addr(r) for r in record["route_set"]],
            local_seq=int(record["local_seq"]), remote_seq=None,
        )
        call.dialog = dialog
        call.state = CallState.ESTABLISHED
        self._map(call, key.outer_call_id())
        return await self.hangup(call)

    # -- out-of-dialog non-INVITE requests (REGISTER) ------------------------------------------

    async def request(self, outer: Request, dest: Peer, timeout: float = _RESPONSE_TIMEOUT_S) -> Response:
        fut: asyncio.Future[Response] = asyncio.get_running_loop().create_future()
        txn = self.endpoint.send_request(outer, dest)
        assert txn is not None
        self._requests[txn] = fut
        try:
            return await asyncio.wait_for(asyncio.shield(fut), timeout)
        except TimeoutError:
            raise CallFailed(408, f"no final response to {outer.method}") from None
        finally:
            self._requests.pop(txn, None)


_REJECT_REASON = {400: "Bad Request", 403: "Forbidden", 493: "Undecipherable"}


def _b(flag: bool) -> str:
    return "true" if flag else "false"


def _event_key(event: Event) -> str:
    """The Call-ID an event belongs to (events of one Call-ID are handled in order)."""
    message: Request | Response | None = None
    if isinstance(event, RequestReceived):
        message = event.request
    elif isinstance(event, ResponseReceived):
        message = event.response
    elif isinstance(event, CancelReceived):
        message = event.invite.request
    else:
        txn = getattr(event, "transaction", None)
        message = getattr(txn, "request", None)
    return (_call_id(message) if message is not None else None) or ""


def _call_id(message: Request | Response) -> str | None:
    try:
        return str(message.call_id)
    except SipError:
        return None

