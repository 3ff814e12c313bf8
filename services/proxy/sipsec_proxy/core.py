"""The RFC 3261 §16 transaction-stateful proxy core: validation, routing, forking, responses, CANCEL.

The core consumes parsed messages from the :mod:`sipsec.aio` transports (which have already
stamped ``received``/``rport`` on the top Via, RFC 3581) and drives the sans-IO transaction
machines of :mod:`sipsec.sip.transaction`, whose deadlines it arms with the event loop's
``call_at``. It routes on outer headers only (Request-URI, Route, Via, Max-Forwards, From,
To, CSeq, Call-ID) and never reads or changes a body; *where* a request may go is decided by
:func:`sipsec_proxy.routing.decide` (the routing policy, for the stateful and the stateless
paths alike). REGISTER requests for a served domain go to the
:class:`~sipsec_proxy.registrar.Registrar`.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import hmac
import itertools
import logging
import math
import re
import secrets
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from sipsec.aio.transport import Inbound, Outgoing, Peer, Transport, via_destination
from sipsec.sip import (
    LocalProtocolError,
    RemoteProtocolError,
    Request,
    Response,
    SipError,
    SipURI,
    Via,
    generate_tag,
    make_response,
    parse_message,
    parse_via_list,
)
from sipsec.sip.events import (
    Event,
    RequestReceived,
    ResponseReceived,
    TransactionTerminated,
    TransactionTimeout,
    TransportError,
)
from sipsec.sip.timers import DEFAULT_TIMERS, TimerSettings
from sipsec.sip.transaction import (
    ClientTransaction,
    ServerTransaction,
    Transaction,
    build_cancel,
    client_transaction_key,
    server_transaction_key,
)
from sipsec.stores.location import LocationError
from sipsec.telemetry import tracing
from sipsec.throttle import TokenBuckets

from sipsec_proxy.config import ProxyConfig
from sipsec_proxy.dns import DnsFailure, SipResolver, parse_dns
from sipsec_proxy.locator import Locator, status_name
from sipsec_proxy.metrics import ProxyMetrics, method_label
from sipsec_proxy.routing import (
    MARK_PARAM,
    NO_ANSWERS,
    AnswerHere,
    Answers,
    Decision,
    Forward,
    NeedDns,
    NeedLocation,
    Refuse,
    Register,
    RoutingPolicy,
    Target,
    decide,
    preprocess,
    upstream_hop,
)

__all__ = ["BRANCH_PREFIX", "LOCAL_TAG_PREFIX", "PENDING_KINDS", "ProxyCore", "RateLimiter", "Scheduler"]

log = logging.getLogger("sipsec.proxy")

#: Our Via branches: magic cookie, a marker, the loop-detection hash (§16.6 step 8), a counter.
BRANCH_PREFIX = "z9hG4bK-sps"
#: Via branch of what the proxy forwards statelessly (ACK for 2xx, CANCEL without a response context)
STATELESS_PREFIX = "z9hG4bK-spl"
#: Methods after which a dialog may exist: the proxy Record-Routes them (§16.6 step 4).
RECORD_ROUTE_METHODS = frozenset({"INVITE", "SUBSCRIBE", "REFER", "NOTIFY"})
#: To-tag prefix of the responses the proxy generates itself: an ACK carrying it is absorbed.
LOCAL_TAG_PREFIX = "spx"
#: Look-up rounds a routing decision may ask for (a dialog check, then DNS, …) before it is refused.
_MAX_ROUNDS = 4
#: What the untrusted sources' in-flight limit counts separately: routing lookups (location,
#: DNS) and REGISTER handling, so that a flood of one kind cannot starve the other.
PENDING_KINDS = ("route", "register")
#: §16.6 step 11 / §16.8: Timer C, "greater than 3 minutes", bounds an INVITE that rings forever.
TIMER_C = 181.0
#: Seconds during which repeats of a dependency or next-hop failure are counted, not logged:
#: a burst is logged once when it starts, then once per window with the number left out.
LOG_WINDOW = 10.0


class Scheduler(Protocol):
    """``loop.call_at``: run ``callback(*args)`` at ``when`` (the clock's time base); cancellable."""

    def __call__(self, when: float, callback: Callable[..., None], /, *args: Any) -> asyncio.TimerHandle:
        ...


class RateLimiter(TokenBuckets[str]):
    """Per-source token buckets (``rate`` tokens/s, ``burst`` deep) in a bounded LRU table,
    in the spirit of Kamailio's ``pike``: a source past its rate is dropped silently, and the
    table forgets the least recently seen source first, so a spoofed-source flood costs a
    fixed amount of memory (the shared :class:`sipsec.throttle.TokenBuckets`)."""

    def __init__(self, rate: float, burst: float, max_sources: int = 65536) -> None:
        super().__init__(rate, burst, max_sources)
        self.max_sources = max_sources


class Branch:
    """One forwarded copy of a request (§16.6) or a CANCEL the proxy sent for one (§16.10)."""

    __slots__ = ("cancel_pending", "cancel_sent", "ctx", "final", "is_cancel", "provisional",
                 "response", "tx")

    def __init__(self, ctx: ResponseContext, tx: ClientTransaction | None, is_cancel: bool = False) -> None:
        self.ctx = ctx
        self.tx = tx
        self.is_cancel = is_cancel
        self.final = 0  # final status received (or synthesised: 408 timeout, 503 transport)
        self.response: Response | None = None
        self.provisional = False
        self.cancel_pending = False
        self.cancel_sent = False


class ResponseContext:
    """§16.2 response context: the server transaction and its branches."""

    __slots__ = ("answered", "branches", "cancelled", "final_sent", "inbound", "method",
                 "request", "span", "started", "stx", "timer_c", "trusted")

    def __init__(self, stx: ServerTransaction, inbound: Inbound, started: float) -> None:
        self.stx = stx
        self.request: Request = stx.request
        self.method = self.request.method
        self.inbound = inbound
        self.started = started
        self.branches: list[Branch] = []
        self.answered = False  # a 2xx went upstream
        self.final_sent = False
        self.cancelled = False
        self.timer_c: asyncio.TimerHandle | None = None
        self.trusted = False  # the source is a configured peer or route hop
        self.span: Any = None  # the request's trace span while tracing is on


_QUOTED_METHOD = re.compile(rb"\A([A-Z]+) \S+ SIP/2\.0\r\n")
_QUOTED_BRANCH = re.compile(rb"\r\n(?:Via|v)[ \t]*:[^\r\n]*?;[ \t]*branch[ \t]*=[ \t]*([^;,\s]+)", re.IGNORECASE)


def _quoted_request_key(head: bytes) -> tuple[str, str] | None:
    """The client transaction key (top Via branch, method: §17.1.3) of a request known only by
    its head, as an ICMP error quotes it; None when the head does not show both."""
    method, branch = _QUOTED_METHOD.match(head), _QUOTED_BRANCH.search(head)
    if method is None or branch is None:
        return None
    try:
        return branch.group(1).decode("ascii"), method.group(1).decode("ascii")
    except UnicodeDecodeError:
        return None


class ProxyCore:
    """The proxy logic; the shell feeds :meth:`handle`. Transaction timers (§17) and Timer C
    (§16.6 step 11) are scheduled with ``call_at`` (the event loop's), one handle each."""

    def __init__(
        self,
        config: ProxyConfig,
        locator: Locator,
        metrics: ProxyMetrics,
        transports: dict[str, Transport],
        *,
        register_handler: Callable[[ProxyCore, ResponseContext], Awaitable[None]] | None = None,
        clock: Callable[[], float] = time.monotonic,
        call_at: Scheduler | None = None,
        shared_udp: tuple[str, int] | None = None,
        timers: TimerSettings = DEFAULT_TIMERS,
    ) -> None:
        self.config = config
        self.locator = locator
        self.metrics = metrics
        self.transports = transports
        self.domains = config.domain_set
        self.register_handler = register_handler
        self.clock = clock
        self._call_at = call_at
        self.timers = timers
        self.limiter = RateLimiter(config.rate_limit, config.rate_burst, config.rate_sources)
        # one budget shared by every untrusted source: a flood spread over many addresses
        # (each under its own rate) still cannot take more than this
        self.untrusted = RateLimiter(config.untrusted_rate, config.untrusted_burst, 1)
        # source hosts of authenticated REGISTERs (own gateways, phones): trusted until expiry
        self._registered: OrderedDict[str, float] = OrderedDict()
        # the current addresses of the configured peer/route host *names* (the server resolves
        # them again periodically: a container's or pod's address changes when it restarts)
        self.peer_addresses: frozenset[str] = frozenset()
        self._registered_max = config.rate_sources
        # lookups and REGISTER checks in flight for untrusted sources, per kind: bounded, so
        # that a flood meeting a slow location service is refused (503) instead of piling up
        # tasks, gRPC calls and transactions without limit
        self.max_untrusted_pending = config.untrusted_pending
        self._pending: dict[str, int] = dict.fromkeys(PENDING_KINDS, 0)
        for kind in PENDING_KINDS:
            metrics.untrusted_pending.labels(kind).set_function(functools.partial(self._pending.__getitem__, kind))
        # RFC 3263 lookups for foreign domains without a route (None: off)
        nameservers = parse_dns(config.dns)
        self.resolver: SipResolver | None = None if nameservers is None else SipResolver(
            nameservers, timeout=config.dns_timeout_s, registry=metrics.registry)
        self.max_transactions = config.max_transactions
        self._server: dict[Any, ResponseContext] = {}
        self._client: dict[Any, Branch] = {}
        self._out: list[tuple[bytes, Any]] = []
        self._events: deque[Event] = deque()
        self._handles: dict[Transaction, asyncio.TimerHandle] = {}
        self._branch_seq = itertools.count(1)
        self._tasks: set[asyncio.Task[None]] = set()
        self._forwarded_children: dict[str, Any] = {}
        # metric children bound once per label set (``labels()`` per message is slow)
        self._rejection_children: dict[str, Any] = {}
        self._retry_after = [("Retry-After", str(config.retry_after_s))]
        self._bursts: dict[str, tuple[float, int]] = {}  # kind -> (last logged, left out since)
        self._final_children: dict[tuple[str, int], tuple[Any, Any]] = {}
        # our addresses: what we write in Via / Record-Route, and what we recognise as us
        self.sent_by: dict[str, tuple[str, int]] = {}
        self.my_addresses: set[tuple[str, int]] = set()
        for name, transport in transports.items():
            host, port = transport.local_address
            adv = config.advertise or (host if host not in ("0.0.0.0", "::") else "127.0.0.1")
            self.sent_by[name] = (adv, port)
            self.my_addresses.add((adv.lower(), port))
            self.my_addresses.add((host.lower(), port))
        # Record-Route names the address clients use: the shared port when running as a worker
        self.rr_address: dict[str, tuple[str, int]] = dict(self.sent_by)
        if shared_udp is not None:
            adv = config.advertise or (shared_udp[0] if shared_udp[0] not in ("0.0.0.0", "::") else "127.0.0.1")
            self.rr_address["UDP"] = (adv, shared_udp[1])
            self.my_addresses.add((adv.lower(), shared_udp[1]))
            self.my_addresses.add((shared_udp[0].lower(), shared_udp[1]))
        # the key of the Record-Route marks (routing.decide): derived from the digest nonce
        # secret, which replicas share already; random per start when there is none
        secret = bytes.fromhex(config.nonce_secret) if config.nonce_secret else secrets.token_bytes(32)
        route_key = hmac.new(secret, b"sipsec-proxy record-route marks v1", hashlib.sha256).digest()
        # the gauge reads the table when scraped: no per-message cost
        metrics.active.set_function(lambda: len(self._server) + len(self._client))
        self.policy = RoutingPolicy.build(config, self.my_addresses, list(transports),
                                          dns=self.resolver is not None, nameservers=nameservers or (),
                                          route_key=route_key)

    # -- bookkeeping ------------------------------------------------------------------------

    @property
    def transaction_count(self) -> int:
        return len(self._server) + len(self._client)

    @property
    def scheduled_timers(self) -> int:
        """Transaction timers armed with the event loop (one handle per transaction at most)."""
        return len(self._handles)

    def _schedule(self, when: float, callback: Callable[..., None], *args: Any) -> asyncio.TimerHandle:
        call_at = self._call_at
        if call_at is None:
            call_at = self._call_at = asyncio.get_running_loop().call_at
        return call_at(when, callback, *args)

    def _changed(self, tx: Transaction) -> None:
        """A transaction's deadline may have moved: keep one ``call_at`` handle at ``get_timer()``."""
        at = tx.get_timer()
        handles = self._handles
        if at is None:
            handle = handles.pop(tx, None)
            if handle is not None:
                handle.cancel()
                tx.sched = None
            return
        if tx.sched == at and tx in handles:
            return
        handle = handles.get(tx)
        if handle is not None:
            handle.cancel()
        tx.sched = at
        handles[tx] = self._schedule(at, self._fire, tx, at)

    def _fire(self, tx: Transaction, at: float) -> None:
        if self._handles.pop(tx, None) is None:
            return
        tx.sched = None
        # The loop runs a timer when its clock reaches the deadline to its own resolution
        # (uvloop: whole milliseconds, so up to ~1 ms early): the deadline has come.
        now = max(self.clock(), at)
        if not tx.terminated:
            try:
                tx.handle_timer(now)  # re-arms through on_change
            except SipError:
                log.exception("timer handling failed")
        self._drain(now)

    def _arm_timer_c(self, ctx: ResponseContext, now: float) -> None:
        if ctx.timer_c is None and ctx.method == "INVITE" and not ctx.final_sent:
            ctx.timer_c = self._schedule(now + TIMER_C, self._on_timer_c, ctx, now + TIMER_C)

    def _on_timer_c(self, ctx: ResponseContext, at: float) -> None:
        ctx.timer_c = None
        if ctx.final_sent or not ctx.branches:
            return
        now = max(self.clock(), at)
        self._fire_timer_c(ctx, now)
        self._drain(now)

    def _fire_timer_c(self, ctx: ResponseContext, now: float) -> None:
        """§16.8: cancel branches that only rang; give up on the silent ones (408)."""
        for b in ctx.branches:
            if b.final or b.tx is None:
                continue
            if b.provisional:
                self._cancel_branch(b, now)
            else:
                b.final = 408
                b.tx.terminate()
        for b in ctx.branches:
            if not b.final and b.provisional and b.tx is not None:
                b.final = 408  # the CANCEL is on its way; do not wait for the 487 any longer
        self._check_done(ctx, now)

    def _flush(self) -> None:
        out = self._out
        if not out:
            return
        items = out[:]
        out.clear()
        transports = self.transports
        for data, dest in items:
            if type(dest) is tuple:  # (transport, peer): a response goes out where its request came in
                transport, peer = dest
            else:
                peer = dest
                transport = transports.get(peer.transport) or transports["UDP"]
            transport.send(data, peer)

    def _spawn(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @property
    def untrusted_pending(self) -> dict[str, int]:
        """Asynchronous work in flight for untrusted sources, by kind ("route", "register")."""
        return dict(self._pending)

    def _admit(self, kind: str, trusted: bool) -> bool:
        """Whether asynchronous work of ``kind`` may start for a request (counted when it may);
        a trusted source is always admitted and not counted."""
        if trusted:
            return True
        if self._pending[kind] >= self.max_untrusted_pending:
            self.reject("overload")
            return False
        self._pending[kind] += 1
        return True

    async def _counted(self, kind: str, trusted: bool, work: Awaitable[None]) -> None:
        try:
            await work
        finally:
            if not trusted:
                self._pending[kind] -= 1

    def _busy(self, ctx: ResponseContext, now: float) -> None:
        """503 for a request refused by :meth:`_admit` (RFC 3261 §21.5.4, with Retry-After)."""
        self.respond(ctx, 503, extra=self._retry_after, now=now)

    async def aclose(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:  # bounded: a cancel absorbed inside a client library must not hang shutdown
            await asyncio.wait(tasks, timeout=5.0)

    def trust_source(self, host: str, seconds: float) -> None:
        """An authenticated REGISTER came from ``host``: treat it as a trusted source (no rate
        limit, stateful answers) for ``seconds``, in a bounded table (oldest forgotten first)."""
        if seconds <= 0:
            return
        table = self._registered
        table[host] = self.clock() + seconds
        table.move_to_end(host)
        while len(table) > self._registered_max:
            table.popitem(last=False)

    def trusted_source(self, host: str, now: float) -> bool:
        """A configured peer or route hop, or the address of a live authenticated registration."""
        if self.policy.trusted_source(host) or host in self.peer_addresses:
            return True
        until = self._registered.get(host)
        return until is not None and until > now

    def reject(self, reason: str) -> None:
        child = self._rejection_children.get(reason)
        if child is None:
            child = self._rejection_children[reason] = self.metrics.rejections.labels(reason)
        child.inc()

    def _log_burst(self, kind: str, message: str, *args: object) -> None:
        """Log a failure of ``kind`` once per burst: at once, then at most once per
        :data:`LOG_WINDOW` with the number of repeats left out (the metrics count each one)."""
        now = self.clock()
        last, left_out = self._bursts.get(kind, (-math.inf, 0))
        if now - last < LOG_WINDOW:
            self._bursts[kind] = (last, left_out + 1)
            return
        self._bursts[kind] = (now, 0)
        if left_out:
            message += " (and %d more in the last %.0f s)"
            args = (*args, left_out, now - last)
        log.warning(message, *args)

    def _location_failed(self, exc: LocationError, outcome: str) -> None:
        self._log_burst("location", "location service %s: %s; %s", status_name(exc), exc, outcome)

    # -- send failures (RFC 3261 §8.1.3.1, §16.7 step 6, §17.1.4) ---------------------------

    def send_failed(self, message: Outgoing, peer: Peer, reason: str) -> None:
        """A transport's report that ``message`` could not be sent to ``peer`` (connect
        refused or timed out, ICMP error, no route, closed): the request's client transaction
        gets a transport error, so its branch counts as a 503 and the response context sends
        its best final response upstream (§16.7 step 6) instead of waiting for Timer B.

        Handled on the next turn of the loop: the transport may be calling from within this
        core's own flush. Responses and statelessly forwarded requests have no branch here."""
        if isinstance(message, Response):
            return
        try:
            msg = parse_message(message) if isinstance(message, bytes) else message
        except SipError:  # e.g. the head of a datagram that an ICMP error quoted
            msg = None
        if isinstance(msg, Request):
            key = client_transaction_key(msg)
        elif msg is None and isinstance(message, bytes):
            key = _quoted_request_key(message)
        else:
            return
        if key is None or key not in self._client:
            return
        now = self.clock()
        self._schedule(now, self._on_send_failed, key, peer, reason, now)

    def connection_lost(self, peer: Peer) -> None:
        """A stream transport's report that ``peer`` closed or reset its connection: each
        branch still waiting for a final response from that hop over that transport gets a
        transport error (503 upstream at once), instead of waiting out Timer B or C — a hop that
        died after its 100 Trying would otherwise hold the caller for minutes."""
        now = self.clock()
        for key, b in list(self._client.items()):
            tx = b.tx
            if tx is None or tx.terminated or b.final or b.is_cancel:
                continue
            addr = tx.addr
            if (getattr(addr, "transport", None), getattr(addr, "host", None), getattr(addr, "port", None)) == \
                    (peer.transport, peer.host, peer.port):
                self._schedule(now, self._on_send_failed, key, peer, "connection-lost", now)

    def _on_send_failed(self, key: Any, peer: Peer, reason: str, at: float) -> None:
        b = self._client.get(key)
        if b is None or b.tx is None or b.tx.terminated:
            return
        now = max(self.clock(), at)
        self._log_burst("next-hop", "next hop %s unreachable (%s): the %s branch counts as 503", peer, reason,
                        b.tx.request.method)
        try:
            b.tx.transport_error(now)
        except SipError:
            log.exception("transport error handling failed")
        self._drain(now)

    def _forwarded(self, method: str) -> Any:
        label = method_label(method)
        child = self._forwarded_children.get(label)
        if child is None:
            child = self._forwarded_children[label] = self.metrics.forwarded.labels(label)
        return child

    # -- entry point ----------------------------------------------------------------------

    def handle(self, item: Inbound) -> None:
        """One message from a transport. Never raises."""
        now = self.clock()
        msg = item.message
        try:
            if isinstance(msg, Request):
                self._on_request(msg, item, now)
            else:
                self._on_response(msg, now)
        except RemoteProtocolError as exc:
            self.reject("bad-request")
            if isinstance(msg, Request) and msg.method != "ACK":
                self._stateless_reply(msg, item, 400, exc.reason[:64])
        except (SipError, LocationError, ValueError) as exc:
            self.reject("bad-request")
            log.debug("message refused: %s", type(exc).__name__)
        except Exception:  # a bug must not take the proxy down
            log.exception("unexpected error handling a message")
            self.reject("bad-request")
        self._drain(now)

    def _drain(self, now: float) -> None:
        events = self._events
        while events:
            ev = events.popleft()
            try:
                self._on_event(ev, now)
            except Exception:
                log.exception("unexpected error handling %s", type(ev).__name__)
        self._flush()

    # -- responses we generate --------------------------------------------------------------

    def _stateless_reply(self, req: Request, item: Inbound, status: int, reason: str | None = None,
                         extra: list[tuple[str, str]] | None = None) -> None:
        try:
            resp = make_response(req, status, reason, to_tag=LOCAL_TAG_PREFIX + generate_tag())
            for name, value in extra or ():
                resp.headers.add(name, value)
            item.transport.send(resp.to_bytes(), item.transport.response_peer(req, item.peer))
        except SipError:
            self.reject("bad-request")

    def respond(self, ctx: ResponseContext, status: int, reason: str | None = None,
                extra: list[tuple[str, str]] | None = None, now: float | None = None) -> None:
        """Answer the request of ``ctx`` ourselves (through its server transaction).

        To a source that is not a configured peer, a final answer of our own other than a
        2xx (and the 200 to an OPTIONS for the domain) is sent once and its transaction ends
        at once (§8.2.7 stateless UAS behaviour): no retransmissions towards a Via address that
        anyone can write, and no entry kept for Timer H/J per flood request (nor, over TCP/TLS,
        for Timer H while an ACK is awaited); a retransmitted request is answered again."""
        resp = make_response(ctx.request, status, reason,
                             to_tag=LOCAL_TAG_PREFIX + generate_tag() if status > 100 else None)
        for name, value in extra or ():
            resp.headers.add(name, value)
        now = self.clock() if now is None else now
        self._send_upstream(ctx, resp, now)
        if (status >= 300 or (status >= 200 and ctx.method == "OPTIONS")) and not ctx.trusted \
                and ctx.stx.final_sent:
            ctx.stx.terminate()

    def _send_upstream(self, ctx: ResponseContext, resp: Response, now: float) -> None:
        status = resp.status
        stx = ctx.stx
        try:
            if ctx.final_sent and status >= 200 and status < 300 and ctx.method == "INVITE":
                # another 2xx from a fork, or a 2xx retransmission (§16.7 step 5): stateless
                inbound = ctx.inbound.transport
                self._out.append((resp.to_bytes(), (inbound, inbound.response_peer(ctx.request, ctx.inbound.peer))))
                return
            if stx.terminated or (ctx.final_sent and status >= 200):
                return
            stx.send_response(resp, now)
        except LocalProtocolError:
            log.debug("response %d not sendable in state %s", status, stx.state.name)
            return
        if status >= 200 and not ctx.final_sent:
            ctx.final_sent = True
            tracing.end_sip_span(ctx.span, status)
            if ctx.timer_c is not None:
                ctx.timer_c.cancel()
                ctx.timer_c = None
            label = method_label(ctx.method)
            key = (label, status // 100)
            children = self._final_children.get(key)
            if children is None:
                children = self._final_children[key] = (
                    self.metrics.requests.labels(label, f"{status // 100}xx"),
                    self.metrics.latency.labels(label),
                )
            children[0].inc()
            children[1].observe(max(0.0, now - ctx.started))

    # -- requests ---------------------------------------------------------------------------

    def _on_request(self, req: Request, item: Inbound, now: float) -> None:
        host = item.peer.host
        trusted = self.trusted_source(host, now)
        if not trusted and not (self.limiter.allow(host, now) and self.untrusted.allow("*", now)):
            self.reject("rate-limited")
            return
        method = req.method
        key = server_transaction_key(req)
        ctx = self._server.get(key)
        if method == "ACK":
            if ctx is not None and ctx.stx.last_response is not None and ctx.stx.last_response.status >= 300:
                ctx.stx.receive_request(req, now)  # ACK for our non-2xx final (§17.2.1)
            elif (req.to_view().tag or "").startswith(LOCAL_TAG_PREFIX):
                return  # the ACK for an answer of ours whose transaction has ended: absorbed
            else:
                self._forward_stateless(req, item, now)
            return
        if ctx is not None:
            ctx.stx.receive_request(req, now)  # a retransmission
            return
        if method == "CANCEL" and not self._has_invite(req):
            # §16.10: no response context to apply it to (the INVITE may have gone by statelessly,
            # or through another instance): forward the CANCEL statelessly, routed like a request
            self._forward_stateless(req, item, now)
            return
        if self.transaction_count >= self.max_transactions:
            self.reject("overload")
            self._stateless_reply(req, item, 503, None, self._retry_after)
            return
        stx = ServerTransaction(
            req, item.transport.reliable, now, timers=self.timers,
            addr=(item.transport, item.transport.response_peer(req, item.peer)),
            key=key, out=self._out, events=self._events, on_change=self._changed,
        )
        ctx = ResponseContext(stx, item, now)
        ctx.trusted = trusted
        self._server[key] = ctx
        ctx.span = tracing.start_sip_span(method_label(method), self.config.domains)
        traced = tracing.use_span(ctx.span)  # the lookups this request spawns are its children
        try:
            if method == "CANCEL":
                self._on_cancel(ctx, now)
            else:
                self._process_request(ctx, now)
        except RemoteProtocolError as exc:  # a header read lazily was malformed: answer in-transaction
            self.reject("bad-request")
            if not ctx.final_sent:
                self.respond(ctx, 400, exc.reason[:64], now=now)
        except Exception:
            log.exception("unexpected error processing a request")
            if not ctx.final_sent:
                self.respond(ctx, 500, now=now)
        finally:
            tracing.release_span(traced)

    def _process_request(self, ctx: ResponseContext, now: float) -> None:
        req = ctx.request
        # §16.3 request validation
        if not isinstance(req.uri, SipURI):
            self.reject("unsupported-uri")
            self.respond(ctx, 416, now=now)
            return
        mf = req.max_forwards
        if mf is not None and mf <= 0:
            self.reject("too-many-hops")
            self.respond(ctx, 483, now=now)
            return
        if self._is_loop(req):
            self.reject("loop")
            self.respond(ctx, 482, now=now)
            return
        proxy_require = req.headers.get_all("Proxy-Require")
        if proxy_require:
            self.reject("bad-extension")
            self.respond(ctx, 420, extra=[("Unsupported", ", ".join(proxy_require))], now=now)
            return
        if ctx.method == "INVITE":
            self.respond(ctx, 100, now=now)  # §16.2: 100 Trying at once for INVITE
        fwd = req.copy()
        marks = preprocess(fwd, self.policy)
        self._apply_decision(ctx, fwd, marks, decide(fwd, self.policy, NO_ANSWERS, marks), NO_ANSWERS, 0, now)

    def _apply_decision(self, ctx: ResponseContext, fwd: Request, marks: tuple[str, ...], decision: Decision,
                        answers: Answers, rounds: int, now: float) -> None:
        """Carry out a routing decision for a stateful request (§16.6), or go and fetch the
        location/DNS answers it asks for and decide again."""
        if isinstance(decision, Forward):
            self._forward(ctx, fwd, decision.targets, now)
        elif isinstance(decision, Refuse):
            self.reject(decision.counter)
            extra = self._retry_after if decision.status == 503 else None
            self.respond(ctx, decision.status, decision.reason, extra=extra, now=now)
        elif isinstance(decision, Register):
            if self.register_handler is None:
                self.reject("not-found")
                self.respond(ctx, 404, now=now)
            elif self._admit("register", ctx.trusted):
                self._spawn(self._counted("register", ctx.trusted,
                                          self._run_async(ctx, self.register_handler(self, ctx))))
            else:
                self._busy(ctx, now)
        elif isinstance(decision, AnswerHere):
            if ctx.method == "OPTIONS":
                self.respond(ctx, 200, extra=[("Allow", "INVITE, ACK, CANCEL, BYE, OPTIONS, REGISTER")], now=now)
            else:
                self.reject("not-found")
                self.respond(ctx, 404, now=now)
        elif rounds >= _MAX_ROUNDS:
            self.reject("no-route")
            self.respond(ctx, 404, "No Route", now=now)
        elif self._admit("route", ctx.trusted):
            self._spawn(self._counted("route", ctx.trusted, self._run_async(
                ctx, self._look_up_and_decide(ctx, fwd, marks, decision, answers, rounds))))
        else:
            self._busy(ctx, now)

    async def _look_up(self, decision: NeedLocation | NeedDns, answers: Answers) -> Answers:
        """The location or DNS answers a decision asked for (LocationError propagates)."""
        if isinstance(decision, NeedLocation):
            found = {aor: tuple(await self.locator.lookup(aor)) for aor in decision.aors}
            return answers.with_locations(found)
        assert self.resolver is not None
        try:
            hops = await self.resolver.resolve(decision.uri, list(self.transports))
        except DnsFailure as exc:
            log.info("DNS: no server for %s: %s", decision.uri.host, exc.outcome)
            return answers.with_dns(decision.key, exc.status)
        return answers.with_dns(decision.key, tuple(hops))

    async def _look_up_and_decide(self, ctx: ResponseContext, fwd: Request, marks: tuple[str, ...],
                                  decision: NeedLocation | NeedDns, answers: Answers, rounds: int) -> None:
        answers = await self._look_up(decision, answers)
        now = self.clock()
        if ctx.final_sent:
            return
        if ctx.cancelled:
            self.respond(ctx, 487, now=now)
            return
        self._apply_decision(ctx, fwd, marks, decide(fwd, self.policy, answers, marks), answers, rounds + 1, now)

    async def _run_async(self, ctx: ResponseContext, work: Awaitable[None]) -> None:
        try:
            await work
        except LocationError as exc:
            self.reject("location-error")
            stale = exc.reason == "stale-cseq"
            self._location_failed(exc, "answered 500" if stale else "answered 503")
            if not ctx.final_sent:
                # a store that is down or past its deadline: 503 + Retry-After (RFC 3261 §21.5.4)
                self.respond(ctx, 500 if stale else 503, extra=None if stale else self._retry_after)
        except RemoteProtocolError as exc:
            self.reject("bad-request")
            if not ctx.final_sent:
                self.respond(ctx, 400, exc.reason[:64])
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("unexpected error in request handling")
            if not ctx.final_sent:
                self.respond(ctx, 500)
        finally:
            self._drain(self.clock())

    @staticmethod
    def _set_routes(msg: Request, routes: list[Any]) -> None:
        msg.headers.remove("Route")
        for r in routes:
            msg.headers.add("Route", str(r))

    def _is_loop(self, req: Request) -> bool:
        """§16.3 step 4: a Via of ours whose loop hash equals this request's is a loop (482)."""
        mine = None
        for via in req.via_view():
            branch = via.branch or ""
            if branch.startswith(BRANCH_PREFIX) and (via.host.lower(), via.port or 5060) in self.my_addresses:
                if mine is None:
                    mine = self._loop_hash(req)
                if branch[len(BRANCH_PREFIX):].split(".", 1)[0] == mine:
                    return True
        return False

    @staticmethod
    def _loop_hash(req: Request) -> str:
        """§16.6 step 8: hash of the fields that a spiral changes (Request-URI, tags, Route...)."""
        h = hashlib.sha1(usedforsecurity=False)
        for part in (str(req.uri), req.from_view().tag or "", req.to_view().tag or "", req.call_id,
                     str(req.cseq.seq), ",".join(req.headers.get_all("Route")),
                     ",".join(req.headers.get_all("Proxy-Require"))):
            h.update(part.encode("utf-8", "surrogateescape"))
            h.update(b"\x00")
        return h.hexdigest()[:16]

    # §16.6 request forwarding
    def _forward(self, ctx: ResponseContext, fwd: Request, targets: tuple[Target, ...], now: float) -> None:
        loop_hash = self._loop_hash(ctx.request)
        in_transport = ctx.inbound.transport.name
        many = len(targets) > 1
        record = self.config.record_route and ctx.method in RECORD_ROUTE_METHODS
        upstream = upstream_hop(ctx.request, self.policy, ctx.inbound.peer.host) if record else None
        for chosen in targets:
            target, hop = chosen.uri, chosen.hop
            if self.transaction_count >= self.max_transactions:
                self.reject("overload")
                break
            req = fwd.copy() if many else fwd
            req.uri = target
            mf = req.max_forwards
            req.max_forwards = 70 if mf is None else mf - 1
            if record:
                marks = [self.policy.mark(h) for h in (upstream, hop)
                         if h is not None and not self.policy.configured(h)]
                if hop.transport != in_transport:
                    req.headers.prepend("Record-Route", self._rr_value(in_transport, marks))
                req.headers.prepend("Record-Route", self._rr_value(hop.transport, marks))
            routes = req.route
            if routes and isinstance(routes[0].uri, SipURI) and not routes[0].uri.lr:
                # §16.6 step 6: the next hop is a strict router
                self._set_routes(req, [*routes[1:], _name_addr(str(req.uri))])
                req.uri = routes[0].uri
            host, port = self.sent_by.get(hop.transport) or self.sent_by["UDP"]
            branch = f"{BRANCH_PREFIX}{loop_hash}.{next(self._branch_seq):x}"
            req.headers.prepend("Via", f"SIP/2.0/{hop.transport} {host}:{port};branch={branch}")
            b = Branch(ctx, None)
            ctx.branches.append(b)
            tx = ClientTransaction(req, hop.transport != "UDP", now, timers=self.timers, addr=hop, out=self._out,
                                   events=self._events, on_change=self._changed)
            b.tx = tx
            self._client[tx.key] = b
            self._changed(tx)  # arms Timer A/B or E/F (a no-op when the constructor did)
            self._forwarded(ctx.method).inc()
        if not ctx.branches:
            self.respond(ctx, 503, now=now)
        else:
            self._arm_timer_c(ctx, now)

    def _rr_value(self, transport: str, marks: list[str]) -> str:
        host, port = self.rr_address.get(transport) or self.rr_address["UDP"]
        suffix = "" if transport == "UDP" else f";transport={transport.lower()}"
        mark = f";{MARK_PARAM}={'.'.join(marks)}" if marks else ""
        return f"<sip:{host}:{port}{suffix};lr{mark}>"

    def _forward_stateless(self, req: Request, item: Inbound, now: float) -> None:
        """ACK for a 2xx, CANCEL without a response context: §16.11 stateless forwarding,
        routed by the same decision as a stateful request (the first target only).

        A CANCEL that cannot be sent on is answered 481 (nothing to cancel here), or 403
        when the policy refuses its destination; an ACK is dropped and counted."""
        mf = req.max_forwards
        if mf is not None and mf <= 0:
            self.reject("too-many-hops")
            return
        fwd = req.copy()
        marks = preprocess(fwd, self.policy)
        self._stateless_decision(req, item, fwd, marks, decide(fwd, self.policy, NO_ANSWERS, marks), NO_ANSWERS, 0)

    def _stateless_decision(self, req: Request, item: Inbound, fwd: Request, marks: tuple[str, ...],
                            decision: Decision, answers: Answers, rounds: int) -> None:
        cancel = req.method == "CANCEL"
        if isinstance(decision, Forward) and decision.targets:
            target = decision.targets[0]
            fwd.uri = target.uri
            self._send_stateless(fwd, target.hop)
            self._flush()
            return
        if isinstance(decision, NeedLocation | NeedDns) and rounds < _MAX_ROUNDS:
            trusted = self.trusted_source(item.peer.host, self.clock())
            if self._admit("route", trusted):  # refused: dropped (counted); the sender retransmits
                self._spawn(self._counted("route", trusted, self._stateless_async(
                    req, item, fwd, marks, decision, answers, rounds)))
            return
        if isinstance(decision, Refuse) and decision.status == 403:
            self.reject(decision.counter)
            if cancel:
                self._stateless_reply(req, item, 403, decision.reason)
            return
        if isinstance(decision, AnswerHere):
            if cancel:
                self.reject("no-transaction")
                self._stateless_reply(req, item, 481)
            return  # an ACK for a response we generated ourselves: absorbed
        counter = decision.counter if isinstance(decision, Refuse) else "no-route"
        self.reject(counter)
        if cancel:
            if counter != "not-found":
                self.reject("no-transaction")
            self._stateless_reply(req, item, 481)

    async def _stateless_async(self, req: Request, item: Inbound, fwd: Request, marks: tuple[str, ...],
                               decision: NeedLocation | NeedDns, answers: Answers, rounds: int) -> None:
        try:
            answers = await self._look_up(decision, answers)
            self._stateless_decision(req, item, fwd, marks, decide(fwd, self.policy, answers, marks), answers,
                                     rounds + 1)
        except LocationError as exc:
            self.reject("location-error")
            self._location_failed(exc, f"{req.method} not forwarded")
            if req.method == "CANCEL":  # an ACK has no response; a CANCEL is told, not left to time out
                self._stateless_reply(req, item, 503, None, self._retry_after)
        except RemoteProtocolError:
            self.reject("bad-request")
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("unexpected error forwarding statelessly")

    def _send_stateless(self, fwd: Request, hop: Peer) -> None:
        mf = fwd.max_forwards
        fwd.max_forwards = 70 if mf is None else mf - 1
        vias = fwd.via_view()
        top = vias[0].branch or "" if vias else ""
        digest = hashlib.sha1(f"{top}|{fwd.uri}".encode(), usedforsecurity=False).hexdigest()[:16]
        host, port = self.sent_by.get(hop.transport) or self.sent_by["UDP"]
        fwd.headers.prepend("Via", f"SIP/2.0/{hop.transport} {host}:{port};branch={STATELESS_PREFIX}{digest}")
        self._out.append((fwd.to_bytes(), hop))
        self._forwarded(fwd.method).inc()

    # §16.10 CANCEL
    def _has_invite(self, req: Request) -> bool:
        invite = self._server.get(server_transaction_key(req, method="INVITE"))
        return invite is not None and invite.method == "INVITE"

    def _on_cancel(self, ctx: ResponseContext, now: float) -> None:
        req = ctx.request
        invite = self._server.get(server_transaction_key(req, method="INVITE"))
        if invite is None or invite.method != "INVITE":  # it ended between the two look-ups
            self.reject("no-transaction")
            self.respond(ctx, 481, now=now)
            return
        self.respond(ctx, 200, now=now)
        if invite.final_sent:
            return
        invite.cancelled = True
        for b in invite.branches:
            self._cancel_branch(b, now)

    def _cancel_branch(self, b: Branch, now: float) -> None:
        if b.final or b.cancel_sent or b.tx is None or b.is_cancel:
            return
        if not b.provisional:
            b.cancel_pending = True  # §9.1: wait for a provisional response before cancelling
            return
        b.cancel_sent = True
        cancel = build_cancel(b.tx.request)
        if self.transaction_count >= self.max_transactions:
            return
        tx = ClientTransaction(cancel, b.tx.reliable, now, timers=self.timers, addr=b.tx.addr, out=self._out,
                               events=self._events, on_change=self._changed)
        self._changed(tx)
        self._client[tx.key] = Branch(b.ctx, tx, is_cancel=True)

    # -- responses ------------------------------------------------------------------------

    def _on_response(self, resp: Response, now: float) -> None:
        key = client_transaction_key(resp)
        b = self._client.get(key) if key is not None else None
        if b is None or b.tx is None:
            if 200 <= resp.status < 300 and resp.cseq.method == "INVITE":
                self._forward_response_stateless(resp)
            elif resp.cseq.method == "CANCEL":
                self._forward_response_stateless(resp, STATELESS_PREFIX)  # a CANCEL we sent on statelessly
            else:
                self.reject("stray-response")
            return
        b.tx.receive_response(resp, now)

    def _forward_response_stateless(self, resp: Response, prefix: str = BRANCH_PREFIX) -> None:
        """A 2xx retransmission after the client transaction ended (RFC 6026 §8.4), or the
        answer to a statelessly forwarded request (``prefix``: that Via branch prefix)."""
        vias = resp.via_view()
        if len(vias) < 2 or not (vias[0].branch or "").startswith(prefix):
            self.reject("stray-response")
            return
        out = resp.copy()
        _pop_via(out)
        transport = vias[1].transport.upper()
        host, port = via_destination(vias[1], transport)
        self._out.append((out.to_bytes(), Peer(transport if transport in self.transports else "UDP", host, port)))

    def _on_event(self, ev: Event, now: float) -> None:
        if isinstance(ev, ResponseReceived):
            if ev.transaction is None:
                return
            b = self._client.get(ev.transaction.key)
            if b is not None:
                self._on_branch_response(b, ev.response, now)
        elif isinstance(ev, TransactionTerminated):
            tx = ev.transaction
            if isinstance(tx, ClientTransaction):
                key = tx.key
                b = self._client.get(key)
                if b is not None and b.tx is tx:
                    del self._client[key]
            elif tx is not None:
                ctx = self._server.get(tx.key)
                if ctx is not None and ctx.stx is tx:
                    del self._server[tx.key]
                    if ctx.timer_c is not None:
                        ctx.timer_c.cancel()
                        ctx.timer_c = None
                    ctx.branches = []  # break the ctx <-> branch cycle: freed by refcounting
        elif isinstance(ev, TransactionTimeout | TransportError):
            tx = ev.transaction
            if isinstance(tx, ClientTransaction):
                b = self._client.get(tx.key)
                if b is not None and not b.is_cancel and not b.final:
                    if isinstance(ev, TransportError):
                        self.reject("transport-error")
                    elif ev.timer == "C" and b.provisional:
                        self._cancel_branch(b, now)  # §16.8: a branch that only rang is CANCELled
                    b.final = 408 if isinstance(ev, TransactionTimeout) else 503
                    self._check_done(b.ctx, now)
        elif isinstance(ev, RequestReceived):
            return  # an ACK the server transaction passed up (RFC 6026 Accepted): absorbed

    def _on_branch_response(self, b: Branch, resp: Response, now: float) -> None:
        if b.is_cancel:
            return  # the answer to our own CANCEL stops here
        ctx = b.ctx
        status = resp.status
        if status < 200:
            b.provisional = True
            if b.cancel_pending:
                b.cancel_pending = False
                self._cancel_branch(b, now)
            if status == 100:
                return
            if ctx.timer_c is not None:  # §16.7 step 2: a provisional other than 100 resets Timer C
                ctx.timer_c.cancel()
                ctx.timer_c = None
                self._arm_timer_c(ctx, now)
            if not ctx.final_sent:
                out = resp.copy()
                _pop_via(out)
                self._send_upstream(ctx, out, now)
            return
        if 200 <= status < 300:
            b.final = status
            out = resp.copy()
            _pop_via(out)
            first = not ctx.answered
            ctx.answered = True
            self._send_upstream(ctx, out, now)
            if first and ctx.method == "INVITE":
                for other in ctx.branches:  # §16.7 step 10: cancel the other forks
                    if other is not b:
                        self._cancel_branch(other, now)
            return
        if b.final:
            return
        b.final = status
        b.response = resp
        if status >= 600:
            for other in ctx.branches:
                if other is not b:
                    self._cancel_branch(other, now)
        self._check_done(ctx, now)

    def _check_done(self, ctx: ResponseContext, now: float) -> None:
        """§16.7 step 6: when every branch is final, send the best response upstream."""
        if ctx.final_sent or not ctx.branches or any(not b.final for b in ctx.branches):
            return
        best = min(ctx.branches, key=lambda b: (0 if b.final >= 600 else 1, b.final // 100, b.final))
        if best.response is None:
            self.respond(ctx, best.final, now=now)
            return
        out = best.response.copy()
        _pop_via(out)
        if out.status == 503:  # §16.7 step 6: a 503 from downstream becomes 500
            out.status, out.reason = 500, "Server Internal Error"
        self._send_upstream(ctx, out, now)


def _name_addr(uri: str) -> str:
    return f"<{uri}>"


def _pop_via(msg: Response) -> None:
    """Remove the topmost via-parm, keeping the others on its header line (§16.7 step 3)."""
    first = msg.headers.remove_first("Via")
    if first is None or "," not in first:
        return
    rest: list[Via] = parse_via_list(first)[1:]
    if rest:
        msg.headers.prepend("Via", ", ".join(str(v) for v in rest))
