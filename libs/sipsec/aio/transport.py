"""asyncio SIP transports (UDP, TCP, TLS): a thin shell that moves bytes for the sans-IO rules.

The protocol logic of RFC 3261 §18 lives in :mod:`sipsec.sip.transport_rules` (validation,
``received``/``rport`` stamping, response destinations, stateless error responses); the
transports here turn sockets into calls of those pure functions and act on their verdicts:
one message per UDP datagram, :class:`~sipsec.sip.StreamFramer` on TCP/TLS, each accepted
message put on a bounded :class:`InboundQueue` (dropping and counting when it is full), and
messages sent out — responses to the address §18.2.2 / RFC 3581 §4 select, over the
connection the request came on when it is still open.

Bad input never raises out of a transport: any request whose top Via can be read is
answered statelessly with the parser's status hint (400, 413, 505, 513…) *to the packet's
source address*; everything else is dropped and counted in
``sipsec_sip_messages_dropped_total{transport, reason}``.

Stream connections are kept in check by :class:`ConnectionLimits` (idle and header-read
timeouts, a per-source cap, a global cap with a budget reserved for configured peers),
counted in ``sipsec_sip_connections_open``, ``sipsec_sip_connections_rejected_total`` and
``sipsec_sip_connections_closed_total``.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import dataclasses
import ipaddress
import logging
import socket
import ssl
import struct
import sys
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal, cast

from sipsec.sip.errors import RemoteProtocolError
from sipsec.sip.framing import StreamFramer
from sipsec.sip.message import Request, Response
from sipsec.sip.parser import Limits
from sipsec.sip.transport_rules import (
    DEFAULT_PORTS,
    Accepted,
    Answered,
    Dropped,
    Verdict,
    build_error_response,
    receive_datagram,
    receive_message,
    reject,
    response_destination,
    response_target,
    stamp_received,
    validate_received,
    via_destination,
)
from sipsec.sip.uri import is_ip_literal
from sipsec.telemetry.sip import (
    SIP_BAD_REQUESTS_ANSWERED,
    SIP_BYTES_RECEIVED,
    SIP_BYTES_SENT,
    SIP_CONNECTIONS_CLOSED,
    SIP_CONNECTIONS_OPEN,
    SIP_CONNECTIONS_REJECTED,
    SIP_MESSAGES_DROPPED,
    SIP_MESSAGES_RECEIVED,
    SIP_MESSAGES_SENT,
)

__all__ = [
    "DEFAULT_PORTS",
    "ConnectionLimits",
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
    "client_tls_context",
    "response_destination",
    "server_tls_context",
    "stamp_received",
    "validate_received",
    "via_destination",
]

log = logging.getLogger(__name__)

TransportName = Literal["UDP", "TCP", "TLS"]
Message = Request | Response


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
        (host, port), fallback = response_target(
            request, (source.host, source.port), self.name, self.reliable
        )
        return Peer(self.name, host, port, fallback=fallback)

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

    def _act(
        self, verdict: Verdict, peer: Peer, now: float, reply: Callable[[bytes], None]
    ) -> None:
        """Carry out a §18 verdict: queue, answer (to the source only) or count a drop."""
        if isinstance(verdict, Accepted):
            message = verdict.message
            if self.queue.offer(Inbound(message, peer, self, now)):
                _inc(SIP_MESSAGES_RECEIVED, self.name, _kind(message))
        elif isinstance(verdict, Answered):
            _inc(SIP_BAD_REQUESTS_ANSWERED, self.name, str(verdict.status))
            _inc(SIP_MESSAGES_DROPPED, self.name, verdict.reason)
            reply(verdict.response)
            _inc(SIP_BYTES_SENT, self.name, None, len(verdict.response))
            _inc(SIP_MESSAGES_SENT, self.name, "response")
        elif isinstance(verdict, Dropped):
            _inc(SIP_MESSAGES_DROPPED, self.name, verdict.reason)
        # KeepAlive: not a message


class _UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, owner: UdpTransport) -> None:
        self.owner = owner

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        self.owner._datagram_received(data, addr)

    def error_received(self, exc: Exception) -> None:
        # ICMP errors (port unreachable...) for an earlier sendto.
        self.owner._icmp_errors()


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
        _ask_icmp_errors(sock, family)
        sock.bind(address)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def _ask_icmp_errors(sock: socket.socket, family: int) -> None:
    """Queue ICMP errors (port unreachable…) for an unconnected UDP socket (Linux ``IP_RECVERR``):
    without it the kernel reports none, and a request to a closed port waits for Timer B/F."""
    level, option = ((socket.IPPROTO_IPV6, getattr(socket, "IPV6_RECVERR", 25)) if family == socket.AF_INET6
                     else (socket.IPPROTO_IP, getattr(socket, "IP_RECVERR", 11)))
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError):
            sock.setsockopt(level, option, 1)


async def _listening_sockets(
    loop: asyncio.AbstractEventLoop, host: str, port: int, backlog: int
) -> list[socket.socket]:
    """Bound, listening, non-blocking TCP sockets, one per address ``host`` resolves to
    (as ``loop.create_server`` binds them: SO_REUSEADDR, IPv6 sockets IPv6-only)."""
    infos = await loop.getaddrinfo(
        host or None, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP,
        flags=socket.AI_PASSIVE,
    )  # fmt: skip
    if not infos:
        raise OSError(f"cannot resolve {host!r}")
    socks: list[socket.socket] = []
    try:
        for family, kind, proto, _, address in dict.fromkeys(infos):
            sock = socket.socket(family, kind, proto)
            socks.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6 and hasattr(socket, "IPPROTO_IPV6"):
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            if port == 0 and len(socks) > 1:
                address = (address[0], socks[0].getsockname()[1], *address[2:])
            sock.bind(address)
            sock.listen(backlog)
            sock.setblocking(False)
    except BaseException:
        for sock in socks:
            sock.close()
        raise
    return socks


#: ICMP errors read per wake-up of the socket; the rest wait for the next one.
_MAX_ICMP_ERRORS_PER_WAKEUP = 64


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
        self._sock: socket.socket | None = None

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
        sock = await _udp_socket(loop, host, port, reuse_port=reuse_port, rcvbuf=rcvbuf)
        try:
            transport, _ = await loop.create_datagram_endpoint(lambda: _UdpProtocol(self), sock=sock)
        except BaseException:
            sock.close()
            raise
        self._sock = sock
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

        try:
            verdict = receive_datagram(data, (peer.host, peer.port), self.limits)
        except Exception:  # the rules promise verdicts only; never crash anyway
            log.exception("the receive rules raised unexpectedly")
            _inc(SIP_MESSAGES_DROPPED, self.name, "handler_error")
            return
        self._act(verdict, peer, self._loop.time(), reply)

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

    def _icmp_errors(self) -> None:
        """Read the socket's queued ICMP errors (``MSG_ERRQUEUE``): each gives back the datagram
        that failed (the head of it: ICMP quotes at most ~500 bytes) and where it was going,
        reported as a send failure, so the request's transaction ends with 503 (§8.1.3.1) at
        once. Where the kernel queues none, the error is only counted."""
        errors = 0
        while self._sock is not None and errors < _MAX_ICMP_ERRORS_PER_WAKEUP:
            try:
                data, _, _, addr = self._sock.recvmsg(self.limits.max_message_bytes, 512, socket.MSG_ERRQUEUE)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:  # no error queue here (not Linux, or IP_RECVERR refused)
                break
            errors += 1
            if isinstance(addr, tuple) and len(addr) >= 2:
                self._drop(data, Peer(self.name, str(addr[0]), int(addr[1])), "send_failed")
            else:
                SIP_MESSAGES_DROPPED.labels(self.name, "send_failed").inc()
        if errors == 0:
            SIP_MESSAGES_DROPPED.labels(self.name, "send_failed").inc()

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


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    """Bounds on TCP/TLS connections (the stream transports' hygiene), secure by default.

    ``max_connections``: open connections in all (accepted and opened). New connections
    from sources that are not ``peers`` are refused once ``max_connections -
    reserved_for_peers`` are open, so configured peers can still connect when a flood has
    taken the rest. ``max_per_source``: connections one source may hold open (an IPv4
    address, or an IPv6 /64); configured peers are exempt. ``peers``: the allow-list of
    configured peers (IP addresses or networks, e.g. ``"192.0.2.10"``, ``"10.0.0.0/8"``).
    ``idle_timeout``: a connection that carries nothing (no message, no keep-alive, RFC
    5626 §3.5.1) for this many seconds is closed. ``header_timeout``: a message must
    arrive whole within this many seconds of its first byte, and an accepted connection
    must deliver its first message (or keep-alive) within it; a TLS handshake counts
    against it too. ``unacked_timeout``: a connection whose sent data stays unacknowledged
    this many seconds is aborted by the kernel (``TCP_USER_TIMEOUT``, Linux; elsewhere the
    system's retransmission limit, ~15 min): a peer cut off by the network then costs one
    failed connection, which the owner answers like a refused one (503), and the next message
    opens a new connection, instead of queueing behind TCP's backed-off retransmissions of
    the old one after the network is back. Connections this transport opens itself are never refused.
    """

    max_connections: int = 1024
    max_per_source: int = 32
    reserved_for_peers: int = 64
    peers: tuple[str, ...] = ()
    idle_timeout: float = 180.0
    header_timeout: float = 10.0
    unacked_timeout: float = 10.0

    def __post_init__(self) -> None:
        if self.max_connections < 1 or self.max_per_source < 1:
            raise ValueError("max_connections and max_per_source must be at least 1")
        if not 0 <= self.reserved_for_peers < self.max_connections:
            raise ValueError("reserved_for_peers must be in [0, max_connections)")
        if not (self.idle_timeout > 0 and self.header_timeout > 0 and self.unacked_timeout > 0):
            raise ValueError("idle_timeout, header_timeout and unacked_timeout must be positive")
        for peer in self.peers:
            ipaddress.ip_network(peer, strict=False)  # ValueError names a bad entry

    @classmethod
    def with_peers(cls, peers: Iterable[str], **kwargs: Any) -> ConnectionLimits:
        """The defaults (or ``kwargs``) with ``peers`` as the allow-list."""
        return cls(peers=tuple(peers), **kwargs)


DEFAULT_CONNECTION_LIMITS = ConnectionLimits()


def _source_key(host: str) -> str:
    """What the per-source cap counts by: the IPv4 address, or the IPv6 /64 (one host's share)."""
    try:
        ip = ipaddress.ip_address(host.strip("[]").split("%", 1)[0])
    except ValueError:
        return host
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


_RESET_ON_CLOSE = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends a reset
_ABORTED = frozenset({"idle_timeout", "header_timeout", "tls_handshake_failed"})


def _set_unacked_timeout(transport: asyncio.BaseTransport, seconds: float) -> None:
    """``TCP_USER_TIMEOUT`` on the connection's socket, where the system has it
    (:class:`ConnectionLimits`, ``unacked_timeout``)."""
    option = getattr(socket, "TCP_USER_TIMEOUT", None)
    sock = transport.get_extra_info("socket")
    if option is None or sock is None:
        return
    with contextlib.suppress(OSError):  # not a TCP socket (a test's socketpair)
        sock.setsockopt(socket.IPPROTO_TCP, option, max(1, int(seconds * 1000)))


class _StreamConnection(asyncio.Protocol):
    """One TCP/TLS connection: a StreamFramer on input, writes on output, two deadlines.

    The deadlines are lazy: data only moves timestamps, and the one ``call_at`` handle,
    when it fires, either closes the connection or re-arms itself at the real deadline.
    """

    def __init__(
        self,
        owner: StreamTransport,
        outbound_key: tuple[str, int] | None = None,
        peer: Peer | None = None,
    ) -> None:
        self.owner = owner
        self.framer = StreamFramer(owner.limits)
        self.transport: asyncio.Transport | None = None
        #: an accepted connection knows its peer before any handshake (admission is by it)
        self.peer: Peer | None = peer
        self.source = "" if peer is None else _source_key(peer.host)
        self.outbound_key = outbound_key
        self.loop = asyncio.get_running_loop()
        self.closed = self.loop.create_future()
        self.backlog: deque[Message] = deque()  # framed, waiting for room in the queue
        self.paused = False
        self.admitted = False  # counted in the owner's table
        self.close_reason: str | None = None
        now = self.loop.time()
        self.last_activity = now
        # an accepted connection must deliver a first message within the header timeout
        self.partial_since: float | None = now if outbound_key is None else None
        self.timer: asyncio.TimerHandle | None = None

    # -- life cycle --

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """The connection is usable (for TLS: after the handshake)."""
        self.transport = cast(asyncio.Transport, transport)
        _set_unacked_timeout(transport, self.owner.connection_limits.unacked_timeout)
        if self.peer is None:  # one this transport opened
            addr = transport.get_extra_info("peername")
            self.peer = Peer(self.owner.name, str(addr[0]), int(addr[1]))
            self.source = _source_key(self.peer.host)
            self.owner._admit(self)
        self.owner._publish(self)
        self._arm()

    def lost_before_made(self, reason: str) -> None:
        """An accepted connection ended before it was usable (a failed TLS handshake)."""
        if self.closed.done():
            return
        self.close_reason = reason
        if self.admitted:
            SIP_CONNECTIONS_CLOSED.labels(self.owner.name, reason).inc()
        self.owner._unregister(self)
        self.closed.set_result(None)

    def close(self, reason: str) -> None:
        """Close now for ``reason`` (counted once); timeouts and errors do not linger."""
        if self.close_reason is not None or self.transport is None:
            return
        self.close_reason = reason
        if self.admitted:
            SIP_CONNECTIONS_CLOSED.labels(self.owner.name, reason).inc()
        if reason in _ABORTED:
            self.transport.abort()  # nothing worth flushing to a peer that stalls
        else:
            self.transport.close()  # flushes what was written (a 400 before a framing close)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.closed.done():
            return
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.close_reason is None:
            self.close_reason = "remote"
            if self.admitted:
                SIP_CONNECTIONS_CLOSED.labels(self.owner.name, "remote").inc()
        self.owner._unregister(self)
        self._discard_backlog()
        if not self.closed.done():
            self.closed.set_result(None)

    # -- deadlines --

    def _deadline(self) -> float:
        limits = self.owner.connection_limits
        if self.partial_since is not None:
            return self.partial_since + limits.header_timeout
        return self.last_activity + limits.idle_timeout

    def _arm(self) -> None:
        at = self._deadline()
        timer = self.timer
        if timer is not None:
            if timer.when() <= at:
                return  # fires first and re-arms itself at the real deadline
            timer.cancel()
        self.timer = self.loop.call_at(at, self._on_timer)

    def _on_timer(self) -> None:
        self.timer = None
        if self.close_reason is not None:
            return
        if self.loop.time() >= self._deadline():
            self.close("header_timeout" if self.partial_since is not None else "idle_timeout")
            return
        self._arm()

    # -- input --

    def data_received(self, data: bytes) -> None:
        if self.close_reason is not None:
            return  # being closed
        assert self.peer is not None and self.transport is not None
        owner = self.owner
        owner.bytes_received += len(data)
        _inc(SIP_BYTES_RECEIVED, owner.name, None, len(data))
        now = self.loop.time()
        self.last_activity = now
        framer = self.framer
        if data == b"\r\n\r\n" and framer.buffered == 0:
            self.transport.write(b"\r\n")  # RFC 5626 §3.5.1: CRLF keep-alive ping -> pong
            self.partial_since = None
            self._arm()
            return
        try:
            messages = framer.feed(data)
        except RemoteProtocolError as err:
            # A stream cannot be resynchronised after a framing error: answer if we can, close.
            transport = self.transport
            owner._act(reject(data, err), self.peer, now, transport.write)
            self.close("framing_error")
            return
        except Exception:
            log.exception("stream framer raised an unexpected exception")
            _inc(SIP_MESSAGES_DROPPED, owner.name, "handler_error")
            self.close("framing_error")
            return
        if framer.buffered == 0:
            self.partial_since = None
        elif messages or self.partial_since is None:
            self.partial_since = now  # a new message has begun
        self._arm()
        if messages:
            self.backlog.extend(messages)
            self._deliver()
        broken = framer.error
        if broken is not None:
            # bad bytes after complete messages in this read: the chunk is not the bad
            # message's own start, so nothing is answered; counted, and the stream closed
            _inc(SIP_MESSAGES_DROPPED, owner.name, broken.reason or "malformed")
            self.close("framing_error")

    def _deliver(self) -> None:
        """Move framed messages to the inbound queue; pause reading while it is full."""
        assert self.peer is not None and self.transport is not None
        owner = self.owner
        now = self.loop.time()
        backlog = self.backlog
        peer = self.peer
        source = (peer.host, peer.port)
        while backlog:
            if owner.queue.full():
                if not self.paused:
                    self.paused = True
                    self.transport.pause_reading()
                    owner.queue.when_drained(self._drained)
                return
            message = backlog.popleft()
            try:
                verdict = receive_message(message, source)
            except Exception:  # the rules promise verdicts only; never crash anyway
                log.exception("the receive rules raised unexpectedly")
                _inc(SIP_MESSAGES_DROPPED, owner.name, "handler_error")
                continue
            owner._act(verdict, peer, now, self.transport.write)

    def _drained(self) -> None:
        if self.transport is None or self.transport.is_closing():
            self._discard_backlog()
            return
        self.paused = False
        self._deliver()
        if not self.paused:
            self.transport.resume_reading()

    def _discard_backlog(self) -> None:
        """Framed messages still waiting for queue room when the connection ends: counted."""
        if self.backlog:
            _inc(SIP_MESSAGES_DROPPED, self.owner.name, "closed", len(self.backlog))
            self.backlog.clear()

    def write(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)
        self.last_activity = self.loop.time()


def client_tls_context(ca_file: str | None = None) -> ssl.SSLContext:
    """The context for TLS connections this side opens (RFC 3261 §26.3.1, RFC 5922 §7): the
    peer's certificate must chain to ``ca_file`` (a PEM bundle; None = the system's roots) and
    name the host connected to (DNS name, or IP address for an IP literal); TLS 1.2 or later.
    Raises OSError/ssl.SSLError when the file cannot be used."""
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca_file)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.check_hostname = True
    ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def server_tls_context(cert_file: str, key_file: str) -> ssl.SSLContext:
    """The context of a TLS listener: the PEM certificate chain and key; TLS 1.2 or later.
    Raises OSError/ssl.SSLError when they cannot be loaded."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert_file, key_file)
    return ctx


class StreamTransport(Transport):
    """SIP over TCP, or TLS when given an :class:`ssl.SSLContext` (RFC 3261 §18, §26.2).

    Connections are reused in both directions: one table keyed by the remote
    ``(host, port)`` holds accepted and opened connections, and a request to a peer that
    already has a connection to us goes over it (§18.1.1, §18.2.2). Messages sent while a
    connection is being opened wait for it; a failed connect drops them with reason
    ``connect_failed``. ``connection_limits`` (:class:`ConnectionLimits`) bounds accepted
    connections and closes idle and slow ones.
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
        connection_limits: ConnectionLimits | None = None,
        connect_timeout: float = 5.0,
    ) -> None:
        super().__init__(queue, limits, on_send_error)
        tls = server_ssl is not None or client_ssl is not None
        self.name = "TLS" if tls else "TCP"
        self.server_ssl = server_ssl
        # with TLS, connections opened verify the peer (system roots) unless told otherwise
        self.client_ssl = client_ssl if client_ssl is not None or not tls else client_tls_context()
        self.server_hostname = server_hostname
        self.connection_limits = connection_limits or DEFAULT_CONNECTION_LIMITS
        self._peer_nets = [ipaddress.ip_network(p, strict=False) for p in self.connection_limits.peers]
        self.connect_timeout = connect_timeout
        self._listeners: list[socket.socket] = []
        self._accepting: list[asyncio.Task[None]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._address: tuple[str, int] = ("", 0)
        self._open: set[_StreamConnection] = set()
        self._per_source: Counter[str] = Counter()
        self._connections: dict[tuple[str, int], _StreamConnection] = {}
        self._pending: dict[tuple[str, int], list[Outgoing]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        #: Hears each peer whose connection the peer closed or reset (a proxy fails the
        #: transactions still waiting on it: their responses can no longer come back on it).
        self.on_connection_lost: Callable[[Peer], None] | None = None

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
        connection_limits: ConnectionLimits | None = None,
        backlog: int = 512,
    ) -> StreamTransport:
        """Listen on ``host:port``; TLS when ``server_ssl`` is given (then the name is "TLS").

        ``client_ssl`` (and ``server_hostname``, default: the destination host) are used for
        connections this transport opens; with TLS and no ``client_ssl`` a default verifying
        context is used. The TLS handshake of an accepted connection starts only after the
        connection was admitted by ``connection_limits``.
        """
        loop = asyncio.get_running_loop()
        self = cls(
            queue,
            limits,
            on_send_error,
            server_ssl=server_ssl,
            client_ssl=client_ssl,
            server_hostname=server_hostname,
            connection_limits=connection_limits,
        )
        self._loop = loop
        self._listeners = await _listening_sockets(loop, host, port, backlog)
        sockname = self._listeners[0].getsockname()
        self._address = (str(sockname[0]), int(sockname[1]))
        self._accepting = [
            loop.create_task(self._accept_loop(listener), name=f"sipsec-{self.name}-accept")
            for listener in self._listeners
        ]
        return self

    @property
    def local_address(self) -> tuple[str, int]:
        return self._address

    @property
    def connection_count(self) -> int:
        """Open connections (accepted and opened, a TLS one also during its handshake)."""
        return len(self._open)

    def connections_from(self, host: str) -> int:
        """Open accepted connections counted against ``host``'s per-source cap."""
        return self._per_source[_source_key(host)]

    def _has_connection(self, peer: Peer) -> bool:
        conn = self._connections.get((peer.host, peer.port))
        return conn is not None and conn.transport is not None and not conn.transport.is_closing()

    def set_peers(self, peers: Iterable[str]) -> None:
        """Replaces the peer allow-list (addresses the owner resolved again, e.g. peer host
        names that now resolve to other addresses); the other limits stay."""
        self.connection_limits = dataclasses.replace(self.connection_limits, peers=tuple(peers))
        self._peer_nets = [ipaddress.ip_network(p, strict=False) for p in self.connection_limits.peers]

    def _is_peer(self, host: str) -> bool:
        if not self._peer_nets:
            return False
        try:
            ip = ipaddress.ip_address(host.strip("[]").split("%", 1)[0])
        except ValueError:
            return False
        return any(ip in net for net in self._peer_nets)

    async def _accept_loop(self, listener: socket.socket) -> None:
        """Accept, admit by source address, and only then start a connection (and its TLS
        handshake): refused sockets are closed before any work is spent on them."""
        loop = self._loop
        assert loop is not None
        while True:
            try:
                sock, addr = await loop.sock_accept(listener)
            except asyncio.CancelledError:
                raise
            except OSError:  # out of descriptors, or the peer gave up: back off briefly
                SIP_CONNECTIONS_REJECTED.labels(self.name, "accept_error").inc()
                await asyncio.sleep(0.05)
                continue
            sock.setblocking(False)
            conn = _StreamConnection(self, peer=Peer(self.name, str(addr[0]), int(addr[1])))
            refused = self._admit(conn)
            if refused is not None:
                SIP_CONNECTIONS_REJECTED.labels(self.name, refused).inc()
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET_ON_CLOSE)
                sock.close()  # a reset, no lingering state
                continue
            self._spawn(self._serve(sock, conn))

    async def _serve(self, sock: socket.socket, conn: _StreamConnection) -> None:
        """Hand an admitted socket to the loop (TLS: handshake within the header timeout)."""
        assert self._loop is not None
        tls = self.server_ssl
        try:
            await self._loop.connect_accepted_socket(
                lambda: conn, sock, ssl=tls,
                ssl_handshake_timeout=None if tls is None else self.connection_limits.header_timeout,
            )  # fmt: skip
        except asyncio.CancelledError:
            conn.lost_before_made("shutdown")
            sock.close()
            raise
        except Exception:  # noqa: BLE001 - a failed handshake only ends this connection
            conn.lost_before_made("tls_handshake_failed" if tls is not None else "remote")
            sock.close()

    def _admit(self, conn: _StreamConnection) -> str | None:
        """Count ``conn`` in, or name why it is refused (``global_limit``, ``per_source_limit``)."""
        if conn.outbound_key is None:
            limits = self.connection_limits
            n = len(self._open)
            if n >= limits.max_connections:
                return "global_limit"
            assert conn.peer is not None
            if not self._is_peer(conn.peer.host):
                if n >= limits.max_connections - limits.reserved_for_peers:
                    return "global_limit"
                if self._per_source[conn.source] >= limits.max_per_source:
                    return "per_source_limit"
            self._per_source[conn.source] += 1
        conn.admitted = True
        self._open.add(conn)
        SIP_CONNECTIONS_OPEN.labels(self.name).inc()
        return None

    def _publish(self, conn: _StreamConnection) -> None:
        """Make a ready connection usable for sending, by its remote and its dialled address."""
        assert conn.peer is not None
        key = (conn.peer.host, conn.peer.port)
        self._connections[key] = conn
        if conn.outbound_key is not None and conn.outbound_key != key:
            self._connections[conn.outbound_key] = conn

    def _unregister(self, conn: _StreamConnection) -> None:
        keys = [k for k, c in self._connections.items() if c is conn]
        for key in keys:
            del self._connections[key]
        if conn.close_reason == "remote" and self.on_connection_lost is not None:
            for host, port in keys:
                try:
                    self.on_connection_lost(Peer(self.name, host, port))
                except Exception:  # a bug above must not kill the transport
                    log.exception("on_connection_lost handler failed")
        if conn in self._open:
            self._open.discard(conn)
            SIP_CONNECTIONS_OPEN.labels(self.name).dec()
            if conn.outbound_key is None:
                left = self._per_source[conn.source] - 1
                if left > 0:
                    self._per_source[conn.source] = left
                else:
                    del self._per_source[conn.source]

    def _spawn(self, coro: Any) -> None:
        assert self._loop is not None
        task = self._loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

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
        if self._loop is None or not self._listeners:
            self._drop(message, peer, "closed")
            return
        waiting = self._pending.get(key)
        if waiting is not None:
            waiting.append(message)
            return
        self._pending[key] = [message]
        self._spawn(self._connect(key, peer))

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
        accepting, self._accepting = self._accepting, []
        for task in accepting:
            task.cancel()
        for task in accepting:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        listeners, self._listeners = self._listeners, []
        for listener in listeners:
            listener.close()
        for task in list(self._tasks):
            task.cancel()
        conns = list(self._open)
        for conn in conns:
            conn.close("shutdown")
        for conn in conns:
            try:
                await asyncio.wait_for(asyncio.shield(conn.closed), 2.0)
            except TimeoutError:
                if conn.transport is not None:
                    conn.transport.abort()
