"""The proxy/registrar in-process, driven by raw SIP over real loopback sockets."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import httpx
import pytest
from sipsec.aio.transport import Peer as TransportPeer
from sipsec.sip import Response, parse_message
from sipsec.sip.digest import DigestChallenge, DigestClient
from sipsec_proxy.config import ProxyConfig
from sipsec_proxy.locator import BindRequest
from sipsec_proxy.server import ProxyServer, create_proxy_server

from tests.sipp import free_port_on

USERS = "alice:alice-secret,bob:bob-secret"


class Peer:
    """A UDP endpoint on loopback that sends requests and collects whatever arrives."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.setblocking(False)
        self.port = self.sock.getsockname()[1]
        self.seq = 0

    def send(self, data: bytes | str, to: tuple[str, int]) -> None:
        self.sock.sendto(data.encode() if isinstance(data, str) else data, to)

    async def recv(self, timeout: float = 2.0) -> object:
        loop = asyncio.get_running_loop()
        data = await asyncio.wait_for(loop.sock_recv(self.sock, 70000), timeout)
        return parse_message(data)

    async def final(self, timeout: float = 3.0) -> Response:
        while True:
            msg = await self.recv(timeout)
            if isinstance(msg, Response) and msg.status >= 200:
                return msg

    def close(self) -> None:
        self.sock.close()


def request(method: str, ruri: str, peer: Peer, *, to: str, frm: str = "sip:alice@atlanta.com",
            cseq: int = 1, call_id: str = "cid-1", extra: str = "", branch: str | None = None,
            max_forwards: int = 70) -> str:
    peer.seq += 1
    br = branch or f"z9hG4bKtest{peer.port}x{peer.seq}"
    return (f"{method} {ruri} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{peer.port};branch={br};rport\r\n"
            f"Max-Forwards: {max_forwards}\r\nFrom: <{frm}>;tag=t{peer.port}\r\nTo: <{to}>\r\n"
            f"Call-ID: {call_id}\r\nCSeq: {cseq} {method}\r\n{extra}Content-Length: 0\r\n\r\n")


def _config(**kw: object) -> ProxyConfig:
    base: dict[str, object] = dict(domains="atlanta.com", listen="127.0.0.1:0", metrics_port=-1,
                                   users=USERS, rate_limit=0, drain_seconds=0, min_expires=60,
                                   max_expires=7200)
    base.update(kw)
    return ProxyConfig(**base)  # type: ignore[arg-type]


@pytest.fixture
async def started() -> AsyncIterator[list[ProxyServer]]:
    servers: list[ProxyServer] = []
    yield servers
    for s in servers:
        await s.stop(0)


async def _proxy(started: list[ProxyServer], **kw: object) -> ProxyServer:
    server = create_proxy_server(_config(**kw))
    await server.start()
    started.append(server)
    return server


@pytest.fixture
async def client() -> AsyncIterator[Peer]:
    p = Peer()
    yield p
    p.close()


def _register(peer: Peer, user: str = "bob", *, contact: str | None = None, expires: str = "3600",
              cseq: int = 1, auth: str = "", call_id: str = "reg-1") -> str:
    contact = contact if contact is not None else f"<sip:{user}@127.0.0.1:{peer.port}>"
    return request("REGISTER", "sip:atlanta.com", peer, to=f"sip:{user}@atlanta.com",
                   frm=f"sip:{user}@atlanta.com", cseq=cseq, call_id=call_id,
                   extra=f"Contact: {contact}\r\nExpires: {expires}\r\n{auth}")


async def _authorised_register(proxy: ProxyServer, peer: Peer, user: str, password: str, *,
                               algorithm: str = "SHA-256", cseq: int = 1, **kw: object) -> Response:
    peer.send(_register(peer, user, cseq=cseq, **kw), proxy.udp_address)  # type: ignore[arg-type]
    challenge_resp = await peer.final()
    assert challenge_resp.status == 401
    challenges = [DigestChallenge.parse(v) for v in challenge_resp.headers.get_all("WWW-Authenticate")]
    ch = next(c for c in challenges if c.algorithm == algorithm)
    creds = DigestClient(user, password).authorize(ch, "REGISTER", "sip:atlanta.com")
    peer.send(_register(peer, user, cseq=cseq + 1, auth=f"Authorization: {creds.to_header()}\r\n", **kw),  # type: ignore[arg-type]
              proxy.udp_address)
    return await peer.final()


