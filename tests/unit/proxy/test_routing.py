"""The pure routing decision (``sipsec_proxy.routing``): no sockets, no clock."""

from __future__ import annotations

import pytest
from sipsec.aio.transport import Peer
from sipsec.sip import Request, parse_message, parse_uri
from sipsec_proxy.config import ProxyConfig
from sipsec_proxy.locator import Contact
from sipsec_proxy.routing import (
    NO_ANSWERS,
    AnswerHere,
    Forward,
    NeedDns,
    NeedLocation,
    PeerRule,
    Refuse,
    Register,
    RoutingPolicy,
    decide,
    normal_host,
    parse_peers,
    preprocess,
    upstream_hop,
)

ME = ("10.0.0.1", 5060)


def _policy(**kw: object) -> RoutingPolicy:
    base: dict[str, object] = dict(domains="atlanta.com", metrics_port=-1, location="redis",
                                   redis_url="redis://10.0.0.9:6379/0", routes="biloxi.com=10.0.0.2:5060")
    base.update(kw)
    dns = bool(base.pop("with_dns", False))
    return RoutingPolicy.build(ProxyConfig(**base), [ME], ["UDP", "TCP"], dns=dns,  # type: ignore[arg-type]
                               route_key=b"k" * 32)


def _req(method: str, ruri: str, *, to: str = "sip:x@chicago.com", frm: str = "sip:alice@atlanta.com",
         extra: str = "") -> Request:
    msg = parse_message(
        f"{method} {ruri} SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.7:5060;branch=z9hG4bK1\r\nMax-Forwards: 70\r\n"
        f"From: <{frm}>;tag=1\r\nTo: <{to}>\r\nCall-ID: c\r\nCSeq: 1 {method}\r\n{extra}Content-Length: 0\r\n\r\n".encode())
    assert isinstance(msg, Request)
    return msg


def test_peer_rules_and_hosts() -> None:
    assert parse_peers("10.0.0.5:5070;transport=tcp, gw.example.com, [::1]:5060, ::1, 127.0.0.1") == (
        PeerRule("10.0.0.5", 5070, "TCP"), PeerRule("gw.example.com"), PeerRule("::1", 5060),
        PeerRule("::1"), PeerRule("127.0.0.1"))
    for bad in ("10.0.0.5:x", "a;maddr=1", ":5060", "[::1]:"):
        with pytest.raises(ValueError):
            parse_peers(bad)
    assert normal_host("[::FFFF:127.0.0.1]") == "127.0.0.1" and normal_host("Example.COM") == "example.com"


def test_served_domain_user_is_looked_up_then_forwarded_to_live_bindings_only() -> None:
    policy = _policy()
    req = _req("INVITE", "sip:bob@atlanta.com", to="sip:bob@atlanta.com")
    assert decide(req, policy) == NeedLocation(("sip:bob@atlanta.com",))
    bindings = (Contact("sip:bob@192.0.2.20:5062", 1000, 60), Contact("sip:bob@10.0.0.9:6379", 1000, 60))
    answer = NO_ANSWERS.with_locations({"sip:bob@atlanta.com": bindings})
    decision = decide(req, policy, answer)
    assert isinstance(decision, Forward)  # the binding naming Redis is never a target
    assert [t.hop for t in decision.targets] == [Peer("UDP", "192.0.2.20", 5062)]
    empty = NO_ANSWERS.with_locations({"sip:bob@atlanta.com": ()})
    assert decide(req, policy, empty) == Refuse(404, None, "not-found")
    assert isinstance(decide(_req("REGISTER", "sip:atlanta.com"), policy), Register)
    assert isinstance(decide(_req("OPTIONS", "sip:atlanta.com"), policy), AnswerHere)


def test_named_addresses_need_a_reason() -> None:
    policy = _policy(peers="192.0.2.50")
    # a route-table domain and a peer host: forwarded without any look-up
    assert isinstance(decide(_req("MESSAGE", "sip:carol@biloxi.com"), policy), Forward)
    assert isinstance(decide(_req("MESSAGE", "sip:x@192.0.2.50:7000"), policy), Forward)
    # a service address, even on a peer host or through maddr: refused at once
    for ruri in ("sip:x@10.0.0.9:6379;transport=tcp", "sip:x@chicago.com:6379;maddr=10.0.0.9"):
        assert decide(_req("MESSAGE", ruri, frm="sip:dave@chicago.com"), policy) == Refuse(403, "Forbidden",
                                                                                          "forbidden-target")
    # a user at this proxy's own address is a user of the served domain: looked up, not sent to
    assert decide(_req("MESSAGE", "sip:x@10.0.0.1:5060"), policy) == NeedLocation(("sip:x@10.0.0.1",))
    # any other literal: only a live binding of a served From/To AOR
    req = _req("BYE", "sip:u1@192.0.2.20:5062", to="sip:bob@atlanta.com")
    assert decide(req, policy) == NeedLocation(("sip:bob@atlanta.com", "sip:alice@atlanta.com"))
    found = NO_ANSWERS.with_locations({"sip:bob@atlanta.com": (Contact("sip:bob@192.0.2.20:5062", 1000, 60),),
                                       "sip:alice@atlanta.com": ()})
    assert isinstance(decide(req, policy, found), Forward)
    stranger = _req("BYE", "sip:u1@192.0.2.21:5062", to="sip:bob@atlanta.com")
    assert decide(stranger, policy, found).status == 403  # type: ignore[union-attr]
    # no served AOR at all: refused without a look-up
    assert decide(_req("BYE", "sip:u1@192.0.2.20:5062", frm="sip:dave@chicago.com"), policy).status == 403  # type: ignore[union-attr]


