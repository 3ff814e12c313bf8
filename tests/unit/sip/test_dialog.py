"""RFC 3261 §12 dialogs: creation on both sides, route sets, in-dialog requests, CSeq order."""

from __future__ import annotations

import pytest
from sipsec.sip.dialog import (
    Dialog,
    DialogId,
    DialogState,
    DialogTable,
    make_dialog_response,
    next_hop,
)
from sipsec.sip.errors import LocalProtocolError, RemoteProtocolError
from sipsec.sip.message import Request, Response, make_response
from sipsec.sip.parser import parse_message

VIA = "SIP/2.0/UDP client.atlanta.example.com:5060;branch=z9hG4bKnew"

# RFC 3665 §3.2 (Session Establishment Through Two Proxies), message F1 as it reaches Bob
# after two proxies recorded their routes.
INVITE_AT_BOB = (
    "INVITE sip:bob@client.biloxi.example.com SIP/2.0\r\n"
    "Via: SIP/2.0/UDP ss2.biloxi.example.com:5060;branch=z9hG4bK721e4.1\r\n"
    "Via: SIP/2.0/UDP ss1.atlanta.example.com:5060;branch=z9hG4bK2d4790.1\r\n"
    "Via: SIP/2.0/UDP client.atlanta.example.com:5060;branch=z9hG4bK74bf9\r\n"
    "Max-Forwards: 68\r\n"
    "Record-Route: <sip:ss2.biloxi.example.com;lr>\r\n"
    "Record-Route: <sip:ss1.atlanta.example.com;lr>\r\n"
    "From: Alice <sip:alice@atlanta.example.com>;tag=9fxced76sl\r\n"
    "To: Bob <sip:bob@biloxi.example.com>\r\n"
    "Call-ID: 3848276298220188511@atlanta.example.com\r\n"
    "CSeq: 1 INVITE\r\n"
    "Contact: <sip:alice@client.atlanta.example.com;transport=udp>\r\n"
    "Content-Length: 0\r\n\r\n"
)


def invite_at_alice() -> Request:
    """The INVITE as Alice sent it (F1 before the proxies)."""
    msg = parse_message(
        b"INVITE sip:bob@biloxi.example.com SIP/2.0\r\n"
        b"Via: SIP/2.0/UDP client.atlanta.example.com:5060;branch=z9hG4bK74bf9\r\n"
        b"Max-Forwards: 70\r\n"
        b"Route: <sip:ss1.atlanta.example.com;lr>\r\n"
        b"From: Alice <sip:alice@atlanta.example.com>;tag=9fxced76sl\r\n"
        b"To: Bob <sip:bob@biloxi.example.com>\r\n"
        b"Call-ID: 3848276298220188511@atlanta.example.com\r\n"
        b"CSeq: 1 INVITE\r\n"
        b"Contact: <sip:alice@client.atlanta.example.com;transport=udp>\r\n"
        b"Content-Length: 0\r\n\r\n"
    )
    assert isinstance(msg, Request)
    return msg


def bob_request() -> Request:
    msg = parse_message(INVITE_AT_BOB.encode())
    assert isinstance(msg, Request)
    return msg


def bob_response(status: int, *, record_route: bool = True) -> Response:
    resp = make_response(bob_request(), status, to_tag="314159")
    if not record_route:
        resp.headers.remove("Record-Route")
    resp.headers.add("Record-Route", "<sip:ss2.biloxi.example.com;lr>")
    resp.headers.add("Record-Route", "<sip:ss1.atlanta.example.com;lr>")
    resp.headers.add("Contact", "<sip:bob@client.biloxi.example.com>")
    return resp


