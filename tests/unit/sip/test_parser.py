"""Parser, headers and message API of sipsec.sip (RFC 3261 §7, §8.2.6, §20)."""

from __future__ import annotations

import subprocess
import sys

import pytest
from sipsec.sip import (
    CSeq,
    Headers,
    Limits,
    LocalProtocolError,
    NameAddr,
    RemoteProtocolError,
    Request,
    Response,
    SipURI,
    Via,
    generate_branch,
    generate_call_id,
    generate_tag,
    make_response,
    parse_message,
)

INVITE = (
    b"INVITE sip:bob@biloxi.example.com SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bK776asdhds;rport\r\n"
    b"Max-Forwards: 70\r\n"
    b"To: Bob <sip:bob@biloxi.example.com>\r\n"
    b'From: "Alice" <sip:alice@atlanta.example.com>;tag=1928301774\r\n'
    b"Call-ID: a84b4c76e66710@pc33.atlanta.example.com\r\n"
    b"CSeq: 314159 INVITE\r\n"
    b"Contact: <sip:alice@pc33.atlanta.example.com>\r\n"
    b"X-Unknown:  some ;; odd, value \r\n"
    b"Content-Type: application/sdp\r\n"
    b"Content-Length: 4\r\n"
    b"\r\n"
    b"v=0\n"
)


def with_header(line: bytes, data: bytes = INVITE) -> bytes:
    """INVITE with one extra header line inserted after the request line."""
    first, rest = data.split(b"\r\n", 1)
    return first + b"\r\n" + line + b"\r\n" + rest


def reject(data: bytes, reason: str, status: int = 400, limits: Limits | None = None) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        if limits is None:
            parse_message(data)
        else:
            parse_message(data, limits)
    assert (info.value.reason, info.value.status_hint) == (reason, status)


# -- start line -----------------------------------------------------------------------------


def test_request_parses_with_eager_transaction_headers() -> None:
    m = parse_message(INVITE)
    assert isinstance(m, Request)
    assert (m.method, str(m.uri), m.version) == ("INVITE", "sip:bob@biloxi.example.com", "SIP/2.0")
    assert m.top_via == Via("UDP", "pc33.atlanta.example.com", None,
                            {"branch": "z9hG4bK776asdhds", "rport": None})
    assert m.top_via.rport is True
    assert m.cseq == CSeq(314159, "INVITE")
    assert m.call_id == "a84b4c76e66710@pc33.atlanta.example.com"
    assert (m.from_tag, m.to_tag) == ("1928301774", None)
    assert m.from_.display == "Alice" and m.to.display == "Bob"
    assert m.max_forwards == 70 and m.content_length == 4 and m.body == b"v=0\n"
    assert m.defects == []


def test_response_line() -> None:
    m = parse_message(b"SIP/2.0 486 Busy Here\r\nContent-Length: 0\r\n\r\n")
    assert isinstance(m, Response) and (m.status, m.reason) == (486, "Busy Here")


@pytest.mark.parametrize(
    ("line", "reason", "status"),
    [
        (b"INVITE sip:a@b SIP/3.0", "unsupported-version", 505),
        (b"SIP/1.0 200 OK", "unsupported-version", 505),
        (b"INVITE sip:a@b", "bad-request-line", 400),
        (b"INVITE  sip:a@b SIP/2.0", "bad-request-line", 400),
        (b"INV(ITE sip:a@b SIP/2.0", "bad-request-line", 400),
        (b"SIP/2.0 099 Too Low", "bad-status-code", 400),
        (b"SIP/2.0 700 Too High", "bad-status-code", 400),
        (b"SIP/2.0 2000 OK", "bad-status-line", 400),
        (b"INVITE sip:a@b?x=y SIP/2.0", "headers-in-request-uri", 400),
        (b"INVITE sip:a@[1::2::3] SIP/2.0", "bad-ipv6-reference", 400),
        (b"INVITE sip:a@b:99999 SIP/2.0", "bad-port", 400),
    ],
)
def test_bad_start_lines(line: bytes, reason: str, status: int) -> None:
    reject(line + b"\r\nContent-Length: 0\r\n\r\n", reason, status)


# -- header section ----------------------------------------------------------------------------


