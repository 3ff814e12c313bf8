"""asyncio SIP transports (UDP, TCP, TLS): a thin shell that frames, parses and routes messages.

The transports do no SIP logic beyond RFC 3261 §18: they turn bytes into parsed
:class:`~sipsec.sip.Request` / :class:`~sipsec.sip.Response` objects (one message per UDP
datagram; :class:`~sipsec.sip.StreamFramer` on TCP/TLS), stamp ``received``/``rport`` on the
top Via of requests (§18.2.1, RFC 3581 §4), put each message on a bounded
:class:`InboundQueue` (dropping and counting when it is full), and send messages out —
responses to the address RFC 3261 §18.2.2 / RFC 3581 §4 select, over the connection the
request came on when it is still open.

Bad input never raises out of a transport: a request whose Via can be read is answered
statelessly with the parser's status hint (400, 413, 505, 513…) *to the packet's source
address* (never to a sent-by that a malformed message names, so a forged Via cannot reflect
traffic at a third party); everything else is dropped and counted in
``sipsec_sip_messages_dropped_total{transport, reason}``.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import logging
import re
import socket
import ssl
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, cast

from sipsec.sip.errors import RemoteProtocolError, SipError
from sipsec.sip.framing import StreamFramer, parse_datagram
from sipsec.sip.headers import Via, parse_via_list, via_list_view
from sipsec.sip.message import _MISSING, REASON_PHRASES, Request, Response, generate_tag
from sipsec.sip.parser import Limits
from sipsec.sip.uri import is_ip_literal
from sipsec.telemetry.sip import (
    SIP_BAD_REQUESTS_ANSWERED,
    SIP_BYTES_RECEIVED,
    SIP_BYTES_SENT,
    SIP_CONNECTIONS_OPEN,
    SIP_MESSAGES_DROPPED,
    SIP_MESSAGES_RECEIVED,
    SIP_MESSAGES_SENT,
)

__all__ = [
    "DEFAULT_PORTS",
    "Inbound",
    "InboundQueue",
    "Outgoing",
    "Peer",
    "SendErrorHandler",
    "StreamTransport",
    "Transport",
    "TransportName",
    "UdpTransport",
    "build_error_response",
    "message_bytes",
    "response_destination",
    "stamp_received",
    "validate",
    "via_destination",
]

log = logging.getLogger(__name__)

TransportName = Literal["UDP", "TCP", "TLS"]
Message = Request | Response

#: Default ports per transport (RFC 3261 §18.1.1, §26.2: 5060 for UDP/TCP, 5061 for TLS).
DEFAULT_PORTS: dict[str, int] = {"UDP": 5060, "TCP": 5060, "TLS": 5061}



@dataclass(frozen=True, slots=True)
class Peer:
    """A remote transport address: where a message came from or where one goes."""

    transport: str  # "UDP", "TCP" or "TLS"
    host: str
    port: int
    #: For a response over TCP/TLS: where to open a new connection when the one the request
    #: came on has closed (§18.2.2: Via ``received`` + sent-by port). Not part of equality.
    fallback: tuple[str, int] | None = field(default=None, compare=False)

    def __str__(self) -> str:
        return f"{self.transport.lower()}:{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class Inbound:
    """One parsed message taken off the network, with where it came from and when."""

    message: Message
    peer: Peer
    transport: Transport
    received_at: float


#: What a transport sends: a message, or bytes a transaction already serialised.
Outgoing = Request | Response | bytes

#: Called when a message could not be sent (``send_failed``, ``connect_failed``, ``no_route``):
#: the layer above reports it to the transaction core (RFC 3261 §17.1.4 / §17.2.4).
SendErrorHandler = Callable[[Outgoing, Peer, str], None]


class InboundQueue:
    """A bounded FIFO of :class:`Inbound` items shared by transports and one consumer.

    :meth:`offer` never blocks the network callback: when the queue is full, a datagram is
    dropped and counted with reason ``queue_full`` (UDP retransmits it). A stream, which
    never retransmits, instead stops reading (TCP flow control pushes back on the sender)
    and keeps its already-framed messages until :meth:`when_drained` calls it back.
    """

    def __init__(self, maxsize: int = 1024) -> None:
        if maxsize <= 0:
            raise ValueError("maxsize must be positive")
        self._queue: asyncio.Queue[Inbound] = asyncio.Queue(maxsize)
        self._waiting: list[Callable[[], None]] = []
        self.dropped = 0

    @property
    def maxsize(self) -> int:
        return self._queue.maxsize

    def qsize(self) -> int:
        return self._queue.qsize()

    def offer(self, item: Inbound) -> bool:
        """Enqueue ``item``; False (and counted) when the queue is full."""
        try:
            self._queue.put_nowait(item)
        except asyncio.QueueFull:
            self.dropped += 1
            SIP_MESSAGES_DROPPED.labels(item.transport.name, "queue_full").inc()
            return False
        return True

    def full(self) -> bool:
        return self._queue.full()

    async def get(self) -> Inbound:
        item = await self._queue.get()
        self._maybe_resume()
        return item

    def get_nowait(self) -> Inbound:
        item = self._queue.get_nowait()
        self._maybe_resume()
        return item

    def when_drained(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` once the queue is down to half full (stream back-pressure)."""
        self._waiting.append(callback)

    def _maybe_resume(self) -> None:
        if self._waiting and self._queue.qsize() <= self._queue.maxsize // 2:
            waiting, self._waiting = self._waiting, []
            for callback in waiting:
                callback()


