"""The routing policy: the proxy is not a relay (RFC 3261 §16.5/§16.6 under a policy, RFC 3263).

Every way a request can name a destination is tried against a proxy whose only allowed
targets are its own registered contacts; each must be refused (403, or 404 for an unknown
user of the served domain) with no packet reaching the listening sockets it names. The relay
chain that reached Redis (a UDP request naming ``redis:port;transport=tcp`` with Redis
commands as its body) is reproduced against a real ``redis-server`` and refused.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator

import pytest
from sipsec.sip import Request, Response
from sipsec_proxy.locator import BindRequest
from sipsec_proxy.server import ProxyServer

import tests.integration.proxy.test_dns_routing as dns_tests
import tests.integration.proxy.test_proxy_core as core
from tests.integration.proxy.test_proxy_core import Peer, _proxy, request

started = core.started
client = core.client
dns_started = dns_tests.dns_started


class Listener:
    """UDP and TCP sockets on one loopback port: anything that reaches them is recorded."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.tcp = socket.socket(family, socket.SOCK_STREAM)
        self.tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.tcp.bind((host, 0))
        self.port = self.tcp.getsockname()[1]
        self.tcp.listen(16)
        self.tcp.setblocking(False)
        self.udp = socket.socket(family, socket.SOCK_DGRAM)
        self.udp.bind((host, self.port))
        self.udp.setblocking(False)

    def reached(self) -> list[str]:
        """What arrived: datagrams and accepted connections."""
        got: list[str] = []
        while True:
            try:
                data = self.udp.recv(70000)
            except BlockingIOError:
                break
            got.append(f"udp:{data[:40]!r}")
        while True:
            try:
                conn, addr = self.tcp.accept()
            except BlockingIOError:
                break
            got.append(f"tcp-connection from {addr}")
            conn.close()
        return got

    def close(self) -> None:
        self.tcp.close()
        self.udp.close()


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.fixture
def listeners() -> Iterator[list[Listener]]:
    made: list[Listener] = []
    yield made
    for item in made:
        item.close()


def _forwarded(proxy: ProxyServer) -> float:
    return sum(s.value for m in proxy.metrics.forwarded.collect() for s in m.samples
               if s.name.endswith("_total"))


def _rejected(proxy: ProxyServer, reason: str) -> float:
    return proxy.metrics.registry.get_sample_value("sipsec_proxy_rejections_total", {"reason": reason}) or 0.0


async def _statuses(c: Peer, count: int) -> list[int]:
    """The final statuses of ``count`` requests, in order of arrival."""
    out: list[int] = []
    for _ in range(count):
        out.append((await c.final()).status)
    return out