def test_compact_forms_and_case_insensitive_names() -> None:
    data = (
        b"OPTIONS sip:x@example.com SIP/2.0\r\n"
        b"v: SIP/2.0/TCP h.example.com;branch=z9hG4bK1\r\n"
        b"f: <sip:a@example.com>;tag=1\r\nt: <sip:x@example.com>\r\n"
        b"i: cid\r\nCSEQ: 1 OPTIONS\r\nmax-forwards: 1\r\nk: timer, 100rel\r\n"
        b"m: <sip:a@h.example.com>\r\ns: hello\r\nc: text/plain\r\ne: gzip\r\nl: 2\r\n\r\nhi"
    )
    m = parse_message(data)
    h = m.headers
    assert h.get("Via") == "SIP/2.0/TCP h.example.com;branch=z9hG4bK1"
    assert h.get("call-id") == "cid" and m.call_id == "cid"
    assert h.get_all("Supported") == ["timer", "100rel"]
    assert h.get("Subject") == "hello" and h.get("Content-Encoding") == "gzip"
    assert m.content_type == "text/plain" and m.body == b"hi"
    assert "CONTACT" in h and "Route" not in h
    assert m.contact[0].uri == SipURI("sip", "a", None, "h.example.com")


def test_folding_is_one_space() -> None:
    m = parse_message(with_header(b"Subject: first\r\n \t second\r\n\tthird"))
    assert m.headers.get("Subject") == "first second third"


def test_folded_eager_header() -> None:
    data = INVITE.replace(b"CSeq: 314159 INVITE", b"CSeq: 314159\r\n  INVITE")
    assert parse_message(data).cseq == CSeq(314159, "INVITE")


def test_comma_lists_respect_quotes_and_brackets() -> None:
    data = with_header(b'Contact: "Doe, J" <sip:j,k@a.example.com;x=1>, <sip:k@b.example.com>')
    data = data.replace(b"Contact: <sip:alice@pc33.atlanta.example.com>\r\n", b"")
    m = parse_message(data)
    assert m.headers.get_all("Contact") == [
        '"Doe, J" <sip:j,k@a.example.com;x=1>', "<sip:k@b.example.com>",
    ]
    assert [c.display for c in m.contact] == ["Doe, J", None]


def test_repeated_via_lines_and_lists() -> None:
    data = with_header(b"Via: SIP/2.0/TCP a.example.com:5061;branch=z9hG4bKa , "
                       b"SIP/2.0/UDP [2001:db8::1]:5062;received=192.0.2.9")
    m = parse_message(data)
    assert [(v.host, v.port) for v in m.via] == [
        ("a.example.com", 5061), ("[2001:db8::1]", 5062), ("pc33.atlanta.example.com", None),
    ]
    assert m.via[1].received == "192.0.2.9" and m.via[1].branch is None


def test_unknown_headers_round_trip() -> None:
    m = parse_message(INVITE)
    assert m.headers.get("x-unknown") == "some ;; odd, value"
    m.headers.add("X-Added", "1")  # forces the slow serialiser
    again = parse_message(m.to_bytes())
    assert again.headers.items() == m.headers.items()


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (b"Bad Name: x", "bad-header-name"),
        (b"NoColonHere", "header-without-colon"),
        (b"Via: SIP/2.0/UDP h.example.com;received=not-an-ip", "bad-via-received"),
        (b"Via: SIP/2.0/UDP h.example.com;rport=70000", "bad-via-rport"),
        (b"Via: SIP/2.0/UDP h.example.com;branch", "bad-via-branch"),
        (b"Via: SIP/2.0/UDP", "bad-via"),
        (b"Via: SIP/2.0/UDP h.example.com,", "bad-via"),
        (b"Via: SIP/3.0/UDP h.example.com", "bad-via-version"),
        (b"Max-Forwards: 256", "max-forwards-out-of-range"),
        (b"Max-Forwards: -1", "bad-max-forwards"),
        (b"CSeq: 2147483648 INVITE", "cseq-out-of-range"),
        (b"CSeq: INVITE", "bad-cseq"),
        (b"Call-ID: a b", "bad-call-id"),
        (b"From: <sip:a@b.example.com", "bad-name-addr"),
        (b"To: Bob <sip:bob@x.example.com> junk", "bad-name-addr"),
        (b"Content-Length: 4x", "bad-content-length"),
        (b"Date: Sat, 13 Nov 2010 23:29:00 PST", "bad-date"),
        (b"Contact: sip:a@b.example.com?x=y", "unbracketed-uri-headers"),
    ],
)
def test_bad_headers(line: bytes, reason: str) -> None:
    # insert before the INVITE's own copy so that the bad one is first
    reject(with_header(line), reason)


