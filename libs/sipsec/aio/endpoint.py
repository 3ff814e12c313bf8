"""The asyncio shell around the sans-IO :class:`~sipsec.sip.core.SipCore`: transports in, one timer.

A :class:`SipEndpoint` owns the transports (UDP, TCP, TLS), the bounded inbound queue they
share, the transaction core, and exactly one ``loop.call_at`` handle that is re-armed from
the cores' ``get_timer()`` after every interaction (aioquic's shape). One consumer task
takes messages off the queue and feeds the core; whatever the core wants sent goes out
through the transport named by the destination :class:`~sipsec.aio.transport.Peer`; every
core event goes to the transaction user's ``handler`` (a proxy core,
the UA gateway, a test driver).

Usage::

    endpoint = SipEndpoint(handler=my_handler)           # SipCore(ua=True) by default
    udp = await endpoint.listen_udp("127.0.0.1", 0)
    endpoint.start()
    txn = endpoint.send_request(request, Peer("UDP", "127.0.0.1", 5060))
    ...
    await endpoint.close()
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable
from typing import Protocol

from sipsec.sip.core import SipCore
from sipsec.sip.events import Event, MessageDropped
from sipsec.sip.message import Request, Response, generate_branch
from sipsec.sip.parser import Limits
from sipsec.sip.transaction import ClientTransaction, ServerTransaction
from sipsec.telemetry.sip import SIP_MESSAGES_DROPPED

from .transport import (
    ConnectionLimits,
    Inbound,
    InboundQueue,
    Outgoing,
    Peer,
    StreamTransport,
    Transport,
    UdpTransport,
)

__all__ = ["EventHandler", "SingleTimer", "SipEndpoint", "TimerSource"]

log = logging.getLogger(__name__)

#: Receives every core event (synchronously, on the loop); it may send from inside.
EventHandler = Callable[[Event], None]


class TimerSource(Protocol):
    """Anything with aioquic-style timers: a sans-IO core, a TU with its own deadlines."""

    def get_timer(self) -> float | None: ...

    def handle_timer(self, now: float) -> None: ...


class SingleTimer:
    """One ``loop.call_at`` for many sans-IO timer sources.

    :meth:`rearm` asks every source for its next deadline and (re)arms a single handle
    at the earliest; when it fires, each source whose deadline has passed gets
    ``handle_timer(now)`` and ``on_fired`` runs (the endpoint flushes output there).
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        sources: list[TimerSource],
        on_fired: Callable[[], None],
    ) -> None:
        self._loop = loop
        self.sources = sources
        self._on_fired = on_fired
        self._handle: asyncio.TimerHandle | None = None
        self._at: float | None = None
        self.fired = 0  # how many times the handle fired (for tests and introspection)

    @property
    def deadline(self) -> float | None:
        """When the armed handle fires (loop time), or None."""
        return self._at

    def rearm(self) -> None:
        deadline: float | None = None
        for source in self.sources:
            t = source.get_timer()
            if t is not None and (deadline is None or t < deadline):
                deadline = t
        if deadline == self._at:
            return
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self._at = deadline
        if deadline is not None:
            self._handle = self._loop.call_at(deadline, self._fire)

    def _fire(self) -> None:
        self._handle = None
        self._at = None
        self.fired += 1
        now = self._loop.time()
        try:
            for source in self.sources:
                t = source.get_timer()
                if t is not None and t <= now:
                    source.handle_timer(now)
            self._on_fired()
        except Exception:  # a bug in a source must not leave every timer unarmed
            log.exception("timer source failed")
        self.rearm()

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
        self._handle = None
        self._at = None


