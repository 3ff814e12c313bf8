"""REGISTER with Digest (RFC 3665 §2.1 flow, RFC 8760 SHA-256) between two in-memory cores,
plus robustness of the core against arbitrary datagrams."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from sipsec.sip.core import SipCore
from sipsec.sip.digest import (
    DigestClient,
    DigestCredentials,
    DigestError,
    DigestServer,
    StaleNonce,
    select_challenge,
)
from sipsec.sip.errors import RemoteProtocolError
from sipsec.sip.events import RequestReceived, ResponseReceived
from sipsec.sip.headers import Headers
from sipsec.sip.message import Request, Response, generate_branch, make_response
from sipsec.sip.parser import parse_message

REALM = "biloxi.example.com"
URI = "sip:biloxi.example.com"


class Registrar:
    """Bob's side: a registrar TU that challenges, verifies and answers."""

    def __init__(self) -> None:
        self.core = SipCore()
        self.auth = DigestServer(REALM, b"registrar-secret-0123456789")
        self.outcomes: list[str] = []

    def pump(self, now: float) -> None:
        while (ev := self.core.next_event()) is not None:
            if isinstance(ev, RequestReceived) and ev.transaction is not None:
                self.core.send_response(ev.transaction, self.answer(ev.request, now), now)

    def answer(self, req: Request, now: float) -> Response:
        header = req.headers.get("Authorization")
        stale = False
        if header is not None:
            try:
                creds = DigestCredentials.parse(header)
                self.auth.verify(creds, req.method, now, password="zanzibar",
                                 expected_uri=str(req.uri))  # fmt: skip
                self.outcomes.append("ok")
                return make_response(req, 200, to_tag="reg1")
            except StaleNonce:
                self.outcomes.append("stale")
                stale = True
            except (DigestError, RemoteProtocolError) as exc:
                self.outcomes.append(exc.reason)
        resp = make_response(req, 401, to_tag="reg1")
        for ch in self.auth.challenges(now, stale=stale):
            resp.headers.add("WWW-Authenticate", ch.to_header())
        return resp


class Phone:
    def __init__(self) -> None:
        self.core = SipCore()
        self.client = DigestClient("bob", "zanzibar")
        self.cseq = 0
        self.last_challenge = None

    def register(self, now: float, authorization: str | None = None) -> Request:
        self.cseq += 1
        h = Headers()
        h.add("Via", f"SIP/2.0/UDP bobspc.biloxi.example.com:5060;branch={generate_branch()}")
        h.add("Max-Forwards", "70")
        h.add("From", "Bob <sip:bob@biloxi.example.com>;tag=456248")
        h.add("To", "Bob <sip:bob@biloxi.example.com>")
        h.add("Call-ID", "843817637684230@998sdasdh09")
        h.add("CSeq", f"{self.cseq} REGISTER")
        h.add("Contact", "<sip:bob@client.biloxi.example.com>")
        h.add("Expires", "7200")
        if authorization is not None:
            h.add("Authorization", authorization)
        req = Request("REGISTER", URI, h)
        self.core.send_request(req, "registrar", now)
        return req

    def final(self) -> Response:
        while (ev := self.core.next_event()) is not None:
            if isinstance(ev, ResponseReceived) and ev.response.status >= 200:
                return ev.response
        raise AssertionError("no final response")


def exchange(phone: Phone, reg: Registrar, now: float) -> list[bytes]:
    wire = []
    for _ in range(10):
        moved = False
        for data, _addr in phone.core.datagrams_to_send():
            wire.append(data)
            reg.core.receive_datagram(data, "phone", now)
            moved = True
        reg.pump(now)
        for data, _addr in reg.core.datagrams_to_send():
            wire.append(data)
            phone.core.receive_datagram(data, "registrar", now)
            moved = True
        if not moved:
            break
    return wire


def test_register_challenge_then_authorized() -> None:
    phone, reg = Phone(), Registrar()
    phone.register(0.0)
    exchange(phone, reg, 0.0)
    r401 = phone.final()
    assert r401.status == 401
    challenge = select_challenge(r401.headers.get_all_raw("WWW-Authenticate"))
    assert challenge.algorithm == "SHA-256"  # RFC 8760: the preferred one is listed first
    creds = phone.client.authorize(challenge, "REGISTER", URI)
    phone.register(1.0, creds.to_header())
    wire = exchange(phone, reg, 1.0)
    assert phone.final().status == 200
    assert reg.outcomes == ["ok"]
    authorized = wire[0]
    assert b'Authorization: Digest username="bob"' in authorized
    # A captured REGISTER replayed later (its transaction is long gone): nc was used.
    reg.core.handle_timer(100.0)
    reg.core.datagrams_to_send()
    reg.core.receive_datagram(authorized, "attacker", 100.0)
    reg.pump(100.0)
    ((out, addr),) = reg.core.datagrams_to_send()
    assert out.startswith(b"SIP/2.0 401 ") and addr == "attacker"
    assert reg.outcomes == ["ok", "nonce-replay"]


