"""RFC 3263 routing of foreign domains through a real (tiny) DNS server on loopback."""

from __future__ import annotations

import asyncio
import random
import socket
from collections.abc import AsyncIterator
from typing import cast

import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset
import pytest
from sipsec.sip import Request, SipURI, parse_message, parse_uri
from sipsec_proxy.dns import SipResolver, _Srv, order_srv, parse_dns
from sipsec_proxy.server import ProxyServer

import tests.integration.proxy.test_proxy_core as core
from tests.integration.proxy.test_proxy_core import Peer, _proxy, request

started = core.started  # the proxy helpers' fixtures: servers stopped after the test, a UDP client
client = core.client

Records = dict[tuple[str, str], tuple[int, list[str]]]
#: The test hops live on loopback, which DNS answers may only name where explicitly allowed.
LAB = "127.0.0.0/8"


class FakeDns(asyncio.DatagramProtocol):
    """Answers A/AAAA/SRV queries from a dict; unknown names get NXDOMAIN; ``drop`` names no answer."""

    def __init__(self, records: Records, drop: frozenset[str] = frozenset()) -> None:
        self.records = records
        self.drop = drop
        self.queries: list[tuple[str, str]] = []
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        query = dns.message.from_wire(data)
        question = query.question[0]
        name, rdtype = question.name.to_text().lower(), dns.rdatatype.to_text(question.rdtype)
        self.queries.append((name, rdtype))
        if name in self.drop:
            return
        resp = dns.message.make_response(query)
        entry = self.records.get((name, rdtype))
        if entry is not None:
            ttl, rdatas = entry
            resp.answer.append(dns.rrset.from_text(name, ttl, "IN", rdtype, *rdatas))
        elif not any(n == name for n, _ in self.records):
            resp.set_rcode(dns.rcode.NXDOMAIN)
        assert self.transport is not None
        self.transport.sendto(resp.to_wire(), addr)

    def count(self, name: str, rdtype: str | None = None) -> int:
        return sum(1 for n, t in self.queries if n == name and (rdtype is None or t == rdtype))


class Hop:
    """A next hop: a UDP socket on a chosen loopback address that answers each request 200."""

    def __init__(self, host: str) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((host, 0))
        self.sock.setblocking(False)
        self.host, self.port = self.sock.getsockname()

    async def answer(self, timeout: float = 3.0) -> Request:
        loop = asyncio.get_running_loop()
        data, addr = await asyncio.wait_for(loop.sock_recvfrom(self.sock, 70000), timeout)
        req = parse_message(data)
        assert isinstance(req, Request)
        resp = ("SIP/2.0 200 OK\r\n" + "".join(f"Via: {v}\r\n" for v in req.headers.get_all("Via"))
                + f"From: {req.headers.get('From')}\r\nTo: {req.headers.get('To')};tag=hop\r\n"
                f"Call-ID: {req.call_id}\r\nCSeq: {req.cseq.seq} {req.method}\r\nContent-Length: 0\r\n\r\n")
        await loop.sock_sendto(self.sock, resp.encode(), addr)
        return req

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
async def hops() -> AsyncIterator[list[Hop]]:
    made: list[Hop] = []
    yield made
    for h in made:
        h.close()


async def _dns_server(records: Records, drop: frozenset[str] = frozenset()) -> tuple[FakeDns, asyncio.DatagramTransport]:
    loop = asyncio.get_running_loop()
    transport, proto = await loop.create_datagram_endpoint(lambda: FakeDns(records, drop),
                                                           local_addr=("127.0.0.1", 0))
    return proto, transport


@pytest.fixture
async def dns_started() -> AsyncIterator[list[asyncio.DatagramTransport]]:
    transports: list[asyncio.DatagramTransport] = []
    yield transports
    for t in transports:
        t.close()


async def _start_dns(dns_started: list[asyncio.DatagramTransport], records: Records,
                     drop: frozenset[str] = frozenset()) -> tuple[FakeDns, str]:
    proto, transport = await _dns_server(records, drop)
    dns_started.append(transport)
    port = transport.get_extra_info("sockname")[1]
    return proto, f"127.0.0.1:{port}"


def _lookups(proxy: ProxyServer, rdtype: str, outcome: str) -> float:
    value = proxy.metrics.registry.get_sample_value("sipsec_proxy_dns_lookups_total",
                                                    {"type": rdtype, "outcome": outcome})
    return value or 0.0


def _rejections(proxy: ProxyServer, reason: str) -> float:
    return proxy.metrics.registry.get_sample_value("sipsec_proxy_rejections_total", {"reason": reason}) or 0.0


