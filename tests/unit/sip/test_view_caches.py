"""The caches behind the typed message views: per-header invalidation, copies, memoised parses."""

from __future__ import annotations

import pytest
from sipsec.sip import RemoteProtocolError, parse_message
from sipsec.sip.headers import _memo, parse_via_list, via_list_view
from sipsec.sip.message import Request

RAW = (
    b"INVITE sip:bob@biloxi.com SIP/2.0\r\n"
    b"Max-Forwards: 70\r\n"
    b"Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKa1;rport, SIP/2.0/TCP h2.example.com;branch=z9hG4bKa2\r\n"
    b"Via: SIP/2.0/UDP h3.example.com:5070;branch=z9hG4bKa3\r\n"
    b'From: "Alice" <sip:alice@atlanta.com>;tag=f1\r\n'
    b"To: <sip:bob@biloxi.com>\r\n"
    b"Call-ID: c1@atlanta.com\r\n"
    b"CSeq: 1 INVITE\r\n"
    b"Route: <sip:p1.example.com;lr>, <sip:p2.example.com;lr>\r\n"
    b"Content-Length: 0\r\n\r\n"
)


def _parse() -> Request:
    msg = parse_message(RAW)
    assert isinstance(msg, Request)
    return msg


def test_every_mutation_is_logged_with_its_key() -> None:
    h = _parse().headers
    h.add("X-A", "1")
    h.set("Max-Forwards", "69")
    h.prepend("v", "SIP/2.0/UDP x;branch=z9hG4bKx")
    h.remove("Route")
    h.remove_first("Via")
    assert h._log == ["x-a", "max-forwards", "via", "route", "via"]
    assert h.mod_count == len(h._log)


def test_a_change_drops_only_the_views_of_its_header() -> None:
    msg = _parse()
    from_view, vias = msg.from_view(), msg.via_view()
    msg.max_forwards = 69
    assert msg.from_view() is from_view and msg.via_view() is vias  # untouched: kept
    assert msg.max_forwards == 69
    msg.push_via(parse_via_list("SIP/2.0/UDP me.example.com;branch=z9hG4bKme")[0])
    assert [v.host for v in msg.via] == ["me.example.com", "10.0.0.1", "h2.example.com", "h3.example.com"]
    assert msg.top_via is not None and msg.top_via.host == "me.example.com"
    msg.headers.set("To", "<sip:carol@biloxi.com>;tag=t9")
    assert str(msg.to.uri) == "sip:carol@biloxi.com" and msg.to_tag == "t9"
    assert msg.from_view() is from_view


def test_an_unlogged_change_drops_every_view() -> None:
    msg = _parse()
    from_view = msg.from_view()
    msg.headers._items[:] = [e for e in msg.headers._items if e[0] != "from"]
    msg.headers._items.append(("from", "From", "<sip:eve@evil.com>;tag=e"))
    msg.headers.mod_count += 1  # a mutation outside the API: the log no longer says what changed
    assert msg.from_view() is not from_view
    assert msg.from_tag == "e" and str(msg.from_.uri) == "sip:eve@evil.com"


def test_replacing_the_headers_object_drops_every_view() -> None:
    msg = _parse()
    _ = msg.cseq
    other = _parse().headers
    other.set("CSeq", "7 INVITE")
    msg.headers = other
    assert msg.cseq.seq == 7


def test_a_copy_shares_views_but_not_changes() -> None:
    msg = _parse()
    _ = msg.to, msg.via, msg.route
    dup = msg.copy()
    assert dup.to_view() is msg.to_view()  # shared, never handed out
    dup.headers.set("To", "<sip:carol@biloxi.com>;tag=t2")
    dup.headers.remove("Route")
    dup.pop_top_via()
    assert dup.to_tag == "t2" and dup.route == [] and len(dup.via) == 2
    assert msg.to_tag is None and len(msg.route) == 2 and len(msg.via) == 3
    assert msg.to_bytes() == RAW


def test_views_hand_out_copies() -> None:
    msg = _parse()
    msg.via[0].params["branch"] = "changed"
    msg.from_.params["tag"] = "changed"
    msg.route[0].uri.params["x"] = "y"  # type: ignore[union-attr]
    assert msg.via[0].branch == "z9hG4bKa1" and msg.from_tag == "f1" and msg.from_.tag == "f1"
    assert "x" not in msg.route[0].uri.params  # type: ignore[union-attr]
    again = _parse()  # the memoised parses are shared between messages: still clean
    assert again.via[0].branch == "z9hG4bKa1" and again.from_.tag == "f1"


def test_memo_keeps_successes_only_and_is_bounded() -> None:
    calls: list[str] = []

    def parse(text: str) -> list[str]:
        calls.append(text)
        if text == "bad":
            raise RemoteProtocolError("bad", 400)
        return [text]

    memo = _memo(parse, size=2)
    assert memo("a") is memo("a")
    for _ in range(2):
        with pytest.raises(RemoteProtocolError):
            memo("bad")
    memo("b")
    memo("c")  # evicts "a" (first in)
    assert list(memo.cache) == ["b", "c"]  # type: ignore[attr-defined]
    memo("a")
    assert calls == ["a", "bad", "bad", "b", "c", "a"]


def test_memoised_via_parse_equals_the_plain_one() -> None:
    text = "SIP/2.0/UDP [2001:db8::1]:5060;branch=z9hG4bKq;received=192.0.2.1;rport=7, SIP/2.0/TLS h;branch=z9hG4bKr"
    assert via_list_view(text) == parse_via_list(text)
    assert via_list_view(text) is via_list_view(text)
    with pytest.raises(RemoteProtocolError):
        via_list_view("SIP/2.0/UDP [::zz];branch=z9hG4bK1")