async def test_every_way_to_name_a_destination_is_refused_and_nothing_is_sent(
        started: list[ProxyServer], client: Peer, listeners: list[Listener],
        dns_started: list[asyncio.DatagramTransport]) -> None:
    victim = Listener("127.0.0.1")
    listeners.append(victim)
    v6 = None
    if _ipv6_loopback():
        v6 = Listener("::1")
        listeners.append(v6)
    port = victim.port
    # DNS names that resolve to internal addresses (no allow_networks here: the defaults)
    records: dns_tests.Records = {
        ("inside.test.", "A"): (60, ["127.0.0.1"]),
        ("linklocal.test.", "A"): (60, ["169.254.10.20"]),
        ("_sip._udp.srv-inside.test.", "SRV"): (60, [f"10 0 {port} inside.test."]),
        ("zero.test.", "A"): (60, ["0.0.0.0"]),
    }
    fake, server = await dns_tests._start_dns(dns_started, records)
    proxy = await _proxy(started, auth="none", dns=server)
    me = f"sip:127.0.0.1:{proxy.udp_address[1]}"
    forbidden = [
        f"sip:x@127.0.0.1:{port}",                               # Request-URI IP literal, UDP
        f"sip:x@127.0.0.1:{port};transport=tcp",                 # ... over TCP
        f"sip:x@127.0.0.1:{port};transport=tls",                 # ... over TLS (no TLS here: UDP)
        f"sips:x@127.0.0.1:{port}",                              # sips
        f"sip:x@localhost:{port}",                               # localhost
        f"sip:x@[::ffff:127.0.0.1]:{port}",                      # IPv4-mapped IPv6
        f"sip:x@chicago.com:{port};maddr=127.0.0.1",             # maddr on a foreign domain
        "sip:x@169.254.169.254:80",                              # link-local (cloud metadata)
        f"sip:x@inside.test:{port}",                             # DNS name -> 127.0.0.1
        "sip:x@srv-inside.test",                                 # SRV -> a name -> 127.0.0.1
        "sip:x@linklocal.test:5060",                             # DNS name -> 169.254.x
        f"sip:x@zero.test:{port}",                               # DNS name -> 0.0.0.0
    ]
    if v6 is not None:
        forbidden.append(f"sip:x@[::1]:{v6.port}")               # IPv6 literal
    routed = [  # the destination in a Route header (R-URI a foreign user)
        f"<sip:127.0.0.1:{port};lr>",
        f"<sip:127.0.0.1:{port};transport=tcp;lr>",
        "<sip:chicago.com;maddr=127.0.0.1;lr>",
        f"<{me};lr>, <sip:127.0.0.1:{port};lr>",                 # after our own (loose-routed) entry
        f"<sip:inside.test:{port};lr>",
    ]
    sent = 0
    for method in ("OPTIONS", "INVITE", "MESSAGE"):
        for n, ruri in enumerate(forbidden):
            client.send(request(method, ruri, client, to="sip:x@chicago.com", call_id=f"f-{method}-{n}"),
                        proxy.udp_address)
            sent += 1
        for n, route in enumerate(routed):
            client.send(request(method, "sip:carol@chicago.com", client, to="sip:carol@chicago.com",
                                call_id=f"r-{method}-{n}", extra=f"Route: {route}\r\n"), proxy.udp_address)
            sent += 1
    statuses = await _statuses(client, sent)
    assert statuses == [403] * sent
    # unknown users of the served domain, however the Request-URI dresses them: 404
    for n, ruri in enumerate(("sip:nobody@atlanta.com", "sip:nobody@atlanta.com;maddr=127.0.0.1",
                              "sip:nobody@atlanta.com;transport=tcp", f"sip:nobody@{me[4:]}")):
        client.send(request("INVITE", ruri, client, to=ruri, call_id=f"u-{n}"), proxy.udp_address)
    assert await _statuses(client, 4) == [404] * 4
    # the stateless paths: an ACK naming the victim is dropped, a CANCEL refused
    client.send(request("ACK", f"sip:x@127.0.0.1:{port};transport=tcp", client, to="sip:x@chicago.com",
                        call_id="ack-1"), proxy.udp_address)
    client.send(request("CANCEL", f"sip:x@127.0.0.1:{port}", client, to="sip:x@chicago.com",
                        call_id="cancel-1"), proxy.udp_address)
    cancel = await client.final()
    assert cancel.status == 403
    await asyncio.sleep(0.3)
    assert victim.reached() == [] and (v6 is None or v6.reached() == [])
    assert _forwarded(proxy) == 0
    assert _rejected(proxy, "forbidden-target") == sent + 2
    assert fake.count("inside.test.", "A") >= 1  # the names were looked up, their answers refused