def test_expired_nonce_gets_stale_challenge_and_silent_retry() -> None:
    phone, reg = Phone(), Registrar()
    phone.register(0.0)
    exchange(phone, reg, 0.0)
    challenge = select_challenge(phone.final().headers.get_all_raw("WWW-Authenticate"))
    phone.register(1.0, phone.client.authorize(challenge, "REGISTER", URI).to_header())
    exchange(phone, reg, 1.0)
    assert phone.final().status == 200
    later = 3600.0  # re-registration after the nonce lifetime
    phone.register(later, phone.client.authorize(challenge, "REGISTER", URI).to_header())
    exchange(phone, reg, later)
    stale = phone.final()
    assert stale.status == 401
    fresh = select_challenge(stale.headers.get_all_raw("WWW-Authenticate"))
    assert fresh.stale and fresh.nonce != challenge.nonce
    phone.register(later + 1, phone.client.authorize(fresh, "REGISTER", URI).to_header())
    exchange(phone, reg, later + 1)
    assert phone.final().status == 200
    assert reg.outcomes == ["ok", "stale", "ok"]


def test_wrong_password_and_garbage_authorization() -> None:
    phone, reg = Phone(), Registrar()
    phone.client = DigestClient("bob", "not-zanzibar")
    phone.register(0.0)
    exchange(phone, reg, 0.0)
    ch = select_challenge(phone.final().headers.get_all_raw("WWW-Authenticate"))
    phone.register(1.0, phone.client.authorize(ch, "REGISTER", URI).to_header())
    exchange(phone, reg, 1.0)
    assert phone.final().status == 401
    phone.register(2.0, 'Digest username="bob", realm=')
    exchange(phone, reg, 2.0)
    assert phone.final().status == 401
    assert reg.outcomes == ["bad-response", "bad-auth-header"]


SEED = (
    b"INVITE sip:bob@biloxi.com SIP/2.0\r\nVia: SIP/2.0/UDP pc33.atlanta.com;branch=z9hG4bK7\r\n"
    b"Max-Forwards: 70\r\nTo: Bob <sip:bob@biloxi.com>\r\nFrom: <sip:a@atlanta.com>;tag=19\r\n"
    b"Call-ID: a84b4c76e66710\r\nCSeq: 314159 INVITE\r\nContact: <sip:a@pc33>\r\n"
    b"Content-Length: 0\r\n\r\n"
)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_core_never_raises_on_arbitrary_datagrams(data: bytes) -> None:
    core = SipCore()
    core.receive_datagram(data, "x", 0.0)
    core.handle_timer(100.0)


@settings(max_examples=300, deadline=None)
@given(st.integers(0, len(SEED) - 1), st.binary(min_size=1, max_size=4), st.booleans())
def test_core_never_raises_on_mutated_requests(pos: int, junk: bytes, ack: bool) -> None:
    seed = SEED.replace(b"INVITE", b"ACK") if ack else SEED
    data = seed[:pos] + junk + seed[pos + len(junk) :]
    core = SipCore()
    core.receive_datagram(data, "x", 0.0)
    core.receive_datagram(data, "x", 0.1)  # and its retransmission
    while (ev := core.next_event()) is not None:
        if isinstance(ev, RequestReceived) and ev.transaction is not None:
            core.send_response(ev.transaction, make_response(ev.request, 486, to_tag="t"), 0.2)
    core.handle_timer(100.0)
    for out, _ in core.datagrams_to_send():
        assert isinstance(parse_message(out), Response)


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 400), st.binary(min_size=1, max_size=4), st.sampled_from([b"To", b"Via"]))
def test_core_never_raises_on_mutated_responses(pos: int, junk: bytes, drop: bytes) -> None:
    core = SipCore()
    inv = parse_message(SEED)
    assert isinstance(inv, Request)
    core.send_request(inv, "peer", 0.0)
    resp = make_response(inv, 486, to_tag="t").to_bytes()
    variants = [resp[:pos] + junk + resp[pos + len(junk) :]]
    # and the same response with a whole header line missing
    variants.append(b"\r\n".join(x for x in resp.split(b"\r\n") if not x.startswith(drop + b":")))
    for data in variants:
        core.receive_datagram(data, "peer", 0.1)
    core.handle_timer(100.0)
    while core.next_event() is not None:
        pass