async def test_register_sha256_then_md5_and_bindings(started: list[ProxyServer], client: Peer) -> None:
    proxy = await _proxy(started)
    client.send(_register(client), proxy.udp_address)
    first = await client.final()
    algs = [DigestChallenge.parse(v).algorithm for v in first.headers.get_all("WWW-Authenticate")]
    assert first.status == 401 and algs == ["SHA-256", "MD5"]  # RFC 8760 §2.4: preferred first
    ok = await _authorised_register(proxy, client, "bob", "bob-secret", cseq=3)
    assert ok.status == 200
    assert ok.headers.get_all("Contact") == [f"<sip:bob@127.0.0.1:{client.port}>;expires=3600"]
    ok2 = await _authorised_register(proxy, client, "bob", "bob-secret", algorithm="MD5", cseq=5,
                                     contact="<sip:bob@127.0.0.9:5060>;q=0.5", expires="99999")
    assert ok2.status == 200
    contacts = ok2.headers.get_all("Contact")
    assert contacts[0] == f"<sip:bob@127.0.0.1:{client.port}>;expires=3600"
    assert contacts[1] == "<sip:bob@127.0.0.9:5060>;expires=7200;q=0.5"  # clamped to max_expires
    assert proxy.metrics.registrations.labels("ok")._value.get() == 2


async def test_no_user_enumeration(started: list[ProxyServer], client: Peer) -> None:
    proxy = await _proxy(started)
    answers = []
    for user, password in (("bob", "wrong"), ("mallory", "whatever")):
        resp = await _authorised_register(proxy, client, user, password, call_id=f"enum-{user}")
        answers.append(resp)
    a, b = answers
    assert a.status == b.status == 401 and a.reason == b.reason
    assert [n for n, _ in a.headers.items()] == [n for n, _ in b.headers.items()]
    for resp in answers:
        chs = [DigestChallenge.parse(v) for v in resp.headers.get_all("WWW-Authenticate")]
        assert [c.stale for c in chs] == [False, False]
    assert proxy.metrics.rejections.labels("auth-failed")._value.get() == 2


async def test_register_for_someone_else_is_403(started: list[ProxyServer], client: Peer) -> None:
    proxy = await _proxy(started)
    client.send(_register(client, "bob"), proxy.udp_address)
    ch = DigestChallenge.parse((await client.final()).headers.get_all("WWW-Authenticate")[0])
    creds = DigestClient("alice", "alice-secret").authorize(ch, "REGISTER", "sip:atlanta.com")
    client.send(_register(client, "bob", cseq=2, auth=f"Authorization: {creds.to_header()}\r\n"),
                proxy.udp_address)
    assert (await client.final()).status == 403


async def test_expiry_limits_and_wildcard(started: list[ProxyServer], client: Peer) -> None:
    proxy = await _proxy(started, auth="none")
    client.send(_register(client, expires="10"), proxy.udp_address)
    brief = await client.final()
    assert brief.status == 423 and brief.headers.get("Min-Expires") == "60"
    client.send(_register(client, cseq=2), proxy.udp_address)
    assert (await client.final()).status == 200
    assert len(await proxy.locator.lookup("sip:bob@atlanta.com")) == 1
    client.send(_register(client, contact="*", expires="3600", cseq=3), proxy.udp_address)
    assert (await client.final()).status == 400  # "*" only with Expires: 0 (§10.2.2)
    client.send(_register(client, contact="*", expires="0", cseq=4), proxy.udp_address)
    ok = await client.final()
    assert ok.status == 200 and ok.headers.get_all("Contact") == []
    assert await proxy.locator.lookup("sip:bob@atlanta.com") == []
    assert proxy.metrics.rejections.labels("interval-too-brief")._value.get() == 1