class SipEndpoint:
    """Transports + inbound queue + :class:`SipCore` + one timer + an event handler.

    ``handler`` receives the core's events; :meth:`send_request`, :meth:`send_response`
    and :meth:`send_stateless` may be called from inside it. Input is processed by one
    task (:meth:`start`); :meth:`close` stops it and closes every transport.
    """

    def __init__(
        self,
        core: SipCore | None = None,
        *,
        handler: EventHandler | None = None,
        queue_size: int = 1024,
        limits: Limits | None = None,
    ) -> None:
        self.core = core if core is not None else SipCore(ua=True)
        self.handler = handler
        self.queue = InboundQueue(queue_size)
        self.limits = limits or Limits()
        self.transports: dict[str, Transport] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: SingleTimer | None = None
        self._extra_sources: list[TimerSource] = []
        self._task: asyncio.Task[None] | None = None
        self._flushing = False
        self.processed = 0  # inbound messages handed to the core

    # -- set-up -----------------------------------------------------------------------------

    def _ensure_loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
            self._timer = SingleTimer(self._loop, [self.core, *self._extra_sources], self._flush)
        return self._loop

    def add_timer_source(self, source: TimerSource) -> None:
        """Let another sans-IO object (a TU with its own deadlines) share the one timer."""
        self._extra_sources.append(source)
        if self._timer is not None:
            self._timer.sources.append(source)
            self._timer.rearm()

    async def listen_udp(self, host: str = "127.0.0.1", port: int = 0) -> UdpTransport:
        self._ensure_loop()
        transport = await UdpTransport.listen(
            self.queue, host, port, limits=self.limits, on_send_error=self._send_failed
        )
        self.transports[transport.name] = transport
        return transport

    async def listen_tcp(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        server_ssl: ssl.SSLContext | None = None,
        client_ssl: ssl.SSLContext | None = None,
        server_hostname: str | None = None,
        connection_limits: ConnectionLimits | None = None,
    ) -> StreamTransport:
        """Listen for TCP, or for TLS when an SSL context is given (then named "TLS");
        ``connection_limits`` bounds its connections (secure defaults when None)."""
        self._ensure_loop()
        transport = await StreamTransport.listen(
            self.queue, host, port, server_ssl=server_ssl, client_ssl=client_ssl,
            server_hostname=server_hostname, limits=self.limits,
            on_send_error=self._send_failed, connection_limits=connection_limits,
        )
        self.transports[transport.name] = transport
        return transport

    def start(self) -> None:
        """Start the task that feeds queued input to the core."""
        loop = self._ensure_loop()
        if self._task is None:
            self._task = loop.create_task(self._run(), name="sipsec-endpoint")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        if self._timer is not None:
            self._timer.cancel()
        for transport in self.transports.values():
            await transport.close()

    # -- helpers for the TU -------------------------------------------------------------------

    @property
    def timer(self) -> SingleTimer:
        self._ensure_loop()
        assert self._timer is not None
        return self._timer

    def now(self) -> float:
        return self._ensure_loop().time()

    def transport(self, name: str) -> Transport:
        try:
            return self.transports[name.upper()]
        except KeyError:
            raise LookupError(f"no {name} transport is listening") from None

    def via(self, transport: str = "UDP", branch: str | None = None) -> str:
        """A top Via value for a request sent over ``transport`` (fresh branch, ``rport``)."""
        t = self.transport(transport)
        host, port = t.local_address
        return f"SIP/2.0/{t.name} {host}:{port};branch={branch or generate_branch()};rport"

    # -- sending --------------------------------------------------------------------------

    def send_request(self, request: Request, peer: Peer) -> ClientTransaction | None:
        """Send ``request`` in a new client transaction (an ACK is sent as is: None)."""
        transport = self.transport(peer.transport)
        txn = self.core.send_request(request, peer, self.now(), reliable=transport.reliable)
        self._flush()
        return txn

    def send_response(self, txn: ServerTransaction, response: Response) -> None:
        self.core.send_response(txn, response, self.now())
        self._flush()

    def send_stateless(self, message: Request | Response, peer: Peer) -> None:
        self.core.send_stateless(message, peer)
        self._flush()

    def cancel(self, invite: ClientTransaction) -> ClientTransaction | None:
        txn = self.core.cancel(invite, self.now())
        self._flush()
        return txn

    # -- the loop -------------------------------------------------------------------------

    async def _run(self) -> None:
        queue = self.queue
        while True:
            item = await queue.get()
            try:
                self._feed(item)
                # drain what is already queued (bounded) before flushing once
                for _ in range(64):
                    try:
                        item = queue.get_nowait()
                    except asyncio.QueueEmpty:
                        break
                    self._feed(item)
                self._flush()
            except Exception:  # never let one message stop the endpoint
                log.exception("endpoint failed on inbound input")
                SIP_MESSAGES_DROPPED.labels(item.transport.name, "handler_error").inc()

    def _feed(self, item: Inbound) -> None:
        message = item.message
        addr = item.peer
        if isinstance(message, Request):
            addr = item.transport.response_peer(message, item.peer)
        try:
            self.core.receive_message(message, addr, item.received_at, reliable=item.transport.reliable)
        except Exception:  # a core bug must not stop the endpoint
            log.exception("core failed on an inbound message")
            SIP_MESSAGES_DROPPED.labels(item.transport.name, "handler_error").inc()
        self.processed += 1

    def _send_failed(self, message: Outgoing, peer: Peer, reason: str) -> None:
        """§17.1.4 / §17.2.4: tell the transactions that use ``peer`` their send failed."""
        now = self.now()
        txns: list[ClientTransaction | ServerTransaction] = [
            *self.core.client_transactions.values(),
            *self.core.server_transactions.values(),
        ]
        for txn in txns:
            if not txn.terminated and txn.addr == peer:
                txn.transport_error(now)
        self._flush()

    def _flush(self) -> None:
        """Transmit the core's output, hand its events to the TU, re-arm the one timer."""
        if self._flushing:
            return
        self._flushing = True
        try:
            core = self.core
            while True:
                out = core.datagrams_to_send()
                for data, peer in out:
                    self._transmit(data, peer)
                event = core.next_event()
                if event is None and not out:
                    break
                if event is not None:
                    self._dispatch(event)
        finally:
            self._flushing = False
        if self._timer is not None:
            self._timer.rearm()

    def _transmit(self, data: bytes, peer: Peer) -> None:
        transport = self.transports.get(peer.transport)
        if transport is None:
            SIP_MESSAGES_DROPPED.labels(peer.transport, "no_route").inc()
            return
        transport.send(data, peer)

    def _dispatch(self, event: Event) -> None:
        if isinstance(event, MessageDropped):
            SIP_MESSAGES_DROPPED.labels(_transport_name(event.addr), event.reason).inc()
        if self.handler is None:
            return
        try:
            self.handler(event)
        except Exception:  # a TU bug must not stop the endpoint: log and count it
            log.exception("event handler failed on %s", type(event).__name__)
            addr = getattr(event, "addr", None)
            txn = getattr(event, "transaction", None)
            if addr is None and txn is not None:
                addr = txn.addr
            SIP_MESSAGES_DROPPED.labels(_transport_name(addr), "handler_error").inc()


def _transport_name(addr: object) -> str:
    return addr.transport if isinstance(addr, Peer) else "UDP"
