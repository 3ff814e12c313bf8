"""The wire view's redaction (sans-IO): bodies and identities out, the protocol's flow kept."""

from __future__ import annotations

from sipsec_gateway.trace import redact, redact_aor, render

INVITE = (
    b"INVITE sip:bob@biloxi.com;transport=tcp SIP/2.0\r\n"
    b"v: SIP/2.0/TCP 127.0.0.2:5070;branch=z9hG4bK1\r\n"
    b"Max-Forwards: 70\r\n"
    b'f: "Alice <Liddell>" <sip:alice@atlanta.com>;tag=1928\r\n'
    b"To: Bob <sip:bob@biloxi.com>\r\n"
    b"i: a84b4c76e66710@pc33.atlanta.com\r\n"
    b"CSeq: 314159 INVITE\r\n"
    b'm: <sip:u7f3@127.0.0.2:5070;transport=tcp>;+sip.instance="<urn:uuid:f81d4fae>", sips:carol@chicago.com\r\n'
    b"Subject: lunch\r\n with the team\r\n"
    b"P-Asserted-Identity: tel:+15551234567\r\n"
    b'Proxy-Authorization: Digest username="alice", realm="atlanta.com"\r\n'
    b"Record-Route: <sip:p1.atlanta.com;lr>\r\n"
    b"X-Custom: alice@atlanta.com\r\n"
    b"Content-Type: application/sdp\r\n"
    b"Content-Length: 34\r\n"
    b"\r\n"
    b"v=0\r\no=alice 2890844526 IN IP4 x\r\n"
)


def test_identities_bodies_and_call_ids_are_redacted_the_flow_is_kept() -> None:
    text = render(redact(INVITE))
    for secret in ("alice", "Alice", "Liddell", "bob@", "Bob", "carol", "a84b4c76", "lunch", "team",
                   "15551234567", "f81d4fae", "u7f3", "v=0", "o=alice"):
        assert secret not in text, secret
    lines = text.split("\r\n")
    assert lines[0] == "INVITE sip:[redacted]@biloxi.com;transport=tcp SIP/2.0"
    assert "v: SIP/2.0/TCP 127.0.0.2:5070;branch=z9hG4bK1" in lines
    assert 'f: "[redacted]" <sip:[redacted]@atlanta.com>;tag=1928' in lines
    assert "i: [redacted]" in lines and "CSeq: 314159 INVITE" in lines
    assert ("m: <sip:[redacted]@127.0.0.2:5070;transport=tcp>;+sip.instance=[redacted], "
            "sips:[redacted]@chicago.com") in lines
    assert "Subject: [redacted]" in lines  # the folded continuation went with it (RFC 3261 §7.3.1)
    assert "P-Asserted-Identity: tel:[redacted]" in lines
    assert "Proxy-Authorization: [redacted]" in lines and "X-Custom: [redacted]" in lines
    assert "Record-Route: <sip:p1.atlanta.com;lr>" in lines
    assert lines[-1] == "[body redacted: 34 bytes]"


def test_responses_binary_bodies_and_odd_input() -> None:
    ok = render(redact(b"SIP/2.0 200 OK\r\nTo: <sip:bob@biloxi.com>;tag=9\r\nContent-Length: 0\r\n\r\n"))
    assert ok.startswith("SIP/2.0 200 OK\r\nTo: <sip:[redacted]@biloxi.com>;tag=9\r\n")
    cms = b"SIP/2.0 200 OK\r\nContent-Type: application/pkcs7-mime\r\n\r\n\x30\x82\x01\x00\xff"
    assert render(redact(cms)).endswith("[5 bytes of binary CMS (DER)]")
    assert redact(b"garbage") == b"[redacted]"
    assert redact(b"") == b"[redacted]"
    assert redact_aor("sip:alice@atlanta.com") == "sip:[redacted]@atlanta.com"
    assert redact_aor(None) is None
