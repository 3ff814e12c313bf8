"""Routing to host *names* a deployment configures (compose service names, cluster DNS names):
a configured peer or route hop is a target by name; any other name is not (no open relay)."""

from __future__ import annotations

from sipsec.aio.transport import Peer
from sipsec.sip import Request, parse_message
from sipsec_proxy.config import ProxyConfig
from sipsec_proxy.locator import Contact
from sipsec_proxy.routing import (
    NO_ANSWERS,
    NO_ROUTE,
    Forward,
    Refuse,
    RoutingPolicy,
    decide,
    preprocess,
)

ALICE = "sip:alice@atlanta.com"


def _policy(peers: str = "gateway-atlanta") -> RoutingPolicy:
    config = ProxyConfig(domains="atlanta.com", metrics_port=-1, location="location-atlanta:50052",
                         pkg_target="pkg-atlanta:50051", peers=peers,
                         routes="biloxi.com=proxy-biloxi:5061;transport=tls")
    return RoutingPolicy.build(config, [("0.0.0.0", 5060), ("proxy-atlanta", 5061)],
                               ["UDP", "TCP", "TLS"], route_key=b"k" * 32)


def _req(method: str, ruri: str, *, to: str = ALICE, frm: str = "sip:bob@biloxi.com",
         extra: str = "") -> Request:
    msg = parse_message(
        f"{method} {ruri} SIP/2.0\r\nVia: SIP/2.0/TLS 172.18.0.5:5061;branch=z9hG4bK1\r\n"
        f"Max-Forwards: 70\r\nFrom: <{frm}>;tag=1\r\nTo: <{to}>\r\nCall-ID: c\r\nCSeq: 1 {method}\r\n"
        f"{extra}Content-Length: 0\r\n\r\n".encode())
    assert isinstance(msg, Request)
    return msg


def _invite_alice(policy: RoutingPolicy, contact: str) -> object:
    found = NO_ANSWERS.with_locations({ALICE: (Contact(contact, 1000, 60),)})
    return decide(_req("INVITE", ALICE), policy, found)


def test_a_binding_naming_a_configured_gateway_is_forwarded_to_that_name() -> None:
    decision = _invite_alice(_policy(), "sip:alice@gateway-atlanta:5070;transport=tls")
    assert isinstance(decision, Forward)
    assert [t.hop for t in decision.targets] == [Peer("TLS", "gateway-atlanta", 5070)]


def test_a_binding_naming_an_unconfigured_name_is_no_target() -> None:
    for contact in ("sip:alice@evil.example:5070", "sip:alice@gateway-biloxi:5070;transport=tls",
                    "sip:alice@gateway-atlanta.evil.example:5070"):
        assert _invite_alice(_policy(), contact) == Refuse(404, None, "not-found"), contact


def test_a_configured_name_does_not_open_the_deployments_services() -> None:
    # a peer rule without a port does not make the location service or the PKG a target
    policy = _policy(peers="gateway-atlanta, location-atlanta, pkg-atlanta")
    for contact in ("sip:alice@location-atlanta:50052", "sip:alice@pkg-atlanta:50051;transport=tcp"):
        assert _invite_alice(policy, contact) == Refuse(404, None, "not-found"), contact
    assert decide(_req("BYE", "sip:x@location-atlanta:50052"), policy) == Refuse(403, "Forbidden",
                                                                                 "forbidden-target")


def test_in_dialog_requests_reach_configured_names_only() -> None:
    policy = _policy()
    bye = decide(_req("BYE", "sip:alice@gateway-atlanta:5070;transport=tls"), policy)
    assert isinstance(bye, Forward) and bye.targets[0].hop == Peer("TLS", "gateway-atlanta", 5070)
    # a name nobody configured: no route (RFC 3263 is off), never a look-up of the name
    assert decide(_req("BYE", "sip:alice@intruder-host:5070"), policy) == NO_ROUTE


def test_route_table_names_are_next_hops_by_name() -> None:
    policy = _policy()
    out = decide(_req("INVITE", "sip:bob@biloxi.com", to="sip:bob@biloxi.com", frm=ALICE), policy)
    assert isinstance(out, Forward) and out.targets[0].hop == Peer("TLS", "proxy-biloxi", 5061)
    # a Route entry naming the peer proxy (its Record-Route) at its configured port only
    req = _req("ACK", "sip:bob@192.0.2.9:5070", to="sip:bob@biloxi.com", frm=ALICE,
               extra="Route: <sip:proxy-atlanta:5061;transport=tls;lr>, <sip:proxy-biloxi:5061;transport=tls;lr>\r\n")
    marks = preprocess(req, policy)
    ack = decide(req, policy, NO_ANSWERS, marks)
    assert isinstance(ack, Forward) and ack.targets[0].hop == Peer("TLS", "proxy-biloxi", 5061)
    other = _req("ACK", "sip:bob@192.0.2.9:5070", extra="Route: <sip:proxy-biloxi:7000;lr>\r\n")
    assert decide(other, policy) == NO_ROUTE