def test_boundaries_of_eager_values() -> None:
    m = parse_message(INVITE.replace(b"CSeq: 314159", b"CSeq: 2147483647"))
    assert m.cseq.seq == 2**31 - 1
    m = parse_message(INVITE.replace(b"Max-Forwards: 70", b"Max-Forwards: 255"))
    assert m.max_forwards == 255
    m = parse_message(with_header(b"Date: Sat, 13 Nov 2010 23:29:00 GMT"))
    assert m.defects == [] and m.headers.get("Date") == "Sat, 13 Nov 2010 23:29:00 GMT"
    m = parse_message(with_header(b"Max-Forwards: 9"))
    assert m.max_forwards == 9 and m.defects == ["duplicate-max-forwards"]


def test_leading_continuation_is_rejected() -> None:
    reject(b"OPTIONS sip:a@b SIP/2.0\r\n folded: x\r\n\r\n", "continuation-without-header")


def test_bare_lf_messages_are_tolerated_but_bare_cr_is_not() -> None:
    m = parse_message(INVITE.replace(b"\r\n", b"\n"))
    assert m.call_id == "a84b4c76e66710@pc33.atlanta.example.com" and m.body == b"v=0\n"
    # the canonical form is CRLF again
    assert parse_message(m.to_bytes()).to_bytes() == m.to_bytes()
    assert b"\r\n" in m.to_bytes()
    reject(with_header(b"X-A: 1\rX-B: 2"), "bare-cr")


def test_missing_headers_are_defects_and_raise_on_access() -> None:
    m = parse_message(b"OPTIONS sip:a@example.com SIP/2.0\r\nContent-Length: 0\r\n\r\n")
    assert set(m.defects) == {
        "missing-via", "missing-cseq", "missing-call-id", "missing-from", "missing-to",
        "missing-max-forwards",
    }
    assert m.via == [] and m.top_via is None and m.max_forwards is None
    for attr in ("call_id", "cseq", "from_", "to", "from_tag"):
        with pytest.raises(RemoteProtocolError):
            getattr(m, attr)


# -- body and limits ----------------------------------------------------------------------------


def test_body_rules_for_datagrams() -> None:
    no_cl = INVITE.replace(b"Content-Length: 4\r\n", b"")
    m = parse_message(no_cl + b"extra")
    assert m.body == b"v=0\nextra" and "missing-content-length" in m.defects
    m = parse_message(INVITE + b"junk")
    assert m.body == b"v=0\n" and "trailing-bytes" in m.defects
    reject(INVITE[:-1], "content-length-exceeds-datagram")
    reject(b"OPTIONS sip:a@b SIP/2.0\r\nContent-Length: 0\r\n", "no-end-of-headers")
    reject(b"\r\n\r\n", "empty-message")


def test_limits_are_named_errors() -> None:
    reject(INVITE, "message-too-large", 513, Limits(max_message_bytes=100))
    reject(INVITE, "too-many-headers", 513, Limits(max_headers=5))
    reject(with_header(b"X-Long: " + b"a" * 300), "line-too-long", 513, Limits(max_line=200))
    assert parse_message(INVITE, Limits(max_line=200)).body == b"v=0\n"


def test_parse_message_argument_types() -> None:
    assert parse_message(bytearray(INVITE)).body == b"v=0\n"
    assert parse_message(memoryview(INVITE)).body == b"v=0\n"
    with pytest.raises(LocalProtocolError):
        parse_message(INVITE.decode())  # type: ignore[arg-type]


# -- serialisation ----------------------------------------------------------------------------


def test_unmodified_message_serialises_byte_exact() -> None:
    assert parse_message(INVITE).to_bytes() == INVITE
    assert bytes(parse_message(INVITE)) == INVITE


def test_content_length_is_recomputed() -> None:
    m = parse_message(INVITE)
    m.body = b"v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\n"
    out = m.to_bytes()
    assert b"Content-Length: 31\r\n" in out and out.endswith(m.body)
    assert parse_message(out).body == m.body
    r = Response(200, headers=[("Content-Length", "99"), ("l", "7")])
    assert r.to_bytes() == b"SIP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n"


def test_header_changes_invalidate_views_and_raw_bytes() -> None:
    m = parse_message(INVITE)
    assert m.max_forwards == 70
    m.max_forwards = 69
    assert m.max_forwards == 69 and b"Max-Forwards: 69\r\n" in m.to_bytes()
    vias = m.via
    vias.insert(0, Via("UDP", "proxy.example.com", 5060, {"branch": "z9hG4bKp1"}))
    m.via = vias
    again = parse_message(m.to_bytes())
    assert [v.host for v in again.via] == ["proxy.example.com", "pc33.atlanta.example.com"]
    assert again.top_via is not None and again.top_via.branch == "z9hG4bKp1"
    to = m.to
    to.tag = "abc"
    m.to = to
    assert parse_message(m.to_bytes()).to_tag == "abc"
    m.headers.set("Call-ID", "new@id")
    assert m.call_id == "new@id"