async def test_the_relay_chain_to_redis_is_refused(started: list[ProxyServer], client: Peer,
                                                   redis_url: str) -> None:
    """One UDP datagram naming Redis over TCP, Redis commands as its body: refused, Redis unchanged."""
    import redis.asyncio as aredis

    proxy = await _proxy(started, location="redis", redis_url=redis_url, auth="none",
                         peers="127.0.0.1")  # even a peer rule for the whole host opens no service port
    rport = int(redis_url.rsplit(":", 1)[1].split("/")[0])
    body = (b"\r\nSET sipsec:pwned 1\r\nHSET pkg:session:attacker aor sip:alice@atlanta.com\r\n"
            b"CONFIG SET dir /tmp\r\n")
    for method, n in (("INVITE", 1), ("OPTIONS", 2), ("MESSAGE", 3)):
        head = request(method, f"sip:x@127.0.0.1:{rport};transport=tcp", client, to="sip:x@chicago.com",
                       call_id=f"redis-{n}", extra="Content-Type: text/plain\r\n"
                       ).replace("Content-Length: 0\r\n\r\n", "")
        client.send(head.encode() + f"Content-Length: {len(body)}\r\n\r\n".encode() + body, proxy.udp_address)
        assert (await client.final()).status == 403
    # the same through a Route header, and registered as a contact
    client.send(request("OPTIONS", "sip:carol@chicago.com", client, to="sip:carol@chicago.com", call_id="redis-r",
                        extra=f"Route: <sip:127.0.0.1:{rport};transport=tcp;lr>\r\n"), proxy.udp_address)
    assert (await client.final()).status == 403
    client.send(core._register(client, "bob", contact=f"<sip:bob@127.0.0.1:{rport};transport=tcp>"),
                proxy.udp_address)
    refused = await client.final()
    assert refused.status == 403 and refused.reason == "Contact Not Allowed"
    await asyncio.sleep(0.2)
    r = aredis.from_url(redis_url)
    try:
        assert await r.dbsize() == 0
        assert await r.get("sipsec:pwned") is None
    finally:
        await r.aclose()
    assert _forwarded(proxy) == 0


async def test_in_dialog_requests_reach_registered_contacts_only(started: list[ProxyServer], client: Peer) -> None:
    """After loose routing, an ACK/BYE's Request-URI is the remote target: a live binding of the
    To or From AOR in our domain is allowed, the same address for anyone else is not."""
    proxy = await _proxy(started, auth="none", tcp_listen="127.0.0.1:0")
    callee = Peer()
    try:
        await proxy.locator.bind("sip:bob@atlanta.com", BindRequest(f"sip:bob@127.0.0.1:{callee.port}", 600), "c", 1, "")
        me = f"sip:127.0.0.1:{proxy.udp_address[1]}"
        target = f"sip:bob@127.0.0.1:{callee.port}"
        client.send(request("BYE", target, client, to="sip:bob@atlanta.com", frm="sip:carol@chicago.com",
                            call_id="dlg-1", extra=f"Route: <{me};lr>\r\n"), proxy.udp_address)
        bye = await callee.recv()
        assert isinstance(bye, Request) and bye.method == "BYE" and str(bye.uri) == target
        # callee -> caller direction: the To is the caller, the binding belongs to the From
        client.send(request("INFO", target, client, to="sip:carol@chicago.com", frm="sip:bob@atlanta.com",
                            call_id="dlg-2", extra=f"Route: <{me};lr>\r\n"), proxy.udp_address)
        info = await callee.recv()
        assert isinstance(info, Request) and info.method == "INFO"
        # an ACK for a 2xx (stateless) to the same binding
        client.send(request("ACK", target, client, to="sip:bob@atlanta.com", call_id="dlg-1"), proxy.udp_address)
        ack = await callee.recv()
        assert isinstance(ack, Request) and ack.method == "ACK"
        # the binding's address named by a request that is not about bob: refused
        client.send(request("BYE", target, client, to="sip:carol@chicago.com", frm="sip:dave@chicago.com",
                            call_id="dlg-3", extra=f"Route: <{me};lr>\r\n"), proxy.udp_address)
        resp = await client.final()
        assert isinstance(resp, Response) and resp.status == 403
        # bob's binding host with another port, or another transport: not bob's binding
        for n, other in enumerate((f"sip:bob@127.0.0.1:{callee.port + 1}", f"{target};transport=tcp")):
            client.send(request("BYE", other, client, to="sip:bob@atlanta.com", call_id=f"dlg-x{n}"),
                        proxy.udp_address)
            assert (await client.final()).status == 403
        with pytest.raises(TimeoutError):
            await callee.recv(timeout=0.3)
    finally:
        callee.close()