def _kind(message: Message) -> str:
    return "request" if isinstance(message, Request) else "response"


def _encode(item: Outgoing) -> tuple[bytes, str]:
    if isinstance(item, bytes | bytearray):
        data = bytes(item)
        return data, "response" if data.startswith(b"SIP/") else "request"
    return item.to_bytes(), _kind(item)


_CHILDREN: dict[tuple[Any, str, str | None], Any] = {}


def _inc(metric: Any, name: str, kind: str | None = None, amount: float = 1) -> None:
    """``metric.labels(name[, kind]).inc(amount)`` with the child bound once per label set
    (``labels()`` per message is slow); a child is still created on its first use only."""
    key = (metric, name, kind)
    child = _CHILDREN.get(key)
    if child is None:
        child = _CHILDREN[key] = metric.labels(name) if kind is None else metric.labels(name, kind)
    child.inc(amount)


def response_destination(response: Response, transport: str) -> tuple[str, int] | None:
    """Where a response goes when no open connection carries it (RFC 3261 §18.2.2, RFC 3581 §4).

    From the top Via: ``maddr`` if present; else ``received`` (with ``rport`` as the port when
    it has a value — RFC 3581 — and otherwise the sent-by port); else the sent-by itself.
    The port defaults to 5060 (5061 for TLS). None when there is no Via.
    """
    if not response.via:
        return None
    return via_destination(response.via[0], transport)


def via_destination(via: Via, transport: str) -> tuple[str, int]:
    """The §18.2.2 / RFC 3581 destination named by one (top) Via header value."""
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


def stamp_received(request: Request, source: tuple[str, int]) -> None:
    """Add ``received`` (and fill ``rport``) to the top Via of an incoming request (§18.2.1).

    ``received`` is added when the sent-by host differs from the packet's source address;
    RFC 3581 §4: when the Via has an empty ``rport``, the source port is written into it and
    ``received`` is always added.
    """
    vias = request._via_view()
    if not vias:
        return
    top = vias[0]
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
    _rewrite_top_via(request, Via(top.transport, top.host, top.port, params, top.protocol))


def _rewrite_top_via(message: Message, via: Via) -> None:
    """Replace the topmost via-parm, keeping the rest of its header line and every other line.

    The parsed Via views of the message are carried over (only the new first line is parsed
    again), so that the layers above do not parse every Via line once more.
    """
    old_first = message._cached("via0")
    old_all = message._cache.get("via")
    headers = message.headers
    first_line = headers.remove_first("Via")
    if first_line is None:
        entries: list[Via] = []
    elif old_first is not _MISSING:
        entries = list(old_first)
    else:
        entries = parse_via_list(first_line)
    n_first = len(entries)
    entries[:1] = [via]
    value = ", ".join(str(v) for v in entries)
    headers.prepend("Via", value)
    if old_first is _MISSING or first_line is None:
        return
    try:
        new_first = via_list_view(value)
    except RemoteProtocolError:
        return  # left to the lazy views, which raise where this value is read
    message._cached("via0")  # drops the Via views made stale by the edit
    cache = message._cache
    cache["via0"] = new_first
    cache["top_via"] = new_first[0]
    if old_all is not None:
        cache["via"] = new_first + old_all[n_first:]


