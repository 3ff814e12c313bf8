"""RFC 3261 §18 transport-layer rules as pure functions: what to do with received bytes,
where responses go, and the stateless answer to a malformed request.

Nothing here reads a clock or touches a socket; the asyncio transports
(:mod:`sipsec.aio.transport`) only move bytes and act on the verdicts:

- :func:`receive_datagram` (one message per datagram, §18.3) and :func:`receive_message`
  (a message framed off a stream) turn input into a :data:`Verdict`: :class:`Accepted`
  (validated, requests stamped with ``received``/``rport``, §18.2.1 and RFC 3581 §4),
  :class:`Answered` (a malformed request answered statelessly to the packet's source),
  :class:`Dropped` (with a fixed, countable reason) or :class:`KeepAlive` (RFC 5626 §3.5.1).
- :func:`via_destination`, :func:`response_destination` and :func:`response_target` are
  §18.2.2 / RFC 3581 §4 response routing.
- :func:`build_error_response` builds the §8.2.6 answer to a request the parser refused,
  from its raw bytes: any request whose top Via can be read is answered, whatever else is
  broken (its method, its start line, other headers). A response or an ACK is never
  answered (§17.1.1.3, §18.1.2).

Answers always go to the packet's source address, never to a sent-by that a malformed
message names, so a forged Via cannot reflect traffic at a third party.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import RemoteProtocolError
from .headers import Via, parse_via_list
from .message import REASON_PHRASES, Request, Response, generate_tag
from .parser import DEFAULT_LIMITS, Limits, parse_message

__all__ = [
    "DEFAULT_PORTS",
    "Accepted",
    "Answered",
    "Dropped",
    "KeepAlive",
    "Verdict",
    "build_error_response",
    "receive_datagram",
    "receive_message",
    "reject",
    "response_destination",
    "response_target",
    "stamp_received",
    "validate_received",
    "via_destination",
]

#: Default ports per transport (RFC 3261 §18.1.1, §26.2: 5060 for UDP/TCP, 5061 for TLS).
DEFAULT_PORTS: dict[str, int] = {"UDP": 5060, "TCP": 5060, "TLS": 5061}

Address = tuple[str, int]


# --- verdicts ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Accepted:
    """A valid message for the transaction layer (a request already stamped, §18.2.1)."""

    message: Request | Response


@dataclass(frozen=True, slots=True)
class Answered:
    """A malformed request, answered statelessly: send ``response`` to the packet's source.

    ``status`` is the status sent (400, 413, 505, 513...), ``reason`` the parser's fixed
    reason name (a metric label).
    """

    response: bytes
    status: int
    reason: str


@dataclass(frozen=True, slots=True)
class Dropped:
    """Input that cannot be answered; ``reason`` is a fixed, countable name."""

    reason: str


@dataclass(frozen=True, slots=True)
class KeepAlive:
    """A CRLF keep-alive (RFC 5626 §3.5.1) or an empty datagram: not a message."""


Verdict = Accepted | Answered | Dropped | KeepAlive


# --- receiving -----------------------------------------------------------------------------


def receive_datagram(data: bytes, source: Address, limits: Limits = DEFAULT_LIMITS) -> Verdict:
    """What to do with one datagram from ``source`` (RFC 3261 §18.3, §18.2.1, §18.1.2)."""
    if not data.strip(b"\r\n \t"):
        return KeepAlive()
    if len(data) > limits.max_message_bytes:
        return reject(data, RemoteProtocolError("too_large", 513, "datagram over limit"))
    try:
        message = parse_message(data, limits)
    except RemoteProtocolError as err:
        return reject(data, err)
    except Exception as exc:  # noqa: BLE001 - the parser promises RemoteProtocolError only
        return reject(data, RemoteProtocolError("unparseable", 400, type(exc).__name__))
    return receive_message(message, source, data)


def receive_message(
    message: Request | Response, source: Address, raw: bytes | None = None
) -> Verdict:
    """Validate a parsed message and stamp a request's top Via (§18.2.1, RFC 3581 §4).

    ``raw`` is the message's wire form when at hand (a datagram); otherwise it is
    serialised only when a malformed request has to be answered.
    """
    try:
        validate_received(message)
        if isinstance(message, Request):
            stamp_received(message, source)
    except RemoteProtocolError as err:
        if raw is None:
            raw = _wire(message)
        return reject(raw, err)
    return Accepted(message)


def reject(data: bytes, err: RemoteProtocolError) -> Answered | Dropped:
    """The verdict on input refused with ``err``: answered when its Via can be read."""
    answer = build_error_response(data, err.status_hint, err.reason)
    if answer is not None:
        return Answered(answer, err.status_hint, err.reason or "malformed")
    if _is_response(data):
        return Dropped("malformed_response")
    return Dropped(err.reason or "malformed")


def validate_received(message: Request | Response) -> None:
    """Check what the transaction layer relies on (RFC 3261 §8.1.1, §8.2.2, §17): a Via,
    a parseable CSeq (whose method matches a request's), Call-ID, From and To.

    The parser reads these headers lazily; reading them here turns a missing or malformed
    one into a :class:`RemoteProtocolError` at the transport, where it is answered or counted.
    """
    if not message.via_view():
        raise RemoteProtocolError("missing-via", 400, "no Via")
    cseq = message.cseq
    _ = message.call_id, message.from_view(), message.to_view()
    if isinstance(message, Request) and cseq.method != message.method:
        raise RemoteProtocolError("cseq-method-mismatch", 400, cseq.method[:32])


def stamp_received(request: Request, source: Address) -> None:
    """Add ``received`` (and fill ``rport``) to the top Via of an incoming request (§18.2.1).

    ``received`` is added when the sent-by host differs from the packet's source address;
    RFC 3581 §4: when the Via has an empty ``rport``, the source port is written into it and
    ``received`` is always added.
    """
    top = request.top_via_view()
    if top is None:
        return
    host, port = source
    params = top.params
    if "rport" in params and not params.get("rport"):
        params = dict(params)
        params["rport"] = str(port)
        params["received"] = host
    elif top.host.strip("[]") != host:
        params = dict(params)
        params["received"] = host
    else:
        return
    request.replace_top_via(Via(top.transport, top.host, top.port, params, top.protocol))


# --- response routing ----------------------------------------------------------------------


def via_destination(via: Via, transport: str) -> Address:
    """The §18.2.2 / RFC 3581 destination named by one (top) Via header value.

    ``maddr`` if present; else ``received`` (with ``rport`` as the port when it has a
    value, RFC 3581 §4, otherwise the sent-by port); else the sent-by itself. The port
    defaults to 5060 (5061 for TLS).
    """
    default = DEFAULT_PORTS.get(transport, 5060)
    maddr = via.params.get("maddr")
    if maddr:
        return (maddr, via.port or default)
    received = via.received
    rport = via.rport
    if received:
        if isinstance(rport, int) and not isinstance(rport, bool) and rport > 0:
            return (received, rport)
        return (received, via.port or default)
    if isinstance(rport, int) and not isinstance(rport, bool) and rport > 0:
        return (via.host, rport)
    return (via.host, via.port or default)


def response_destination(response: Response, transport: str) -> Address | None:
    """Where a response goes when no open connection carries it (§18.2.2, RFC 3581 §4):
    :func:`via_destination` of its top Via; None when there is no Via."""
    top = response.top_via_view()
    return None if top is None else via_destination(top, transport)


def response_target(
    request: Request, source: Address, transport: str, reliable: bool
) -> tuple[Address, Address | None]:
    """Where responses to ``request`` (received from ``source``) go, and the fallback (§18.2.2).

    Unreliable: the top Via's ``received``/``rport`` (stamped on receipt, so normally the
    source), no fallback. Reliable: the connection the request came on (``source``), with
    the Via's ``received`` address and sent-by port as the fallback when it has closed.
    """
    top = request.top_via_view()
    dest = None if top is None else via_destination(top, transport)
    if reliable:
        return source, dest
    return (source if dest is None else dest), None


# --- stateless answers to malformed requests (§8.2.6) ----------------------------------------

_COPIED = {
    "via": "Via", "v": "Via", "from": "From", "f": "From", "to": "To", "t": "To",
    "call-id": "Call-ID", "i": "Call-ID", "cseq": "CSeq",
}  # fmt: skip
_UNSAFE = ("\r", "\n", "\x00")


def _is_response(data: bytes) -> bool:
    return data.lstrip(b"\r\n \t")[:4].upper() == b"SIP/"


def _wire(message: Request | Response) -> bytes:
    try:
        return message.to_bytes()
    except Exception:  # noqa: BLE001 - a message that cannot be serialised is not answered
        return b""


def _head_lines(data: bytes) -> list[str]:
    """The start line and the unfolded header lines of ``data`` (§7.3.1), decoded leniently."""
    head = data.lstrip(b"\r\n").split(b"\r\n\r\n", 1)[0].split(b"\n\n", 1)[0]
    lines: list[str] = []
    for raw in head.replace(b"\r\n", b"\n").split(b"\n"):
        text = raw.decode("utf-8", "replace")
        if text[:1] in (" ", "\t") and lines:
            lines[-1] += " " + text.strip()
        else:
            lines.append(text)
    return lines


def build_error_response(data: bytes, status: int, reason: str) -> bytes | None:
    """A stateless error response to the malformed request ``data``, or None.

    Any input that is not a response is taken for a request, whatever its start line; it
    is answered when its top Via can be read. None for a response, for an ACK (by its
    start line or its CSeq: an ACK is never answered, §17.2.3, §8.2.6), and when no Via
    can be read (then nothing can be answered and the caller drops it). Via, From, To,
    Call-ID and CSeq are copied raw as §8.2.6.1 asks (a line that cannot be copied
    safely is left out, except the top Via, which must be readable); a To tag is added;
    a ``Warning: 399`` header names the reason.
    """
    if _is_response(data):
        return None
    lines = _head_lines(data)
    if not lines:
        return None
    start = lines[0]
    if start.split(" ", 1)[0].upper() == "ACK":
        return None
    name, sep, _ = start.partition(":")
    if sep and name.strip().lower() in _COPIED:
        start = ""  # no start line at all: the first line is already a header
    copied: list[tuple[str, str]] = []
    for line in lines[1:] if start else lines:
        name, sep, value = line.partition(":")
        canonical = _COPIED.get(name.strip().lower())
        if not sep or canonical is None:
            continue
        value = value.strip()
        if not value or any(ch in value for ch in _UNSAFE) or "\ufffd" in value:
            if canonical == "Via" and not any(n == "Via" for n, _ in copied):
                return None  # the top Via is unreadable: nothing to answer to
            continue
        if canonical == "CSeq" and value.split()[-1:] == ["ACK"]:
            return None
        copied.append((canonical, value))
    vias = [v for n, v in copied if n == "Via"]
    if not vias:
        return None
    try:
        parse_via_list(vias[0])
    except RemoteProtocolError:
        return None
    phrase = REASON_PHRASES.get(status, "Bad Request")
    out = [f"SIP/2.0 {status} {phrase}"]
    for name, value in copied:
        if name == "To" and ";tag=" not in value.replace(" ", "").lower():
            value = f"{value};tag={generate_tag()}"
        out.append(f"{name}: {value}")
    out.append(f'Warning: 399 sipsec "{reason}"')
    out.append("Content-Length: 0")
    return ("\r\n".join(out) + "\r\n\r\n").encode("utf-8")
