"""A test-driver SIP user agent on the asyncio endpoint: places and answers calls (RFC 3261 §13–15).

The product's user agent is the UA gateway's (:mod:`sipsec_gateway.calls`); this one plays
the *phones* in tests (the gateway's plain side, sipp peers, the endpoint shell).

It uses the sans-IO transaction core (:class:`~sipsec.sip.core.SipCore`, UA mode: 100
Trying, 2xx retransmission until ACK, CANCEL/487) and dialogs (:mod:`sipsec.sip.dialog`).

- **Placing a call** (:meth:`UserAgent.call`): INVITE with a static SDP offer → 1xx (an
  early dialog when it carries a To tag) → 2xx → ACK (sent by the TU, §13.2.2.4; resent for
  every 2xx retransmission) → :meth:`UserAgent.hangup` sends BYE and waits for its final
  response.
- **Answering** (``auto_answer=True``): an out-of-dialog INVITE gets 100 (from the core),
  180 Ringing and 200 OK with a static SDP answer; the call is established when the ACK
  arrives; a BYE in the dialog gets 200 and ends it. ``auto_answer=False`` leaves ringing
  calls on :attr:`UserAgent.incoming` for :meth:`UserAgent.answer` / :meth:`UserAgent.reject`.
- **Other requests** (:meth:`UserAgent.request`, :meth:`UserAgent.register`): one
  non-INVITE client transaction, answering one 401/407 with Digest credentials.
- OPTIONS gets 200; other out-of-dialog methods 405; requests for unknown dialogs 481;
  out-of-order in-dialog CSeq 500 (§12.2.2).

The SDP is a fixed audio offer/answer (PCMU); no media is sent — this UA exists to drive
signalling (tests against sipp, the UA gateway's plain side).
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field

from sipsec.aio import Peer, SipEndpoint, via_destination
from sipsec.aio.pending import PendingRequests
from sipsec.sip import (
    CancelReceived,
    Event,
    RemoteProtocolError,
    RequestReceived,
    ResponseReceived,
    SipError,
    TransactionTimeout,
    TransportError,
)
from sipsec.sip.dialog import Dialog, DialogState, DialogTable, next_hop
from sipsec.sip.digest import DigestClient, select_challenge
from sipsec.sip.headers import Headers, NameAddr
from sipsec.sip.message import Request, Response, generate_call_id, generate_tag, make_response
from sipsec.sip.transaction import ClientTransaction, ServerTransaction, Transaction
from sipsec.sip.uri import SipURI, parse_uri
from sipsec_gateway.routing import peer_for_uri
from sipsec_gateway.sdp import static_sdp

__all__ = ["Call", "CallFailed", "CallState", "UserAgent", "peer_for_uri", "static_sdp"]

log = logging.getLogger("tests.sipua")

ALLOW = "INVITE, ACK, BYE, CANCEL, OPTIONS"


class CallState(enum.Enum):
    """Where a call stands, from this UA's point of view."""

    CALLING = "calling"  # INVITE sent / received, no final response yet
    EARLY = "early"  # a 1xx with a To tag created an early dialog
    ANSWERED = "answered"  # UAS: 200 sent, waiting for the ACK
    ESTABLISHED = "established"  # UAC: 2xx received and ACKed; UAS: ACK received
    TERMINATED = "terminated"  # BYE done, or the INVITE failed / was cancelled


class CallFailed(SipError):
    """An outgoing call got a final non-2xx response, timed out or could not be sent."""

    def __init__(self, status: int, reason: str) -> None:
        self.status = status
        self.reason = reason
        super().__init__(f"{status} {reason}")