async def test_forwarding_rewrites_outer_headers_only(started: list[ProxyServer], client: Peer) -> None:
    proxy = await _proxy(started, auth="none")
    callee = Peer()
    try:
        await proxy.locator.bind("sip:bob@atlanta.com", BindRequest(f"sip:bob@127.0.0.1:{callee.port}", 600),
                                 "c", 1, "")
        body = b"\x30\x82\x01\x00opaque-secured-body\x00\xff"
        head = request("MESSAGE", "sip:bob@atlanta.com", client, to="sip:bob@atlanta.com", max_forwards=7,
                       extra="Content-Type: application/pkcs7-mime\r\n").replace("Content-Length: 0\r\n\r\n", "")
        client.send(head.encode() + f"Content-Length: {len(body)}\r\n\r\n".encode() + body, proxy.udp_address)
        fwd = await callee.recv()
        assert fwd.method == "MESSAGE" and str(fwd.uri) == f"sip:bob@127.0.0.1:{callee.port}"
        assert fwd.max_forwards == 6 and fwd.body == body
        vias = fwd.via
        assert len(vias) == 2 and vias[0].port == proxy.udp_address[1] and vias[0].branch.startswith("z9hG4bK")
        assert vias[1].params.get("rport") == str(client.port) and vias[1].received == "127.0.0.1"  # RFC 3581
        assert "Record-Route" not in fwd.headers  # MESSAGE creates no dialog
        callee.send("SIP/2.0 200 OK\r\n" + "".join(
            f"{n}: {v}\r\n" for n, v in fwd.headers.items() if n in ("Via", "From", "To", "Call-ID", "CSeq"))
            + "Content-Length: 0\r\n\r\n", proxy.udp_address)
        ok = await client.final()
        assert ok.status == 200 and len(ok.via) == 1 and ok.via[0].port == client.port
    finally:
        callee.close()


async def _fake_uas(peer: Peer, status: int, proxy_addr: tuple[str, int]) -> None:
    req = await peer.recv()
    lines = "".join(f"{n}: {v}\r\n" for n, v in req.headers.items() if n in ("Via", "From", "Call-ID", "CSeq"))
    to = req.headers.get("To")
    peer.send(f"SIP/2.0 {status} X\r\n{lines}To: {to};tag=u{peer.port}\r\nContent-Length: 0\r\n\r\n", proxy_addr)
    ack = await peer.recv()  # the proxy's hop-by-hop ACK for a non-2xx (§17.1.1.3)
    assert ack.method == "ACK"


@pytest.mark.parametrize(("statuses", "best"), [((486, 404), 404), ((486, 603), 603), ((503, 503), 500)])
async def test_forking_best_response(started: list[ProxyServer], client: Peer, statuses: tuple[int, int],
                                     best: int) -> None:
    proxy = await _proxy(started, auth="none")
    uas = [Peer(), Peer()]
    try:
        for i, p in enumerate(uas):
            await proxy.locator.bind("sip:bob@atlanta.com", BindRequest(f"sip:bob@127.0.0.1:{p.port}", 600),
                                     f"c{i}", 1, "")
        tasks = [asyncio.create_task(_fake_uas(p, s, proxy.udp_address)) for p, s in zip(uas, statuses)]
        client.send(request("INVITE", "sip:bob@atlanta.com", client, to="sip:bob@atlanta.com"), proxy.udp_address)
        final = await client.final()
        assert final.status == best
        await asyncio.gather(*tasks)
    finally:
        for p in uas:
            p.close()


async def test_loop_is_482_and_spiral_rules(started: list[ProxyServer], client: Peer) -> None:
    port = free_port_on("127.0.0.1")
    proxy = await _proxy(started, auth="none", listen=f"127.0.0.1:{port}", routes=f"loop.test=127.0.0.1:{port}")
    client.send(request("OPTIONS", "sip:x@loop.test", client, to="sip:x@loop.test"), proxy.udp_address)
    assert (await client.final()).status == 482
    assert proxy.metrics.rejections.labels("loop")._value.get() == 1


