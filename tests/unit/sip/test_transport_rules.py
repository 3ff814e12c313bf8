"""RFC 3261 §18 rules without sockets: verdicts on received bytes, the promised 400, §18.2.2."""

from __future__ import annotations

import pytest
from sipsec.sip import parse_message
from sipsec.sip.message import Request, Response
from sipsec.sip.parser import Limits
from sipsec.sip.transport_rules import (
    Accepted,
    Answered,
    Dropped,
    KeepAlive,
    build_error_response,
    receive_datagram,
    receive_message,
    response_destination,
    response_target,
)

SOURCE = ("198.51.100.7", 40000)


def request(start: str = "OPTIONS sip:b@example.com SIP/2.0", cseq: str = "1 OPTIONS",
            via: str = "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKr1;rport",
            extra: str = "") -> bytes:
    return (f"{start}\r\nVia: {via}\r\nMax-Forwards: 70\r\nFrom: <sip:a@example.com>;tag=f1\r\n"
            f"To: <sip:b@example.com>\r\nCall-ID: cid-r1\r\nCSeq: {cseq}\r\n{extra}"
            "Content-Length: 0\r\n\r\n").encode("utf-8", "surrogateescape")


def answer_of(verdict: object) -> Response:
    assert isinstance(verdict, Answered), verdict
    parsed = parse_message(verdict.response)
    assert isinstance(parsed, Response)
    return parsed


def test_a_valid_request_is_accepted_and_stamped() -> None:
    verdict = receive_datagram(request(), SOURCE)
    assert isinstance(verdict, Accepted) and isinstance(verdict.message, Request)
    top = verdict.message.via[0]
    assert top.received == SOURCE[0] and top.rport == SOURCE[1]  # §18.2.1, RFC 3581 §4


@pytest.mark.parametrize(
    ("start", "reason"),
    [
        ("INV@ITE sip:b@example.com SIP/2.0", "bad-request-line"),  # unparseable method
        ("INVITÉ sip:b@example.com SIP/2.0", "bad-request-line"),  # non-token method
        ("OPTIONS SIP/2.0", "bad-request-line"),  # no Request-URI
        ("OPTIONS sip:b@example.com", "bad-request-line"),  # no version
        ("\x01garbage\x02", "control-character"),  # a start line that is not one at all
        ("", "bad-request-line"),  # no start line: the first line is the Via
        ("OPTIONS sip:@@ SIP/2.0", "bad-sip-uri"),
    ],
)
def test_any_request_with_a_readable_via_gets_400(start: str, reason: str) -> None:
    data = request(start=start)
    if not start:
        data = data[2:]  # the message begins with its Via line
    resp = answer_of(receive_datagram(data, SOURCE))
    assert resp.status == 400
    assert resp.via[0].branch == "z9hG4bKr1" and resp.call_id == "cid-r1"
    assert resp.to_tag  # §8.2.6.2: a To tag is added
    assert resp.headers.get("Warning") == f'399 sipsec "{reason}"'


def test_bad_version_gets_505() -> None:
    assert answer_of(receive_datagram(request(start="OPTIONS sip:b@x SIP/3.0"), SOURCE)).status == 505


def test_an_oversize_datagram_gets_513() -> None:
    verdict = receive_datagram(request(extra="X-Pad: " + "p" * 300 + "\r\n"), SOURCE,
                               Limits(max_message_bytes=200))
    assert answer_of(verdict).status == 513


def test_an_uncopyable_header_is_left_out_but_the_request_is_answered() -> None:
    data = request(start="INV@ITE sip:b@x SIP/2.0").replace(b"From: <sip:a@example.com>;tag=f1",
                                                            b"From: <sip:a@exa\x00mple.com>;tag=f1")
    resp = answer_of(receive_datagram(data, SOURCE))
    assert resp.status == 400 and "From" not in resp.headers and resp.call_id == "cid-r1"


@pytest.mark.parametrize(
    "data",
    [
        request(start="ACK sip:b@x SIP/2.x", cseq="1 ACK"),  # an ACK by its start line
        request(start="AC@K sip:b@x SIP/2.0", cseq="1 ACK"),  # ... or by its CSeq
        request(via="SIP/2.0/UDP [::1;branch=z9hG4bKr1"),  # the Via cannot be read
        request(via="SIP/2.0/UDP host\x00;branch=z9hG4bKr1"),
        request(start="OPTIONS sip:b@x SIP/2.0").replace(b"Via: ", b"X-Via: "),  # no Via
    ],
)
def test_nothing_is_answered_without_a_readable_via_or_to_an_ack(data: bytes) -> None:
    verdict = receive_datagram(data, SOURCE)
    assert isinstance(verdict, Dropped) and verdict.reason  # counted by its named reason
    assert build_error_response(data, 400, "x") is None


def test_a_malformed_response_is_dropped_never_answered() -> None:
    data = b"SIP/2.0 2000 OK\r\nVia: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKx\r\n\r\n"
    assert receive_datagram(data, SOURCE) == Dropped("malformed_response")


@pytest.mark.parametrize("data", [b"\r\n\r\n", b"\r\n", b"", b" \t"])
def test_keepalives_are_not_messages(data: bytes) -> None:
    assert receive_datagram(data, SOURCE) == KeepAlive()


def test_a_parsed_message_that_fails_validation_is_answered_from_its_wire_form() -> None:
    msg = parse_message(request().replace(b"Call-ID: cid-r1\r\n", b""))  # parses, lazily
    verdict = receive_message(msg, SOURCE)
    resp = answer_of(verdict)
    assert resp.status == 400 and resp.headers.get("Warning") == '399 sipsec "missing-call-id"'
    assert resp.via[0].branch == "z9hG4bKr1"


def test_response_routing_rules() -> None:
    msg = parse_message(request(via="SIP/2.0/TCP 192.0.2.1:5070;branch=z9hG4bKr1;rport"))
    assert isinstance(msg, Request)
    verdict = receive_message(msg, SOURCE)
    assert isinstance(verdict, Accepted)
    # reliable: the request's connection, falling back to received + the rport (§18.2.2)
    assert response_target(msg, SOURCE, "TCP", True) == (SOURCE, SOURCE)
    # unreliable: the stamped received/rport
    assert response_target(msg, ("203.0.113.1", 1), "UDP", False) == (SOURCE, None)
    no_rport = parse_message(request(via="SIP/2.0/TLS h.example.com;branch=z9hG4bKr1"))
    assert isinstance(no_rport, Request)
    receive_message(no_rport, SOURCE)
    assert response_target(no_rport, SOURCE, "TLS", True) == (SOURCE, (SOURCE[0], 5061))
    resp = Response(200, headers=[("Via", "SIP/2.0/UDP 192.0.2.9;branch=z9hG4bKa;maddr=239.1.1.1")])
    assert response_destination(resp, "UDP") == ("239.1.1.1", 5060)
    assert response_destination(Response(200), "UDP") is None
