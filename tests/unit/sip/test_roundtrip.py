"""Property tests: parse(serialise(m)) == m for generated SIP messages and URIs."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sipsec.sip import (
    CSeq,
    Headers,
    NameAddr,
    Request,
    Response,
    SipURI,
    TelURI,
    Via,
    parse_message,
    parse_uri,
)

TOKEN_ALPHABET = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.!%*_+`'~"
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

tokens = st.text(TOKEN_ALPHABET, min_size=1, max_size=12)
lower_tokens = tokens.map(str.lower)
hostnames = st.from_regex(
    r"(?:[a-z0-9](?:[a-z0-9-]{0,6}[a-z0-9])?\.){0,3}[a-z](?:[a-z0-9-]{0,6}[a-z0-9])?",
    fullmatch=True,
)
hosts = st.one_of(
    hostnames,
    st.ip_addresses(v=4).map(str),
    st.ip_addresses(v=6).map(lambda a: f"[{a}]"),
)
ports = st.one_of(st.none(), st.integers(0, 65535))
escaped = st.sampled_from(["%20", "%00", "%3A", "%40", "%7e", "%C3%A9"])
users = st.lists(
    st.one_of(st.from_regex(r"[A-Za-z0-9\-_.!~*'()&=+$,;?/]{1,6}", fullmatch=True), escaped),
    min_size=1, max_size=3,
).map("".join)
passwords = st.from_regex(r"[A-Za-z0-9\-_.!~*'()&=+$,]{0,6}", fullmatch=True)
pvalues = st.from_regex(r"[A-Za-z0-9\-_.!~*'()\[\]/:&+$]{1,8}", fullmatch=True)
uri_params = st.dictionaries(
    st.from_regex(r"[a-z0-9\-_.!~*'()]{1,8}", fullmatch=True), st.one_of(st.none(), pvalues),
    max_size=3,
)
uri_headers = st.dictionaries(
    st.from_regex(r"[A-Za-z0-9\-_.]{1,8}", fullmatch=True),
    st.one_of(st.from_regex(r"[A-Za-z0-9\-_.:/?]{0,8}", fullmatch=True), escaped),
    max_size=2,
)


@st.composite
def sip_uris(draw: st.DrawFn, with_headers: bool = True) -> SipURI:
    user = draw(st.one_of(st.none(), users))
    password = draw(st.one_of(st.none(), passwords)) if user is not None else None
    return SipURI(
        draw(st.sampled_from(["sip", "sips"])), user, password, draw(hosts), draw(ports),
        draw(uri_params), draw(uri_headers) if with_headers else {},
    )


tel_uris = st.builds(
    TelURI,
    st.from_regex(r"\+[0-9][0-9\-.()]{0,10}[0-9]", fullmatch=True),
    st.dictionaries(st.sampled_from(["ext", "isub", "phone-context"]), pvalues, max_size=2),
)

gen_values = st.one_of(
    st.none(),
    tokens,
    st.from_regex(r'"[A-Za-z0-9 ,;:<>@=]{0,10}"', fullmatch=True),
)
header_params = st.dictionaries(lower_tokens, gen_values, max_size=3)
display_names = st.one_of(
    st.none(),
    st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n"), max_size=16),
)


@st.composite
def name_addrs(draw: st.DrawFn, tag: bool) -> NameAddr:
    params = draw(header_params)
    params.pop("tag", None)
    if tag:
        params["tag"] = draw(tokens)
    uri = draw(st.one_of(sip_uris(), tel_uris))
    return NameAddr(uri, draw(display_names), params)


@st.composite
def vias(draw: st.DrawFn) -> Via:
    params: dict[str, str | None] = {"branch": "z9hG4bK" + draw(tokens)}
    if draw(st.booleans()):
        params["received"] = draw(st.ip_addresses().map(str))
    if draw(st.booleans()):
        params["rport"] = draw(st.one_of(st.none(), st.integers(1, 65535).map(str)))
    for k, v in draw(st.dictionaries(lower_tokens, st.one_of(st.none(), tokens), max_size=2)).items():
        params.setdefault(k, v)
    return Via(draw(st.sampled_from(["UDP", "TCP", "TLS", "SCTP", "WS"])), draw(hosts),
               draw(ports), params)


header_values = st.text(
    st.characters(blacklist_categories=("Cs", "Cc")), max_size=30
).map(lambda s: s.strip(" \t"))
extra_headers = st.lists(st.tuples(tokens.map(lambda t: "X-" + t), header_values), max_size=4)


@st.composite
def messages(draw: st.DrawFn) -> Request | Response:
    method = draw(st.one_of(st.sampled_from(["INVITE", "ACK", "BYE", "REGISTER"]), tokens))
    h = Headers()
    via_list = draw(st.lists(vias(), min_size=1, max_size=3))
    if draw(st.booleans()):
        h.add("Via", ", ".join(str(v) for v in via_list))
    else:
        for v in via_list:
            h.add(draw(st.sampled_from(["Via", "v", "VIA"])), str(v))
    h.add("From", str(draw(name_addrs(tag=True))))
    h.add(draw(st.sampled_from(["To", "t"])), str(draw(name_addrs(tag=draw(st.booleans())))))
    h.add("Call-ID", draw(st.from_regex(r"[A-Za-z0-9\-.!%*_+`'~()<>:\\\"/\[\]?{}]{1,20}(@[a-z0-9.]{1,10})?", fullmatch=True)))
    seq = draw(st.integers(0, 2**31 - 1))
    h.add("CSeq", f"{seq} {method}")
    h.add("Max-Forwards", str(draw(st.integers(0, 255))))
    contacts = draw(st.lists(name_addrs(tag=False), max_size=2))
    if contacts:
        h.add("Contact", ", ".join(str(c) for c in contacts))
    for name, value in draw(extra_headers):
        h.add(name, value)
    body = draw(st.binary(max_size=200))
    if draw(st.booleans()):
        uri = draw(st.one_of(sip_uris(with_headers=False), tel_uris))
        return Request(method, uri, h, body)
    reason = draw(st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=20))
    return Response(draw(st.integers(100, 699)), reason, h, body)


@SETTINGS
@given(messages())
def test_parse_serialise_round_trip(msg: Request | Response) -> None:
    data = msg.to_bytes()
    parsed = parse_message(data)
    assert parsed == msg
    assert parsed.to_bytes() == data  # serialising is a fixed point
    assert parsed.defects == []
    # the typed views agree with what was generated
    assert [str(v) for v in parsed.via] == [str(v) for v in parse_message(data).via]
    assert parsed.cseq == CSeq(int(msg.headers.get("CSeq", "0 X").split()[0]), parsed.cseq.method)
    assert parsed.from_ == msg.from_ and parsed.to == msg.to
    assert parsed.contact == msg.contact
    assert parsed.from_tag == msg.from_.tag and parsed.to_tag == msg.to.tag


@SETTINGS
@given(st.lists(vias(), min_size=1, max_size=4))
def test_via_round_trip(via_list: list[Via]) -> None:
    req = Request("OPTIONS", "sip:a@example.com")
    req.via = via_list
    parsed = parse_message(req.to_bytes())
    assert parsed.via == via_list
    assert parsed.top_via == via_list[0]


@SETTINGS
@given(st.one_of(sip_uris(), tel_uris))
def test_uri_round_trip(uri: SipURI | TelURI) -> None:
    text = str(uri)
    assert parse_uri(text) == uri
    assert str(parse_uri(text)) == text


@SETTINGS
@given(name_addrs(tag=True))
def test_name_addr_round_trip(na: NameAddr) -> None:
    from sipsec.sip import parse_name_addr

    assert parse_name_addr(str(na)) == na