async def test_max_forwards_zero_unsupported_uri_and_proxy_require(started: list[ProxyServer], client: Peer) -> None:
    proxy = await _proxy(started, auth="none")
    client.send(request("OPTIONS", "sip:bob@atlanta.com", client, to="sip:bob@atlanta.com", max_forwards=0),
                proxy.udp_address)
    assert (await client.final()).status == 483
    client.send(request("OPTIONS", "tel:+15551234", client, to="sip:bob@atlanta.com"), proxy.udp_address)
    assert (await client.final()).status == 416
    client.send(request("OPTIONS", "sip:bob@atlanta.com", client, to="sip:bob@atlanta.com",
                        extra="Proxy-Require: foo\r\n"), proxy.udp_address)
    resp = await client.final()
    assert resp.status == 420 and resp.headers.get("Unsupported") == "foo"


async def test_rate_limit_counts_and_drops(started: list[ProxyServer], client: Peer) -> None:
    proxy = await _proxy(started, auth="none", rate_limit=2, rate_burst=5)
    for i in range(30):
        client.send(request("OPTIONS", "sip:atlanta.com", client, to="sip:atlanta.com", call_id=f"r{i}"),
                    proxy.udp_address)
    answered = 0
    try:
        while True:
            await client.final(timeout=0.5)
            answered += 1
    except TimeoutError:
        pass
    assert 5 <= answered <= 7
    assert proxy.metrics.rejections.labels("rate-limited")._value.get() >= 23


async def test_transaction_table_is_bounded(started: list[ProxyServer], client: Peer) -> None:
    proxy = await _proxy(started, auth="none", max_transactions=10)
    hole = Peer()  # never answers
    try:
        await proxy.locator.bind("sip:bob@atlanta.com", BindRequest(f"sip:bob@127.0.0.1:{hole.port}", 600), "c", 1, "")
        for i in range(40):
            client.send(request("INVITE", "sip:bob@atlanta.com", client, to="sip:bob@atlanta.com", call_id=f"o{i}"),
                        proxy.udp_address)
        await asyncio.sleep(0.5)
        assert proxy.core is not None and proxy.core.transaction_count <= 10
        assert proxy.metrics.rejections.labels("overload")._value.get() >= 30
        statuses = []
        try:
            while True:
                msg = await client.recv(timeout=0.3)
                statuses.append(msg.status)  # type: ignore[attr-defined]
        except TimeoutError:
            pass
        assert statuses.count(503) >= 30 and statuses.count(100) >= 1
    finally:
        hole.close()


async def test_garbage_is_counted_and_metrics_endpoint(started: list[ProxyServer], client: Peer) -> None:
    proxy = await _proxy(started, auth="none", metrics_port=0, metrics_host="127.0.0.1")
    client.send(b"INVITE sip:bob@atlanta.com SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:1;branch=z9hG4bKq\r\n"
                b"CSeq: nonsense\r\n\r\n", proxy.udp_address)  # answered by the transport, to the source
    client.send(request("OPTIONS", "sip:atlanta.com", client, to="sip:atlanta.com", call_id="mf")
                .replace("Max-Forwards: 70", "Max-Forwards: lots"), proxy.udp_address)
    statuses = []
    for _ in range(2):
        data = await asyncio.wait_for(asyncio.get_running_loop().sock_recv(client.sock, 70000), 2)
        statuses.append(int(data.split(b" ", 2)[1]))
    assert statuses == [400, 400]
    client.send(b"SIP/2.0 180 Ringing\r\nVia: SIP/2.0/UDP 127.0.0.1:1;branch=z9hG4bKnope\r\nFrom: <sip:a@b>;tag=1"
                b"\r\nTo: <sip:b@c>\r\nCall-ID: q\r\nCSeq: 1 INVITE\r\n\r\n", proxy.udp_address)
    client.send(request("OPTIONS", "sip:atlanta.com", client, to="sip:atlanta.com"), proxy.udp_address)
    assert (await client.final()).status == 200
    async with httpx.AsyncClient() as http:
        text = (await http.get(f"http://127.0.0.1:{proxy.metrics_port}/metrics")).text
    assert 'sipsec_proxy_requests_total{method="OPTIONS",status_class="2xx"} 1.0' in text
    assert 'sipsec_proxy_rejections_total{reason="stray-response"} 1.0' in text
    assert "sipsec_sip_messages_dropped_total" in text  # the transports' drop reasons, same endpoint
    assert "sipsec_proxy_active_transactions" in text