def test_dns_answers_that_are_internal_are_refused() -> None:
    policy = _policy(with_dns=True, allow_networks="127.0.0.8/32")
    req = _req("MESSAGE", "sip:carol@far.example")
    need = decide(req, policy)
    assert isinstance(need, NeedDns)
    for address, expected in (("127.0.0.1", 403), ("169.254.1.1", 403), ("0.0.0.0", 403), ("224.0.0.1", 403),
                              ("10.0.0.9", 403), ("172.18.0.5", 403), ("100.64.0.1", 403), ("fd00::1", 403),
                              ("fe80::1", 403), ("127.0.0.8", None), ("93.184.216.34", None),
                              ("2a00:1450::1", None)):
        port = 6379 if address == "10.0.0.9" else 5060
        decision = decide(req, policy, NO_ANSWERS.with_dns(need.key, (Peer("UDP", address, port),)))
        if expected is None:
            assert isinstance(decision, Forward) and decision.targets[0].hop.host == address
        else:
            assert isinstance(decision, Refuse) and decision.status == expected, address
    assert decide(req, policy, NO_ANSWERS.with_dns(need.key, 503)).status == 503  # type: ignore[union-attr]
    assert decide(req, policy, NO_ANSWERS.with_dns(need.key, 404)).status == 404  # type: ignore[union-attr]


def test_record_route_marks_vouch_for_exactly_their_hop() -> None:
    policy = _policy()
    hop = Peer("UDP", "192.0.2.30", 5070)
    mark = policy.mark(hop)
    me = f"<sip:{ME[0]}:{ME[1]};lr;sps=zzz.{mark}>"
    req = _req("BYE", "sip:u@192.0.2.30:5070", to="sip:anonymous@anonymous.invalid",
               frm="sip:dave@chicago.com", extra=f"Route: {me}\r\n")
    marks = preprocess(req, policy)
    assert marks == ("zzz", mark) and req.route == []
    assert isinstance(decide(req, policy, NO_ANSWERS, marks), Forward)
    for other in ("sip:u@192.0.2.30:5071", "sip:u@192.0.2.30:5070;transport=tcp", "sip:u@192.0.2.31:5070"):
        moved = _req("BYE", other, frm="sip:dave@chicago.com")
        assert decide(moved, policy, NO_ANSWERS, marks).status == 403  # type: ignore[union-attr]
    other_key = RoutingPolicy.build(ProxyConfig(domains="atlanta.com", metrics_port=-1), [ME], ["UDP"],
                                    route_key=b"x" * 32)
    assert other_key.mark(hop) != mark
    # a replica with the same key (derived from the shared nonce secret) accepts the marks; nothing stored
    replica = RoutingPolicy.build(ProxyConfig(domains="atlanta.com", metrics_port=-1), [ME], ["UDP"],
                                  route_key=b"k" * 32)
    assert replica.marked(hop, marks) and not other_key.marked(hop, marks)


def test_upstream_hop_is_only_the_source_host() -> None:
    policy = _policy()
    invite = _req("INVITE", "sip:bob@atlanta.com", extra="Contact: <sip:a@192.0.2.7:5066>\r\n")
    assert upstream_hop(invite, policy, "192.0.2.7") == Peer("UDP", "192.0.2.7", 5066)
    assert upstream_hop(invite, policy, "192.0.2.8") is None  # a Contact elsewhere is not vouched for
    redis = _req("INVITE", "sip:bob@atlanta.com", extra="Contact: <sip:a@10.0.0.9:6379;transport=tcp>\r\n")
    assert upstream_hop(redis, policy, "10.0.0.9") is None  # never a service address
    proxied = _req("INVITE", "sip:bob@atlanta.com",
                   extra="Record-Route: <sip:192.0.2.40;lr>\r\nContact: <sip:a@192.0.2.7:5066>\r\n")
    assert upstream_hop(proxied, policy, "192.0.2.40") == Peer("UDP", "192.0.2.40", 5060)


def test_a_mark_that_is_not_ascii_is_no_mark() -> None:
    policy = _policy()
    hop = Peer("UDP", "192.0.2.7", 5060)
    assert policy.marked(hop, ["caf\u00e9", "x\udcff", policy.mark(hop)])
    assert not policy.marked(hop, ["caf\u00e9", "x\udcff"])  # no TypeError from compare_digest


def test_a_service_named_localhost_is_closed_at_every_loopback_spelling() -> None:
    policy = _policy(redis_url="redis://proxy@localhost:6379/0")
    for host in ("localhost", "127.0.0.1", "::1", "0.0.0.0", "::"):
        assert policy.service(Peer("UDP", host, 6379)), host
    req = _req("OPTIONS", "sip:127.0.0.1:6379", to="sip:bob@atlanta.com")
    assert decide(req, policy, NO_ANSWERS) == Refuse(403, "Forbidden", "forbidden-target")
    assert not policy.bindable(parse_uri("sip:bob@127.0.0.1:6379"))