def test_headers_multimap_api() -> None:
    h = Headers([("Route", "<sip:a;lr>"), ("X", "1"), ("route", "<sip:b;lr>, <sip:c;lr>")])
    assert h.get("ROUTE") == "<sip:a;lr>"
    assert h.get_all("Route") == ["<sip:a;lr>", "<sip:b;lr>", "<sip:c;lr>"]
    assert h.get_all_raw("Route") == ["<sip:a;lr>", "<sip:b;lr>, <sip:c;lr>"]
    h.prepend("Route", "<sip:z;lr>")
    assert h.get("Route") == "<sip:z;lr>" and h.count("route") == 3
    assert h.remove_first("Route") == "<sip:z;lr>"
    h.set("Route", "<sip:only;lr>")
    assert h.items() == [("Route", "<sip:only;lr>"), ("X", "1")]
    h.add("v", "SIP/2.0/UDP h")
    assert "Via" in h and h.get("via") == "SIP/2.0/UDP h"
    h.remove("X")
    assert "X" not in h and len(h) == 2 and h.get("X", "dflt") == "dflt"
    assert h == h.copy() and h.copy() is not h
    with pytest.raises(LocalProtocolError):
        h.add("X", "a\r\nInjected: 1")
    with pytest.raises(LocalProtocolError):
        h.add("Bad Name", "x")


