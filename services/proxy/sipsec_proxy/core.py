"""The RFC 3261 §16 transaction-stateful proxy core: validation, routing, forking, responses, CANCEL.

The core consumes parsed messages from the :mod:`sipsec.aio` transports (which have already
stamped ``received``/``rport`` on the top Via, RFC 3581) and drives the sans-IO transaction
machines of :mod:`sipsec.sip.transaction`. It routes on outer headers only (Request-URI,
Route, Via, Max-Forwards, To, CSeq, Call-ID) and never reads or changes a body.
REGISTER requests for a served domain go to the :class:`~sipsec_proxy.registrar.Registrar`.
"""

from __future__ import annotations

import asyncio
import hashlib
import heapq
import itertools
import logging
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable
from typing import Any, TypeGuard

from sipsec.aio.transport import Inbound, Peer, Transport, via_destination
from sipsec.sip import (
    LocalProtocolError,
    RemoteProtocolError,
    Request,
    Response,
    SipError,
    SipURI,
    Via,
    generate_tag,
    is_ip_literal,
    make_response,
    parse_uri,
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
from sipsec.sip.transaction import (
    ClientTransaction,
    ServerTransaction,
    Transaction,
    build_cancel,
    client_transaction_key,
    server_transaction_key,
)
from sipsec.stores.location import LocationError

from sipsec_proxy.config import ProxyConfig, Route, parse_routes
from sipsec_proxy.dns import DnsFailure, SipResolver, parse_dns
from sipsec_proxy.locator import Contact, Locator
from sipsec_proxy.metrics import ProxyMetrics, method_label

__all__ = ["BRANCH_PREFIX", "ProxyCore", "RateLimiter"]

log = logging.getLogger("sipsec.proxy")

#: Our Via branches: magic cookie, a marker, the loop-detection hash (§16.6 step 8), a counter.
BRANCH_PREFIX = "z9hG4bK-sps"
#: Via branch of what the proxy forwards statelessly (ACK for 2xx, CANCEL without a response context)
STATELESS_PREFIX = "z9hG4bK-spl"
#: Methods after which a dialog may exist: the proxy Record-Routes them (§16.6 step 4).
RECORD_ROUTE_METHODS = frozenset({"INVITE", "SUBSCRIBE", "REFER", "NOTIFY"})
_DEFAULT_PORT = {"UDP": 5060, "TCP": 5060, "TLS": 5061}
#: §16.6 step 11 / §16.8: Timer C, "greater than 3 minutes", bounds an INVITE that rings forever.
TIMER_C = 181.0


class RateLimiter:
    """Per-source token buckets (``rate`` tokens/s, ``burst`` deep) in a bounded LRU table."""

    def __init__(self, rate: float, burst: float, max_sources: int = 65536) -> None:
        self.rate = rate
        self.burst = max(burst, 1.0)
        self.max_sources = max_sources
        self._buckets: OrderedDict[str, list[float]] = OrderedDict()

    def allow(self, source: str, now: float) -> bool:
        if self.rate <= 0:
            return True
        bucket = self._buckets.get(source)
        if bucket is None:
            if len(self._buckets) >= self.max_sources:
                self._buckets.popitem(last=False)
            bucket = self._buckets[source] = [self.burst, now]
        else:
            self._buckets.move_to_end(source)
            bucket[0] = min(self.burst, bucket[0] + (now - bucket[1]) * self.rate)
            bucket[1] = now
        if bucket[0] < 1.0:
            return False
        bucket[0] -= 1.0
        return True


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
                 "request", "started", "stx")

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