def test_uac_dialog_from_2xx_reverses_record_route() -> None:
    d = Dialog.from_uac_response(invite_at_alice(), bob_response(200))
    assert d.state is DialogState.CONFIRMED
    assert d.id == DialogId("3848276298220188511@atlanta.example.com", "9fxced76sl", "314159")
    assert [str(r.uri) for r in d.route_set] == [
        "sip:ss1.atlanta.example.com;lr",
        "sip:ss2.biloxi.example.com;lr",
    ]
    assert str(d.remote_target) == "sip:bob@client.biloxi.example.com"
    assert d.local_seq == 1 and d.remote_seq is None
    assert d.local.tag == "9fxced76sl" and d.remote.tag == "314159"


def test_uas_dialog_keeps_record_route_order() -> None:
    req = bob_request()
    ok = make_response(req, 200, to_tag="314159")
    ok.headers.add("Contact", "<sip:bob@client.biloxi.example.com>")
    d = Dialog.from_uas_response(req, ok)
    assert d.id == DialogId(req.call_id, "314159", "9fxced76sl")
    assert [str(r.uri) for r in d.route_set] == [
        "sip:ss2.biloxi.example.com;lr",
        "sip:ss1.atlanta.example.com;lr",
    ]
    assert str(d.remote_target) == "sip:alice@client.atlanta.example.com;transport=udp"
    assert d.remote_seq == 1 and d.local_seq is None
    assert str(d.local_contact.uri) == "sip:bob@client.biloxi.example.com"  # type: ignore[union-attr]
    # Bob's BYE: From = Bob with his tag, To = Alice with hers, R-URI = Alice's Contact
    bye = d.create_request("BYE", "SIP/2.0/UDP client.biloxi.example.com;branch=z9hG4bKb1")
    assert bye.from_.tag == "314159" and bye.to.tag == "9fxced76sl"
    assert str(bye.uri) == "sip:alice@client.atlanta.example.com;transport=udp"
    assert [str(r.uri) for r in bye.route] == [
        "sip:ss2.biloxi.example.com;lr",
        "sip:ss1.atlanta.example.com;lr",
    ]
    assert 0 < bye.cseq.seq < 2**31


def test_loose_routing_request_uri_is_remote_target() -> None:
    d = Dialog.from_uac_response(invite_at_alice(), bob_response(200))
    bye = d.create_request("BYE", VIA)
    assert str(bye.uri) == "sip:bob@client.biloxi.example.com"
    assert [str(r.uri) for r in bye.route] == [
        "sip:ss1.atlanta.example.com;lr",
        "sip:ss2.biloxi.example.com;lr",
    ]
    assert bye.cseq.seq == 2 and bye.cseq.method == "BYE"
    assert bye.call_id == d.id.call_id
    assert str(next_hop(bye)) == "sip:ss1.atlanta.example.com;lr"
    assert bye.max_forwards == 70
    assert [v.branch for v in bye.via] == ["z9hG4bKnew"]


def test_strict_routing_puts_first_route_in_request_uri() -> None:
    inv = invite_at_alice()
    resp = make_response(bob_request(), 200, to_tag="314159")
    resp.headers.remove("Record-Route")
    resp.headers.add("Record-Route", "<sip:p2.example.com;lr>")
    resp.headers.add("Record-Route", "<sip:p1.example.com;method=INVITE?X=1>")  # strict
    resp.headers.add("Contact", "<sip:bob@client.biloxi.example.com>")
    d = Dialog.from_uac_response(inv, resp)
    bye = d.create_request("BYE", VIA)
    # §12.2.1.1: R-URI = first route (params not allowed in a R-URI and headers removed),
    # Route = the rest of the route set, then the remote target.
    assert str(bye.uri) == "sip:p1.example.com"
    assert [str(r.uri) for r in bye.route] == [
        "sip:p2.example.com;lr",
        "sip:bob@client.biloxi.example.com",
    ]
    assert str(next_hop(bye)) == "sip:p2.example.com;lr"


def test_no_route_set_sends_to_remote_target() -> None:
    d = Dialog.from_uac_response(invite_at_alice(), bob_response(200, record_route=False))
    d.route_set = []
    bye = d.create_request("BYE", VIA)
    assert bye.route == [] and "Route" not in bye.headers
    assert str(next_hop(bye)) == "sip:bob@client.biloxi.example.com"


