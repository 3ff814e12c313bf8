"""Lean plain-SIP phones for the load generator: many users on one UDP socket, driven by the sans-IO stack.

A :class:`PhoneHost` is one :class:`~sipsec.aio.SipEndpoint` on one source address that plays
the phones of many users of one domain against that domain's gateway phone side (RFC 3261
UAC/UAS, Digest per RFC 8760 for REGISTER 401 and INVITE 407):

* :meth:`PhoneHost.register` binds ``sip:user@host:port`` for a user (one 401 answered);
* :meth:`PhoneHost.call` places a call (one 407 answered), ACKs the 2xx, holds, sends BYE,
  and returns a :class:`CallOutcome` with the setup time (first INVITE sent → 2xx received);
* every INVITE to a user of the host is answered at once (180, then 200 with a static SDP);
  a BYE in such a dialog gets 200.

Every request a phone sends goes to its gateway (its registrar and outbound proxy), the
in-dialog ACK and BYE too, whatever the dialog's remote target names.

No media is sent and nothing is paired: the gateways do the secured leg.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

from sipsec.aio import Peer, SipEndpoint
from sipsec.aio.pending import PendingRequests
from sipsec.sip import (
    Event,
    RequestReceived,
    ResponseReceived,
    SipError,
    TransactionTimeout,
    TransportError,
)
from sipsec.sip.dialog import Dialog
from sipsec.sip.digest import DigestClient, select_challenge
from sipsec.sip.headers import Headers
from sipsec.sip.message import Request, Response, generate_call_id, generate_tag, make_response
from sipsec.sip.transaction import ServerTransaction
from sipsec.sip.uri import SipURI, parse_uri
from sipsec_gateway.sdp import static_sdp

__all__ = ["CallOutcome", "PhoneError", "PhoneHost"]

log = logging.getLogger("sipsec.load.phone")

_ALLOW = "INVITE, ACK, BYE, CANCEL, OPTIONS"


class PhoneError(Exception):
    """A request got no final response (``status`` 408) or could not be sent (503)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"{status} {reason}")
        self.status = status
        self.reason = reason


@dataclass
class CallOutcome:
    """How one placed call went: ``failure`` is empty when it was set up and torn down."""

    setup_s: float | None = None  # first INVITE sent -> 2xx received
    established_at: float | None = None  # loop time of the 2xx
    failure: str = ""  # e.g. "INVITE 503", "INVITE timeout", "BYE 481"


