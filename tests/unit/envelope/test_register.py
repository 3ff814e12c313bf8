"""Signed REGISTER: the registrar learns who registers, and rejects a changed, foreign or replayed one."""

from __future__ import annotations

import time

import pytest
from sipsec.envelope import (
    EnvelopeUsageError,
    RejectedEnvelope,
    sign_register,
    verify_register,
)
from sipsec.sip import Request, parse_message
from sipsec.stores.envelope import InMemoryReplayCache

from tests.unit.envelope.rfc3665 import ALICE, Party, Pki

REGISTER = (
    "REGISTER sip:registrar.atlanta.example.com SIP/2.0\r\n"
    "Via: SIP/2.0/UDP client.atlanta.example.com:5060;branch=z9hG4bKnashds7\r\n"
    "Max-Forwards: 70\r\n"
    "To: Alice <sip:alice@atlanta.example.com>\r\n"
    "From: Alice <sip:alice@atlanta.example.com>;tag=456248\r\n"
    "Call-ID: 843817637684230@998sdasdh09\r\n"
    "CSeq: 1826 REGISTER\r\n"
    "Contact: <sip:alice@192.0.2.4>\r\n"
    "Expires: 7200\r\n"
    "Content-Length: 0\r\n\r\n"
)


def register(text: str = REGISTER) -> Request:
    m = parse_message(text.encode())
    assert isinstance(m, Request)
    return m


def trusted(pki: Pki) -> dict:
    return {"atlanta.example.com": pki.atlanta, "biloxi.example.com": pki.biloxi}


async def test_signed_register_verifies(pki: Pki, alice: Party) -> None:
    signed = sign_register(register(), alice.keys)
    wire = parse_message(signed.to_bytes())
    assert isinstance(wire, Request)
    assert wire.headers.get("Content-Type", "").startswith("application/pkcs7-mime; smime-type=signed-data")
    assert wire.headers.get("Contact") == "<sip:alice@192.0.2.4>"  # the registrar still reads it
    verified = await verify_register(wire, trusted(pki), InMemoryReplayCache())
    assert verified.aor == ALICE and verified.signer.aor == ALICE
    assert verified.message.to_bytes() == register().to_bytes()


@pytest.mark.parametrize("edit", [
    (b"<sip:alice@192.0.2.4>", b"<sip:eve@198.51.100.9>"),
    (b"Expires: 7200", b"Expires: 9999"),
    (b"CSeq: 1826", b"CSeq: 1827"),
    (b"To: Alice <sip:alice@", b"To: Alice <sip:alicf@"),
], ids=["contact", "expires", "cseq", "to"])
async def test_changed_register_is_403(pki: Pki, alice: Party, edit: tuple[bytes, bytes]) -> None:
    raw = sign_register(register(), alice.keys).to_bytes()
    head, sep, body = raw.partition(b"\r\n\r\n")
    tampered = head.replace(*edit) + sep + body  # the outer headers only, not the signed copy
    assert tampered != raw
    wire = parse_message(tampered)
    assert isinstance(wire, Request)
    with pytest.raises(RejectedEnvelope) as info:
        await verify_register(wire, trusted(pki), InMemoryReplayCache())
    assert info.value.status == 403 and info.value.reason == "outer-mismatch"


async def test_register_replay_foreign_signer_and_garbage(pki: Pki, alice: Party, bob: Party) -> None:
    cache = InMemoryReplayCache()
    signed = sign_register(register(), alice.keys)
    await verify_register(signed, trusted(pki), cache)
    with pytest.raises(RejectedEnvelope) as info:
        await verify_register(signed, trusted(pki), cache)
    assert (info.value.status, info.value.reason) == (403, "replay")
    # Bob cannot sign a REGISTER for Alice's AOR (misuse is refused locally)...
    with pytest.raises(EnvelopeUsageError):
        sign_register(register(), bob.keys)
    # ...and a registrar that does not trust atlanta's parameters refuses Alice's
    with pytest.raises(RejectedEnvelope) as info:
        await verify_register(sign_register(register(), alice.keys), {"biloxi.example.com": pki.biloxi}, cache)
    assert (info.value.status, info.value.reason) == (403, "unknown-domain")
    # an unsigned REGISTER, a broken body and a stale one
    with pytest.raises(RejectedEnvelope) as info:
        await verify_register(register(), trusted(pki), cache)
    assert (info.value.status, info.value.reason) == (400, "not-secured")
    broken = sign_register(register(), alice.keys)
    broken.body = broken.body[:-3]
    with pytest.raises(RejectedEnvelope) as info:
        await verify_register(broken, trusted(pki), cache)
    assert (info.value.status, info.value.reason) == (400, "malformed-cms")
    old = sign_register(register(), alice.keys, now=time.time() - 3600)
    with pytest.raises(RejectedEnvelope) as info:
        await verify_register(old, trusted(pki), cache)
    assert (info.value.status, info.value.reason) == (403, "stale")