def test_ack_for_2xx_reuses_invite_cseq_and_reinvite_increments() -> None:
    d = Dialog.from_uac_response(invite_at_alice(), bob_response(200))
    ack = d.create_ack(VIA)
    assert ack.method == "ACK" and ack.cseq.seq == 1 and ack.cseq.method == "ACK"
    assert str(ack.uri) == "sip:bob@client.biloxi.example.com" and len(ack.route) == 2
    reinvite = d.create_request("INVITE", VIA, body=b"v=0\r\n", content_type="application/sdp")
    assert reinvite.cseq.seq == 2
    assert reinvite.content_type == "application/sdp" and reinvite.body == b"v=0\r\n"
    assert [str(c.uri) for c in reinvite.contact] == [
        "sip:alice@client.atlanta.example.com;transport=udp"
    ]
    assert d.create_ack(VIA).cseq.seq == 2
    with pytest.raises(LocalProtocolError):
        d.create_request("ACK", VIA)
    with pytest.raises(LocalProtocolError):
        d.create_request("CANCEL", VIA)


def test_cseq_ordering_lower_gets_500() -> None:
    req = bob_request()
    ok = make_response(req, 200, to_tag="314159")
    ok.headers.add("Contact", "<sip:bob@client.biloxi.example.com>")
    d = Dialog.from_uas_response(req, ok)
    bye = parse_message(
        b"BYE sip:bob@client.biloxi.example.com SIP/2.0\r\n"
        b"Via: SIP/2.0/UDP client.atlanta.example.com:5060;branch=z9hG4bKbye\r\n"
        b"From: Alice <sip:alice@atlanta.example.com>;tag=9fxced76sl\r\n"
        b"To: Bob <sip:bob@biloxi.example.com>;tag=314159\r\n"
        b"Call-ID: 3848276298220188511@atlanta.example.com\r\n"
        b"CSeq: 5 BYE\r\nContent-Length: 0\r\n\r\n"
    )
    assert isinstance(bye, Request)
    table = DialogTable()
    table.add(d)
    assert table.for_request(bye) is d and d.matches(bye)
    assert d.receive_request(bye) is None and d.remote_seq == 5
    old = bye.copy()
    old.headers.set("CSeq", "3 INFO")
    old.method = "INFO"
    assert d.receive_request(old) == 500
    assert d.remote_seq == 5
    ack = bye.copy()
    ack.method = "ACK"
    ack.headers.set("CSeq", "1 ACK")
    assert d.receive_request(ack) is None  # ACK carries the INVITE's CSeq
    other = bye.copy()
    other.headers.set("To", "Bob <sip:bob@biloxi.example.com>;tag=wrong")
    assert table.for_request(other) is None and not d.matches(other)
    table.remove(d)
    assert len(table) == 0


def test_target_refresh_updates_remote_target() -> None:
    req = bob_request()
    ok = make_response(req, 200, to_tag="314159")
    ok.headers.add("Contact", "<sip:bob@client.biloxi.example.com>")
    d = Dialog.from_uas_response(req, ok)
    reinvite = req.copy()
    reinvite.headers.set("To", "Bob <sip:bob@biloxi.example.com>;tag=314159")
    reinvite.headers.set("CSeq", "2 INVITE")
    reinvite.headers.set("Contact", "<sip:alice@new.atlanta.example.com>")
    assert d.receive_request(reinvite) is None
    assert str(d.remote_target) == "sip:alice@new.atlanta.example.com"


