"""Per-send caches of the transports: the IP-literal check, the Via rewrite on receipt."""

from __future__ import annotations

import pytest
from sipsec.aio import transport as tr
from sipsec.sip import is_ip_literal, parse_message
from sipsec.sip.headers import parse_via_list
from sipsec.sip.message import Request
from sipsec_proxy import routing as proxy_routing


@pytest.mark.parametrize("is_ip", [tr.is_ip_literal, proxy_routing.is_ip_literal])
def test_is_ip_is_cached_and_right(is_ip: object) -> None:
    assert is_ip is is_ip_literal  # one shared, cached check (sipsec.sip.uri)
    f = is_ip
    cases = {"127.0.0.1": True, "::1": True, "[2001:db8::1]": True, "example.com": False,
             "localhost": False, "256.1.1.1": False, "[not-an-ip]": False}
    for _ in range(2):
        for host, want in cases.items():
            assert f(host) is want  # type: ignore[operator]
    info = f.cache_info()  # type: ignore[attr-defined]
    assert info.hits >= len(cases) and info.maxsize is not None


def _old_stamp(request: Request, source: tuple[str, int]) -> None:
    """The Via stamping as it was before its views were carried over (the reference)."""
    if not request.via:
        return
    via = request.via[0]
    host, port = source
    wants_rport = "rport" in via.params and not via.params.get("rport")
    changed = False
    if wants_rport:
        via.params["rport"] = str(port)
        via.params["received"] = host
        changed = True
    elif via.host.strip("[]") != host:
        via.params["received"] = host
        changed = True
    if changed:
        first_line = request.headers.remove_first("Via")
        entries = parse_via_list(first_line) if first_line is not None else []
        entries[:1] = [via]
        request.headers.prepend("Via", ", ".join(str(v) for v in entries))


HEADS = [
    "Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKa;rport\r\nMax-Forwards: 70\r\n",
    "Max-Forwards: 70\r\nv: SIP/2.0/UDP h.example.com;branch=z9hG4bKa , SIP/2.0/TCP h2;branch=z9hG4bKb\r\n"
    "Via: SIP/2.0/UDP h3;branch=z9hG4bKc\r\n",
    "Max-Forwards: 70\r\nVia: SIP/2.0/UDP h.example.com;branch=z9hG4bKa;received=1.2.3.4\r\n",
    "Via: SIP/2.0/UDP 192.0.2.9:5070;branch=z9hG4bKa\r\n",  # sent-by is the source: unchanged
    "Via: SIP/2.0/UDP [2001:db8::9];branch=z9hG4bKa;rport\r\nVia: SIP/2.0/UDP x;branch=z9hG4bKy\r\n",
]


@pytest.mark.parametrize("head", HEADS)
def test_stamp_received_matches_the_reference(head: str) -> None:
    raw = (f"OPTIONS sip:b@example.com SIP/2.0\r\n{head}From: <sip:a@example.com>;tag=1\r\n"
           "To: <sip:b@example.com>\r\nCall-ID: c\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n").encode()
    for source in (("192.0.2.9", 5070), ("2001:db8::9", 5062)):
        new, ref = parse_message(raw), parse_message(raw)
        assert isinstance(new, Request) and isinstance(ref, Request)
        tr.validate_received(new)  # as the transport does: the views are parsed first
        tr.stamp_received(new, source)
        _old_stamp(ref, source)
        assert new.to_bytes() == ref.to_bytes()
        fresh = parse_message(new.to_bytes())
        assert new.via == fresh.via and new.top_via == fresh.top_via
        assert new.headers.mod_count == ref.headers.mod_count