async def test_dns_answers_in_an_allowed_network_and_peers_are_targets(
        started: list[ProxyServer], client: Peer, dns_started: list[asyncio.DatagramTransport]) -> None:
    hop = dns_tests.Hop("127.0.0.6")
    peer = Peer()
    try:
        fake, server = await dns_tests._start_dns(dns_started, {("lab.test.", "A"): (60, ["127.0.0.6"])})
        proxy = await _proxy(started, auth="none", dns=server, allow_networks="127.0.0.6/32",
                             peers=f"127.0.0.1:{peer.port}")
        client.send(request("MESSAGE", f"sip:x@lab.test:{hop.port}", client, to="sip:x@lab.test",
                            call_id="lab-1"), proxy.udp_address)
        assert (await hop.answer()).method == "MESSAGE"
        assert (await client.final()).status == 200
        client.send(request("MESSAGE", f"sip:x@127.0.0.1:{peer.port}", client, to="sip:x@chicago.com",
                            call_id="peer-1"), proxy.udp_address)
        got = await peer.recv()
        assert isinstance(got, Request) and got.method == "MESSAGE"
        # the peer's host is not opened by it: another port there is still refused
        client.send(request("MESSAGE", f"sip:x@127.0.0.1:{peer.port + 1}", client, to="sip:x@chicago.com",
                            call_id="peer-2"), proxy.udp_address)
        assert (await client.final()).status == 403
    finally:
        hop.close()
        peer.close()



async def test_record_route_marks_route_a_dialog_whose_from_and_to_are_anonymous(
        started: list[ProxyServer], client: Peer) -> None:
    """The callee's BYE names the caller's Contact (not registered here, From/To anonymous): our
    Record-Route entry vouches for it; the same entry does not open any other address."""
    proxy = await _proxy(started, auth="none")
    callee = Peer()
    try:
        await proxy.locator.bind("sip:bob@atlanta.com", BindRequest(f"sip:bob@127.0.0.1:{callee.port}", 600), "c", 1, "")
        contact = f"sip:u1@127.0.0.1:{client.port}"
        client.send(request("INVITE", "sip:bob@atlanta.com", client, to="sip:bob@atlanta.com",
                            frm="sip:anonymous@anonymous.invalid", call_id="anon-1",
                            extra=f"Contact: <{contact}>\r\n"), proxy.udp_address)
        invite = await callee.recv()
        assert isinstance(invite, Request)
        rr = invite.headers.get_all("Record-Route")
        assert len(rr) == 1 and ";sps=" in rr[0]
        bye = (f"BYE {contact} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{callee.port};branch=z9hG4bKbye1\r\n"
               f"Max-Forwards: 70\r\nRoute: {rr[0]}\r\nFrom: <sip:anonymous@anonymous.invalid>;tag=b\r\n"
               f"To: <sip:anonymous@anonymous.invalid>;tag=a\r\nCall-ID: anon-1\r\nCSeq: 2 BYE\r\n"
               f"Content-Length: 0\r\n\r\n")
        callee.send(bye, proxy.udp_address)
        while True:  # the client first hears the INVITE's 100 Trying
            got = await client.recv()
            if isinstance(got, Request):
                break
        assert got.method == "BYE" and str(got.uri) == contact
        # the same Route entry naming another port of that host: refused; naming the proxy
        # itself: a user of the served domain, looked up (none): 404
        cases = ((f"sip:u1@127.0.0.1:{client.port + 1}", 403), (f"sip:u1@127.0.0.1:{proxy.udp_address[1]}", 404))
        for n, (other, status) in enumerate(cases):
            callee.send(bye.replace(f"BYE {contact} ", f"BYE {other} ").replace("z9hG4bKbye1", f"z9hG4bKbye{n + 2}")
                        .replace("CSeq: 2", f"CSeq: {n + 3}"), proxy.udp_address)
            resp = await callee.recv()
            assert isinstance(resp, Response) and resp.status == status, (other, resp.status)
    finally:
        callee.close()