@dataclass(eq=False)
class Call:
    """One call (INVITE dialog) of the UA."""

    direction: str  # "outgoing" or "incoming"
    call_id: str
    peer: Peer
    invite: Request
    state: CallState = CallState.CALLING
    dialog: Dialog | None = None
    #: every status this call saw (received as UAC, sent as UAS), in order
    statuses: list[int] = field(default_factory=list)
    final_status: int | None = None
    remote_sdp: bytes = b""
    established: asyncio.Event = field(default_factory=asyncio.Event)
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    invite_txn: ClientTransaction | ServerTransaction | None = None
    ack: Request | None = None
    ack_peer: Peer | None = None
    local_tag: str = ""
    _setup: asyncio.Future[None] | None = None
    _bye: asyncio.Future[int] | None = None
    acks_sent: int = 0
    challenge: Response | None = None  # the final 401/407, when the INVITE was challenged
    txns: list[Transaction] = field(default_factory=list)  # this call's transactions

    def _finish_setup(self, error: BaseException | None = None) -> None:
        fut = self._setup
        if fut is not None and not fut.done():
            if error is None:
                fut.set_result(None)
            else:
                fut.set_exception(error)

    def _end(self, status: int | None = None) -> None:
        self.state = CallState.TERMINATED
        if status is not None and self.final_status is None:
            self.final_status = status
        if self.dialog is not None:
            self.dialog.terminate()
        self.ended.set()


