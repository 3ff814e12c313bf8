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

from redis.exceptions import RedisError
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
from sipsec.sip.headers import CSeq, parse_via_list
from sipsec.sip.message import generate_branch, generate_call_id, generate_tag, make_response
from sipsec.sip.parser import parse_message
from sipsec.sip.transaction import (
    ClientTransaction,
    ServerTransaction,
    Transaction,
    build_ack_for_error,
    build_cancel,
)
from sipsec.stores.access import StoreUnavailable
from sipsec.stores.envelope import DialogStore, ReplayCache
from sipsec.telemetry import tracing

from sipsec_gateway import sessiontimer
from sipsec_gateway.metrics import GatewayMetrics, setup_outcome
from sipsec_gateway.ordering import PerCallId, call_id_of
from sipsec_gateway.routing import peer_for_uri
from sipsec_gateway.secured import Refused, SecuredIO
from sipsec_gateway.shared import SharedState, dialog_from_record, peer_of
from sipsec_gateway.state import Call, CallFailed, CallState, LiveCount, TraceEntry
from sipsec_gateway.store import CallStore

__all__ = ["ALLOW", "Agent", "AgentOwner", "Call", "CallFailed", "CallState", "TraceEntry"]

log = logging.getLogger("sipsec.gateway.calls")

ALLOW = "INVITE, ACK, BYE, CANCEL, OPTIONS, UPDATE"
_RESPONSE_TIMEOUT_S = 32.0
#: Retry-After (seconds) of a 503 for a failed dependency or a draining gateway.
RETRY_AFTER_S = 5
#: Retry-After (seconds) of a 503 to an in-dialog request while a restarted gateway logs its users in again.
RESTORING_RETRY_AFTER_S = 1
#: How long a restarted gateway answers the responses to a phone INVITE its dead instance sent
#: (ACK for the 487 its CANCEL draws, ACK + BYE for a 2xx): 64·T1, the INVITE transaction's life.
ORPHAN_INVITE_S = 32.0
#: BYE retries: the first after this many seconds, doubling up to BYE_RETRY_MAX_S.
BYE_RETRY_FIRST_S = 0.5
BYE_RETRY_MAX_S = 4.0
#: Final answers to a BYE that are worth sending it again for (the hop or the far end was
#: down, restarting or failing); 403 only when it says Clock Skew (the signing time was refused).
_BYE_RETRYABLE = frozenset({408, 500, 503})


#: Exceptions that mean a dependency failed (store, crypto workers, network), not a bug of ours.
DEPENDENCY_FAILURES: tuple[type[Exception], ...] = (EngineUnavailable, OSError, TimeoutError, RedisError, StoreUnavailable)