async def _message(proxy: ProxyServer, client: Peer, ruri: str, call_id: str) -> None:
    client.send(request("MESSAGE", ruri, client, to=ruri, call_id=call_id), proxy.udp_address)


def _srv_records(best: Hop, backup: Hop, ttl: int = 300) -> Records:
    return {
        ("_sip._udp.biloxi.test.", "SRV"): (ttl, [f"20 0 {backup.port} backup.biloxi.test.",
                                                   f"10 0 {best.port} best.biloxi.test."]),
        ("best.biloxi.test.", "A"): (ttl, [best.host]),
        ("backup.biloxi.test.", "A"): (ttl, [backup.host]),
    }


async def test_srv_priority_target_gets_the_request_and_answers_are_cached(
        started: list[ProxyServer], client: Peer, hops: list[Hop],
        dns_started: list[asyncio.DatagramTransport]) -> None:
    best, backup = Hop("127.0.0.2"), Hop("127.0.0.3")
    hops += [best, backup]
    fake, server = await _start_dns(dns_started, _srv_records(best, backup))
    proxy = await _proxy(started, auth="none", allow_networks=LAB, dns=server)
    for n in range(2):  # (e) the second request is answered from the TTL cache
        await _message(proxy, client, "sip:carol@biloxi.test", f"srv-{n}")
        got = await best.answer()
        assert str(got.uri) == "sip:carol@biloxi.test"  # the Request-URI is not rewritten
        assert got.via[0].host == "127.0.0.1" and got.via[0].port == proxy.udp_address[1]
        final = await client.final()
        assert final.status == 200
    with pytest.raises(asyncio.TimeoutError):  # the priority-20 target never hears of it
        await backup.answer(timeout=0.3)
    assert fake.count("_sip._udp.biloxi.test.", "SRV") == 1
    assert fake.count("best.biloxi.test.", "A") == 1
    assert fake.count("_sip._tcp.biloxi.test.") == 0  # UDP SRV found: TCP not asked
    assert _lookups(proxy, "SRV", "ok") == 1 and _lookups(proxy, "SRV", "cached") == 1
    assert _lookups(proxy, "A", "ok") >= 1 and _lookups(proxy, "A", "cached") >= 1


async def test_ttl_expiry_queries_again(dns_started: list[asyncio.DatagramTransport]) -> None:
    fake, server = await _start_dns(dns_started, {("short.test.", "A"): (5, ["127.0.0.7"])})
    now = [100.0]
    resolver = SipResolver(parse_dns(server) or [], timeout=1.0, clock=lambda: now[0])
    uri = parse_uri("sip:x@short.test:7000")
    assert isinstance(uri, SipURI)
    for advance in (0.0, 4.0, 2.0):  # t=100 query, t=104 cached, t=106 past the 5 s TTL: query
        now[0] += advance
        hops = await resolver.resolve(uri, ["UDP"])
        assert [(h.transport, h.host, h.port) for h in hops] == [("UDP", "127.0.0.7", 7000)]
    assert fake.count("short.test.", "A") == 2


async def test_no_srv_falls_back_to_a_record(started: list[ProxyServer], client: Peer, hops: list[Hop],
                                             dns_started: list[asyncio.DatagramTransport]) -> None:
    # Binding 127.0.0.x:5060 in a test would collide with anything else using SIP's port, so
    # the end-to-end case carries an explicit port (RFC 3263 §4.2: A/AAAA only, no SRV query);
    # the no-port default (5060) is checked on the resolver itself against the same server.
    hop = Hop("127.0.0.4")
    hops.append(hop)
    records: Records = {("plain.test.", "A"): (60, ["127.0.0.4"])}
    fake, server = await _start_dns(dns_started, records)
    proxy = await _proxy(started, auth="none", allow_networks=LAB, dns=server)
    await _message(proxy, client, f"sip:dave@plain.test:{hop.port}", "a-1")
    got = await hop.answer()
    assert str(got.uri) == f"sip:dave@plain.test:{hop.port}"
    assert (await client.final()).status == 200
    assert fake.count("plain.test.", "A") == 1 and not any(t == "SRV" for _, t in fake.queries)

    resolver = SipResolver(parse_dns(server) or [], timeout=1.0)
    uri = parse_uri("sip:dave@plain.test")
    assert isinstance(uri, SipURI)
    found = await resolver.resolve(uri, ["UDP", "TCP"])
    assert [(h.transport, h.host, h.port) for h in found] == [("UDP", "127.0.0.4", 5060)]
    # SRV for UDP, then TCP (both NXDOMAIN: no such names), then the domain's A record
    assert fake.count("_sip._udp.plain.test.", "SRV") == 1 and fake.count("_sip._tcp.plain.test.", "SRV") == 1