class PhoneHost:
    """The phones of many users of ``domain`` on one UDP socket at ``host``, using ``gateway`` (the
    gateway's plain phone side) as registrar and outbound proxy. ``on_answered`` is called for each
    incoming call answered (for the generator's counters)."""

    def __init__(self, host: str, gateway: tuple[str, int], domain: str,
                 on_answered: Callable[[], None] | None = None, queue_size: int = 8192) -> None:
        self.host = host
        self.domain = domain
        self.gateway = Peer("UDP", gateway[0], int(gateway[1]))
        self.endpoint = SipEndpoint(handler=self._on_event, queue_size=queue_size)
        self._pending = PendingRequests(self.endpoint, PhoneError)
        self._users: dict[str, DigestClient] = {}
        self._incoming: dict[str, Request] = {}  # Call-ID -> the ACK-less incoming INVITE's dialog id
        self._acks: dict[str, Request] = {}  # Call-ID -> our ACK (re-sent for a retransmitted 2xx)
        self._on_answered = on_answered
        self.port = 0

    async def start(self) -> None:
        udp = await self.endpoint.listen_udp(self.host, 0)
        self.port = int(udp.local_address[1])
        self.endpoint.start()

    async def close(self) -> None:
        await self.endpoint.close()

    def add_user(self, user: str, phone_password: str) -> None:
        self._users[user] = DigestClient(user, phone_password)

    @property
    def users(self) -> list[str]:
        return list(self._users)

    # -- requests -------------------------------------------------------------------------------

    def _headers(self, method: str, seq: int, from_: str, to: str, call_id: str, contact_user: str) -> Headers:
        h = Headers()
        h.add("Via", self.endpoint.via("UDP"))
        h.add("Max-Forwards", "70")
        h.add("From", from_)
        h.add("To", to)
        h.add("Call-ID", call_id)
        h.add("CSeq", f"{seq} {method}")
        h.add("Contact", f"<sip:{contact_user}@{self.host}:{self.port}>")
        return h

    async def _authorized(self, request: Request, user: str, timeout: float) -> Response:
        """Send ``request``; answer one 401/407 with the user's Digest credentials (CSeq + 1)."""
        return (await self._authorized_request(request, user, timeout))[1]

    async def _authorized_request(self, request: Request, user: str, timeout: float) -> tuple[Request, Response]:
        """As :meth:`_authorized`, with the request that got the final response: ``request``,
        or its retry with credentials (its CSeq is the one an ACK for a 2xx must carry)."""
        resp = await self._pending.send(request, self.gateway, timeout)
        if resp.status not in (401, 407):
            return request, resp
        header = "WWW-Authenticate" if resp.status == 401 else "Proxy-Authenticate"
        creds = self._users[user].authorize(select_challenge(resp.headers.get_all_raw(header)), request.method,
                                            str(request.uri), body=request.body)
        retry = request.copy()
        retry.headers.set("Via", self.endpoint.via("UDP"))
        seq = request.cseq.seq + 1
        retry.headers.set("CSeq", f"{seq} {request.method}")
        retry.headers.add("Authorization" if resp.status == 401 else "Proxy-Authorization", creds.to_header())
        return retry, await self._pending.send(retry, self.gateway, timeout)

    async def register(self, user: str, expires: int = 3600, timeout: float = 10.0) -> int:
        """REGISTER the user's phone with the gateway; the final status (raises :class:`PhoneError`)."""
        aor = f"<sip:{user}@{self.domain}>"
        h = self._headers("REGISTER", 1, f"{aor};tag={generate_tag()}", aor, generate_call_id(), user)
        h.add("Expires", str(expires))
        return (await self._authorized(Request("REGISTER", parse_uri(f"sip:{self.domain}"), h, b""), user,
                                       timeout)).status

    async def call(self, user: str, callee: str, hold_s: float, timeout: float = 32.0,
                   on_established: Callable[[], None] | None = None) -> CallOutcome:
        """Call ``callee`` (``user@domain``) as ``user``, hold ``hold_s``, hang up."""
        loop = asyncio.get_running_loop()
        outcome = CallOutcome()
        uri = parse_uri(f"sip:{callee}")
        call_id = generate_call_id()
        h = self._headers("INVITE", 1, f"<sip:{user}@{self.domain}>;tag={generate_tag()}", f"<{uri}>", call_id,
                          user)
        h.add("Allow", _ALLOW)
        h.add("Content-Type", "application/sdp")
        invite = Request("INVITE", uri, h, static_sdp(self.host))
        t0 = loop.time()
        try:
            invite, resp = await self._authorized_request(invite, user, timeout)
        except PhoneError as exc:
            outcome.failure = f"INVITE {'timeout' if exc.status == 408 else exc.status}"
            return outcome
        except SipError:
            outcome.failure = "INVITE unusable challenge"
            return outcome
        if resp.status >= 300:
            outcome.failure = f"INVITE {resp.status}"
            return outcome
        outcome.setup_s = loop.time() - t0
        outcome.established_at = loop.time()
        try:
            dialog = Dialog.from_uac_response(invite, resp)
        except SipError:
            outcome.failure = "INVITE unusable 2xx"
            return outcome
        ack = dialog.create_ack(self.endpoint.via("UDP"))
        self._acks[call_id] = ack
        self.endpoint.send_request(ack, self._next_hop(ack))
        if on_established is not None:
            on_established()
        try:
            await asyncio.sleep(hold_s)
            outcome.failure = await self._bye(dialog, timeout)
        finally:
            self._acks.pop(call_id, None)
        return outcome

    async def _bye(self, dialog: Dialog, timeout: float) -> str:
        bye = dialog.create_request("BYE", self.endpoint.via("UDP"))
        try:
            resp = await self._pending.send(bye, self._next_hop(bye), timeout)
        except PhoneError as exc:
            return f"BYE {'timeout' if exc.status == 408 else exc.status}"
        return "" if 200 <= resp.status < 300 else f"BYE {resp.status}"

    def _next_hop(self, request: Request) -> Peer:
        """Where an in-dialog request (ACK, BYE) goes: the gateway, the phone's outbound proxy, as
        every request of the phone does. Not the dialog's remote target: the gateway's Contact may
        name a host only its own network resolves (a compose service name, its advertised host)."""
        del request
        return self.gateway

    # -- events ---------------------------------------------------------------------------------

    def _on_event(self, event: Event) -> None:
        if isinstance(event, ResponseReceived):
            if event.transaction is None:
                self._reack(event.response)
            else:
                self._pending.resolve(event.transaction, event.response)
        elif isinstance(event, RequestReceived):
            self._on_request(event.request, event.transaction)
        elif isinstance(event, TransactionTimeout | TransportError):
            self._pending.fail(event.transaction, 408 if isinstance(event, TransactionTimeout) else 503)

    def _reack(self, resp: Response) -> None:
        """A 2xx retransmitted after its transaction ended: ACK it again (RFC 6026 §8.4)."""
        ack = self._acks.get(resp.call_id) if 200 <= resp.status < 300 else None
        if ack is not None:
            self.endpoint.send_request(ack, self._next_hop(ack))

    def _on_request(self, req: Request, txn: ServerTransaction | None) -> None:
        if req.method == "ACK" or txn is None:
            return
        if req.method == "INVITE" and req.to.tag is None:
            self._answer(req, txn)
        elif req.method == "BYE":
            known = self._incoming.pop(req.call_id, None) is not None
            self.endpoint.send_response(txn, make_response(req, 200 if known else 481))
        elif req.method == "OPTIONS":
            self.endpoint.send_response(txn, make_response(req, 200, to_tag=generate_tag()))
        else:
            resp = make_response(req, 405, to_tag=None if req.to.tag else generate_tag())
            resp.headers.add("Allow", _ALLOW)
            self.endpoint.send_response(txn, resp)

    def _answer(self, req: Request, txn: ServerTransaction) -> None:
        uri = req.uri
        user = uri.user if isinstance(uri, SipURI) else None
        if user not in self._users:
            self.endpoint.send_response(txn, make_response(req, 404, to_tag=generate_tag()))
            return
        tag = generate_tag()
        contact = f"<sip:{user}@{self.host}:{self.port}>"
        ringing = make_response(req, 180, to_tag=tag)
        ringing.headers.add("Contact", contact)
        self.endpoint.send_response(txn, ringing)
        ok = make_response(req, 200, to_tag=tag)
        ok.headers.add("Contact", contact)
        ok.headers.add("Allow", _ALLOW)
        ok.headers.add("Content-Type", "application/sdp")
        ok.body = static_sdp(self.host)
        self._incoming[req.call_id] = req
        self.endpoint.send_response(txn, ok)
        if self._on_answered is not None:
            self._on_answered()