async def test_tcp_register_and_options(started: list[ProxyServer]) -> None:
    proxy = await _proxy(started, auth="none", tcp_listen="127.0.0.1:0")
    host, port = proxy.address("TCP")
    reader, writer = await asyncio.open_connection(host, port)
    lport = writer.get_extra_info("sockname")[1]
    msg = (f"REGISTER sip:atlanta.com SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:{lport};branch=z9hG4bKtcp1\r\n"
           f"Max-Forwards: 70\r\nFrom: <sip:bob@atlanta.com>;tag=1\r\nTo: <sip:bob@atlanta.com>\r\n"
           f"Call-ID: tcp-1\r\nCSeq: 1 REGISTER\r\nContact: <sip:bob@127.0.0.1:{lport};transport=tcp>\r\n"
           f"Content-Length: 0\r\n\r\n")
    writer.write(msg.encode())
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 3)
    assert head.startswith(b"SIP/2.0 200 OK")
    assert b"transport=tcp>;expires=3600" in head
    writer.close()
    await writer.wait_closed()


def _self_signed(tmp_path: object) -> tuple[str, str]:
    import datetime
    from pathlib import Path

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "atlanta.com")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("atlanta.com")]), critical=False)
            .sign(key, hashes.SHA256()))
    folder = Path(str(tmp_path))
    (folder / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (folder / "key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                       serialization.NoEncryption()))
    return str(folder / "cert.pem"), str(folder / "key.pem")


async def test_tls_options(started: list[ProxyServer], tmp_path: object) -> None:
    import ssl

    cert, key = _self_signed(tmp_path)
    proxy = await _proxy(started, auth="none", tls_listen="127.0.0.1:0", tls_cert=cert, tls_key=key)
    host, port = proxy.address("TLS")
    ctx = ssl.create_default_context(cafile=cert)
    reader, writer = await asyncio.open_connection(host, port, ssl=ctx, server_hostname="atlanta.com")
    lport = writer.get_extra_info("sockname")[1]
    writer.write((f"OPTIONS sip:atlanta.com;transport=tls SIP/2.0\r\nVia: SIP/2.0/TLS 127.0.0.1:{lport};"
                  f"branch=z9hG4bKtls1\r\nMax-Forwards: 70\r\nFrom: <sip:bob@atlanta.com>;tag=1\r\n"
                  f"To: <sip:atlanta.com>\r\nCall-ID: tls-1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n").encode())
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 3)
    assert head.startswith(b"SIP/2.0 200 OK") and b"Allow: INVITE" in head
    writer.close()
    await writer.wait_closed()


async def test_timer_c_cancels_a_ringing_branch(started: list[ProxyServer], client: Peer,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    from sipsec_proxy import core as core_module

    monkeypatch.setattr(core_module, "TIMER_C", 0.4)
    proxy = await _proxy(started, auth="none")
    callee = Peer()
    try:
        await proxy.locator.bind("sip:bob@atlanta.com", BindRequest(f"sip:bob@127.0.0.1:{callee.port}", 600), "c", 1, "")
        client.send(request("INVITE", "sip:bob@atlanta.com", client, to="sip:bob@atlanta.com"), proxy.udp_address)
        invite = await callee.recv()
        lines = "".join(f"{n}: {v}\r\n" for n, v in invite.headers.items() if n in ("Via", "From", "Call-ID", "CSeq"))
        callee.send(f"SIP/2.0 180 Ringing\r\n{lines}To: {invite.headers.get('To')};tag=rr\r\nContent-Length: 0\r\n\r\n",
                    proxy.udp_address)
        cancel = await callee.recv(timeout=3)
        assert cancel.method == "CANCEL" and cancel.via[0].branch == invite.via[0].branch
        assert (await client.final()).status == 408
    finally:
        callee.close()


async def test_loose_and_strict_routing(started: list[ProxyServer], client: Peer) -> None:
    """§16.4: our own Route entry is removed (loose); a Request-URI naming us is restored (strict)."""
    callee = Peer()  # named by the requests' Route / Request-URI: a configured peer (no open relay)
    proxy = await _proxy(started, auth="none", peers=f"127.0.0.1:{callee.port}")
    me = f"sip:127.0.0.1:{proxy.udp_address[1]}"
    try:
        # loose: Route: <us;lr>, <callee;lr> -> forwarded to the callee, R-URI unchanged
        client.send(request("OPTIONS", "sip:carol@chicago.com", client, to="sip:carol@chicago.com",
                            extra=f"Route: <{me};lr>, <sip:127.0.0.1:{callee.port};lr>\r\n"), proxy.udp_address)
        fwd = await callee.recv()
        assert str(fwd.uri) == "sip:carol@chicago.com"
        assert fwd.headers.get_all("Route") == [f"<sip:127.0.0.1:{callee.port};lr>"]
        # strict: the previous hop put us in the Request-URI and the real target last in Route
        client.send(request("OPTIONS", me, client, to="sip:carol@chicago.com", call_id="strict",
                            extra=f"Route: <sip:carol@127.0.0.1:{callee.port}>\r\n"), proxy.udp_address)
        fwd = await callee.recv()
        assert str(fwd.uri) == f"sip:carol@127.0.0.1:{callee.port}" and "Route" not in fwd.headers
    finally:
        callee.close()


async def test_tcp_to_udp_double_record_route(started: list[ProxyServer]) -> None:
    proxy = await _proxy(started, auth="none", tcp_listen="127.0.0.1:0")
    callee = Peer()
    try:
        await proxy.locator.bind("sip:bob@atlanta.com", BindRequest(f"sip:bob@127.0.0.1:{callee.port}", 600), "c", 1, "")
        reader, writer = await asyncio.open_connection(*proxy.address("TCP"))
        lport = writer.get_extra_info("sockname")[1]
        writer.write((f"INVITE sip:bob@atlanta.com SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:{lport};branch=z9hG4bKt2u\r\n"
                      f"Max-Forwards: 70\r\nFrom: <sip:alice@atlanta.com>;tag=1\r\nTo: <sip:bob@atlanta.com>\r\n"
                      f"Call-ID: t2u\r\nCSeq: 1 INVITE\r\nContact: <sip:alice@127.0.0.1:{lport};transport=tcp>\r\n"
                      f"Content-Length: 0\r\n\r\n").encode())
        await writer.drain()
        assert (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 3)).startswith(b"SIP/2.0 100 Trying")
        fwd = await callee.recv()
        udp_port, tcp_port = proxy.udp_address[1], proxy.address("TCP")[1]
        # both entries carry the marks of the dialog's two hops: the caller's TCP contact
        # (the host it came from) and the callee's binding (routing.decide, in-dialog requests)
        assert proxy.core is not None
        policy = proxy.core.policy
        marks = (f";sps={policy.mark(TransportPeer('TCP', '127.0.0.1', lport))}"
                 f".{policy.mark(TransportPeer('UDP', '127.0.0.1', callee.port))}")
        assert fwd.headers.get_all("Record-Route") == [
            f"<sip:127.0.0.1:{udp_port};lr{marks}>", f"<sip:127.0.0.1:{tcp_port};transport=tcp;lr{marks}>"]
        assert fwd.via[0].transport == "UDP" and fwd.via[1].transport == "TCP"
        writer.close()
        await writer.wait_closed()
    finally:
        callee.close()


async def test_location_service_down_is_503(started: list[ProxyServer], client: Peer) -> None:
    proxy = await _proxy(started, auth="none", location=f"127.0.0.1:{free_port_on('127.0.0.1', socket.SOCK_STREAM)}")
    client.send(request("OPTIONS", "sip:bob@atlanta.com", client, to="sip:bob@atlanta.com"), proxy.udp_address)
    resp = await client.final(timeout=6)
    assert resp.status == 503 and resp.headers.get("Retry-After") == "5"
    assert proxy.metrics.rejections.labels("location-error")._value.get() == 1


class _Verifier:
    """A RegisterVerifier for the hook's contract: signed-ok for alice, forged for mallory, else unsigned."""

    async def verify(self, request: object, aor: str) -> bool:
        from sipsec_proxy.registrar import RegisterRejected

        if aor == "sip:mallory@atlanta.com":
            raise RegisterRejected("bad-signature")
        return aor == "sip:alice@atlanta.com"


async def test_register_verifier_hook(started: list[ProxyServer], client: Peer) -> None:
    server = create_proxy_server(_config(), verifier=_Verifier())
    await server.start()
    started.append(server)
    client.send(_register(client, "alice", call_id="v1"), server.udp_address)
    assert (await client.final()).status == 200  # verified signature: no digest round
    client.send(_register(client, "mallory", call_id="v2"), server.udp_address)
    assert (await client.final()).status == 403
    client.send(_register(client, "bob", call_id="v3"), server.udp_address)
    assert (await client.final()).status == 401  # unsigned: digest as for a plain phone


async def test_bad_route_header_answered_in_transaction(started: list[ProxyServer], client: Peer) -> None:
    proxy = await _proxy(started, auth="none")
    client.send(request("OPTIONS", "sip:carol@chicago.com", client, to="sip:carol@chicago.com",
                        extra="Route: <<<garbage\r\n"), proxy.udp_address)
    assert (await client.final()).status == 400
    await asyncio.sleep(0.1)
    assert proxy.core is not None
    assert all(ctx.final_sent for ctx in proxy.core._server.values())  # nothing left waiting forever
    assert proxy.metrics.rejections.labels("bad-request")._value.get() == 1


async def test_cancel_without_transaction_is_forwarded_statelessly(started: list[ProxyServer],
                                                                  client: Peer) -> None:
    """§16.10: no response context -> the CANCEL is routed like a request; its answer comes back."""
    callee = Peer()  # named by an IP-literal Request-URI below: a configured peer (no open relay)
    proxy = await _proxy(started, auth="none", peers=f"127.0.0.1:{callee.port}")
    try:
        await proxy.locator.bind("sip:bob@atlanta.com", BindRequest(f"sip:bob@127.0.0.1:{callee.port}", 600), "c", 1, "")
        # foreign domain through a configured peer's IP literal: the Request-URI itself
        client.send(request("CANCEL", f"sip:carol@127.0.0.1:{callee.port}", client, to="sip:carol@chicago.com",
                            call_id="cx-1", branch="z9hG4bKorphan1"), proxy.udp_address)
        fwd = await callee.recv()
        assert fwd.method == "CANCEL" and fwd.max_forwards == 69
        assert fwd.via[0].branch.startswith("z9hG4bK-spl") and fwd.via[1].branch == "z9hG4bKorphan1"
        lines = "".join(f"{n}: {v}\r\n" for n, v in fwd.headers.items() if n in ("Via", "From", "To", "Call-ID", "CSeq"))
        callee.send(f"SIP/2.0 481 Call/Transaction Does Not Exist\r\n{lines}Content-Length: 0\r\n\r\n",
                    proxy.udp_address)
        resp = await client.final()  # the callee's answer, relayed with our Via removed
        assert resp.status == 481 and resp.via[0].branch == "z9hG4bKorphan1" and len(resp.via) == 1
        # a local AOR: looked up in the location service, sent to the binding
        client.send(request("CANCEL", "sip:bob@atlanta.com", client, to="sip:bob@atlanta.com",
                            call_id="cx-2", branch="z9hG4bKorphan2"), proxy.udp_address)
        fwd = await callee.recv()
        assert fwd.method == "CANCEL" and str(fwd.uri) == f"sip:bob@127.0.0.1:{callee.port}"
        assert proxy.metrics.rejections.labels("no-transaction")._value.get() == 0
        # nowhere to route it: answered 481 by the proxy itself and counted
        client.send(request("CANCEL", "sip:nobody@atlanta.com", client, to="sip:nobody@atlanta.com",
                            call_id="cx-3", branch="z9hG4bKorphan3"), proxy.udp_address)
        assert (await client.final()).status == 481
        assert proxy.metrics.rejections.labels("not-found")._value.get() == 1
        client.send(request("CANCEL", "sip:carol@unrouted.example", client, to="sip:carol@unrouted.example",
                            call_id="cx-4", branch="z9hG4bKorphan4"), proxy.udp_address)
        assert (await client.final()).status == 481
        assert proxy.metrics.rejections.labels("no-transaction")._value.get() == 1
    finally:
        callee.close()
