"""RFC 5118 "SIP Torture Test Messages for IPv6": every case with its verdict."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import pytest
from sipsec.sip import RemoteProtocolError, Request, SipURI, parse_message

VECTORS = Path(__file__).resolve().parents[2] / "vectors" / "rfc5118"


def load(name: str) -> bytes:
    return (VECTORS / name).read_bytes()


def test_vectors_are_byte_exact() -> None:
    lines = (VECTORS / "SHA256SUMS.txt").read_text().splitlines()
    assert len(lines) == 12
    for line in lines:
        digest, name = line.split()
        assert hashlib.sha256((VECTORS / name).read_bytes()).hexdigest() == digest, name


def ruri(m: Request | object) -> SipURI:
    assert isinstance(m, Request) and isinstance(m.uri, SipURI)
    return m.uri


def check_ipv6_good(m: Request) -> None:  # §4.1
    assert (ruri(m).host, ruri(m).port) == ("[2001:db8::10]", None)
    assert m.top_via is not None and m.top_via.host == "[2001:db8::9:1]"
    assert isinstance(m.contact[0].uri, SipURI) and m.contact[0].uri.host == "[2001:db8::1]"


def check_port_ambiguous(m: Request) -> None:  # §4.3: ":5070" is part of the address
    assert (ruri(m).host, ruri(m).port) == ("[2001:db8::10:5070]", None)


def check_port_unambiguous(m: Request) -> None:  # §4.4
    assert (ruri(m).host, ruri(m).port) == ("[2001:db8::10]", 5070)


def check_received_with_delim(m: Request) -> None:  # §4.5
    assert m.top_via is not None and m.top_via.received == "[2001:db8::9:255]"


def check_received_no_delim(m: Request) -> None:  # §4.5
    assert m.top_via is not None and m.top_via.received == "2001:db8::9:255"


def check_ipv6_in_sdp(m: Request) -> None:  # §4.6
    assert b"IN IP6 2001:db8::20" in m.body


def check_mult_ip_in_header(m: Request) -> None:  # §4.7
    assert [(v.host, v.port) for v in m.via] == [
        ("[2001:db8::9:1]", 6050), ("192.0.2.1", None), ("[2001:db8::9:255]", None),
    ]
    assert m.via[2].received == "192.0.2.200"


def check_mult_ip_in_sdp(m: Request) -> None:  # §4.8
    assert b"IP4" in m.body and b"IP6" in m.body


def check_ipv4_mapped(m: Request) -> None:  # §4.9
    assert (m.via[0].host, m.via[0].port) == ("[::ffff:192.0.2.10]", 19823)
    assert m.via[1].host == "[::ffff:192.0.2.2]"


def check_two_colons(m: Request) -> None:  # §4.10 correct form
    assert ruri(m).host == "[2001:db8::192.0.2.1]"
    assert isinstance(m.to.uri, SipURI) and m.to.uri.host == "[2001:db8::192.0.2.1]"


ACCEPT: dict[str, Callable[[Request], None]] = {
    "ipv6-good": check_ipv6_good,
    "port-ambiguous": check_port_ambiguous,
    "port-unambiguous": check_port_unambiguous,
    "via-received-param-with-delim": check_received_with_delim,
    "via-received-param-no-delim": check_received_no_delim,
    "ipv6-in-sdp": check_ipv6_in_sdp,
    "mult-ip-in-header": check_mult_ip_in_header,
    "mult-ip-in-sdp": check_mult_ip_in_sdp,
    "ipv4-mapped-ipv6": check_ipv4_mapped,
    "ipv6-correct-abnf-2-colons": check_two_colons,
}

REJECT: dict[str, str] = {
    "ipv6-bad": "bad-sip-uri",  # §4.2 no brackets in the Request-URI
    "ipv6-bug-abnf-3-colons": "bad-ipv6-reference",  # §4.10, RFC 4291 forbids ":::"
}


@pytest.mark.parametrize("name", sorted(ACCEPT))
def test_accepted(name: str) -> None:
    msg = parse_message(load(name))
    assert isinstance(msg, Request)
    ACCEPT[name](msg)
    assert parse_message(msg.to_bytes()) == msg


@pytest.mark.parametrize("name", sorted(REJECT))
def test_rejected(name: str) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        parse_message(load(name))
    assert (info.value.status_hint, info.value.reason) == (400, REJECT[name])


def test_every_file_has_a_verdict() -> None:
    names = {p.name for p in VECTORS.iterdir() if p.name not in ("SHA256SUMS.txt", "README.md")}
    assert names == set(ACCEPT) | set(REJECT)
