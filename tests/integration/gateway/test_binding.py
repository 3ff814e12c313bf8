"""Binding checks per RFC 3261 §23.4.1.1 through a real proxy that rewrites what it forwards, as
middle boxes do: what intermediaries may change is tolerated (a NAT helper's Contact alias),
what would redirect or relink a message is refused with 403 and a ``Warning: 399`` that
names the field class (RFC 3261 §20.43)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from sipsec.aio.transport import Inbound
from sipsec.envelope.errors import BINDING_FIELDS, Forbidden
from sipsec.sip import Message, Request, Response, parse_message

from tests.integration.gateway.harness import HOSTS, Domain, TwoDomains, call, login

ALICE = "sip:alice@atlanta.com"
BOB = "sip:bob@biloxi.com"


def rewrite(domain: Domain, edit: Callable[[Message], None]) -> None:
    """Let ``domain``'s proxy see (and forward) every message it receives after ``edit``."""
    queue = domain.proxy.queue
    offer = queue.offer

    def edited(item: Inbound) -> bool:
        edit(item.message)
        return bool(offer(item))

    queue.offer = edited  # type: ignore[method-assign]


def _set_contact(message: Message, text: Callable[[str], str]) -> None:
    values = message.headers.get_all_raw("Contact")
    if values:
        message.headers.remove("Contact")
        for v in values:
            message.headers.add("Contact", text(v))


def _from_other_proxy(message: Message) -> bool:
    return isinstance(message, Request) and message.method == "INVITE" and message.to_tag is None


def _alias(value: str) -> str:
    """Kamailio's add_contact_alias(): ``;alias=ip~port~proto`` appended inside the Contact URI."""
    return value.replace(">", ";alias=127.0.0.9~5099~1>", 1)


def _responses_to_atlanta(net: TwoDomains) -> list[Response]:
    out = []
    for data in net.atlanta.tap.seen:
        message = parse_message(data)
        if isinstance(message, Response) and message.status == 403:
            out.append(message)
    return out


async def test_a_nat_helper_alias_on_every_contact_is_tolerated_both_ways() -> None:
    """add_contact_alias on requests and replies, in both domains: the call and both BYEs complete."""
    async with TwoDomains() as net:
        await login(net.atlanta, "alice")  # (a signed REGISTER binds its Contact: the helper is not on that leg)
        await login(net.biloxi, "bob", auto_answer=True)
        for d in (net.atlanta, net.biloxi):
            rewrite(d, lambda m: _set_contact(m, _alias) if "alias=" not in str(m.headers.get_all_raw("Contact")) else None)
        for hangs_up in (net.atlanta, net.biloxi):
            placed = await call(net.atlanta, ALICE, BOB)
            assert placed["state"] == "established" and placed["secure"], placed
            if hangs_up is net.atlanta:
                call_id = placed["id"]
            else:
                call_id = next(c.id for c in net.biloxi.gateway.secure.calls.values()
                               if c.direction == "incoming" and c.state.name == "ESTABLISHED")
            hung = await hangs_up.client.delete(f"/v1/calls/{call_id}")
            assert hung.status_code == 200 and hung.json()["sip_status"] == 200, hung.text
        assert b"alias=127.0.0.9~5099~1" in net.biloxi.tap.text()  # the rewrite did happen


REFUSED: list[tuple[str, Callable[[Message], None]]] = [
    # a NAT helper that rewrites the Contact's host (fix_nated_contact): refused, the inner one is what counts
    ("contact", lambda m: _set_contact(m, lambda v: v.replace("@127.0.0.2:", "@127.0.0.9:", 1))),
    # a routing parameter added to the Contact would steer the dialog elsewhere: refused
    ("contact", lambda m: _set_contact(m, lambda v: v.replace(">", ";maddr=127.0.0.9>", 1))),
    # topology hiding that rewrites the Call-ID
    ("call-id", lambda m: m.headers.set("Call-ID", "th-" + m.call_id)),
    # a middle box that rewrites the From tag
    ("from-tag", lambda m: m.headers.set("From", str(m.headers.get("From")).replace(";tag=", ";tag=th", 1))),
]


@pytest.mark.parametrize("field, edit", REFUSED, ids=[f"{f}-{i}" for i, (f, _) in enumerate(REFUSED)])
async def test_a_rewritten_bound_field_is_403_with_a_warning_naming_it(field: str, edit: Callable[[Message], None]) -> None:
    async with TwoDomains() as net:
        await login(net.atlanta, "alice")
        await login(net.biloxi, "bob", auto_answer=True)
        rewrite(net.biloxi, lambda m: edit(m) if _from_other_proxy(m) and not m.via[0].host == HOSTS["biloxi.com"] else None)
        net.atlanta.tap.clear()
        response = await net.atlanta.client.post("/v1/calls", json={"from": ALICE, "to": BOB})
        assert response.status_code != 201 or response.json()["state"] != "established", response.text
        refused = _responses_to_atlanta(net)
        assert refused, "no 403 came back"
        warnings = refused[0].headers.get_all_raw("Warning")
        assert warnings == [f'399 {HOSTS["biloxi.com"]} "outer-mismatch: {field}"'], warnings
        assert field in BINDING_FIELDS
        assert net.biloxi.gateway.metrics.sample("sipsec_gateway_envelope_rejections_total",
                                                 reason="outer-mismatch") >= 1


def test_warning_text_comes_from_fixed_sets_only() -> None:
    assert Forbidden("outer-mismatch", "x", field="contact").warning == "outer-mismatch: contact"
    assert Forbidden("bad-signature").warning is None  # why a signature failed is not said
    with pytest.raises(ValueError):
        Forbidden("outer-mismatch", field="anything <script>")