def message_bytes(message: Message) -> bytes:
    """The wire form of a parsed message, or b"" when it cannot be serialised."""
    try:
        return message.to_bytes()
    except SipError:
        return b""


def validate(message: Message) -> None:
    """Check what the transaction layer relies on (RFC 3261 §8.1.1, §8.2.2, §17): a Via,
    a parseable CSeq (whose method matches a request's), Call-ID, From and To.

    The parser reads these headers lazily; reading them here turns a missing or malformed
    one into a :class:`RemoteProtocolError` at the transport, where it is answered or counted.
    """
    if not message._via_view():
        raise RemoteProtocolError("missing-via", 400, "no Via")
    cseq = message.cseq
    _ = message.call_id, message._from_view(), message._to_view()
    if isinstance(message, Request) and cseq.method != message.method:
        raise RemoteProtocolError("cseq-method-mismatch", 400, cseq.method[:32])


# --- stateless answers to malformed requests -------------------------------------------------

_REQUEST_LINE_RE = re.compile(rb"^[A-Za-z!%*_+`'~.\-]+ \S+ SIP/\S+\s*$")
_COPIED = {
    "via": "Via", "v": "Via", "from": "From", "f": "From", "to": "To", "t": "To",
    "call-id": "Call-ID", "i": "Call-ID", "cseq": "CSeq",
}


def build_error_response(data: bytes, status: int, reason: str) -> bytes | None:
    """A stateless error response to the malformed request ``data``, or None.

    None when ``data`` is not recognisably a request, is an ACK, or its top Via cannot be
    read (then nothing can be answered and the caller drops it). Via, From, To, Call-ID and CSeq are
    copied raw as RFC 3261 §8.2.6.1 asks; a To tag is added; a ``Warning: 399`` header names
    the reason.
    """
    head = data.split(b"\r\n\r\n", 1)[0].split(b"\n\n", 1)[0]
    raw_lines = head.replace(b"\r\n", b"\n").split(b"\n")
    if not raw_lines or not _REQUEST_LINE_RE.match(raw_lines[0]):
        return None
    if raw_lines[0][:4].upper() == b"ACK ":
        return None  # an ACK is never answered (RFC 3261 §17.2.3, §8.2.6)
    lines: list[str] = []
    for raw in raw_lines[1:]:
        text = raw.decode("utf-8", "replace")
        if text[:1] in (" ", "\t") and lines:
            lines[-1] += " " + text.strip()
        else:
            lines.append(text)
    copied: list[tuple[str, str]] = []
    for line in lines:
        name, sep, value = line.partition(":")
        canonical = _COPIED.get(name.strip().lower())
        if not sep or canonical is None:
            continue
        value = value.strip()
        if any(ch in value for ch in "\r\n\x00"):
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


# --- transports ------------------------------------------------------------------------------