class ProxyCore:
    """The proxy logic; the shell feeds :meth:`handle` and calls :meth:`tick` on timers."""

    def __init__(
        self,
        config: ProxyConfig,
        locator: Locator,
        metrics: ProxyMetrics,
        transports: dict[str, Transport],
        *,
        register_handler: Callable[[ProxyCore, ResponseContext], Awaitable[None]] | None = None,
        clock: Callable[[], float] = time.monotonic,
        shared_udp: tuple[str, int] | None = None,
    ) -> None:
        self.config = config
        self.locator = locator
        self.metrics = metrics
        self.transports = transports
        self.domains = config.domain_set
        self.routes: dict[str, Route] = parse_routes(config.routes)
        self.register_handler = register_handler
        self.clock = clock
        self.limiter = RateLimiter(config.rate_limit, config.rate_burst)
        # the next hops of the route table are peer proxies carrying many users: not rate-limited
        self._peers = frozenset(r.host for r in self.routes.values())
        # RFC 3263 lookups for foreign domains without a route (None: off)
        nameservers = parse_dns(config.dns)
        self.resolver: SipResolver | None = None if nameservers is None else SipResolver(
            nameservers, timeout=config.dns_timeout_s, registry=metrics.registry)
        self.max_transactions = config.max_transactions
        self._server: dict[Any, ResponseContext] = {}
        self._client: dict[Any, Branch] = {}
        self._out: list[tuple[bytes, Any]] = []
        self._events: deque[Event] = deque()
        self._timers: list[tuple[float, int, Transaction]] = []
        self._next_sweep = 0.0
        self._seq = itertools.count()
        self._branch_seq = itertools.count(1)
        self._tasks: set[asyncio.Task[None]] = set()
        self._wakeup: Callable[[float], None] | None = None
        self._forwarded_children: dict[str, Any] = {}
        # metric children bound once per label set (``labels()`` per message is slow)
        self._rejection_children: dict[str, Any] = {}
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

    # -- bookkeeping ------------------------------------------------------------------------

    @property
    def transaction_count(self) -> int:
        return len(self._server) + len(self._client)

    def _changed(self, tx: Transaction) -> None:
        at = tx.get_timer()
        if at is not None:
            heapq.heappush(self._timers, (at, next(self._seq), tx))
            if self._wakeup is not None and self._timers[0][2] is tx:
                self._wakeup(at)

    def next_deadline(self) -> float | None:
        return self._timers[0][0] if self._timers else None

    def tick(self, now: float | None = None) -> None:
        """Fire every due transaction timer, then process events and send."""
        now = self.clock() if now is None else now
        timers = self._timers
        while timers and timers[0][0] <= now:
            _, _, tx = heapq.heappop(timers)
            due = tx.get_timer()
            if due is not None and due <= now and not tx.terminated:
                try:
                    tx.handle_timer(now)
                except SipError:
                    log.exception("timer handling failed")
        if now >= self._next_sweep:
            # Timer C by a periodic sweep (no per-INVITE heap entry that would pin finished calls)
            self._next_sweep = now + min(10.0, TIMER_C / 4)
            limit = now - TIMER_C
            for ctx in [c for c in self._server.values()
                        if c.method == "INVITE" and not c.final_sent and c.started <= limit and c.branches]:
                self._fire_timer_c(ctx, now)
        self._drain(now)
        self.metrics.active.set(self.transaction_count)

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

    async def aclose(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:  # bounded: a cancel absorbed inside a client library must not hang shutdown
            await asyncio.wait(tasks, timeout=5.0)

    def reject(self, reason: str) -> None:
        child = self._rejection_children.get(reason)
        if child is None:
            child = self._rejection_children[reason] = self.metrics.rejections.labels(reason)
        child.inc()

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
            resp = make_response(req, status, reason, to_tag=generate_tag())
            for name, value in extra or ():
                resp.headers.add(name, value)
            item.transport.send(resp.to_bytes(), item.transport.response_peer(req, item.peer))
        except SipError:
            self.reject("bad-request")

    def respond(self, ctx: ResponseContext, status: int, reason: str | None = None,
                extra: list[tuple[str, str]] | None = None, now: float | None = None) -> None:
        """Answer the request of ``ctx`` ourselves (through its server transaction)."""
        resp = make_response(ctx.request, status, reason, to_tag=generate_tag() if status > 100 else None)
        for name, value in extra or ():
            resp.headers.add(name, value)
        self._send_upstream(ctx, resp, self.clock() if now is None else now)

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
        if item.peer.host not in self._peers and not self.limiter.allow(item.peer.host, now):
            self.reject("rate-limited")
            return
        method = req.method
        key = server_transaction_key(req)
        ctx = self._server.get(key)
        if method == "ACK":
            if ctx is not None and ctx.stx.last_response is not None and ctx.stx.last_response.status >= 300:
                ctx.stx.receive_request(req, now)  # ACK for our non-2xx final (§17.2.1)
            else:
                self._forward_stateless(req, item, now)
            return
        if ctx is not None:
            ctx.stx.receive_request(req, now)  # a retransmission
            return
        if method == "CANCEL" and not self._has_invite(req):
            # §16.10: no response context to apply it to (the INVITE may have gone by statelessly,
            # or through another instance): forward the CANCEL statelessly, routed like a request
            if not self._forward_stateless(req, item, now):
                self.reject("no-transaction")
                self._stateless_reply(req, item, 481)
            return
        if self.transaction_count >= self.max_transactions:
            self.reject("overload")
            self._stateless_reply(req, item, 503, None, [("Retry-After", "5")])
            return
        stx = ServerTransaction(
            req, item.transport.reliable, now,
            addr=(item.transport, item.transport.response_peer(req, item.peer)),
            key=key, out=self._out, events=self._events, on_change=self._changed,
        )
        ctx = ResponseContext(stx, item, now)
        self._server[key] = ctx
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
        self._preprocess_routes(fwd)
        routes = fwd.route
        if routes:
            hop = self._peer_for(routes[0].uri)
            if hop is None and self._dns_applies(routes[0].uri):
                self._spawn(self._run_async(ctx, self._resolve_and_forward(ctx, fwd, routes[0].uri, fwd.uri)))
                return
            if hop is None:
                self.reject("no-route")
                self.respond(ctx, 404, "No Route", now=now)
                return
            self._forward(ctx, fwd, [(fwd.uri, hop)], now)
            return
        uri = fwd.uri
        assert isinstance(uri, SipURI)
        host = uri.host.lower()
        if host in self.domains or self._is_me(uri):
            if ctx.method == "REGISTER" and self.register_handler is not None:
                self._spawn(self._run_async(ctx, self.register_handler(self, ctx)))
                return
            if uri.user is None:
                if ctx.method == "OPTIONS":
                    self.respond(ctx, 200, extra=[("Allow", "INVITE, ACK, CANCEL, BYE, OPTIONS, REGISTER")], now=now)
                else:
                    self.reject("not-found")
                    self.respond(ctx, 404, now=now)
                return
            self._spawn(self._run_async(ctx, self._lookup_and_forward(ctx, fwd)))
            return
        hop = self._foreign_hop(uri)
        if hop is None and self._dns_applies(uri):
            self._spawn(self._run_async(ctx, self._resolve_and_forward(ctx, fwd, uri, uri)))
            return
        if hop is None:
            self.reject("no-route")
            self.respond(ctx, 404, "No Route", now=now)
            return
        self._forward(ctx, fwd, [(uri, hop)], now)

    def _dns_applies(self, uri: object) -> TypeGuard[SipURI]:
        """RFC 3263 lookup wanted: DNS configured and a SIP URI naming a host (route table missed)."""
        return (self.resolver is not None and isinstance(uri, SipURI)
                and self.resolver.needs_dns(uri.params.get("maddr") or uri.host))

    async def _resolve_and_forward(self, ctx: ResponseContext, fwd: Request, lookup: SipURI, target: Any) -> None:
        """Locates the next hop of ``lookup`` (Request-URI or top Route) in DNS, then forwards."""
        assert self.resolver is not None
        try:
            hops = await self.resolver.resolve(lookup, list(self.transports))
        except DnsFailure as exc:
            self.reject("no-route")
            log.info("DNS: no server for %s: %s", lookup.host, exc.outcome)
            if not ctx.final_sent:
                if exc.status == 503:
                    self.respond(ctx, 503, "DNS Failure", extra=[("Retry-After", "5")])
                else:
                    self.respond(ctx, 404, "No Route")
            return
        now = self.clock()
        if ctx.cancelled:
            self.respond(ctx, 487, now=now)
            return
        self._forward(ctx, fwd, [(target, hops[0])], now)

    async def _run_async(self, ctx: ResponseContext, work: Awaitable[None]) -> None:
        try:
            await work
        except LocationError as exc:
            self.reject("location-error")
            log.warning("location service error: %s", exc.reason)
            if not ctx.final_sent:
                self.respond(ctx, 500 if exc.reason == "stale-cseq" else 503,
                             extra=[("Retry-After", "5")] if exc.reason != "stale-cseq" else None)
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

    async def _lookup_and_forward(self, ctx: ResponseContext, fwd: Request) -> None:
        uri = fwd.uri
        assert isinstance(uri, SipURI)
        contacts = await self.locator.lookup(uri.aor)
        now = self.clock()
        if ctx.cancelled:
            self.respond(ctx, 487, now=now)
            return
        targets: list[tuple[SipURI, Peer]] = []
        for contact in contacts:
            target = self._contact_target(contact)
            if target is not None:
                targets.append(target)
        if not targets:
            self.reject("not-found")
            self.respond(ctx, 404, now=now)
            return
        self._forward(ctx, fwd, targets, now)

    def _contact_target(self, contact: Contact) -> tuple[SipURI, Peer] | None:
        try:
            target = parse_uri(contact.uri)
        except RemoteProtocolError:
            return None
        if not isinstance(target, SipURI):
            return None
        hop = self._peer_for(target)
        if contact.received and "ob" in target.params:
            # RFC 5626 outbound: the flow the REGISTER came on, not the contact's address
            proto, _, hostport = contact.received.partition(":")
            host, _, port = hostport.rpartition(":")
            if proto.upper() in self.transports and host and port.isdigit():
                hop = Peer(proto.upper(), host, int(port))
        return (target, hop) if hop is not None else None

    # §16.4 route information preprocessing
    def _preprocess_routes(self, fwd: Request) -> None:
        uri = fwd.uri
        if isinstance(uri, SipURI) and uri.user is None and self._is_me(uri):
            routes = fwd.route
            if routes:  # the previous hop was a strict router: restore the Request-URI
                last = routes[-1]
                fwd.uri = last.uri
                self._set_routes(fwd, routes[:-1])
        routes = fwd.route
        if routes and isinstance(routes[0].uri, SipURI) and self._is_route_to_me(routes[0].uri):
            self._set_routes(fwd, routes[1:])

    @staticmethod
    def _set_routes(msg: Request, routes: list[Any]) -> None:
        msg.headers.remove("Route")
        for r in routes:
            msg.headers.add("Route", str(r))

    def _is_me(self, uri: SipURI) -> bool:
        transport = uri.params.get("transport")
        default = 5061 if uri.scheme == "sips" or (transport or "").lower() == "tls" else 5060
        return (uri.host.lower().strip("[]"), uri.port or default) in self.my_addresses

    def _is_route_to_me(self, uri: SipURI) -> bool:
        if self._is_me(uri):
            return True
        return uri.user is None and uri.port is None and uri.host.lower() in self.domains

    def _is_loop(self, req: Request) -> bool:
        """§16.3 step 4: a Via of ours whose loop hash equals this request's is a loop (482)."""
        mine = None
        for via in req._via_view():
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
        for part in (str(req.uri), req._from_view().tag or "", req._to_view().tag or "", req.call_id,
                     str(req.cseq.seq), ",".join(req.headers.get_all("Route")),
                     ",".join(req.headers.get_all("Proxy-Require"))):
            h.update(part.encode("utf-8", "surrogateescape"))
            h.update(b"\x00")
        return h.hexdigest()[:16]

    def _peer_for(self, uri: Any) -> Peer | None:
        """The next hop named by a URI (§16.6 step 7, RFC 3263 without DNS: IP or route table)."""
        if not isinstance(uri, SipURI):
            return None
        transport = (uri.params.get("transport") or "").upper() or ("TLS" if uri.scheme == "sips" else "UDP")
        if transport not in self.transports:
            transport = "UDP" if "UDP" in self.transports else next(iter(self.transports))
        maddr = uri.params.get("maddr")
        host = maddr or uri.host
        if not is_ip_literal(host):
            route = self.routes.get(host.lower()) or self.routes.get("*")
            if route is not None:
                return Peer(route.transport, route.host, route.port)
            if host.lower() != "localhost":
                return None
            host = "127.0.0.1"
        return Peer(transport, host.strip("[]"), uri.port or _DEFAULT_PORT[transport])

    def _foreign_hop(self, uri: SipURI) -> Peer | None:
        route = self.routes.get(uri.host.lower()) or self.routes.get("*")
        if route is not None:
            return Peer(route.transport, route.host, route.port)
        return self._peer_for(uri)

    # §16.6 request forwarding
    def _forward(self, ctx: ResponseContext, fwd: Request, targets: list[tuple[Any, Peer]], now: float) -> None:
        loop_hash = self._loop_hash(ctx.request)
        in_transport = ctx.inbound.transport.name
        many = len(targets) > 1
        for target, hop in targets:
            if self.transaction_count >= self.max_transactions:
                self.reject("overload")
                break
            req = fwd.copy() if many else fwd
            req.uri = target
            mf = req.max_forwards
            req.max_forwards = 70 if mf is None else mf - 1
            if self.config.record_route and ctx.method in RECORD_ROUTE_METHODS:
                if hop.transport != in_transport:
                    req.headers.prepend("Record-Route", self._rr_value(in_transport))
                req.headers.prepend("Record-Route", self._rr_value(hop.transport))
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
            tx = ClientTransaction(req, hop.transport != "UDP", now, addr=hop, out=self._out,
                                   events=self._events, on_change=self._changed)
            b.tx = tx
            self._client[tx.key] = b
            self._forwarded(ctx.method).inc()
        if not ctx.branches:
            self.respond(ctx, 503, now=now)

    def _rr_value(self, transport: str) -> str:
        host, port = self.rr_address.get(transport) or self.rr_address["UDP"]
        suffix = "" if transport == "UDP" else f";transport={transport.lower()}"
        return f"<sip:{host}:{port}{suffix};lr>"

    def _forward_stateless(self, req: Request, item: Inbound, now: float) -> bool:
        """ACK for a 2xx, CANCEL without a response context: §16.11 stateless forwarding.

        False when the request was not sent on (hops exhausted, no route, or addressed to us).
        """
        mf = req.max_forwards
        if mf is not None and mf <= 0:
            self.reject("too-many-hops")
            return False
        fwd = req.copy()
        self._preprocess_routes(fwd)
        routes = fwd.route
        hop: Peer | None
        if routes:
            hop = self._peer_for(routes[0].uri)
        elif isinstance(fwd.uri, SipURI) and (fwd.uri.host.lower() in self.domains or self._is_me(fwd.uri)):
            if fwd.uri.user is None:
                return False  # an ACK for a response we generated ourselves: absorbed
            unanswered = (lambda: self._stateless_reply(req, item, 481)) if req.method == "CANCEL" else None
            self._spawn(self._lookup_stateless(fwd, unanswered))
            return True
        elif isinstance(fwd.uri, SipURI):
            hop = self._foreign_hop(fwd.uri)
        else:
            hop = None
        lookup = routes[0].uri if routes else fwd.uri
        if hop is None and self._dns_applies(lookup):
            self._spawn(self._resolve_stateless(fwd, lookup))
            return True
        if hop is None:
            self.reject("no-route")
            return False
        self._send_stateless(fwd, hop)
        return True

    async def _lookup_stateless(self, fwd: Request, unanswered: Callable[[], None] | None = None) -> None:
        """Sends ``fwd`` to the first binding of its AOR; ``unanswered`` runs when there is none."""
        uri = fwd.uri
        assert isinstance(uri, SipURI)
        try:
            contacts = await self.locator.lookup(uri.aor)
        except LocationError:
            self.reject("location-error")
            return
        for contact in contacts[:1]:
            target = self._contact_target(contact)
            if target is not None:
                fwd.uri = target[0]
                self._send_stateless(fwd, target[1])
                self._flush()
                return
        self.reject("not-found")
        if unanswered is not None:
            unanswered()

    async def _resolve_stateless(self, fwd: Request, lookup: SipURI) -> None:
        """Sends ``fwd`` to the first server DNS locates for ``lookup``."""
        assert self.resolver is not None
        try:
            hops = await self.resolver.resolve(lookup, list(self.transports))
        except DnsFailure:
            self.reject("no-route")
            return
        self._send_stateless(fwd, hops[0])
        self._flush()

    def _send_stateless(self, fwd: Request, hop: Peer) -> None:
        mf = fwd.max_forwards
        fwd.max_forwards = 70 if mf is None else mf - 1
        vias = fwd._via_view()
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
        tx = ClientTransaction(cancel, b.tx.reliable, now, addr=b.tx.addr, out=self._out,
                               events=self._events, on_change=self._changed)
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
        vias = resp._via_view()
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
                    ctx.branches = []  # break the ctx <-> branch cycle: freed by refcounting
        elif isinstance(ev, TransactionTimeout | TransportError):
            tx = ev.transaction
            if isinstance(tx, ClientTransaction):
                b = self._client.get(tx.key)
                if b is not None and not b.is_cancel and not b.final:
                    if isinstance(ev, TransportError):
                        self.reject("transport-error")
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