async def test_nxdomain_is_404_and_timeout_is_503(started: list[ProxyServer], client: Peer,
                                                  dns_started: list[asyncio.DatagramTransport]) -> None:
    fake, server = await _start_dns(dns_started, {}, drop=frozenset({"slow.test."}))
    proxy = await _proxy(started, auth="none", allow_networks=LAB, dns=server, dns_timeout_s=0.3)
    await _message(proxy, client, "sip:erin@nowhere.test", "nx-1")
    resp = await client.final()
    assert resp.status == 404 and resp.reason == "No Route"
    assert _lookups(proxy, "A", "nxdomain") == 1 and _rejections(proxy, "no-route") == 1
    await _message(proxy, client, "sip:erin@slow.test:5999", "to-1")
    resp = await client.final(timeout=3.0)
    assert resp.status == 503 and resp.headers.get("Retry-After") == "5"
    assert _lookups(proxy, "A", "timeout") == 1 and _rejections(proxy, "no-route") == 2
    # the proxy still serves: a third request is answered at once from the negative cache
    await _message(proxy, client, "sip:erin@nowhere.test", "nx-2")
    assert (await client.final()).status == 404
    assert fake.count("nowhere.test.", "A") == 1 and _lookups(proxy, "A", "cached") == 1


async def test_route_table_wins_over_dns(started: list[ProxyServer], client: Peer, hops: list[Hop],
                                         dns_started: list[asyncio.DatagramTransport]) -> None:
    best, backup, routed = Hop("127.0.0.2"), Hop("127.0.0.3"), Hop("127.0.0.5")
    hops += [best, backup, routed]
    fake, server = await _start_dns(dns_started, _srv_records(best, backup))
    proxy = await _proxy(started, auth="none", allow_networks=LAB, dns=server, routes=f"biloxi.test={routed.host}:{routed.port}")
    await _message(proxy, client, "sip:carol@biloxi.test", "rt-1")
    got = await routed.answer()
    assert str(got.uri) == "sip:carol@biloxi.test"
    assert (await client.final()).status == 200
    assert fake.queries == []
    with pytest.raises(asyncio.TimeoutError):
        await best.answer(timeout=0.3)


async def test_dns_off_keeps_404(started: list[ProxyServer], client: Peer) -> None:
    proxy = await _proxy(started, auth="none")
    await _message(proxy, client, "sip:carol@biloxi.test", "off-1")
    assert (await client.final()).status == 404
    assert proxy.metrics.registry.get_sample_value("sipsec_proxy_dns_lookups_total",
                                                   {"type": "A", "outcome": "ok"}) is None


def test_srv_ordering_and_config() -> None:
    rng = random.Random(7)
    recs = [_Srv(20, 0, 1, "c."), _Srv(10, 0, 2, "light."), _Srv(10, 100, 3, "heavy.")]
    firsts = [order_srv(recs, rng) for _ in range(200)]
    assert all(o[-1].target == "c." for o in firsts)  # priority 20 after every priority-10 target
    heavy_first = sum(o[0].target == "heavy." for o in firsts)
    assert heavy_first > 180  # weight 100 vs 0: the heavy target leads almost always (RFC 2782)
    assert parse_dns("off") is None and parse_dns("system") == []
    assert parse_dns("127.0.0.1:5300, [::1]:53") == [("127.0.0.1", 5300), ("::1", 53)]
    with pytest.raises(ValueError):
        parse_dns("ns.example.com:53")



async def test_stateless_cancel_is_routed_through_dns(started: list[ProxyServer], client: Peer, hops: list[Hop],
                                                      dns_started: list[asyncio.DatagramTransport]) -> None:
    best, backup = Hop("127.0.0.2"), Hop("127.0.0.3")
    hops += [best, backup]
    fake, server = await _start_dns(dns_started, _srv_records(best, backup))
    proxy = await _proxy(started, auth="none", allow_networks=LAB, dns=server)
    # a CANCEL matching no INVITE here is forwarded statelessly (§16.10), located like a request
    client.send(request("CANCEL", "sip:carol@biloxi.test", client, to="sip:carol@biloxi.test",
                        call_id="cancel-1"), proxy.udp_address)
    got = await best.answer()
    assert got.method == "CANCEL" and str(got.uri) == "sip:carol@biloxi.test"
    assert (await client.final()).status == 200  # the hop's answer relayed back
    assert fake.count("_sip._udp.biloxi.test.", "SRV") == 1