def test_constructors_and_local_errors() -> None:
    req = Request("OPTIONS", "sip:bob@example.com", [("Max-Forwards", "70")])
    assert isinstance(req.uri, SipURI) and req.uri.user == "bob"
    assert req.to_bytes() == (
        b"OPTIONS sip:bob@example.com SIP/2.0\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    )
    with pytest.raises(LocalProtocolError):
        Request("BAD METHOD", "sip:a@b")
    with pytest.raises(LocalProtocolError):
        Response(700)
    resp = Response(200, "OK\r\nInjected: 1")
    with pytest.raises(LocalProtocolError):
        resp.to_bytes()
    with pytest.raises(RemoteProtocolError):
        Request("OPTIONS", "not a uri")


def test_copy_is_deep() -> None:
    m = parse_message(INVITE)
    assert isinstance(m, Request)
    c = m.copy()
    assert c == m and c.to_bytes() == INVITE
    c.headers.set("Max-Forwards", "1")
    assert isinstance(c.uri, SipURI)
    c.uri.params["lr"] = None
    assert m.max_forwards == 70 and isinstance(m.uri, SipURI) and m.uri.params == {}
    assert c != m
    r = make_response(m, 200, to_tag="x").copy()
    assert r.to_tag == "x"


def test_make_response_follows_8_2_6() -> None:
    data = with_header(b"Via: SIP/2.0/UDP proxy.example.com;branch=z9hG4bKp")
    req = parse_message(data)
    assert isinstance(req, Request)
    resp = make_response(req, 180, to_tag="t1")
    assert (resp.status, resp.reason) == (180, "Ringing")
    assert resp.headers.get_all("Via") == req.headers.get_all("Via")
    assert resp.call_id == req.call_id and resp.cseq == req.cseq
    assert resp.from_tag == "1928301774" and resp.to_tag == "t1"
    assert "Contact" not in resp.headers and "Max-Forwards" not in resp.headers
    trying = make_response(req, 100, to_tag="t1")
    assert trying.to_tag is None and trying.reason == "Trying"
    assert make_response(req, 499).reason == ""
    assert make_response(req, 603, "Go away").reason == "Go away"
    again = parse_message(resp.to_bytes())
    assert again == resp and again.to_bytes().endswith(b"Content-Length: 0\r\n\r\n")


def test_generators() -> None:
    branches = {generate_branch() for _ in range(100)}
    assert len(branches) == 100 and all(b.startswith("z9hG4bK") and len(b) > 20 for b in branches)
    assert len({generate_tag() for _ in range(100)}) == 100
    cid = generate_call_id()
    assert len(cid) >= 32
    m = parse_message(
        f"OPTIONS sip:a@b.example.com SIP/2.0\r\nVia: SIP/2.0/UDP h;branch={generate_branch()}"
        f"\r\nCall-ID: {cid}\r\nFrom: <sip:a@b.example.com>;tag={generate_tag()}\r\n\r\n".encode()
    )
    assert m.call_id == cid


def test_name_addr_serialisation_quotes_when_needed() -> None:
    uri = SipURI("sip", "a", None, "example.com")
    assert str(NameAddr(uri, "Alice Smith", {"tag": "1"})) == "Alice Smith <sip:a@example.com>;tag=1"
    na = NameAddr(uri, 'Doe, "J" \\')
    assert str(na) == '"Doe, \\"J\\" \\\\" <sip:a@example.com>'
    from sipsec.sip import parse_name_addr

    assert parse_name_addr(str(na)).display == 'Doe, "J" \\'
    with pytest.raises(LocalProtocolError):
        str(NameAddr(uri, "a\r\nb"))


def test_sans_io_imports() -> None:
    """sipsec.sip imports no asyncio, socket, grpc or redis (import rule, docs/architecture.md#layers)."""
    code = (
        "import sys, sipsec.sip\n"
        "bad = [m for m in ('asyncio', 'socket', 'grpc', 'redis') if m in sys.modules]\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_check_require_gives_420_with_unsupported_tags() -> None:
    from sipsec.sip import check_require

    req = parse_message(with_header(b"Require: 100rel, Timer\r\nProxy-Require: sec-agree"))
    assert isinstance(req, Request)
    check_require(req, ["timer", "100REL"])
    with pytest.raises(RemoteProtocolError) as info:
        check_require(req, ["timer"])
    assert (info.value.status_hint, info.value.reason, info.value.unsupported) == (
        420, "bad-extension", ["100rel"],
    )
    with pytest.raises(RemoteProtocolError) as info:
        check_require(req, ["100rel", "timer"], proxy=True)
    assert info.value.unsupported == ["sec-agree"]


def test_body_must_stay_bytes() -> None:
    m = parse_message(INVITE)
    m.body = "text"  # type: ignore[assignment]
    with pytest.raises(LocalProtocolError):
        m.to_bytes()


def test_raw_control_characters_are_rejected_but_quoted_pairs_pass() -> None:
    reject(with_header(b"X-Evil: a\x00b"), "control-character")
    reject(with_header(b"Subject: \x1b[31mred"), "control-character")
    m = parse_message(with_header(b'X-Quoted: "bell \\\x07 ok"\tand tab'))
    assert m.headers.get("X-Quoted") == '"bell \\\x07 ok"\tand tab'


def test_views_are_snapshots() -> None:
    m = parse_message(INVITE)
    m.to.params["tag"] = "ignored"
    assert m.top_via is not None
    m.top_via.params["received"] = "192.0.2.1"
    m.via[0].params["received"] = "192.0.2.1"
    m.contact[0].uri.params["lr"] = None
    assert m.to_tag is None and m.to.tag is None
    assert m.top_via is not None and m.top_via.received is None and m.via[0].received is None
    assert m.contact[0].uri == SipURI("sip", "alice", None, "pc33.atlanta.example.com")
    assert m.to_bytes() == INVITE
    top = m.top_via
    top.params["received"] = "192.0.2.1"
    m.via = [top]
    assert m.top_via is not None and m.top_via.received == "192.0.2.1"
    assert b";received=192.0.2.1\r\n" in m.to_bytes()


def test_top_via_editing_keeps_other_via_lines_raw() -> None:
    data = with_header(b"Via: SIP/2.0/TCP a.example.com;branch=z9hG4bKa, SIP/2.0/UDP b.example.com")
    m = parse_message(data)
    top = m.top_via
    assert top is not None
    top.params["received"] = "192.0.2.7"
    m.replace_top_via(top)
    assert m.headers.get_all_raw("Via") == [
        "SIP/2.0/TCP a.example.com;branch=z9hG4bKa;received=192.0.2.7, SIP/2.0/UDP b.example.com",
        "SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bK776asdhds;rport",
    ]
    popped = m.pop_top_via()
    assert popped is not None and popped.received == "192.0.2.7"
    assert [v.host for v in m.via] == ["b.example.com", "pc33.atlanta.example.com"]
    assert m.pop_top_via() is not None and m.pop_top_via() is not None
    assert m.pop_top_via() is None and m.via == [] and "Via" not in m.headers
    m.push_via(Via("UDP", "p.example.com", 5060, {"branch": "z9hG4bKp"}))
    assert parse_message(m.to_bytes()).top_via == Via("UDP", "p.example.com", 5060,
                                                      {"branch": "z9hG4bKp"})