class Transport(abc.ABC):
    """What every transport offers the layer above (UDP, TCP, TLS).

    ``name`` is "UDP", "TCP" or "TLS" (the Via transport token); ``reliable`` selects the
    transaction timers (§17.1.1.2); ``limits`` bound every message; ``on_send_error`` hears
    of messages that could not be sent; ``bytes_received`` counts this instance's input.
    """

    name: str
    reliable: bool

    def __init__(
        self,
        queue: InboundQueue,
        limits: Limits | None = None,
        on_send_error: SendErrorHandler | None = None,
    ) -> None:
        self.queue = queue
        self.limits = limits or Limits()
        self.on_send_error = on_send_error
        self.bytes_received = 0

    @property
    @abc.abstractmethod
    def local_address(self) -> tuple[str, int]:
        """The (host, port) this transport listens on."""

    @abc.abstractmethod
    def send(self, message: Outgoing, peer: Peer) -> None:
        """Send ``message`` to ``peer``; never raises for network errors (counted instead)."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Stop listening and close every socket / connection."""

    def send_response(self, response: Response, request_peer: Peer | None = None) -> None:
        """Send a response per RFC 3261 §18.2.2.

        Over a reliable transport the connection the request arrived on (``request_peer``)
        is reused while it is open; otherwise the destination comes from the top Via
        (:func:`response_destination`).
        """
        if request_peer is not None and self._has_connection(request_peer):
            self.send(response, request_peer)
            return
        dest = response_destination(response, self.name)
        if dest is None:
            self._drop(response, request_peer, "no_route")
            return
        self.send(response, Peer(self.name, dest[0], dest[1]))

    def response_peer(self, request: Request, source: Peer) -> Peer:
        """Where responses to ``request`` (received from ``source``) go (§18.2.2).

        UDP: the top Via's ``received``/``rport`` (stamped on receipt, so normally the
        source). TCP/TLS: the connection the request came on, falling back to a new
        connection to the Via's ``received`` address and sent-by port if it has closed.
        """
        vias = request._via_view()
        dest = via_destination(vias[0], self.name) if vias else None
        if self.reliable:
            return Peer(self.name, source.host, source.port, fallback=dest)
        if dest is None:
            return source
        return Peer(self.name, dest[0], dest[1])

    def _has_connection(self, peer: Peer) -> bool:
        return False

    # shared helpers

    def _drop(self, message: Outgoing, peer: Peer | None, reason: str) -> None:
        SIP_MESSAGES_DROPPED.labels(self.name, reason).inc()
        if self.on_send_error is not None and peer is not None:
            try:
                self.on_send_error(message, peer, reason)
            except Exception:  # a bug above must not kill the transport
                log.exception("on_send_error handler failed")

    def _accept(
        self, message: Message, peer: Peer, now: float, data: bytes,
        reply: Callable[[bytes], None],
    ) -> None:
        try:
            validate(message)
            if isinstance(message, Request):
                stamp_received(message, (peer.host, peer.port))
        except RemoteProtocolError as err:
            self._reject(data, err, reply)
            return
        if self.queue.offer(Inbound(message, peer, self, now)):
            _inc(SIP_MESSAGES_RECEIVED, self.name, _kind(message))

    def _reject(self, data: bytes, err: RemoteProtocolError, reply: Callable[[bytes], None]) -> None:
        """Answer a malformed request statelessly if its Via is readable; else drop it."""
        answer = build_error_response(data, err.status_hint, err.reason)
        if answer is None:
            reason = "malformed_response" if data.lstrip().startswith(b"SIP/") else (
                err.reason or "malformed"
            )
            SIP_MESSAGES_DROPPED.labels(self.name, reason).inc()
            return
        SIP_BAD_REQUESTS_ANSWERED.labels(self.name, str(err.status_hint)).inc()
        SIP_MESSAGES_DROPPED.labels(self.name, err.reason or "malformed").inc()
        reply(answer)
        SIP_BYTES_SENT.labels(self.name).inc(len(answer))
        SIP_MESSAGES_SENT.labels(self.name, "response").inc()


class _UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, owner: UdpTransport) -> None:
        self.owner = owner

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        self.owner._datagram_received(data, addr)

    def error_received(self, exc: Exception) -> None:
        # ICMP errors (port unreachable...) for an earlier sendto.
        SIP_MESSAGES_DROPPED.labels(self.owner.name, "send_failed").inc()


async def _udp_socket(
    loop: asyncio.AbstractEventLoop, host: str, port: int, *, reuse_port: bool, rcvbuf: int | None
) -> socket.socket:
    """A bound, non-blocking UDP socket with the options set before ``bind``."""
    if reuse_port and not hasattr(socket, "SO_REUSEPORT"):
        raise ValueError("SO_REUSEPORT is not supported on this platform")
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_DGRAM, proto=socket.IPPROTO_UDP)
    if not infos:
        raise OSError(f"cannot resolve {host!r}")
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if rcvbuf is not None and rcvbuf > 0:
            with contextlib.suppress(OSError):  # best effort: the kernel caps or refuses it
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.bind(address)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


