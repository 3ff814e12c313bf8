"""Per-dialog Contact user parts: calls of one user are unlinkable on the inter-domain leg, and
any replica sharing the contact secret still routes an in-dialog request to the right user."""

from __future__ import annotations

import asyncio

from sipsec.sip import Request, SipURI, parse_message
from sipsec_gateway.calls import CallState
from sipsec_gateway.contacts import ContactTokens

from tests.integration.gateway.harness import (
    HOSTS,
    PASSWORD,
    TwoDomains,
    call,
    gateway_config,
    login,
    redis_stores,
    start_gateway,
    wait_for,
)

ALICE = "sip:alice@atlanta.com"
BOB = "sip:bob@biloxi.com"
SECRET = "11" * 32


def test_tokens_are_fresh_per_dialog_stable_within_one_and_readable_with_the_secret_only() -> None:
    tokens = ContactTokens(bytes.fromhex(SECRET), "atlanta.com")
    registered = tokens.registered(ALICE)
    first, second = tokens.for_dialog(ALICE, "call-1"), tokens.for_dialog(ALICE, "call-2")
    assert len({registered, first, second}) == 3
    assert tokens.for_dialog(ALICE, "call-1") == first  # every message of the dialog, every replica
    assert ContactTokens(bytes.fromhex(SECRET), "atlanta.com").for_dialog(ALICE, "call-1") == first
    for token in (registered, first, second):
        assert "alice" not in token and token.isalnum() and token == token.lower()
        assert tokens.aor_of(token) == ALICE
        assert ContactTokens(b"\x22" * 32, "atlanta.com").aor_of(token) is None  # another secret
    assert tokens.aor_of(tokens.for_dialog("sip:carol@biloxi.com", "x")) == "sip:carol@biloxi.com"
    # a flipped character, a truncation, plain names and junk are no tokens
    flipped = first[:-1] + ("a" if first[-1] != "a" else "b")
    for junk in (flipped, first[:-3], "alice", "u", "u" + "7" * 500, "u!!", "u" + "a" * 39):
        assert tokens.aor_of(junk) is None, junk
    # the same length for names of one length class: only the class shows
    assert len(tokens.for_dialog("sip:al@atlanta.com", "c")) == len(tokens.for_dialog("sip:alicia@atlanta.com", "c"))


def _federation_leg(net: TwoDomains) -> list[Request | object]:
    """What crossed the proxy-to-proxy leg: requests a proxy got from the other proxy, responses
    a proxy got back through the other proxy (their top Via is the receiving proxy's own)."""
    proxies = {(HOSTS[d.name], d.proxy_port) for d in (net.atlanta, net.biloxi)}
    out: list[Request | object] = []
    for domain in (net.atlanta, net.biloxi):
        own = (HOSTS[domain.name], domain.proxy_port)
        for data in domain.tap.seen:
            message = parse_message(data)
            via = message.top_via
            assert via is not None
            hop = (via.host, via.port or 5060)
            if (isinstance(message, Request) and hop in proxies - {own}) or \
                    (not isinstance(message, Request) and hop == own):
                out.append(message)
    return out


def _identifiers(messages: list) -> set[str]:
    """Every value on the wire that could link messages: Call-ID, tags, Via branches, Contact and Request-URI user parts."""
    seen: set[str] = set()
    for m in messages:
        seen.add("call-id:" + m.call_id)
        for tag in (m.from_tag, m.to_tag):
            if tag:
                seen.add("tag:" + tag)
        for via in m.via:
            if via.branch:
                seen.add("branch:" + via.branch)
        for contact in m.contact:
            if isinstance(contact.uri, SipURI) and contact.uri.user:
                seen.add("contact:" + contact.uri.user)
        if isinstance(m, Request) and isinstance(m.uri, SipURI) and m.uri.user and m.uri.user.startswith("u"):
            seen.add("contact:" + m.uri.user)
    return seen


async def test_two_calls_of_alice_share_no_identifier_on_the_federation_leg() -> None:
    async with TwoDomains() as net:
        await login(net.atlanta, "alice")
        await login(net.biloxi, "bob", auto_answer=True)
        per_call: list[set[str]] = []
        contacts: list[set[str]] = []
        for _ in range(2):
            for d in (net.atlanta, net.biloxi):
                d.tap.clear()
            placed = await call(net.atlanta, ALICE, BOB)
            assert placed["state"] == "established" and placed["secure"], placed
            hung = await net.atlanta.client.delete(f"/v1/calls/{placed['id']}")
            assert hung.status_code == 200 and hung.json()["sip_status"] == 200, hung.text
            leg = _federation_leg(net)
            methods = {m.method for m in leg if isinstance(m, Request)}
            assert {"INVITE", "ACK", "BYE"} <= methods, methods
            ids = _identifiers(leg)
            per_call.append(ids)
            contacts.append({i for i in ids if i.startswith("contact:")})
        assert len(contacts[0]) == 2 and len(contacts[1]) == 2  # alice's and bob's, one each per call
        assert not per_call[0] & per_call[1], per_call[0] & per_call[1]
        # nor is a per-dialog Contact the registered one the proxy's location holds
        registered = {net.atlanta.gateway.contact_user(ALICE), net.biloxi.gateway.contact_user(BOB)}
        assert not registered & {c.split(":", 1)[1] for c in contacts[0] | contacts[1]}


async def test_a_bye_for_the_dialog_reaches_another_replica_which_finds_the_user(redis_url: str) -> None:
    """bob's replica fails over: another one takes its address (shared Redis, the same contact secret,
    bob logged in but not registered there) and alice's BYE, sent to bob's per-dialog Contact, is
    answered 200 by it: the Contact alone named bob to it."""
    overrides = {"biloxi.com": {"contact_secret": SECRET}}
    async with TwoDomains(redis_url=redis_url, gateway_overrides=overrides) as net:
        await login(net.atlanta, "alice")
        await login(net.biloxi, "bob", auto_answer=True)
        placed = await call(net.atlanta, ALICE, BOB)
        assert placed["state"] == "established" and placed["secure"], placed
        first = net.biloxi.gateway
        bob_call = next(c for c in first.secure.calls.values() if c.direction == "incoming")
        await wait_for(lambda: bob_call.acked)  # the ACK saved the dialog for the replicas
        host, port = first.sip_address
        await first.stop(0)  # no BYE, no un-REGISTER: a crash, as far as the dialog knows
        await asyncio.sleep(0.1)  # the UDP socket is released on the next loop turns

        stores = redis_stores(redis_url, "biloxi.com")
        for store in stores.values():
            net.push(store.aclose)
        config = gateway_config("biloxi.com", net.pkg_ports["biloxi.com"], net.biloxi.proxy_port,
                                contact_secret=SECRET, sip_listen=f"{host}:{port}")
        replica, client = await start_gateway(config, **stores)
        net.push(replica.stop, 0)
        net.push(client.aclose)
        await replica.login(BOB, PASSWORD, register=False)

        hung = await net.atlanta.client.delete(f"/v1/calls/{placed['id']}")
        assert hung.status_code == 200 and hung.json()["sip_status"] == 200, hung.text
        answered = [c for c in replica.secure.calls.values() if c.call_id == bob_call.call_id]
        assert len(answered) == 1 and answered[0].state is CallState.ENDED
        assert answered[0].reason == "remote hangup (continued from another replica)"
