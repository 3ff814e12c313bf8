"""RFC 4475 "SIP Torture Test Messages": every case of §3 with the verdict the RFC gives."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import pytest
from sipsec.sip import (
    AbsoluteURI,
    RemoteProtocolError,
    Request,
    Response,
    SipURI,
    StreamFramer,
    parse_datagram,
    parse_message,
)

VECTORS = Path(__file__).resolve().parents[2] / "vectors" / "rfc4475"


def load(name: str) -> bytes:
    return (VECTORS / f"{name}.dat").read_bytes()


def test_vectors_are_byte_exact() -> None:
    """The copied archive matches the SHA-256 sums shipped with it."""
    lines = (VECTORS / "SHA256SUMS.txt").read_text().splitlines()
    assert len(lines) == 50
    for line in lines:
        digest, name = line.split()
        assert hashlib.sha256((VECTORS / name).read_bytes()).hexdigest() == digest, name


# ----------------------------------------------------------------------------------------------
# §3.1.1 valid messages: must parse, with the right values


def check_wsinv(m: Request | Response) -> None:  # §3.1.1.1 short tortuous INVITE
    assert isinstance(m, Request) and m.method == "INVITE"
    assert isinstance(m.uri, SipURI)
    assert (m.uri.user, m.uri.host, m.uri.params) == (
        "vivekg", "chair-dnrc.example.com", {"unknownparam": None}
    )
    assert m.to.uri == SipURI("sip", "vivekg", None, "chair-dnrc.example.com")
    assert m.to.tag == m.to_tag == "1918181833n"
    assert m.from_.display == 'J Rosenberg \\"'
    assert m.from_.tag == m.from_tag == "98asjd8"
    assert m.max_forwards == 68
    assert m.call_id == "wsinv.ndaksdj@192.0.2.1"
    assert (m.cseq.seq, m.cseq.method) == (9, "INVITE")
    assert [(v.transport, v.host, v.branch) for v in m.via] == [
        ("UDP", "192.0.2.2", "390skdjuw"),
        ("TCP", "spindle.example.com", "z9hG4bK9ikj8"),
        ("UDP", "192.168.255.111", "z9hG4bK30239"),
    ]
    assert m.top_via is not None and m.top_via.branch == "390skdjuw"
    assert m.headers.get("Subject") == ""
    assert m.headers.get("newfangledheader") == "newfangled value continued newfangled value"
    assert m.headers.get("UnknownHeaderWithUnusualValue") == ";;,,;;,;"
    (contact,) = m.contact
    assert contact.display == 'Quoted string ""'
    assert contact.uri == SipURI("sip", "jdrosen", None, "example.com")
    assert contact.params == {"newparam": "newvalue", "secondparam": None, "q": "0.33"}
    (route,) = m.route
    assert isinstance(route.uri, SipURI)
    assert route.uri.params == {"lr": None, "unknownwith": "value", "unknown-no-value": None}
    assert m.content_type == "application/sdp"
    assert len(m.body) == 150 and m.body.startswith(b"v=0\r\n")


def check_intmeth(m: Request | Response) -> None:  # §3.1.1.2 wide range of valid characters
    assert isinstance(m, Request)
    assert m.method == "!interesting-Method0123456789_*+`.%indeed'~"
    assert m.cseq.method == m.method
    assert isinstance(m.uri, SipURI)
    assert m.uri.user == "1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*"
    assert m.uri.password == "&it+has=1,weird!*pas$wo~d_too.(doesn't-it)"
    assert m.uri.host == "example.com"
    assert m.to.display == "BEL:\x07 NUL:\x00 DEL:\x7f"
    assert m.from_.display == "token1~` token2'+_ token3*%!.-"
    assert m.from_.params["fromparam''~+*_!.-%"] == '"\u0440\u0430\u0431\u043e\u0442\u0430\u044e\u0449\u0438\u0439"'
    assert m.from_tag == "_token~1'+`*%!-."
    assert m.call_id == "intmeth.word%ZK-!.*_+'@word`~)(><:\\/\"][?}{"
    assert m.top_via is not None and m.top_via.branch == "z9hG4bK-.!%66*_+`'~"
    value = m.headers.get("extensionHeader-!.%*+_`'~")
    assert value is not None and value.encode("utf-8", "surrogateescape").startswith(b"\xef\xbb\xbf")
    assert m.body == b""


def check_esc01(m: Request | Response) -> None:  # §3.1.1.3 escaped characters in URIs
    assert isinstance(m, Request) and isinstance(m.uri, SipURI)
    assert (m.uri.user, m.uri.host) == ("sips%3Auser%40example.com", "example.net")
    assert isinstance(m.to.uri, SipURI) and m.to.uri.user == "%75se%72"
    assert isinstance(m.from_.uri, SipURI) and m.from_.uri.user == "I%20have%20spaces"
    assert m.call_id == "esc01.239409asdfakjkn23onasd0-3234"  # compact "i"
    assert m.content_type == "application/sdp"  # compact "C", upper case
    (contact,) = m.contact
    assert isinstance(contact.uri, SipURI) and contact.uri.user == "cal%6Cer"
    assert contact.uri.params == {"%6c%72": None, "n%61me": "v%61lue%25%34%31"}


def check_escnull(m: Request | Response) -> None:  # §3.1.1.4 escaped NULLs
    assert isinstance(m, Request) and m.method == "REGISTER"
    assert isinstance(m.to.uri, SipURI) and m.to.uri.user == "null-%00-null"
    assert [c.uri.user for c in m.contact if isinstance(c.uri, SipURI)] == ["%00", "%00%00"]
    assert m.content_length == 0 and m.body == b""


def check_esc02(m: Request | Response) -> None:  # §3.1.1.5 escapes that must not be unescaped
    assert isinstance(m, Request) and m.method == "RE%47IST%45R"
    assert m.cseq.method == "RE%47IST%45R"
    assert m.to.display == "%Z%45" and m.from_.display == "%Z%45"
    assert m.top_via is not None and m.top_via.branch == "z9hG4bK209%fzsnel234"
    # "C%6Fntact" is an unknown header, not a Contact
    assert m.headers.get("C%6Fntact") == "<sip:alias2@host2.example.com>"
    assert [c.uri.host for c in m.contact if isinstance(c.uri, SipURI)] == [
        "host1.example.com", "host3.example.com",
    ]


def check_lwsdisp(m: Request | Response) -> None:  # §3.1.1.6 no LWS between display and <
    assert m.from_.display == "caller" and m.from_tag == "323"
    assert isinstance(m.from_.uri, SipURI) and m.from_.uri.user == "caller"


def check_longreq(m: Request | Response) -> None:  # §3.1.1.7 long values
    assert isinstance(m, Request)
    assert m.to.display is not None and len(m.to.display) > 100
    assert len(m.via) == 34
    assert m.via[0].host == "sip33.example.com" and m.via[-1].host == "host.example.com"
    assert m.via[-1].received == "192.0.2.5"
    assert len(m.call_id) > 100
    assert m.content_length == 150 == len(m.body)


def check_dblreq(m: Request | Response) -> None:  # §3.1.1.8 two requests in one datagram
    assert isinstance(m, Request) and m.method == "REGISTER"
    assert m.body == b""
    assert "trailing-bytes" in m.defects


def check_semiuri(m: Request | Response) -> None:  # §3.1.1.9 ";" in the user part
    assert isinstance(m, Request) and isinstance(m.uri, SipURI)
    assert (m.uri.user, m.uri.host, m.uri.params) == ("user;par=u%40example.net", "example.com", {})
    assert m.headers.get_all("Accept") == [
        "application/sdp", "application/pkcs7-mime", "multipart/mixed",
        "multipart/signed", "message/sip", "message/sipfrag",
    ]


def check_transports(m: Request | Response) -> None:  # §3.1.1.10 varied transports
    assert [v.transport for v in m.via] == ["UDP", "SCTP", "TLS", "UNKNOWN", "TCP"]


def check_mpart01(m: Request | Response) -> None:  # §3.1.1.11 multipart body with binary part
    assert isinstance(m, Request) and m.method == "MESSAGE"
    assert m.content_type is not None and m.content_type.startswith("multipart/mixed")
    assert len(m.body) == m.content_length
    assert any(b >= 0x80 for b in m.body)
    assert m.top_via is not None and m.top_via.rport is True


def check_unreason(m: Request | Response) -> None:  # §3.1.1.12 UTF-8 reason phrase
    assert isinstance(m, Response) and m.status == 200
    assert m.reason.startswith("= 2**3 * 5**2 ")
    assert "\u043f\u0440\u043e\u0441\u0442\u043e\u0435" in m.reason  # "простое"


def check_noreason(m: Request | Response) -> None:  # §3.1.1.13 empty reason phrase
    assert isinstance(m, Response) and (m.status, m.reason) == (100, "")


VALID: dict[str, Callable[[Request | Response], None]] = {
    "wsinv": check_wsinv,
    "intmeth": check_intmeth,
    "esc01": check_esc01,
    "escnull": check_escnull,
    "esc02": check_esc02,
    "lwsdisp": check_lwsdisp,
    "longreq": check_longreq,
    "dblreq": check_dblreq,
    "semiuri": check_semiuri,
    "transports": check_transports,
    "mpart01": check_mpart01,
    "unreason": check_unreason,
    "noreason": check_noreason,
}


@pytest.mark.parametrize("name", sorted(VALID))
def test_valid_messages_parse(name: str) -> None:
    data = load(name)
    msg = parse_message(data)
    VALID[name](msg)
    # and survive a serialise/parse round trip with the same meaning
    again = parse_message(msg.to_bytes())
    assert again == msg
    if name != "dblreq":  # the trailing bytes are gone once re-serialised
        VALID[name](again)


def test_unmodified_message_serialises_to_its_own_bytes() -> None:
    data = load("mpart01")
    assert parse_message(data).to_bytes() == data


def test_dblreq_second_message_is_not_lost_on_a_stream() -> None:
    framer = StreamFramer()
    msgs = framer.feed(load("dblreq"))
    assert [m.method for m in msgs if isinstance(m, Request)] == ["REGISTER", "INVITE"]
    assert len(msgs[1].body) == 150
    # the INVITE body is 155 octets, 5 more than its Content-Length: those are garbage
    with pytest.raises(RemoteProtocolError) as info:
        framer.feed(b"")
    assert info.value.reason == "bad-request-line"


# ----------------------------------------------------------------------------------------------
# §3.1.2 invalid messages: must be rejected (400 unless the RFC says otherwise), for a reason

INVALID: dict[str, tuple[int, str]] = {
    "badinv01": (400, "bad-via"),  # §3.1.2.1 extraneous header separators
    "clerr": (400, "content-length-exceeds-datagram"),  # §3.1.2.2 Content-Length too large
    "ncl": (400, "bad-content-length"),  # §3.1.2.3 negative Content-Length
    "scalar02": (400, "cseq-out-of-range"),  # §3.1.2.4 request scalar fields overflow
    "scalarlg": (400, "cseq-out-of-range"),  # §3.1.2.5 response scalar fields overflow
    "quotbal": (400, "bad-name-addr"),  # §3.1.2.6 unterminated quoted string
    "ltgtruri": (400, "bad-uri"),  # §3.1.2.7 <> around Request-URI
    "lwsruri": (400, "bad-request-line"),  # §3.1.2.8 LWS inside Request-URI
    "lwsstart": (400, "bad-request-line"),  # §3.1.2.9 multiple SP in request line
    "trws": (400, "bad-request-line"),  # §3.1.2.10 trailing SP in request line
    "escruri": (400, "headers-in-request-uri"),  # §3.1.2.11 escaped headers in R-URI
    "baddate": (400, "bad-date"),  # §3.1.2.12 non-GMT date
    "regbadct": (400, "unbracketed-uri-headers"),  # §3.1.2.13 unbracketed URI with "?"
    "badaspec": (400, "bad-name-addr"),  # §3.1.2.14 LWS inside <>
    "baddn": (400, "bad-name-addr"),  # §3.1.2.15 unquoted display name with ","
    "badvers": (505, "unsupported-version"),  # §3.1.2.16 SIP/7.0
    "mismatch01": (400, "cseq-method-mismatch"),  # §3.1.2.17 method vs CSeq
    "mismatch02": (400, "cseq-method-mismatch"),  # §3.1.2.18 unknown method vs CSeq
    "bigcode": (400, "bad-status-line"),  # §3.1.2.19 status code 4294967301
}


@pytest.mark.parametrize("name", sorted(INVALID))
def test_invalid_messages_are_rejected(name: str) -> None:
    status, reason = INVALID[name]
    with pytest.raises(RemoteProtocolError) as info:
        parse_datagram(load(name))
    assert (info.value.status_hint, info.value.reason) == (status, reason)


def test_archive_only_test_dat_is_rejected() -> None:
    """test.dat (in the RFC archive, not a §3 case) has no SIP-Version: not a request line."""
    with pytest.raises(RemoteProtocolError) as info:
        parse_message(load("test"))
    assert info.value.reason == "bad-request-line"


# ----------------------------------------------------------------------------------------------
# §3.2 transaction layer, §3.3 application layer, §3.4 RFC 2543: parse, values checked


def check_badbranch(m: Request | Response) -> None:  # §3.2.1 branch is only the cookie
    assert m.top_via is not None and m.top_via.branch == "z9hG4bK"


def check_insuf(m: Request | Response) -> None:  # §3.3.1 missing required headers
    assert {"missing-to", "missing-from", "missing-call-id", "missing-max-forwards"} <= set(
        m.defects
    )
    with pytest.raises(RemoteProtocolError) as info:
        _ = m.to
    assert info.value.status_hint == 400
    assert m.cseq.seq == 193942


def check_unkscm(m: Request | Response) -> None:  # §3.3.2 unknown Request-URI scheme
    assert isinstance(m, Request) and m.uri == AbsoluteURI(
        "nobodyKnowsThisScheme", "totallyopaquecontent"
    )


def check_novelsc(m: Request | Response) -> None:  # §3.3.3 novel scheme
    assert isinstance(m, Request) and m.uri == AbsoluteURI("soap.beep", "//192.0.2.103:3002")


def check_unksm2(m: Request | Response) -> None:  # §3.3.4 unknown schemes in headers
    assert m.to.uri == AbsoluteURI("isbn", "2983792873")
    assert m.from_.uri == AbsoluteURI("http", "//www.example.com")
    assert [c.uri for c in m.contact] == [AbsoluteURI("name", "John_Smith")]


def check_bext01(m: Request | Response) -> None:  # §3.3.5 unknown Require/Proxy-Require
    assert m.headers.get_all("Require") == ["nothingSupportsThis", "nothingSupportsThisEither"]
    assert m.headers.get_all("Proxy-Require") == [
        "noProxiesSupportThis", "norDoAnyProxiesSupportThis",
    ]


def check_invut(m: Request | Response) -> None:  # §3.3.6 unknown content type
    assert m.content_type == "application/unknownformat" and len(m.body) == 40


def check_regaut01(m: Request | Response) -> None:  # §3.3.7 unknown auth scheme
    assert m.headers.get("Authorization") == "NoOneKnowsThisScheme opaque-data=here"


def check_multi01(m: Request | Response) -> None:  # §3.3.8 several singleton headers
    assert {"duplicate-cseq", "duplicate-call-id", "duplicate-to", "duplicate-from"} <= set(
        m.defects
    )
    assert m.headers.get_all("CSeq") == ["5 INVITE", "59 INVITE"]


def check_mcl01(m: Request | Response) -> None:  # §3.3.9 several Content-Length values
    assert "conflicting-content-length" in m.defects
    with pytest.raises(RemoteProtocolError) as info:
        StreamFramer().feed(load("mcl01"))
    assert info.value.reason == "conflicting-content-length"


def check_bcast(m: Request | Response) -> None:  # §3.3.10 broadcast address in Via
    assert isinstance(m, Response) and m.via[1].host == "255.255.255.255"


def check_zeromf(m: Request | Response) -> None:  # §3.3.11 Max-Forwards of zero
    assert m.max_forwards == 0


def check_cparam01(m: Request | Response) -> None:  # §3.3.12 params of an addr-spec Contact
    (c,) = m.contact
    assert isinstance(c.uri, SipURI) and c.uri.params == {} and c.params == {"unknownparam": None}


def check_cparam02(m: Request | Response) -> None:  # §3.3.13 params inside <>
    (c,) = m.contact
    assert isinstance(c.uri, SipURI) and c.uri.params == {"unknownparam": None} and c.params == {}


def check_regescrt(m: Request | Response) -> None:  # §3.3.14 escaped headers in Contact
    (c,) = m.contact
    assert isinstance(c.uri, SipURI) and c.uri.headers == {"Route": "%3Csip:sip.example.com%3E"}


def check_sdp01(m: Request | Response) -> None:  # §3.3.15 body type not in Accept
    assert m.headers.get("Accept") == "text/nobodyKnowsThis"
    assert m.content_type == "application/sdp" and len(m.body) == 150


def check_inv2543(m: Request | Response) -> None:  # §3.4.1 RFC 2543 INVITE
    assert isinstance(m, Request) and m.method == "INVITE"
    assert m.top_via is not None and m.top_via.branch is None
    # addr-spec form: ";user=phone" is a header parameter of To (RFC 3261 §20), not a URI one
    assert isinstance(m.to.uri, SipURI) and m.to.params == {"user": "phone"}
    assert isinstance(m.from_.uri, SipURI) and m.from_.uri.params == {"user": "phone"}
    assert m.max_forwards is None and "missing-max-forwards" in m.defects
    assert m.body.startswith(b"v=0")


SEMANTIC: dict[str, Callable[[Request | Response], None]] = {
    "badbranch": check_badbranch,
    "insuf": check_insuf,
    "unkscm": check_unkscm,
    "novelsc": check_novelsc,
    "unksm2": check_unksm2,
    "bext01": check_bext01,
    "invut": check_invut,
    "regaut01": check_regaut01,
    "multi01": check_multi01,
    "mcl01": check_mcl01,
    "bcast": check_bcast,
    "zeromf": check_zeromf,
    "cparam01": check_cparam01,
    "cparam02": check_cparam02,
    "regescrt": check_regescrt,
    "sdp01": check_sdp01,
    "inv2543": check_inv2543,
}


@pytest.mark.parametrize("name", sorted(SEMANTIC))
def test_semantic_cases_parse_with_interesting_values(name: str) -> None:
    SEMANTIC[name](parse_message(load(name)))


@pytest.mark.parametrize(
    ("name", "reason"),
    [("insuf", "missing-call-id"), ("multi01", "duplicate-cseq"),
     ("mcl01", "conflicting-content-length")],
)
def test_validate_rejects_what_the_application_must_reject(name: str, reason: str) -> None:
    """§3.3.1/§3.3.8/§3.3.9: parsed, but an element must answer 400."""
    msg = parse_message(load(name))
    with pytest.raises(RemoteProtocolError) as info:
        msg.validate()
    assert (info.value.status_hint, info.value.reason) == (400, reason)


@pytest.mark.parametrize("name", ["inv2543", "dblreq", "zeromf", "unksm2", *sorted(VALID)])
def test_validate_accepts_the_rest(name: str) -> None:
    parse_message(load(name)).validate()


def test_every_archive_file_has_a_verdict() -> None:
    names = {p.stem for p in VECTORS.glob("*.dat")}
    assert names == set(VALID) | set(INVALID) | set(SEMANTIC) | {"test"}
    assert len(set(VALID) | set(INVALID) | set(SEMANTIC)) == 49