def is_dependency_failure(exc: BaseException) -> bool:
    """Whether ``exc`` is a dependency's failure (store, crypto workers, network), not our own bug."""
    return isinstance(exc, DEPENDENCY_FAILURES)


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

    def accepting_calls(self) -> bool: ...

    def at_call_limit(self) -> bool: ...

    def restoring(self) -> bool: ...

    def on_record_ended(self, record: dict[str, Any]) -> None: ...

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
        session_expires_s: int = 0,
        min_se_s: int = sessiontimer.MIN_SE_FLOOR,
        bye_retry_s: float = 32.0,
    ) -> None:
        self.bye_retry_s = bye_retry_s  # how long a BYE that failed is sent again (0 = never)
        # timers on the secured leg, and on a phone leg whose phone supports them (Supported: timer)
        self.session_expires_s = session_expires_s
        self.min_se_s = min_se_s
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
        self.live = LiveCount()  # the live ones among them
        self._by_txn: dict[Transaction, Call] = {}
        self._by_outer_cid: dict[str, Call] = {}  # by _cid_key(outer Call-ID, local AOR)
        self._outgoing_cid: dict[str, Call] = {}  # calls we placed, by outer Call-ID (re-ACK)
        self._requests = PendingRequests(endpoint, CallFailed)  # out-of-dialog (REGISTER)
        self.events = PerCallId(side, self._handle, self._after_fault)
        self._recent: list[str] = []  # ids of calls with traces, oldest first
        self.keep_calls = keep_calls
        self._finished: list[str] = []  # ids of ended/failed calls, oldest first
        # phone INVITEs a dead instance of this gateway sent, by Call-ID: (INVITE, phone, our ACK)
        self._orphans: dict[str, tuple[Request, Peer, Request | None]] = {}
        endpoint.handler = self.events.submit

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> None:
        self.events.running = True

    async def close(self) -> None:
        for call in self.calls.values():
            self._disarm_session(call)
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
        call.count_in(self.live)
        tracing.claim_setup(call.id, side=self.side, secure=secure, local_aor=local_aor, peer_aor=peer_aor)
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
        tracing.end_setup(call.id, "ended", call.status)
        self._finished.append(call.id)
        while len(self._finished) > self.keep_calls:
            old = self.calls.pop(self._finished.pop(0), None)
            if old is None:
                continue
            if old.live_count is not None and old.live:  # forgotten while live: no longer counted
                old.live_count.value -= 1
            old.live_count = None
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

    async def _respond(self, call: Call | None, txn: ServerTransaction, inner: Response) -> bool:
        """Seal (secured calls) and send ``inner`` on ``txn``; False when it was a provisional
        response overtaken while it was being sealed by the final one (a phone's 180 and 200
        close together): a 1xx after the final answer is obsolete (RFC 3261 §17.2.1) and dropped."""
        outer: Request | Response = inner
        if call is not None and call.secure:
            outer = await self._seal(call, inner, in_reply_to=txn.request)
        if inner.status < 200 and txn.final_sent:
            return False
        size = len(outer.to_bytes())
        assert isinstance(outer, Response)
        self.endpoint.send_response(txn, outer)
        self._record(call, "sent", outer, inner, None, size)
        return True

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
        if self.session_expires_s > 0 and (call.secure or call.offer_timer):
            h.extend(sessiontimer.offer_headers(self.session_expires_s, self.min_se_s))
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
        if not self.secured:  # a phone leg: kept before it rings, so that a restart can CANCEL it
            await self.keep_setup(call)
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
            self.fail(call, 408, "no final response in time")
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
            self._end(call, None, "local hangup")
            deadline = time.monotonic() + self.bye_retry_s  # the window counts from the first BYE
            status = await self._send_bye(call, bye, dest, timeout)
            if self.bye_retry_s > 0 and _bye_retryable(status, call.bye_phrase):
                self.spawn(self._retry_bye(call, bye, dest, deadline))
            return status
        if call.live and call.direction == "outgoing":
            call.cancel_requested = True  # a 2xx that crosses the CANCEL is ended with BYE
            self.cancel(call)
            return 487
        if call.live and isinstance(call.invite_txn, ServerTransaction) and call.invite is not None:
            await self.reject(call, 480, "Temporarily Unavailable")
            return 480
        return call.status or 0

    async def _send_bye(self, call: Call, bye: Request, dest: Peer, timeout: float) -> int:
        """Send ``bye``; the status of its final answer (408 without one within ``timeout``)."""
        call.bye_done = asyncio.get_running_loop().create_future()
        call.bye_phrase = ""
        try:
            await self._send_request(call, bye, dest)
            return await asyncio.wait_for(asyncio.shield(call.bye_done), timeout)
        except TimeoutError:
            return 408

    async def _retry_bye(self, call: Call, first: Request, dest: Peer, deadline: float) -> None:
        """Send the BYE of an ended call again, with the dialog's next CSeq and back-off
        (:data:`BYE_RETRY_FIRST_S` doubling to :data:`BYE_RETRY_MAX_S`), until an answer that is
        not worth retrying (2xx, 481, another 4xx) or ``deadline`` (monotonic) passes; each
        retry counted by its outcome in ``sipsec_gateway_bye_retries_total``."""
        delay, bye = BYE_RETRY_FIRST_S, first
        while time.monotonic() + delay < deadline:
            await asyncio.sleep(delay)
            delay = min(delay * 2, BYE_RETRY_MAX_S)
            bye = self._next_bye(bye)
            try:
                status = await self._send_bye(call, bye, dest, max(1.0, deadline - time.monotonic()))
            except (CallFailed, EnvelopeError, IbcError, EngineUnavailable, OSError) as exc:
                log.info("%s side: a BYE could not be sent again: %s", self.side, type(exc).__name__)
                status = 503
            if not _bye_retryable(status, call.bye_phrase):
                self.metrics.bye_retries.labels("answered").inc()
                log.info("%s side: a BYE sent again was answered %d", self.side, status)
                return
            self.metrics.bye_retries.labels("failed").inc()
        self.metrics.bye_retries.labels("gave-up").inc()
        log.warning("%s side: a BYE got no final answer worth keeping within %.0f s: given up",
                    self.side, self.bye_retry_s)

    def _next_bye(self, prev: Request) -> Request:
        """``prev`` as a new transaction: the next CSeq of the dialog (§12.2.1.1) and a fresh branch."""
        bye = prev.copy()
        bye.cseq = CSeq(prev.cseq.seq + 1, "BYE")
        bye.via = parse_via_list(self.via())
        return bye

    def _in_dialog_peer(self, request: Request, call: Call) -> Peer:
        try:
            return peer_for_uri(next_hop(request), self.transport_name)
        except SipError:
            assert call.dest is not None
            return call.dest

    # -- phone legs being set up, across a restart --------------------------------------------

    async def keep_setup(self, call: Call) -> None:
        """Keep a phone leg being set up (its setup record, :meth:`SharedState.save_setup`); a
        store that fails costs the call nothing, only its end by a restart (logged)."""
        try:
            call.setup_kept = await self.shared.save_setup(call)
        except DEPENDENCY_FAILURES as exc:
            log.warning("%s side: a phone leg being set up is not kept (a restart would not end it): %s",
                        self.side, type(exc).__name__)

    async def end_setup_record(self, record: dict[str, Any]) -> None:
        """End, after a restart, a phone leg the dead instance was setting up, from its setup
        record: our INVITE to the phone is CANCELled (§9.1; its 487 is ACKed, a 2xx that
        crossed is ACKed and ended with BYE, §13.2.2.4), the phone's INVITE gets 503 +
        Retry-After (its server transaction died with the process: sent statelessly). The
        record is deleted."""
        try:
            invite = parse_message(str(record["invite"]).encode("latin-1"))
        except (SipError, KeyError, ValueError) as exc:
            log.warning("%s side: a setup record does not hold an INVITE: %s", self.side, type(exc).__name__)
            invite = None
        peer = peer_of(record)
        if isinstance(invite, Request) and peer is not None:
            if record.get("direction") == "outgoing":
                self._orphans[invite.call_id] = (invite, peer, None)
                asyncio.get_running_loop().call_later(ORPHAN_INVITE_S, self._orphans.pop, invite.call_id, None)
                self.spawn(self._orphan_request(build_cancel(invite), peer))
            else:
                resp = make_response(invite, 503, "Service Unavailable", to_tag=str(record.get("local_tag") or ""))
                resp.headers.add("Retry-After", str(RETRY_AFTER_S))
                self.endpoint.send_stateless(resp, peer)
        await self.shared.delete(record)

    async def _orphan_request(self, request: Request, dest: Peer) -> None:
        """Send a CANCEL or BYE for a phone leg of a dead instance; its answer is only logged."""
        try:
            resp = await self._requests.send(request, dest, _RESPONSE_TIMEOUT_S)
            log.info("%s side: a %s for a leg the restart found got %d", self.side, request.method, resp.status)
        except (CallFailed, OSError) as exc:
            log.info("%s side: a %s for a leg the restart found failed: %s", self.side, request.method, exc)

    def _orphan_response(self, resp: Response) -> bool:
        """A response outside any transaction to a phone INVITE the dead instance sent: ACK a
        final error (§17.1.1.3); ACK a 2xx and end its session with BYE (§13.2.2.4), re-ACK a
        retransmission. False: not such a response."""
        orphan = self._orphans.get(call_id_of(resp) or "")
        if orphan is None or resp.cseq.method != "INVITE" or resp.status < 200:
            return orphan is not None
        invite, peer, ack = orphan
        if resp.status >= 300:
            self.endpoint.send_request(build_ack_for_error(invite, resp), peer)
            return True
        if ack is not None:
            self.endpoint.send_request(ack, peer)
            return True
        try:
            dialog = Dialog.from_uac_response(invite, resp)
        except SipError as exc:
            log.warning("%s side: an unusable 2xx for a leg the restart found: %s", self.side, exc)
            return True
        ack = dialog.create_ack(self.via())
        try:
            dest = peer_for_uri(next_hop(ack), self.transport_name)
        except SipError:
            dest = peer
        self.endpoint.send_request(ack, dest)
        self._orphans[invite.call_id] = (invite, dest, ack)
        bye = dialog.create_request("BYE", self.via())
        dialog.terminate()
        log.info("%s side: a phone answered a call the restart found in set-up: ACK and BYE", self.side)
        self.spawn(self._orphan_request(bye, dest))
        return True

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
        if await self._respond(call, txn, resp):
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
        if call.session is not None:
            ok.headers.add("Session-Expires", call.session.header())
            if call.session.refresher == "uac":
                ok.headers.add("Require", "timer")
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
        tracing.end_setup(call.id, "answered", 200)
        self.metrics.child(self.metrics.dialogs, _b(call.secure)).inc()
        call.counted = True
        self._arm_session(call)
        self.owner.on_established(call)

    async def reject(self, call: Call, status: int, reason: str | None = None,
                     headers: list[tuple[str, str]] | None = None) -> None:
        """Answer an incoming call that has no final response yet with ``status`` (and fail it)."""
        txn = call.invite_txn
        if not isinstance(txn, ServerTransaction) or txn.final_sent or call.invite is None:
            return
        resp = make_response(call.invite, status, reason, to_tag=call.local_tag)
        for name, value in headers or []:
            resp.headers.add(name, value)
        try:
            await self._respond(call, txn, resp)
        finally:  # even when sealing the answer failed, the call is over
            self.fail(call, status, resp.reason)

    async def abort(self, call: Call, status: int = 500, reason: str = "Server Internal Error",
                    headers: list[tuple[str, str]] | None = None) -> None:
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
                self.fail(call, status, reason)
            else:
                await self.reject(call, status, reason, headers)
        except Exception:  # noqa: BLE001 - the fault path itself failed: fall back below
            log.warning("%s side: ending a call after a fault failed", self.side, exc_info=True)
        if call.live:
            txn = call.invite_txn
            if isinstance(txn, ServerTransaction):
                try:
                    self.respond_plain(txn, status, reason, headers)
                except Exception:  # noqa: BLE001 - nothing more can be sent on this leg
                    log.warning("%s side: no final response possible", self.side, exc_info=True)
            if call.state is CallState.ESTABLISHED:
                self._end(call, status, reason)
            else:
                self.fail(call, status, reason)

    # -- the event loop ------------------------------------------------------------------------

    def _fault_answer(self, event: Event) -> tuple[int, str, list[tuple[str, str]]]:
        """The final response for a request whose handling raised: 503 + Retry-After when a
        dependency (store, crypto workers, network) failed (RFC 3261 §21.5.4), else 500 with a
        Warning (§21.5.1, §20.43) — never silence."""
        exc = self.events.error_of(event)
        if exc is not None and is_dependency_failure(exc):
            self.metrics.child(self.metrics.failures, "dependency").inc()
            return 503, "Service Unavailable", [("Retry-After", str(RETRY_AFTER_S))]
        self.metrics.child(self.metrics.failures, "internal").inc()
        return 500, "Server Internal Error", [("Warning", f'399 {self.address[0]} "internal fault, logged"')]

    def _after_fault(self, event: Event) -> None:
        """A fault while handling ``event``: end its call (and so the bridged one), or at
        least answer its request with 503 or 500 (:meth:`_fault_answer`)."""
        status, reason, headers = self._fault_answer(event)
        txn = getattr(event, "transaction", None) or getattr(event, "invite", None)
        call = self._by_txn.get(txn) if txn is not None else None
        if call is None and isinstance(event, RequestReceived):
            call = self._by_outer_cid.get(self._cid_key(call_id_of(event.request) or "",
                                                        self._local_user_or_none(event.request) or ""))
        if isinstance(txn, ServerTransaction) and (call is None or txn is not call.invite_txn):
            try:
                self.respond_plain(txn, status, reason, headers)
            except Exception:  # noqa: BLE001 - nothing more can be sent
                log.warning("%s side: no %d possible", self.side, status, exc_info=True)
        if call is not None:
            # not awaited: a BYE's response comes back on this Call-ID, queued behind this task
            self.spawn(self.abort(call, status, reason, headers))

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
                self.fail(call, 487, "Request Terminated")
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
        self.fail(call, 408, "Request Timeout")

    def _on_failure(self, txn: Transaction, status: int) -> None:
        if self._requests.fail(txn, status):
            return
        call = self._by_txn.pop(txn, None)
        if call is None:
            return
        if txn is call.invite_txn and call.direction == "outgoing" and call.state is not CallState.ESTABLISHED:
            self.fail(call, status, "INVITE failed")
        elif txn is call.invite_txn and call.state is CallState.ESTABLISHED and not call.acked:
            self.spawn(self.hangup(call))  # §13.3.1.4: our 2xx was never ACKed; end the session with BYE
        elif txn.request.method == "UPDATE" and call.state is CallState.ESTABLISHED:
            log.info("%s side: a session refresh got no answer (%d): ending the call", self.side, status)
            self.spawn(self.hangup(call))  # RFC 4028 §10: the far end is gone
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
        except Refused as refused:
            call.refused = refused.reason
            return None, None
        call.add_crypto(opening.op, opening.seconds)
        inner = opening.message
        assert isinstance(inner, Response)
        return inner, opening.signer

    async def _on_response(self, outer: Response, txn: ClientTransaction | None) -> None:
        if txn is None:  # a 2xx retransmission after the INVITE transaction ended: re-ACK
            if self._orphans and self._orphan_response(outer):
                return
            self._resend_ack(self._outgoing_cid.get(call_id_of(outer) or ""))
            return
        if self._requests.resolve(txn, outer):
            return
        call = self._by_txn.get(txn)
        if call is None:
            self._dropped("response", "no-call")
            return
        method = txn.request.method
        if call.state is CallState.ESTABLISHED and await self._on_established_response(call, method, outer):
            return
        size = len(outer.to_bytes())
        if outer.status == 100:
            self._record(call, "received", outer, outer, None, size)
            return
        inner, signer = await self._open_or_error(call, outer, method)
        if inner is None:
            return
        if call.secure and inner is outer and (outer.status < 300):
            # an unsecured 1xx/2xx for a secured call: never trust it (a 2xx could hijack the call)
            self.metrics.rejections.labels("not-secured").inc()
            self._dropped("response", "not-secured")
            return
        self._record(call, "received", outer, inner, signer, size)
        if method == "INVITE":
            await self._on_invite_response(call, txn, inner)
        elif method == "BYE" and inner.status >= 200:
            call.bye_phrase = inner.reason
            self._bye_answered(txn, call, inner.status)

    async def _open_or_error(self, call: Call, outer: Response, method: str) -> tuple[Response | None, str | None]:
        """The inner response; a final error to an INVITE that does not open (a proxy rewrote it:
        503 -> 500, RFC 3261 §16.7) is trusted as an unsecured error is — the INVITE transaction
        is over, so is the call; anything else that does not open is dropped (counted)."""
        inner, signer = await self._open_response(call, outer)
        if inner is not None:
            return inner, signer
        self._dropped("response", "refused")
        if method == "INVITE" and outer.status >= 300:
            return outer, None
        if method == "INVITE" and outer.status >= 200 and call.refused == "stale" and call.live \
                and call.state is not CallState.ESTABLISHED:
            # the answer is signed outside our time window (clock skew): this call cannot be set
            # up; the caller hears so now, and the 2xx is still ACKed and its session ended
            # with BYE (RFC 3261 §13.2.2.4), so that the callee's side is released at once
            self.fail(call, 403, "Clock Skew")
            self.spawn(self._end_stale_2xx(call, outer))
        return None, None

    async def _end_stale_2xx(self, call: Call, outer: Response) -> None:
        """ACK a 2xx refused as stale (signed outside the time window) and end its session with
        a signed BYE, sent again while the skewed far end refuses it (``403 Clock Skew``).

        The 2xx is opened once more with the dialog's lifetime as the window, only to learn the
        dialog (the To tag and Contact are bound to the inner message, the outer tag is a MAC
        of the inner one): everything else is checked as usual (the dialog key this INVITE
        created, the signature, the binding), and the call stays failed."""
        keys = self.owner.user_keys(call.local_aor)
        if keys is None or call.invite is None or call.ack_outer is not None:
            return
        try:
            opening = await self.io.open(outer, keys.keyring(), call.local_aor, window_s=self.dialog_ttl_s)
        except Refused:
            return  # counted and logged; the callee's side ends when its 2xx is not ACKed
        inner = opening.message
        if not isinstance(inner, Response) or not 200 <= inner.status < 300 or call.ack_outer is not None:
            return
        try:
            dialog = Dialog.from_uac_response(call.invite, inner)
        except SipError as exc:
            log.warning("%s side: a stale 2xx cannot be ACKed: %s", self.side, exc)
            return
        call.dialog = dialog
        ack = dialog.create_ack(self.via())
        await self._send_request(call, ack, self._in_dialog_peer(ack, call))
        bye = dialog.create_request("BYE", self.via())
        dest = self._in_dialog_peer(bye, call)
        dialog.terminate()
        deadline = time.monotonic() + self.bye_retry_s
        status = await self._send_bye(call, bye, dest, _RESPONSE_TIMEOUT_S)
        log.info("%s side: a 2xx refused as stale was ACKed and its session ended with BYE (%d)",
                 self.side, status)
        if self.bye_retry_s > 0 and _bye_retryable(status, call.bye_phrase):
            self.spawn(self._retry_bye(call, bye, dest, deadline))

    async def _on_established_response(self, call: Call, method: str, outer: Response) -> bool:
        """A retransmitted 2xx of the INVITE (ACKed again) or the answer to a session refresh; False: neither."""
        if method == "UPDATE" and outer.status >= 200:
            inner, _ = await self._open_response(call, outer)
            self._refresh_answered(call, inner or outer)
            return True
        if method == "INVITE" and 200 <= outer.status < 300:
            self._resend_ack(call)
            return True
        return False

    def _dropped(self, kind: str, reason: str) -> None:
        """Count (and log) a received message that is not acted on."""
        self.metrics.child(self.metrics.dropped, kind, reason).inc()
        log.info("%s side: %s dropped (%s)", self.side, kind, reason)

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
            self.fail(call, status, resp.reason)
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
            self.fail(call, 502, "unusable 2xx")
            return
        call.remote_sdp = resp.body
        call.status = status
        call.reason = resp.reason
        call.setup_s = time.perf_counter() - call.started
        call.move(CallState.ESTABLISHED)
        self.metrics.child(self.metrics.call_setups, "answered", _b(call.secure)).inc()
        tracing.end_setup(call.id, "answered", status)
        self.metrics.child(self.metrics.setup_latency, _b(call.secure)).observe(call.setup_s)
        self.metrics.child(self.metrics.dialogs, _b(call.secure)).inc()
        call.counted = True
        if call.setup_done is not None and not call.setup_done.done():
            call.setup_done.set_result(None)
        ack = call.dialog.create_ack(self.via())
        offered_timer = (call.secure or call.offer_timer) and call.invite.headers.get("Session-Expires")
        if offered_timer:
            call.session = sessiontimer.from_response(resp)
        try:  # kept before the ACK: a restart in between finds an established leg to end with BYE
            await self.save(call)
        finally:
            await self._send_request(call, ack, self._in_dialog_peer(ack, call))
        if offered_timer:
            self._arm_session(call)
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

    def fail(self, call: Call, status: int, reason: str) -> None:
        """End ``call`` with ``status``: BYE when it is established, else the final answer to
        its caller (and the call's end recorded); nothing when it has ended already."""
        if not call.live:
            return
        if call.state is CallState.ESTABLISHED:
            self._end(call, status, reason)
            return
        call.status = status
        call.reason = reason
        call.move(CallState.FAILED)
        outcome = setup_outcome(status)
        self.metrics.child(self.metrics.call_setups, outcome, _b(call.secure)).inc()
        tracing.end_setup(call.id, outcome, status)
        if call.setup_done is not None and not call.setup_done.done():
            call.setup_done.set_exception(CallFailed(status, reason))
            call.setup_done.exception()  # retrieved: a caller that stopped waiting is no error
        call.ended.set()
        self._retire(call)
        if call.setup_kept:  # the phone leg's setup record: nothing left to end after a restart
            call.setup_kept = False
            self.spawn(self.shared.forget(call))
        self.owner.on_ended(call)

    def _end(self, call: Call, status: int | None, reason: str) -> None:
        if call.state is not CallState.ESTABLISHED:
            return
        self._disarm_session(call)
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

    @tracing.setup_scope("incoming", when=lambda _agent, outer, *_: outer.method == "INVITE" and outer.to_tag is None)
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
        if outer.method == "INVITE" and outer.to_tag is None and not self.owner.accepting_calls():
            # draining (SIGTERM) or not started: a new call goes elsewhere, calls in progress go on
            self.metrics.child(self.metrics.dropped, "request", "draining").inc()
            self.respond_plain(txn, 503, "Service Unavailable", [("Retry-After", str(RETRY_AFTER_S))])
            return
        if outer.method == "INVITE" and outer.to_tag is None and self.owner.at_call_limit():
            # SIPSEC_GATEWAY_MAX_CALL_LEGS in progress: new calls wait, the ones up go on
            self.metrics.child(self.metrics.dropped, "request", "call-limit").inc()
            self.respond_plain(txn, 503, "Service Unavailable", [("Retry-After", str(RETRY_AFTER_S))])
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
        if (keys is None or local is None) and outer.to_tag is not None and self.owner.restoring():
            # an in-dialog request (a BYE) while a restarted gateway logs its users in again:
            # the sender tries again shortly and then finds the call's record
            self.metrics.child(self.metrics.dropped, "request", "restoring").inc()
            self.respond_plain(txn, 503, "Service Unavailable", [("Retry-After", str(RESTORING_RETRY_AFTER_S))])
            return
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
            if method == "BYE" and (secured or self.side == "plain"):
                await self._bye_from_store(req, txn)
                return
            call = await self._adopt_by_call_id(req.call_id) if method in ("UPDATE", "INVITE") else None
            if call is None or call.dialog is None:
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
        if method in ("INVITE", "UPDATE"):  # a re-INVITE or UPDATE: also a session refresh (RFC 4028 §9)
            ok = make_response(req, 200)
            ok.headers.add("Contact", f"<{self.contact_uri(call.local_aor, call.call_id)}>")
            self._refreshed_by_peer(call, req, ok)
            if call.local_sdp and (method == "INVITE" or req.body):
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
            # a secured call, or a phone's call when the phone supports timers: a phone that
            # vanishes then stops refreshing, and the call ends by itself (RFC 4028 §10)
            timed = call.secure or (not self.secured and sessiontimer.supports_timer(req))
            timer = sessiontimer.answer(req, self.session_expires_s, self.min_se_s) if timed else None
            if timer == 422:  # RFC 4028 §9: the interval offered is below our Min-SE
                await self.reject(call, 422, "Session Interval Too Small", [("Min-SE", str(self.min_se_s))])
                return
            call.session = timer if isinstance(timer, sessiontimer.SessionTimer) else None
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
            self._dropped("ack", "no-call")
            return
        inner: Request | None = outer
        signer = None
        if call.secure:
            keys = self.owner.user_keys(call.local_aor)
            if keys is None or not is_secured(outer):
                self._dropped("ack", "not-secured" if keys is not None else "not-logged-in")
                return
            try:
                opening = await self.io.open(outer, keys.keyring(), call.local_aor, retransmission_ok=True)
            except Refused:
                self._dropped("ack", "refused")
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

    # -- session timers (RFC 4028) -------------------------------------------------------------

    def _disarm_session(self, call: Call) -> None:
        if call.session_handle is not None:
            call.session_handle.cancel()
            call.session_handle = None

    def _arm_session(self, call: Call, retry: bool = False) -> None:
        """Arm the call's next session-timer event: our refresh at half the interval (§10; an
        eighth after a refresh that failed), or, when the far end refreshes, the expiry that ends the call."""
        self._disarm_session(call)
        if call.session is None or call.state is not CallState.ESTABLISHED:
            return
        loop = asyncio.get_running_loop()
        if call.session.we_refresh(call.direction == "outgoing"):
            delay = max(1.0, call.session.interval / 8) if retry else call.session.interval / 2
            call.session_handle = loop.call_later(delay, self._session_event, call, True)
        else:
            call.session_handle = loop.call_later(sessiontimer.expiry_after(call.session.interval),
                                                  self._session_event, call, False)

    def _session_event(self, call: Call, refresh: bool) -> None:
        call.session_handle = None
        if call.state is not CallState.ESTABLISHED:
            return
        if refresh:
            self.spawn(self._refresh(call))
        else:
            log.info("%s side: no session refresh in time (RFC 4028 §10): ending the call", self.side)
            self.metrics.session_expiries.inc()
            self.spawn(self.hangup(call))

    async def _refresh(self, call: Call) -> None:
        """Send the session refresh: an UPDATE without a body (RFC 3311, RFC 4028 §7.4)."""
        assert call.session is not None and call.dialog is not None
        upd = call.dialog.create_request("UPDATE", self.via(), headers=[
            ("Contact", f"<{self.contact_uri(call.local_aor, call.call_id)}>"),
            ("Supported", "timer"), ("Session-Expires", call.session.header())])
        await self._send_request(call, upd, self._in_dialog_peer(upd, call))

    def _refresh_answered(self, call: Call, resp: Response) -> None:
        """Our refresh was answered: 2xx arms the next one; 408/481 mean the far end lost the
        dialog (BYE, §10); 405/501 (it takes no UPDATE) stop the timer; another error (a proxy's
        503 while the far end restarts) is retried soon."""
        if 200 <= resp.status < 300:
            call.session = sessiontimer.from_response(resp) or call.session
            self._arm_session(call)
            self.spawn(self.shared.renew(call))  # the records live on with the call
        elif resp.status in (408, 481):
            self.spawn(self.hangup(call))
        elif resp.status in (405, 501):
            log.info("%s side: the far end takes no session refresh (%d): timer off", self.side, resp.status)
            call.session = None
        else:
            self._arm_session(call, retry=True)

    def _refreshed_by_peer(self, call: Call, req: Request, ok: Response) -> None:
        """A re-INVITE/UPDATE from the far end refreshes the session (§9): answer its interval, re-arm."""
        parsed = sessiontimer.parse(req.headers.get("Session-Expires"))
        if parsed is not None:
            refresher = parsed[1] or (call.session.refresher if call.session is not None else "uac")
            call.session = sessiontimer.SessionTimer(max(parsed[0], self.min_se_s), refresher)
        if call.session is not None:
            ok.headers.add("Session-Expires", call.session.header())
            ok.headers.add("Require", "timer")
            self._arm_session(call)
            self.spawn(self.shared.renew(call))  # the records live on with the call

    # -- dialog state shared by replicas -------------------------------------------------------

    async def save(self, call: Call) -> None:
        """Keep what another replica needs to continue this dialog (hang up, answer a BYE)."""
        await self.shared.save(call)

    async def _bye_from_store(self, req: Request, txn: ServerTransaction) -> None:
        """A BYE for a dialog another replica (or this one before a restart) established: answer
        it from the shared state, and end the leg bridged to it (the owner does)."""
        record = await self.shared.by_call_id(req.call_id)
        key = await self.shared.key_of(record) if record is not None and self.secured else None
        if record is None or (self.secured and key is None):
            self.respond_plain(txn, 481, "Call/Transaction Does Not Exist")
            return
        call = self.new_call(direction=record["direction"], local_aor=record["local_aor"],
                             peer_aor=record["peer_aor"], secure=key is not None, call_id=record["call_id"])
        call.key = key
        call.move(CallState.ESTABLISHED)
        call.move(CallState.ENDED)
        call.reason = "remote hangup (continued from another replica)"
        await self._respond(call, txn, make_response(req, 200))
        await self.shared.delete(record)
        call.ended.set()
        self._retire(call)
        self.owner.on_record_ended(record)

    async def hangup_from_store(self, record: dict[str, Any]) -> int:
        """Send the BYE of a dialog another replica (or this one before a restart) established
        (the shared state has all it needs); the owner then ends the leg bridged to it."""
        call = await self._adopt(record)
        if call is None:
            raise CallFailed(410, "the dialog key has expired")
        return await self.hangup(call)

    async def _adopt_by_call_id(self, sip_call_id: str) -> Call | None:
        record = await self.shared.by_call_id(sip_call_id)
        return await self._adopt(record) if record is not None else None

    async def _adopt(self, record: dict[str, Any]) -> Call | None:
        """Continue here, as an established call, a dialog another replica (or this one before a
        restart) established: from its record (and dialog key); None once the key expired. When it
        ends, the owner ends the leg bridged to it from that leg's record (``adopted_bridge``)."""
        key = await self.shared.key_of(record) if self.secured else None
        if self.secured and key is None:
            return None
        call = self.new_call(direction=record["direction"], local_aor=record["local_aor"],
                             peer_aor=record["peer_aor"], secure=key is not None, call_id=record["call_id"])
        del self.calls[call.id]
        call.id = record["id"]
        self.calls[call.id] = call
        call.key = key
        call.dialog = dialog_from_record(record)
        peer = record.get("peer")
        if isinstance(peer, list) and len(peer) == 3:
            call.dest = Peer(str(peer[0]), str(peer[1]), int(peer[2]))
        call.move(CallState.ESTABLISHED)
        call.acked = True
        bridge = record.get("bridge")
        call.adopted_bridge = bridge if isinstance(bridge, str) else None
        self._map(call, key.outer_call_id() if key is not None else call.call_id)
        return call

    # -- out-of-dialog non-INVITE requests (REGISTER) ------------------------------------------

    async def request(self, outer: Request, dest: Peer, timeout: float = _RESPONSE_TIMEOUT_S) -> Response:
        """Send ``outer`` in a client transaction; its final response (CallFailed 408 without one)."""
        return await self._requests.send(outer, dest, timeout)


def _b(flag: bool) -> str:
    return "true" if flag else "false"


def _bye_retryable(status: int, phrase: str) -> bool:
    """Whether a BYE answered ``status`` (``phrase``) is worth sending again."""
    return status in _BYE_RETRYABLE or (status == 403 and "skew" in phrase.lower())