class UdpTransport(Transport):
    """SIP over UDP: one message per datagram (RFC 3261 §18.1.1, §18.2.1). Use :meth:`listen`."""

    name = "UDP"
    reliable = False

    def __init__(
        self,
        queue: InboundQueue,
        limits: Limits | None = None,
        on_send_error: SendErrorHandler | None = None,
    ) -> None:
        super().__init__(queue, limits, on_send_error)
        self._transport: asyncio.DatagramTransport | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._address: tuple[str, int] = ("", 0)
        self._tasks: set[asyncio.Task[None]] = set()

    @classmethod
    async def listen(
        cls,
        queue: InboundQueue,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        limits: Limits | None = None,
        on_send_error: SendErrorHandler | None = None,
        reuse_port: bool = False,
        rcvbuf: int | None = None,
    ) -> UdpTransport:
        """Bind a UDP socket on ``host:port`` (port 0: any free port) and start receiving.

        ``reuse_port`` sets SO_REUSEPORT before binding, so several processes share the port
        (the kernel spreads datagrams by 4-tuple); ``rcvbuf`` (bytes, > 0) asks for a larger
        SO_RCVBUF to absorb bursts, capped by the kernel (``net.core.rmem_max``) and ignored
        where refused.
        """
        loop = asyncio.get_running_loop()
        self = cls(queue, limits, on_send_error)
        if reuse_port or (rcvbuf is not None and rcvbuf > 0):
            sock = await _udp_socket(loop, host, port, reuse_port=reuse_port, rcvbuf=rcvbuf)
            try:
                transport, _ = await loop.create_datagram_endpoint(lambda: _UdpProtocol(self), sock=sock)
            except BaseException:
                sock.close()
                raise
        else:
            transport, _ = await loop.create_datagram_endpoint(
                lambda: _UdpProtocol(self), local_addr=(host, port)
            )
        self._transport = transport
        self._loop = loop
        sockname = transport.get_extra_info("sockname")
        self._address = (str(sockname[0]), int(sockname[1]))
        return self

    @property
    def local_address(self) -> tuple[str, int]:
        return self._address

    def _datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        assert self._loop is not None
        self.bytes_received += len(data)
        _inc(SIP_BYTES_RECEIVED, self.name, None, len(data))
        peer = Peer(self.name, str(addr[0]), int(addr[1]))

        def reply(raw: bytes) -> None:
            if self._transport is not None:
                self._transport.sendto(raw, (peer.host, peer.port))

        if not data.strip(b"\r\n \t"):
            return  # keep-alive (RFC 5626 §3.5.1 CRLF / empty datagram): not a message
        if len(data) > self.limits.max_message_bytes:
            self._reject(data, RemoteProtocolError("too_large", 513, "datagram over limit"), reply)
            return
        try:
            message = parse_datagram(data, self.limits)
        except RemoteProtocolError as err:
            self._reject(data, err, reply)
            return
        except Exception:  # the parser promises only RemoteProtocolError; never crash anyway
            log.exception("parser raised an unexpected exception")
            SIP_MESSAGES_DROPPED.labels(self.name, "malformed").inc()
            return
        self._accept(message, peer, self._loop.time(), data, reply)

    def send(self, message: Outgoing, peer: Peer) -> None:
        if self._transport is None or self._transport.is_closing():
            self._drop(message, peer, "closed")
            return
        if not is_ip_literal(peer.host):
            assert self._loop is not None
            task = self._loop.create_task(self._resolve_and_send(message, peer))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            return
        data, kind = _encode(message)
        if len(data) > self.limits.max_message_bytes:
            self._drop(message, peer, "too_large")
            return
        try:
            self._transport.sendto(data, (peer.host.strip("[]"), peer.port))
        except OSError:
            self._drop(message, peer, "send_failed")
            return
        _inc(SIP_BYTES_SENT, self.name, None, len(data))
        _inc(SIP_MESSAGES_SENT, self.name, kind)

    async def _resolve_and_send(self, message: Outgoing, peer: Peer) -> None:
        assert self._loop is not None
        try:
            infos = await self._loop.getaddrinfo(peer.host, peer.port, type=2)  # SOCK_DGRAM
        except OSError:
            self._drop(message, peer, "no_route")
            return
        if not infos:
            self._drop(message, peer, "no_route")
            return
        host = str(infos[0][4][0])
        self.send(message, Peer(peer.transport, host, peer.port))

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._transport is not None:
            self._transport.close()
            self._transport = None