class UserAgent:
    """A user agent bound to one :class:`SipEndpoint` (it becomes the endpoint's handler).

    ``user`` is the user part of From/Contact; ``transport`` the default transport for
    calls; ``auto_answer`` answers incoming INVITEs at once (180 then 200).
    """

    def __init__(
        self,
        endpoint: SipEndpoint,
        *,
        user: str = "sipsec",
        transport: str = "UDP",
        auto_answer: bool = True,
        sdp: bytes | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.user = user
        self.default_transport = transport.upper()
        self.auto_answer = auto_answer
        self._sdp = sdp
        self.dialogs = DialogTable()
        self.calls: dict[str, Call] = {}  # by Call-ID (a UA's Call-IDs are unique per call)
        self._by_txn: dict[Transaction, Call] = {}
        self._requests = PendingRequests(endpoint, CallFailed)  # out-of-dialog
        self.incoming: asyncio.Queue[Call] = asyncio.Queue()
        self.completed_calls = 0
        endpoint.handler = self.handle_event

    # -- addresses ----------------------------------------------------------------------------

    def contact(self, transport: str) -> NameAddr:
        t = self.endpoint.transport(transport)
        host, port = t.local_address
        params: dict[str, str | None] = {} if t.name == "UDP" else {"transport": t.name.lower()}
        scheme = "sips" if t.name == "TLS" else "sip"
        return NameAddr(SipURI(scheme, self.user, None, host, port, params, {}))

    def sdp(self, transport: str) -> bytes:
        if self._sdp is not None:
            return self._sdp
        return static_sdp(self.endpoint.transport(transport).local_address[0])

    # -- placing calls ------------------------------------------------------------------------

    async def call(
        self,
        target: str | SipURI,
        *,
        peer: Peer | None = None,
        timeout: float = 32.0,
        credentials: DigestClient | None = None,
    ) -> Call:
        """INVITE ``target`` and return once the 2xx is ACKed (raises :class:`CallFailed`).

        ``peer`` is where the INVITE goes (default: from the target URI, or its
        ``transport`` parameter). With ``credentials``, one 401/407 is answered: the INVITE
        is re-sent with Digest credentials, the same Call-ID and From tag, CSeq + 1 (§22.2).
        """
        uri = parse_uri(target) if isinstance(target, str) else target
        dest = peer or peer_for_uri(uri, self.default_transport)
        transport = dest.transport
        contact = self.contact(transport)
        host = self.endpoint.transport(transport).local_address[0]
        scheme = "sips" if transport == "TLS" else "sip"
        local = NameAddr(SipURI(scheme, self.user, None, host, None, {}, {}), None,
                         {"tag": generate_tag()})
        call_id = generate_call_id()
        h = Headers()
        h.add("Via", self.endpoint.via(transport))
        h.add("Max-Forwards", "70")
        h.add("From", str(local))
        h.add("To", f"<{uri}>")
        h.add("Call-ID", call_id)
        h.add("CSeq", "1 INVITE")
        h.add("Contact", str(contact))
        h.add("Allow", ALLOW)
        h.add("Content-Type", "application/sdp")
        invite = Request("INVITE", uri, h, self.sdp(transport))
        call = await self._invite(invite, call_id, dest, local.tag or "", timeout)
        if call.final_status not in (401, 407) or credentials is None:
            if call.final_status is not None and call.final_status >= 300:
                raise CallFailed(call.final_status, "INVITE refused")
            return call
        header = "WWW-Authenticate" if call.final_status == 401 else "Proxy-Authenticate"
        challenged = call.challenge
        assert challenged is not None
        challenge = select_challenge(challenged.headers.get_all_raw(header))
        creds = credentials.authorize(challenge, "INVITE", str(uri), body=invite.body)
        retry = invite.copy()
        retry.headers.set("Via", self.endpoint.via(transport))
        retry.headers.set("CSeq", "2 INVITE")
        retry.headers.add("Authorization" if call.final_status == 401 else "Proxy-Authorization",
                          creds.to_header())
        call = await self._invite(retry, call_id, dest, local.tag or "", timeout)
        if call.final_status is not None and call.final_status >= 300:
            raise CallFailed(call.final_status, "INVITE refused")
        return call

    async def _invite(self, invite: Request, call_id: str, dest: Peer, tag: str, timeout: float) -> Call:
        """Send ``invite``; the call once it is established or failed (a failure is not raised)."""
        loop = asyncio.get_running_loop()
        call = Call("outgoing", call_id, dest, invite, local_tag=tag)
        call._setup = loop.create_future()
        self.calls[call_id] = call
        txn = self.endpoint.send_request(invite, dest)
        assert txn is not None
        call.invite_txn = txn
        self._track(txn, call)
        try:
            await asyncio.wait_for(asyncio.shield(call._setup), timeout)
        except TimeoutError:
            self.cancel(call)
            self._terminate(call, 408)
            raise CallFailed(408, "no final response in time") from None
        except CallFailed:
            pass
        return call

    # -- out-of-dialog requests (OPTIONS, REGISTER, MESSAGE...) ----------------------------------

    async def request(
        self,
        method: str,
        target: str | SipURI,
        *,
        peer: Peer | None = None,
        to: str | None = None,
        from_aor: str | None = None,
        headers: Iterable[tuple[str, str]] = (),
        body: bytes = b"",
        content_type: str | None = None,
        credentials: DigestClient | None = None,
        timeout: float = 32.0,
    ) -> Response:
        """Send an out-of-dialog non-INVITE request and return its final response.

        ``to`` / ``from_aor`` default to the target URI / ``sip:user@<our address>``; a
        REGISTER gets our Contact. With ``credentials``, one 401/407 is answered with Digest
        credentials (RFC 3261 §22.2, RFC 8760) and the request is re-sent with CSeq + 1.
        A timeout or transport error raises :class:`CallFailed` (408 / 503).
        """
        if method in ("INVITE", "ACK", "CANCEL", "BYE"):
            raise SipError(f"use call()/hangup()/cancel() for {method}")
        uri = parse_uri(target) if isinstance(target, str) else target
        dest = peer or peer_for_uri(uri, self.default_transport)
        transport = dest.transport
        host = self.endpoint.transport(transport).local_address[0]
        scheme = "sips" if transport == "TLS" else "sip"
        from_text = f"<{from_aor}>" if from_aor else f"<{scheme}:{self.user}@{host}>"
        to_text = f"<{to}>" if to else f"<{uri}>"
        call_id = generate_call_id()
        from_tag = generate_tag()
        extra = list(headers)
        auth: tuple[str, str] | None = None
        seq = 1
        for _attempt in range(2):
            h = Headers()
            h.add("Via", self.endpoint.via(transport))
            h.add("Max-Forwards", "70")
            h.add("From", f"{from_text};tag={from_tag}")
            h.add("To", to_text)
            h.add("Call-ID", call_id)
            h.add("CSeq", f"{seq} {method}")
            if method == "REGISTER":
                h.add("Contact", str(self.contact(transport)))
            if auth is not None:
                h.add(*auth)
            for name, value in extra:
                h.add(name, value)
            if body and content_type is not None:
                h.add("Content-Type", content_type)
            req = Request(method, uri, h, body)
            resp = await self._transact(req, dest, timeout)
            if resp.status not in (401, 407) or credentials is None or auth is not None:
                return resp
            header = "WWW-Authenticate" if resp.status == 401 else "Proxy-Authenticate"
            try:
                challenge = select_challenge(resp.headers.get_all_raw(header))
                creds = credentials.authorize(challenge, method, str(uri), body=body)
            except SipError:
                return resp
            auth = ("Authorization" if resp.status == 401 else "Proxy-Authorization",
                    creds.to_header())
            seq += 1
        return resp

    async def register(
        self,
        registrar: str | SipURI,
        aor: str,
        *,
        expires: int = 3600,
        peer: Peer | None = None,
        credentials: DigestClient | None = None,
        timeout: float = 32.0,
    ) -> Response:
        """REGISTER our Contact for ``aor`` at ``registrar`` (RFC 3261 §10.2); the final response."""
        return await self.request(
            "REGISTER", registrar, peer=peer, to=aor, from_aor=aor,
            headers=[("Expires", str(expires))], credentials=credentials, timeout=timeout,
        )

    async def _transact(self, request: Request, dest: Peer, timeout: float) -> Response:
        return await self._requests.send(request, dest, timeout)

    def cancel(self, call: Call) -> None:
        """CANCEL an outgoing call still ringing (§9.1); :meth:`call` then raises with 487.

        The CANCEL goes out once a provisional response has arrived (the core defers it
        until then); it does nothing after a final response.
        """
        txn = call.invite_txn
        if isinstance(txn, ClientTransaction) and not txn.terminated:
            self.endpoint.cancel(txn)

    async def hangup(self, call: Call, timeout: float = 32.0) -> int:
        """End an established call with BYE (§15.1.1); returns the BYE's final status."""
        dialog = call.dialog
        if dialog is None or dialog.state is DialogState.TERMINATED:
            raise SipError("the call has no live dialog")
        peer_transport = call.peer.transport
        bye = dialog.create_request("BYE", self.endpoint.via(peer_transport))
        dest = self._in_dialog_peer(bye, call)
        call._bye = asyncio.get_running_loop().create_future()
        txn = self.endpoint.send_request(bye, dest)
        assert txn is not None
        self._track(txn, call)
        try:
            status = await asyncio.wait_for(asyncio.shield(call._bye), timeout)
        except TimeoutError:
            status = 408
        self._terminate(call, None)
        return status

    def _in_dialog_peer(self, request: Request, call: Call) -> Peer:
        try:
            return peer_for_uri(next_hop(request), call.peer.transport)
        except SipError:
            return call.peer

    # -- answering ---------------------------------------------------------------------------

    def answer(self, call: Call) -> None:
        """Send 200 OK with the SDP answer to a ringing incoming call."""
        txn = call.invite_txn
        if not isinstance(txn, ServerTransaction) or txn.final_sent:
            raise SipError("the call is not ringing")
        transport = call.peer.transport
        ok = make_response(call.invite, 200, to_tag=call.local_tag)
        ok.headers.add("Contact", str(self.contact(transport)))
        ok.headers.add("Allow", ALLOW)
        ok.headers.add("Content-Type", "application/sdp")
        ok.body = self.sdp(transport)
        call.dialog = Dialog.from_uas_response(call.invite, ok)
        self.dialogs.add(call.dialog)
        call.state = CallState.ANSWERED
        call.statuses.append(200)
        self.endpoint.send_response(txn, ok)

    def reject(self, call: Call, status: int = 486) -> None:
        """Answer a ringing incoming call with a final error (486 Busy Here by default)."""
        txn = call.invite_txn
        if not isinstance(txn, ServerTransaction) or txn.final_sent:
            raise SipError("the call is not ringing")
        call.statuses.append(status)
        self.endpoint.send_response(txn, make_response(call.invite, status, to_tag=call.local_tag))
        self._terminate(call, status)

    # -- events -----------------------------------------------------------------------------

    def handle_event(self, event: Event) -> None:
        """The endpoint's handler: dispatch one core event."""
        if isinstance(event, RequestReceived):
            self._on_request(event.request, event.transaction, event.addr)
        elif isinstance(event, ResponseReceived):
            self._on_response(event.response, event.transaction)
        elif isinstance(event, CancelReceived):
            call = self._by_txn.get(event.invite)
            if call is not None and event.answered_487:
                call.statuses.append(487)
                self._terminate(call, 487)
        elif isinstance(event, TransactionTimeout | TransportError):
            self._on_failure(event.transaction, event)

    def _on_failure(self, txn: Transaction, event: Event) -> None:
        if self._requests.fail(txn, 408 if isinstance(event, TransactionTimeout) else 503):
            return
        call = self._by_txn.get(txn)
        if call is None:
            return
        status = 408 if isinstance(event, TransactionTimeout) else 503
        if txn is call.invite_txn:
            if call.direction == "outgoing":
                call._finish_setup(CallFailed(status, "INVITE failed"))
                self._terminate(call, status)
            elif call.state is CallState.ANSWERED:
                # §13.3.1.4: the 2xx was never ACKed; end the session with BYE.
                asyncio.get_running_loop().create_task(self._bye_quietly(call))
        elif call._bye is not None and not call._bye.done():
            call._bye.set_result(status)

    async def _bye_quietly(self, call: Call) -> None:
        try:
            await self.hangup(call, timeout=10.0)
        except SipError:
            self._terminate(call, None)

    # UAC side

    def _on_response(self, resp: Response, txn: ClientTransaction | None) -> None:
        if txn is None:
            # A 2xx retransmission after the INVITE transaction ended (RFC 6026 §8.4): re-ACK.
            self._reack(resp)
            return
        call = None if self._requests.resolve(txn, resp) else self._by_txn.get(txn)
        if call is None:  # an out-of-dialog request's response (resolved), or no call's
            return
        method = txn.request.method
        status = resp.status
        if method == "INVITE":
            self._on_invite_response(call, txn, resp)
        elif method == "BYE" and status >= 200:
            call.statuses.append(status)
            if call._bye is not None and not call._bye.done():
                call._bye.set_result(status)
            self._by_txn.pop(txn, None)

    def _on_invite_response(self, call: Call, txn: ClientTransaction, resp: Response) -> None:
        status = resp.status
        if call.state is CallState.ESTABLISHED and 200 <= status < 300:
            self._send_ack(call)  # a retransmitted 2xx: the TU ACKs again (§13.2.2.4)
            return
        call.statuses.append(status)
        if status < 200:
            if status > 100 and resp.to.tag and call.dialog is None:
                try:
                    call.dialog = Dialog.from_uac_response(call.invite, resp)
                    call.state = CallState.EARLY
                except SipError:
                    pass  # no Contact: no early dialog, the 2xx will create it
            return
        if status >= 300:
            if status in (401, 407):
                call.challenge = resp
            call._finish_setup(CallFailed(status, resp.reason))
            self._terminate(call, status)
            return
        try:
            if call.dialog is None or call.dialog.id.remote_tag != resp.to.tag:
                call.dialog = Dialog.from_uac_response(call.invite, resp)
            else:
                call.dialog.receive_response(call.invite, resp)
        except SipError as exc:
            log.warning("unusable 2xx to INVITE: %s", exc)
            call._finish_setup(CallFailed(502, "unusable 2xx"))
            self._terminate(call, 502)
            return
        self.dialogs.add(call.dialog)
        call.remote_sdp = resp.body
        call.final_status = status
        call.ack = call.dialog.create_ack(self.endpoint.via(call.peer.transport))
        call.ack_peer = self._in_dialog_peer(call.ack, call)
        self._send_ack(call)
        call.state = CallState.ESTABLISHED
        call.established.set()
        call._finish_setup()

    def _send_ack(self, call: Call) -> None:
        if call.ack is None or call.ack_peer is None:
            return
        call.acks_sent += 1
        self.endpoint.send_request(call.ack, call.ack_peer)

    def _reack(self, resp: Response) -> None:
        try:
            if resp.cseq.method != "INVITE" or not 200 <= resp.status < 300:
                return
            dialog = self.dialogs.for_response(resp)
        except RemoteProtocolError:
            return
        call = self.calls.get(dialog.id.call_id) if dialog is not None else None
        if call is not None:
            self._send_ack(call)

    # UAS side

    def _on_request(
        self, req: Request, txn: ServerTransaction | None, addr: Peer | None
    ) -> None:
        method = req.method
        if method == "ACK":
            self._on_ack(req)
            return
        if txn is None:
            return
        if req.to.tag is not None:
            self._in_dialog(req, txn)
            return
        if method == "INVITE":
            self._new_incoming(req, txn, addr)
        elif method == "OPTIONS":
            ok = make_response(req, 200, to_tag=generate_tag())
            ok.headers.add("Allow", ALLOW)
            self.endpoint.send_response(txn, ok)
        elif method == "BYE":
            self.endpoint.send_response(txn, make_response(req, 481, to_tag=generate_tag()))
        else:
            resp = make_response(req, 405, to_tag=generate_tag())
            resp.headers.add("Allow", ALLOW)
            self.endpoint.send_response(txn, resp)

    def _new_incoming(self, req: Request, txn: ServerTransaction, addr: Peer | None) -> None:
        if isinstance(addr, Peer):
            peer = addr
        else:  # fed by hand without an address: answer where the top Via says (§18.2.2)
            top = req.via[0]
            peer = Peer(top.transport, *via_destination(top, top.transport))
        call = Call("incoming", req.call_id, peer, req, invite_txn=txn, local_tag=generate_tag())
        call.remote_sdp = req.body
        self.calls[req.call_id] = call
        self._track(txn, call)
        ringing = make_response(req, 180, to_tag=call.local_tag)
        ringing.headers.add("Contact", str(self.contact(peer.transport)))
        call.statuses.append(180)
        self.endpoint.send_response(txn, ringing)
        if self.auto_answer:
            self.answer(call)
        else:
            self.incoming.put_nowait(call)

    def _on_ack(self, ack: Request) -> None:
        try:
            dialog = self.dialogs.for_request(ack)
        except RemoteProtocolError:
            return
        if dialog is None:
            return
        call = self.calls.get(dialog.id.call_id)
        if call is not None and call.state is CallState.ANSWERED:
            call.state = CallState.ESTABLISHED
            call.established.set()

    def _in_dialog(self, req: Request, txn: ServerTransaction) -> None:
        dialog = self.dialogs.for_request(req)
        if dialog is None:
            self.endpoint.send_response(txn, make_response(req, 481))
            return
        reject = dialog.receive_request(req)
        if reject is not None:
            self.endpoint.send_response(txn, make_response(req, reject))
            return
        call = self.calls.get(dialog.id.call_id)
        if req.method == "BYE":
            self.endpoint.send_response(txn, make_response(req, 200))
            if call is not None:
                self._terminate(call, None)
            return
        if req.method == "INVITE":  # a re-INVITE: accept with the same session
            ok = make_response(req, 200)
            if call is not None:
                ok.headers.add("Contact", str(self.contact(call.peer.transport)))
                ok.headers.add("Content-Type", "application/sdp")
                ok.body = self.sdp(call.peer.transport)
            self.endpoint.send_response(txn, ok)
            return
        if req.method == "OPTIONS":
            self.endpoint.send_response(txn, make_response(req, 200))
            return
        resp = make_response(req, 405)
        resp.headers.add("Allow", ALLOW)
        self.endpoint.send_response(txn, resp)

    # bookkeeping

    def _terminate(self, call: Call, status: int | None) -> None:
        if call.state is not CallState.TERMINATED:
            if call.established.is_set():
                self.completed_calls += 1
            call._end(status)
        if call.dialog is not None:
            self.dialogs.remove(call.dialog)
        self._forget(call)

    def _forget(self, call: Call) -> None:
        # Keep the Call-ID entry (late retransmissions re-ACK) only while the dialog lives.
        if call.dialog is None or call.dialog.state is DialogState.TERMINATED:
            self.calls.pop(call.call_id, None)
        for txn in call.txns:
            self._by_txn.pop(txn, None)
        call.txns.clear()

    def _track(self, txn: Transaction, call: Call) -> None:
        self._by_txn[txn] = call
        call.txns.append(txn)
