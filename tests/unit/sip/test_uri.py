"""SIP/SIPS/tel/absolute URIs (RFC 3261 §19.1, §25.1; RFC 3966; RFC 5118)."""

from __future__ import annotations

import pytest
from sipsec.sip import (
    AbsoluteURI,
    LocalProtocolError,
    RemoteProtocolError,
    SipURI,
    TelURI,
    parse_uri,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("sip:alice@atlanta.example.com", SipURI("sip", "alice", None, "atlanta.example.com")),
        ("SIPS:Alice@Atlanta.Example.COM:5061",
         SipURI("sips", "Alice", None, "Atlanta.Example.COM", 5061)),
        ("sip:alice:secretword@atlanta.example.com;transport=tcp",
         SipURI("sip", "alice", "secretword", "atlanta.example.com", None, {"transport": "tcp"})),
        ("sip:+1-212-555-1212:1234@gateway.example.com;user=phone",
         SipURI("sip", "+1-212-555-1212", "1234", "gateway.example.com", None, {"user": "phone"})),
        ("sip:192.0.2.4", SipURI("sip", None, None, "192.0.2.4")),
        ("sip:atlanta.example.com;method=REGISTER?to=alice%40atlanta.example.com",
         SipURI("sip", None, None, "atlanta.example.com", None, {"method": "REGISTER"},
                {"to": "alice%40atlanta.example.com"})),
        ("sip:alice;day=tuesday@atlanta.example.com",
         SipURI("sip", "alice;day=tuesday", None, "atlanta.example.com")),
        ("sip:[2001:db8::10]:5070;LR", SipURI("sip", None, None, "[2001:db8::10]", 5070, {"lr": None})),
        ("sip:host.example.com.;maddr=[2001:db8::1]",
         SipURI("sip", None, None, "host.example.com.", None, {"maddr": "[2001:db8::1]"})),
    ],
)
def test_sip_uris(text: str, expected: SipURI) -> None:
    uri = parse_uri(text)
    assert uri == expected
    assert parse_uri(str(uri)) == uri


def test_uri_properties() -> None:
    uri = parse_uri("SIP:Bob@BILOXI.example.com:5060;transport=udp;lr")
    assert isinstance(uri, SipURI)
    assert uri.aor == "sip:Bob@biloxi.example.com"
    assert uri.transport == "udp" and uri.lr
    assert str(uri) == "sip:Bob@BILOXI.example.com:5060;transport=udp;lr"
    assert SipURI(host="example.com").aor == "sip:example.com"


def test_tel_and_absolute_uris() -> None:
    tel = parse_uri("tel:+1-201-555-0123;ext=1234")
    assert tel == TelURI("+1-201-555-0123", {"ext": "1234"})
    assert str(tel) == "tel:+1-201-555-0123;ext=1234" and tel.aor == "tel:+1-201-555-0123"
    local = parse_uri("tel:7042;phone-context=example.com")
    assert isinstance(local, TelURI) and local.params == {"phone-context": "example.com"}
    other = parse_uri("urn:service:sos")
    assert other == AbsoluteURI("urn", "service:sos") and str(other) == "urn:service:sos"
    assert parse_uri("mailto:alice@example.com").aor == "mailto:alice@example.com"


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("alice@example.com", "bad-uri"),
        ("sip:", "bad-sip-uri"),
        ("sip:alice@", "bad-sip-uri"),
        ("sip:a b@example.com", "bad-sip-uri"),
        ("sip:alice@example.com:65536", "bad-port"),
        ("sip:alice@[2001:db8:::1]", "bad-ipv6-reference"),
        ("sip:alice@2001:db8::1", "bad-sip-uri"),
        ("sip:alice@example.com;a=b=c", "bad-uri-param"),
        ("sip:alice@example.com;", "bad-uri-param"),
        ("sip:alice@example.com?nohvalue", "bad-uri-header"),
        ("sip:al%zzice@example.com", "bad-sip-uri"),
        ("sip:alice@-bad-.example.com", "bad-sip-uri"),
        ("tel:", "bad-tel-uri"),
        ("tel:+1 555", "bad-tel-uri"),
        ("<sip:a@b>", "bad-uri"),
        ("1http://x", "bad-uri"),
        ("http:", "bad-uri"),
    ],
)
def test_bad_uris(text: str, reason: str) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        parse_uri(text)
    assert (info.value.status_hint, info.value.reason) == (400, reason)


def test_parse_uri_wants_str() -> None:
    with pytest.raises(LocalProtocolError):
        parse_uri(b"sip:a@b")  # type: ignore[arg-type]


@pytest.mark.timeout(30)
def test_long_uri_without_at_is_refused() -> None:
    """The userinfo alternative must not backtrack on long inputs: a backtracking regex
    trips this test's timeout; the linear time itself is ``bench/sip_redos.py``'s check."""
    text = "sip:" + "a;" * 4000 + "b"
    with pytest.raises(RemoteProtocolError):
        parse_uri(text + "\x00")