class _StreamConnection(asyncio.Protocol):
    """One TCP/TLS connection: a StreamFramer on input, writes on output."""

    def __init__(self, owner: StreamTransport, outbound_key: tuple[str, int] | None = None) -> None:
        self.owner = owner
        self.framer = StreamFramer(owner.limits)
        self.transport: asyncio.Transport | None = None
        self.peer: Peer | None = None
        self.outbound_key = outbound_key
        self.closed = asyncio.get_running_loop().create_future()
        self.backlog: deque[Message] = deque()  # framed, waiting for room in the queue
        self.paused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        addr = transport.get_extra_info("peername")
        self.peer = Peer(self.owner.name, str(addr[0]), int(addr[1]))
        self.owner._register(self)

    def data_received(self, data: bytes) -> None:
        assert self.peer is not None and self.transport is not None
        owner = self.owner
        owner.bytes_received += len(data)
        _inc(SIP_BYTES_RECEIVED, owner.name, None, len(data))
        if data == b"\r\n\r\n" and self.framer.buffered == 0:
            self.transport.write(b"\r\n")  # RFC 5626 §3.5.1: CRLF keep-alive ping -> pong
            return
        try:
            messages = self.framer.feed(data)
        except RemoteProtocolError as err:
            # A stream cannot be resynchronised after a framing error: answer if we can, close.
            transport = self.transport
            owner._reject(data, err, transport.write)
            transport.close()
            return
        except Exception:
            log.exception("stream framer raised an unexpected exception")
            SIP_MESSAGES_DROPPED.labels(owner.name, "malformed").inc()
            self.transport.close()
            return
        self.backlog.extend(messages)
        self._deliver()

    def _deliver(self) -> None:
        """Move framed messages to the inbound queue; pause reading while it is full."""
        assert self.peer is not None and self.transport is not None
        owner = self.owner
        now = asyncio.get_running_loop().time()
        backlog = self.backlog
        while backlog:
            if owner.queue.full():
                if not self.paused:
                    self.paused = True
                    self.transport.pause_reading()
                    owner.queue.when_drained(self._drained)
                return
            message = backlog.popleft()
            owner._accept(message, self.peer, now, message_bytes(message), self.transport.write)

    def _drained(self) -> None:
        if self.transport is None or self.transport.is_closing():
            self.backlog.clear()
            return
        self.paused = False
        self._deliver()
        if not self.paused:
            self.transport.resume_reading()

    def write(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.owner._unregister(self)
        if not self.closed.done():
            self.closed.set_result(None)


class StreamTransport(Transport):
    """SIP over TCP, or TLS when given an :class:`ssl.SSLContext` (RFC 3261 §18, §26.2).

    Connections are reused in both directions: one table keyed by the remote
    ``(host, port)`` holds accepted and opened connections, and a request to a peer that
    already has a connection to us goes over it (§18.1.1, §18.2.2). Messages sent while a
    connection is being opened wait for it; a failed connect drops them with reason
    ``connect_failed``. ``max_connections`` bounds the table (new accepts beyond it are refused).
    """

    reliable = True

    def __init__(
        self,
        queue: InboundQueue,
        limits: Limits | None = None,
        on_send_error: SendErrorHandler | None = None,
        *,
        server_ssl: ssl.SSLContext | None = None,
        client_ssl: ssl.SSLContext | None = None,
        server_hostname: str | None = None,
        max_connections: int = 1024,
        connect_timeout: float = 5.0,
    ) -> None:
        super().__init__(queue, limits, on_send_error)
        tls = server_ssl is not None or client_ssl is not None
        self.name = "TLS" if tls else "TCP"
        self.server_ssl = server_ssl
        self.client_ssl = client_ssl if client_ssl is not None or not tls else (
            ssl.create_default_context()
        )
        self.server_hostname = server_hostname
        self.max_connections = max_connections
        self.connect_timeout = connect_timeout
        self._server: asyncio.Server | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._address: tuple[str, int] = ("", 0)
        self._connections: dict[tuple[str, int], _StreamConnection] = {}
        self._pending: dict[tuple[str, int], list[Outgoing]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    @classmethod
    async def listen(
        cls,
        queue: InboundQueue,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        server_ssl: ssl.SSLContext | None = None,
        client_ssl: ssl.SSLContext | None = None,
        server_hostname: str | None = None,
        limits: Limits | None = None,
        on_send_error: SendErrorHandler | None = None,
        max_connections: int = 1024,
    ) -> StreamTransport:
        """Listen on ``host:port``; TLS when ``server_ssl`` is given (then the name is "TLS").

        ``client_ssl`` (and ``server_hostname``, default: the destination host) are used for
        connections this transport opens; with TLS and no ``client_ssl`` a default verifying
        context is used.
        """
        loop = asyncio.get_running_loop()
        self = cls(
            queue,
            limits,
            on_send_error,
            server_ssl=server_ssl,
            client_ssl=client_ssl,
            server_hostname=server_hostname,
            max_connections=max_connections,
        )
        self._loop = loop
        self._server = await loop.create_server(
            lambda: _StreamConnection(self), host, port, ssl=server_ssl
        )
        sockname = self._server.sockets[0].getsockname()
        self._address = (str(sockname[0]), int(sockname[1]))
        return self

    @property
    def local_address(self) -> tuple[str, int]:
        return self._address

    @property
    def connection_count(self) -> int:
        return len(self._connections)

    def _has_connection(self, peer: Peer) -> bool:
        conn = self._connections.get((peer.host, peer.port))
        return conn is not None and conn.transport is not None and not conn.transport.is_closing()

    def _register(self, conn: _StreamConnection) -> None:
        assert conn.peer is not None and conn.transport is not None
        key = (conn.peer.host, conn.peer.port)
        if conn.outbound_key is None and len(self._connections) >= self.max_connections:
            SIP_MESSAGES_DROPPED.labels(self.name, "too_many_connections").inc()
            conn.transport.close()
            return
        self._connections[key] = conn
        if conn.outbound_key is not None and conn.outbound_key != key:
            self._connections[conn.outbound_key] = conn
        SIP_CONNECTIONS_OPEN.labels(self.name).inc()

    def _unregister(self, conn: _StreamConnection) -> None:
        removed = False
        for key in [k for k, c in self._connections.items() if c is conn]:
            del self._connections[key]
            removed = True
        if removed:
            SIP_CONNECTIONS_OPEN.labels(self.name).dec()

    def send(self, message: Outgoing, peer: Peer) -> None:
        key = (peer.host, peer.port)
        conn = self._connections.get(key)
        if conn is not None and conn.transport is not None and not conn.transport.is_closing():
            self._write(conn, message, peer)
            return
        if peer.fallback is not None and peer.fallback != key:
            # §18.2.2: the request's connection is gone; open one to Via received:sent-by port.
            self.send(message, Peer(peer.transport, peer.fallback[0], peer.fallback[1]))
            return
        if self._loop is None or self._server is None:
            self._drop(message, peer, "closed")
            return
        waiting = self._pending.get(key)
        if waiting is not None:
            waiting.append(message)
            return
        self._pending[key] = [message]
        task = self._loop.create_task(self._connect(key, peer))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _write(self, conn: _StreamConnection, message: Outgoing, peer: Peer) -> None:
        data, kind = _encode(message)
        try:
            conn.write(data)
        except (OSError, RuntimeError):
            self._drop(message, peer, "send_failed")
            return
        _inc(SIP_BYTES_SENT, self.name, None, len(data))
        _inc(SIP_MESSAGES_SENT, self.name, kind)

    async def _connect(self, key: tuple[str, int], peer: Peer) -> None:
        assert self._loop is not None
        hostname = None
        if self.client_ssl is not None:
            hostname = self.server_hostname or peer.host
        try:
            _, conn = await asyncio.wait_for(
                self._loop.create_connection(
                    lambda: _StreamConnection(self, outbound_key=key),
                    peer.host.strip("[]"),
                    peer.port,
                    ssl=self.client_ssl,
                    server_hostname=hostname,
                ),
                self.connect_timeout,
            )
        except (OSError, ssl.SSLError, TimeoutError):
            for message in self._pending.pop(key, []):
                self._drop(message, peer, "connect_failed")
            return
        for message in self._pending.pop(key, []):
            self._write(conn, message, peer)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        conns = list({id(c): c for c in self._connections.values()}.values())
        for conn in conns:
            if conn.transport is not None:
                conn.transport.close()
        for conn in conns:
            try:
                await asyncio.wait_for(asyncio.shield(conn.closed), 2.0)
            except TimeoutError:
                if conn.transport is not None:
                    conn.transport.abort()
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None
