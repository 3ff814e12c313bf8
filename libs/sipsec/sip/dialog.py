"""RFC 3261 §12 dialogs: creation (UAC and UAS), route sets, in-dialog requests, CSeq checks.

A :class:`Dialog` is plain state (no I/O, no clock). The UAC side creates it from its
request and a 1xx/2xx carrying a To tag (§12.1.2), the UAS side from the request and the
response it sends (§12.1.1). ``create_request`` builds BYE, re-INVITE, INFO... with the
Request-URI and Route headers of §12.2.1.1 (loose and strict routing); ``create_ack``
builds the ACK for a 2xx (§13.2.2.4); ``receive_request`` applies §12.2.2 (CSeq order,
target refresh) and tells the caller when to answer 500.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum

from .errors import LocalProtocolError, RemoteProtocolError
from .headers import Headers, NameAddr, Via
from .message import Request, Response, make_response
from .uri import AbsoluteURI, SipURI, TelURI

__all__ = [
    "TARGET_REFRESH_METHODS",
    "Dialog",
    "DialogId",
    "DialogState",
    "DialogTable",
    "make_dialog_response",
    "next_hop",
]

URI = SipURI | TelURI | AbsoluteURI

# Methods whose requests (and 2xx) update the remote target (§12.2, RFC 3311, RFC 6665).
TARGET_REFRESH_METHODS = frozenset({"INVITE", "UPDATE", "SUBSCRIBE", "NOTIFY", "REFER"})

# Request-URI parameters not allowed (§19.1.1 Table 1): "method" only; URI headers too.
_NOT_IN_REQUEST_URI = ("method",)


class DialogState(Enum):
    """Dialog states (§12)."""

    EARLY = "early"  # §12.1: created by a provisional response with a To tag
    CONFIRMED = "confirmed"  # §12.1: a 2xx was sent / received
    TERMINATED = "terminated"  # §12.3: BYE, or a non-2xx final ended an early dialog


@dataclass(frozen=True, slots=True)
class DialogId:
    """§12: Call-ID, local tag and remote tag."""

    call_id: str
    local_tag: str
    remote_tag: str

    @classmethod
    def for_incoming_request(cls, request: Request) -> DialogId | None:
        """The id of the dialog a received request belongs to (UAS view), or None when the
        request has no To tag (it is not in a dialog)."""
        local = request.to_tag
        remote = request.from_tag
        if local is None or remote is None:
            return None
        return cls(request.call_id, local, remote)

    @classmethod
    def for_incoming_response(cls, response: Response) -> DialogId | None:
        """The id of the dialog a received response belongs to (UAC view), or None."""
        local = response.from_tag
        remote = response.to_tag
        if local is None or remote is None:
            return None
        return cls(response.call_id, local, remote)


def _copy_na(na: NameAddr) -> NameAddr:
    return NameAddr(na.uri, na.display, dict(na.params))


def _first_contact_uri(msg: Request | Response) -> URI:
    contacts = msg.contact
    if not contacts:
        raise RemoteProtocolError("missing-contact", 400, "dialog needs a Contact")
    return contacts[0].uri


def _clean_request_uri(uri: URI) -> URI:
    """A Request-URI built from a route/contact URI (§12.2.1.1): drop disallowed parts."""
    if isinstance(uri, SipURI):
        params = {k: v for k, v in uri.params.items() if k not in _NOT_IN_REQUEST_URI}
        return SipURI(uri.scheme, uri.user, uri.password, uri.host, uri.port, params, {})
    return uri


def next_hop(request: Request) -> URI:
    """§8.1.2 / §16.12: the URI to resolve (RFC 3263) when sending ``request``: the first
    Route when there is one, else the Request-URI."""
    routes = request.route
    if routes:
        return routes[0].uri
    return request.uri


def make_dialog_response(
    request: Request,
    status: int,
    *,
    to_tag: str,
    contact: NameAddr | str | None,
    reason: str | None = None,
) -> Response:
    """§12.1.1: a response that may create a dialog — ``make_response`` with the To tag,
    every Record-Route of the request copied in order, and the UAS's Contact."""
    resp = make_response(request, status, reason, to_tag=to_tag)
    for rr in request.headers.get_all_raw("Record-Route"):
        resp.headers.add("Record-Route", rr)
    if contact is not None:
        resp.headers.add("Contact", str(contact))
    return resp


