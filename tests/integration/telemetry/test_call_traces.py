"""One secured call alice@atlanta.com -> bob@biloxi.com through the in-process two-domain topology
with tracing on: the spans of each domain (gateway call setup as the root of a trace, the PKG,
location and crypto-worker RPCs as its children or the proxy's, the gRPC servers continuing each
trace), no AOR or secret in any span, no ``traceparent`` in any SIP message, and with tracing off
not one span."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from sipsec.engine import RemoteEngine
from sipsec.telemetry import tracing
from sipsec_worker.config import WorkerConfig
from sipsec_worker.server import create_worker_server

from tests.integration.gateway.harness import PASSWORD, TwoDomains, call, login, wait_for

ALICE = "sip:alice@atlanta.com"
BOB = "sip:bob@biloxi.com"
SETUP = "gateway call setup"
#: the callee's location lookup is not answered from the proxy's cache, so the call shows it
NO_LOCATION_CACHE = {"atlanta.com": {"location_cache_ms": 0}, "biloxi.com": {"location_cache_ms": 0}}


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    spans = InMemorySpanExporter()
    tracing.use_exporter(spans, service_name="sipsec-test")  # before any channel is made
    try:
        yield spans
    finally:
        tracing.reset()


@contextlib.asynccontextmanager
async def _worker() -> AsyncIterator[RemoteEngine]:
    """A crypto worker and a remote engine using it (biloxi's gateway: its crypto becomes RPCs)."""
    server, port = create_worker_server(WorkerConfig(  # type: ignore[arg-type]
        listen="127.0.0.1:0", processes=1, plaintext=True, metrics_port=-1, drain_seconds=0.5,
        metrics_host="127.0.0.1", queue=16))
    await server.start()
    try:
        yield RemoteEngine([f"127.0.0.1:{port}"], plaintext=True, timeout_s=5.0)
    finally:
        await server.stop(0)


def _attributes(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


def _children(spans: list[ReadableSpan], parent: ReadableSpan) -> list[ReadableSpan]:
    return [s for s in spans if s.parent is not None and s.parent.span_id == parent.context.span_id]


def _rpc_pairs(trace: list[ReadableSpan], parent: ReadableSpan, service: str) -> list[str]:
    """Methods of ``service`` called as children of ``parent``, each with a server span continuing
    the client span (same trace, parent = the client span)."""
    methods = []
    for client in _children(trace, parent):
        if client.kind is not SpanKind.CLIENT or _attributes(client).get("rpc.service") != service:
            continue
        servers = [s for s in _children(trace, client) if s.kind is SpanKind.SERVER]
        assert len(servers) == 1, (client.name, servers)
        assert servers[0].name == client.name
        methods.append(str(_attributes(client)["rpc.method"]))
    return methods


async def test_one_secured_call_traced_in_each_domain(exporter: InMemorySpanExporter) -> None:
    async with _worker() as engine, TwoDomains(proxy_overrides=NO_LOCATION_CACHE,
                                               gateway_kwargs={"biloxi.com": {"engine": engine}}) as net:
        await login(net.atlanta, "alice")
        await login(net.biloxi, "bob", auto_answer=True)
        login_spans = list(exporter.get_finished_spans())
        exporter.clear()
        for d in (net.atlanta, net.biloxi):
            d.tap.clear()
        # the logins fetched biloxi's parameters already; forgotten, the call setup fetches them
        # through atlanta's PKG (federation), as a first call to a domain does
        net.atlanta.gateway.directory._params.pop("biloxi.com")

        placed = await call(net.atlanta, ALICE, BOB)
        assert placed["state"] == "established" and placed["secure"] is True
        await wait_for(lambda: len([s for s in exporter.get_finished_spans() if s.name == SETUP]) == 2)
        await asyncio.sleep(0.2)  # the last proxy responses
        incoming = [c for c in net.biloxi.gateway.secure.calls.values() if c.direction == "incoming"]
        wire = net.atlanta.tap.text() + net.biloxi.tap.text()
        tokens = [t for d in (net.atlanta, net.biloxi) for u in d.gateway.users.values()
                  for t in _session_tokens(u)]
    spans = list(exporter.get_finished_spans())
    assert len(tokens) == 2  # alice's and bob's PKG sessions, looked for below

    # -- the gateways: a root span per call leg, ended at the final response
    setups = {_attributes(s)["sipsec.call.direction"]: s for s in spans if s.name == SETUP}
    out, inc = setups["outgoing"], setups["incoming"]
    for span, domain, peer in ((out, "atlanta.com", "biloxi.com"), (inc, "biloxi.com", "atlanta.com")):
        assert span.parent is None
        assert _attributes(span) == {
            "sipsec.call.direction": _attributes(span)["sipsec.call.direction"], "sipsec.call.side": "secure",
            "sipsec.call.secure": True, "sipsec.domain": domain, "sipsec.peer_domain": peer,
            "sipsec.call.outcome": "answered", "sip.status_code": 200}
    assert out.context.trace_id != inc.context.trace_id  # nothing links the two domains
    assert tracing.open_setups() == 0

    # caller's domain: the PKG's federation fetch is a child, the PKG server continues it
    caller_trace = [s for s in spans if s.context.trace_id == out.context.trace_id]
    assert _rpc_pairs(caller_trace, out, "sipsec.pkg.v1.KeyGeneratorService") == ["GetDomainParams"]

    # callee's domain: the crypto worker's RPCs (opening the INVITE, sealing the answers) are
    # children of the incoming setup span, each continued by the worker's server span
    callee_trace = [s for s in spans if s.context.trace_id == inc.context.trace_id]
    worker_methods = _rpc_pairs(callee_trace, inc, "sipsec.crypto.v1.CryptoWorkerService")
    for op in ("Decapsulate", "Verify", "Sign"):  # (Batch)Decapsulate, (Batch)Verify, (Batch)Sign
        assert any(m.endswith(op) for m in worker_methods), (op, worker_methods)

    # -- the proxies: their own traces; the callee's proxy looks bob up in the location service
    requests = [s for s in spans if s.name == "proxy request" and _attributes(s)["sip.method"] == "INVITE"]
    by_domain = {_attributes(s)["sipsec.domain"]: s for s in requests}
    assert set(by_domain) == {"atlanta.com", "biloxi.com"}
    for span in requests:
        assert span.parent is None and _attributes(span)["sip.status_code"] == 200
        assert span.context.trace_id not in (out.context.trace_id, inc.context.trace_id)
    biloxi_proxy = by_domain["biloxi.com"]
    proxy_trace = [s for s in spans if s.context.trace_id == biloxi_proxy.context.trace_id]
    assert _rpc_pairs(proxy_trace, biloxi_proxy, "sipsec.location.v1.LocationService") == ["Lookup"]

    # -- every trace stays within one domain
    for trace_id in {s.context.trace_id for s in spans}:
        domains = {_attributes(s).get("sipsec.domain") for s in spans if s.context.trace_id == trace_id}
        assert len(domains - {None}) <= 1, domains

    # -- nothing identifying or secret in any span, the logins' included
    secrets = ["alice", "bob", "@", PASSWORD, placed["id"], *(c.call_id for c in incoming), *tokens]
    for span in login_spans + spans:
        text = repr((span.name, span.attributes, [e.attributes for e in span.events], span.resource.attributes))
        for secret in secrets:
            assert secret not in text, (span.name, secret)

    # -- and nothing in the outer SIP messages the proxies carried
    assert wire and b"traceparent" not in wire.lower()
    for span in spans:
        assert format(span.context.trace_id, "032x").encode() not in wire


def _session_tokens(user: Any) -> list[str]:
    """The PKG session tokens a logged-in gateway user holds (to look for them in spans)."""
    return [c.session.token for c in getattr(user, "_clients", []) if getattr(c, "session", None) is not None]


async def test_with_tracing_off_no_span_is_recorded(monkeypatch: pytest.MonkeyPatch) -> None:
    """Off (the default): a whole call runs without one span being made, not even a no-op one."""
    from opentelemetry.sdk import trace as sdk_trace
    from opentelemetry.trace import NonRecordingSpan

    made: list[str] = []
    for cls in (sdk_trace.Span, NonRecordingSpan):
        original = cls.__init__

        def spy(self: Any, *args: Any, _original: Any = original, **kwargs: Any) -> None:
            made.append(type(self).__name__)
            _original(self, *args, **kwargs)

        monkeypatch.setattr(cls, "__init__", spy)
    tracing.reset()
    assert not tracing.enabled()
    async with TwoDomains(proxy_overrides=NO_LOCATION_CACHE) as net:
        await login(net.atlanta, "alice")
        await login(net.biloxi, "bob", auto_answer=True)
        placed = await call(net.atlanta, ALICE, BOB)
        assert placed["state"] == "established" and placed["secure"] is True
        wire = net.atlanta.tap.text() + net.biloxi.tap.text()
    assert made == [] and tracing.open_setups() == 0
    assert b"traceparent" not in wire.lower()


async def test_threshold_nodes_timed_per_configured_node_in_the_gateway(exporter: InMemorySpanExporter) -> None:
    """biloxi.com: a 2-of-3 threshold PKG with node 3 down. Bob's login fetches his keys from every
    node that took the login: the gateway's per-node histogram shows nodes 1 and 2 ``ok`` under their
    configured targets (node 3's series at 0); each node's GetPrivateKey is a span of its own server."""
    async with TwoDomains(threshold={"biloxi.com": (2, 3, frozenset({3}))}) as net:
        gateway = net.biloxi.gateway
        targets = list(gateway.pkg.targets)
        await login(net.biloxi, "bob")
        counts = {(node, result): gateway.metrics.sample(
            "sipsec_pkgclient_threshold_node_duration_seconds_count", node=node, result=result)
            for node in targets for result in ("ok", "invalid", "error")}
    fetched = counts[(targets[0], "ok")]
    assert fetched >= 2  # sig and enc keys (current and next period)
    assert counts[(targets[1], "ok")] == fetched
    # node 3 refused the login (down), so it was never asked: its series are there, at 0
    assert [counts[(targets[2], result)] for result in ("ok", "invalid", "error")] == [0, 0, 0]
    assert sum(v for (_, result), v in counts.items() if result != "ok") == 0
    servers = [s for s in exporter.get_finished_spans()
               if s.kind is SpanKind.SERVER and s.name.endswith("/GetPrivateKey")]
    clients = {s.context.span_id for s in exporter.get_finished_spans()
               if s.kind is SpanKind.CLIENT and s.name.endswith("/GetPrivateKey")}
    assert len(servers) == 2 * fetched and all(s.parent is not None and s.parent.span_id in clients for s in servers)