def test_early_dialog_confirmed_by_2xx_recomputes_route_set() -> None:
    inv = invite_at_alice()
    ringing = bob_response(180)
    d = Dialog.from_uac_response(inv, ringing)
    assert d.state is DialogState.EARLY
    ok = make_response(bob_request(), 200, to_tag="314159")
    ok.headers.remove("Record-Route")
    ok.headers.add("Record-Route", "<sip:only.example.com;lr>")
    ok.headers.add("Contact", "<sip:bob@moved.biloxi.example.com>")
    d.receive_response(inv, ok)
    assert d.state is DialogState.CONFIRMED
    assert [str(r.uri) for r in d.route_set] == ["sip:only.example.com;lr"]
    assert str(d.remote_target) == "sip:bob@moved.biloxi.example.com"
    # a confirmed dialog's route set is fixed; 481 ends the dialog
    d.receive_response(inv, make_response(inv, 481, to_tag="314159"))
    assert d.state is DialogState.TERMINATED
    with pytest.raises(LocalProtocolError):
        d.create_request("BYE", VIA)


def test_early_dialog_ended_by_error_response() -> None:
    inv = invite_at_alice()
    d = Dialog.from_uac_response(inv, bob_response(183))
    d.receive_response(inv, make_response(inv, 486, to_tag="314159"))
    assert d.state is DialogState.TERMINATED


def test_dialog_creation_errors() -> None:
    inv = invite_at_alice()
    no_tag = make_response(bob_request(), 200)
    no_tag.headers.add("Contact", "<sip:bob@x>")
    with pytest.raises(RemoteProtocolError):
        Dialog.from_uac_response(inv, no_tag)
    no_contact = make_response(bob_request(), 200, to_tag="t")
    with pytest.raises(RemoteProtocolError):
        Dialog.from_uac_response(inv, no_contact)
    with pytest.raises(LocalProtocolError):
        Dialog.from_uac_response(inv, make_response(bob_request(), 100, to_tag="t"))
    with pytest.raises(LocalProtocolError):
        Dialog.from_uas_response(bob_request(), make_response(bob_request(), 200))
    d = Dialog.from_uac_response(inv, bob_response(200))
    d.invite_seq = None
    with pytest.raises(LocalProtocolError):
        d.create_ack(VIA)


def test_make_dialog_response_copies_record_route_and_adds_contact() -> None:
    req = bob_request()
    ok = make_dialog_response(
        req, 200, to_tag="314159", contact="<sip:bob@client.biloxi.example.com>"
    )
    assert ok.to.tag == "314159" and ok.status == 200
    assert [str(r.uri) for r in ok.record_route] == [
        "sip:ss2.biloxi.example.com;lr",
        "sip:ss1.atlanta.example.com;lr",
    ]
    # the UAC reverses what the UAS copied: both sides see the same path
    uac = Dialog.from_uac_response(invite_at_alice(), ok)
    uas = Dialog.from_uas_response(req, ok)
    assert [str(r) for r in uac.route_set] == [str(r) for r in reversed(uas.route_set)]
    assert uac.id.local_tag == uas.id.remote_tag and uac.id.remote_tag == uas.id.local_tag


def test_dialog_ids_from_messages() -> None:
    resp = bob_response(200)
    assert DialogId.for_incoming_response(resp) == DialogId(resp.call_id, "9fxced76sl", "314159")
    assert DialogId.for_incoming_request(bob_request()) is None  # no To tag: not in a dialog
    table = DialogTable()
    d = Dialog.from_uac_response(invite_at_alice(), resp)
    table.add(d)
    assert table.for_response(resp) is d
    assert table.get(d.id) is d


def test_sips_request_uri_makes_a_secure_dialog() -> None:
    inv = invite_at_alice()
    inv.uri = parse_message(
        b"OPTIONS sips:bob@biloxi.example.com SIP/2.0\r\nVia: SIP/2.0/TLS h;branch=z9hG4bK1\r\n"
        b"From: <sip:a@b>;tag=1\r\nTo: <sip:b@c>\r\nCall-ID: x\r\nCSeq: 1 OPTIONS\r\n"
        b"Content-Length: 0\r\n\r\n"
    ).uri  # type: ignore[union-attr]
    d = Dialog.from_uac_response(inv, bob_response(200))
    assert d.secure