class Dialog:
    """The state of one dialog (§12): id, sequence numbers, URIs, target and route set."""

    __slots__ = (
        "id", "state", "local_seq", "remote_seq", "local", "remote", "remote_target",
        "route_set", "secure", "local_contact", "invite_seq",
    )  # fmt: skip

    def __init__(
        self,
        id: DialogId,  # noqa: A002 - the RFC's name
        state: DialogState,
        *,
        local: NameAddr,
        remote: NameAddr,
        remote_target: URI,
        route_set: list[NameAddr],
        local_seq: int | None,
        remote_seq: int | None,
        secure: bool = False,
        local_contact: NameAddr | None = None,
    ) -> None:
        self.id = id
        self.state = state
        self.local = local  # our From in requests we send (carries the local tag)
        self.remote = remote  # our To in requests we send (carries the remote tag)
        self.remote_target = remote_target
        self.route_set = route_set
        self.local_seq = local_seq
        self.remote_seq = remote_seq
        self.secure = secure
        self.local_contact = local_contact
        self.invite_seq: int | None = None  # CSeq of the last INVITE we sent (for its ACK)

    def __repr__(self) -> str:
        return (
            f"<Dialog {self.state.value} local_seq={self.local_seq} remote_seq={self.remote_seq}>"
        )

    # -- creation ---------------------------------------------------------------------------

    @classmethod
    def from_uac_response(
        cls, request: Request, response: Response, *, local_contact: NameAddr | None = None
    ) -> Dialog:
        """§12.1.2: the UAC's dialog from its request and a 101-199 or 2xx with a To tag.

        Route set = Record-Route of the response, reversed; remote target = its Contact.
        """
        status = response.status
        if not (101 <= status < 300):
            raise LocalProtocolError("only 101-199 and 2xx responses create dialogs")
        dialog_id = DialogId.for_incoming_response(response)
        if dialog_id is None:
            raise RemoteProtocolError("missing-to-tag", 400, "dialog needs tags")
        if local_contact is None:
            contacts = request.contact
            local_contact = _copy_na(contacts[0]) if contacts else None
        dialog = cls(
            dialog_id,
            DialogState.CONFIRMED if status >= 200 else DialogState.EARLY,
            local=_copy_na(request.from_),
            remote=_copy_na(response.to),
            remote_target=_first_contact_uri(response),
            route_set=[_copy_na(r) for r in reversed(response.record_route)],
            local_seq=request.cseq.seq,
            remote_seq=None,
            secure=isinstance(request.uri, SipURI) and request.uri.scheme == "sips",
            local_contact=local_contact,
        )
        if request.method == "INVITE":
            dialog.invite_seq = request.cseq.seq
        return dialog

    @classmethod
    def from_uas_response(
        cls, request: Request, response: Response, *, local_contact: NameAddr | None = None
    ) -> Dialog:
        """§12.1.1: the UAS's dialog from the request and the 101-199/2xx it sends (the
        response carries the local To tag). Route set = Record-Route in order; remote
        target = the request's Contact; remote CSeq = the request's; local CSeq empty."""
        status = response.status
        if not (101 <= status < 300):
            raise LocalProtocolError("only 101-199 and 2xx responses create dialogs")
        local_tag = response.to_tag
        remote_tag = request.from_tag
        if local_tag is None:
            raise LocalProtocolError("the response needs a To tag")
        if remote_tag is None:
            raise RemoteProtocolError("missing-from-tag", 400, "dialog needs a From tag")
        if local_contact is None:
            contacts = response.contact
            local_contact = _copy_na(contacts[0]) if contacts else None
        return cls(
            DialogId(request.call_id, local_tag, remote_tag),
            DialogState.CONFIRMED if status >= 200 else DialogState.EARLY,
            local=_copy_na(response.to),
            remote=_copy_na(request.from_),
            remote_target=_first_contact_uri(request),
            route_set=[_copy_na(r) for r in request.record_route],
            local_seq=None,
            remote_seq=request.cseq.seq,
            secure=isinstance(request.uri, SipURI) and request.uri.scheme == "sips",
            local_contact=local_contact,
        )

    # -- UAC side updates ---------------------------------------------------------------------

    def receive_response(self, request: Request, response: Response) -> None:
        """Update from a response to a request sent in this dialog.

        A 2xx confirms an early dialog and recomputes its route set (§13.2.2.4); a 2xx to
        a target-refresh request updates the remote target (§12.2.1.2); a 300-699 to the
        dialog-creating INVITE terminates an early dialog (§12.3); 481/408 terminate it
        (§12.2.1.2).
        """
        status = response.status
        if status in (408, 481):
            self.state = DialogState.TERMINATED
            return
        if 200 <= status < 300:
            if self.state is DialogState.EARLY:
                self.state = DialogState.CONFIRMED
                self.route_set = [_copy_na(r) for r in reversed(response.record_route)]
            if request.method in TARGET_REFRESH_METHODS and response.contact:
                self.remote_target = response.contact[0].uri
        elif status >= 300 and self.state is DialogState.EARLY:
            self.state = DialogState.TERMINATED
        elif 101 <= status < 200 and self.state is DialogState.EARLY and response.contact:
            self.remote_target = response.contact[0].uri

    # -- UAS side ---------------------------------------------------------------------------

    def receive_request(self, request: Request) -> int | None:
        """§12.2.2 for a request matched to this dialog: None if in order, else the status
        to reject it with (500 for a CSeq lower than the remote CSeq). Updates the remote
        CSeq and, for a target-refresh request with a Contact, the remote target."""
        seq = request.cseq.seq
        method = request.method
        if method in ("ACK", "CANCEL"):
            return None  # they carry the CSeq number of the request they belong to
        if self.remote_seq is not None and seq < self.remote_seq:
            return 500
        self.remote_seq = seq
        if method in TARGET_REFRESH_METHODS and request.contact:
            self.remote_target = request.contact[0].uri
        return None

    def matches(self, request: Request) -> bool:
        """Whether a received request belongs to this dialog (Call-ID and both tags)."""
        return DialogId.for_incoming_request(request) == self.id

    def terminate(self) -> None:
        self.state = DialogState.TERMINATED

    # -- building requests (§12.2.1.1) --------------------------------------------------------

    def _target_and_routes(self) -> tuple[URI, list[str]]:
        routes = self.route_set
        if not routes:
            return self.remote_target, []
        first = routes[0].uri
        if isinstance(first, SipURI) and first.lr:
            return self.remote_target, [str(r) for r in routes]
        # strict routing: first route becomes the Request-URI, the remote target the
        # last Route value.
        return _clean_request_uri(first), [str(r) for r in routes[1:]] + [f"<{self.remote_target}>"]

    def _build(
        self,
        method: str,
        seq: int,
        via: Via | str,
        extra: Iterable[tuple[str, str]],
        body: bytes,
        content_type: str | None,
    ) -> Request:
        uri, routes = self._target_and_routes()
        h = Headers()
        h.add("Via", str(via))
        h.add("Max-Forwards", "70")
        for r in routes:
            h.add("Route", r)
        h.add("From", str(self.local))
        h.add("To", str(self.remote))
        h.add("Call-ID", self.id.call_id)
        h.add("CSeq", f"{seq} {method}")
        if self.local_contact is not None and method in TARGET_REFRESH_METHODS:
            h.add("Contact", str(self.local_contact))
        for name, value in extra:
            h.add(name, value)
        if body and content_type is not None:
            h.add("Content-Type", content_type)
        return Request(method, uri, h, body)

    def create_request(
        self,
        method: str,
        via: Via | str,
        *,
        headers: Iterable[tuple[str, str]] = (),
        body: bytes = b"",
        content_type: str | None = None,
    ) -> Request:
        """A new in-dialog request (BYE, re-INVITE, INFO, UPDATE...): local CSeq + 1.

        ``via`` is the top Via (with a fresh branch) the transport will send it with.
        ACK and CANCEL are not built here: use ``create_ack`` and ``build_cancel``.
        """
        if method in ("ACK", "CANCEL"):
            raise LocalProtocolError(f"{method} is not built with create_request")
        if self.state is DialogState.TERMINATED:
            raise LocalProtocolError("the dialog is terminated")
        if self.local_seq is None:  # §12.1.1: a UAS picks its first CSeq (below 2**31)
            self.local_seq = secrets.randbelow(2**30)
        self.local_seq += 1
        if method == "INVITE":
            self.invite_seq = self.local_seq
        return self._build(method, self.local_seq, via, headers, body, content_type)

    def create_ack(
        self,
        via: Via | str,
        *,
        cseq: int | None = None,
        body: bytes = b"",
        content_type: str | None = None,
    ) -> Request:
        """§13.2.2.4: the ACK for a 2xx to INVITE — CSeq number of the INVITE (default: the
        last INVITE sent in this dialog), method ACK, same Route/Request-URI rules."""
        seq = self.invite_seq if cseq is None else cseq
        if seq is None:
            raise LocalProtocolError("no INVITE was sent in this dialog")
        return self._build("ACK", seq, via, (), body, content_type)


class DialogTable:
    """The dialogs of one UA, found by id for incoming requests and responses."""

    __slots__ = ("_dialogs",)

    def __init__(self) -> None:
        self._dialogs: dict[DialogId, Dialog] = {}

    def __len__(self) -> int:
        return len(self._dialogs)

    def add(self, dialog: Dialog) -> None:
        self._dialogs[dialog.id] = dialog

    def remove(self, dialog: Dialog) -> None:
        self._dialogs.pop(dialog.id, None)

    def get(self, dialog_id: DialogId) -> Dialog | None:
        return self._dialogs.get(dialog_id)

    def for_request(self, request: Request) -> Dialog | None:
        """The dialog of a received request (§12.2.2), or None (answer 481 if it had a To tag)."""
        dialog_id = DialogId.for_incoming_request(request)
        return None if dialog_id is None else self._dialogs.get(dialog_id)

    def for_response(self, response: Response) -> Dialog | None:
        dialog_id = DialogId.for_incoming_response(response)
        return None if dialog_id is None else self._dialogs.get(dialog_id)
