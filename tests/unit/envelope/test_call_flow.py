"""RFC 3665 call flows sealed and opened with both signing policies, and what an eavesdropper sees."""

from __future__ import annotations

import pytest
from sipsec import ibc
from sipsec.envelope import CONTENT_DISPOSITION, CONTENT_TYPE, SigningPolicy
from sipsec.envelope._binding import ANONYMOUS_URI
from sipsec.sip import Request, canonical_name, parse_message

from tests.unit.envelope.rfc3665 import (
    ALICE,
    ALICE_TAG,
    BOB,
    BOB_TAG,
    CALL_ID,
    Party,
    run_basic_call,
    run_cancelled_call,
)

POLICIES = [SigningPolicy.EVERY_MESSAGE, SigningPolicy.DIALOG_ESTABLISHING]
SIGNED_WHEN_ESTABLISHING = {"INVITE", "180", "200"}


@pytest.mark.parametrize("policy", POLICIES, ids=lambda p: p.value)
async def test_basic_call_every_message_round_trips(alice: Party, bob: Party, policy: SigningPolicy) -> None:
    run = await run_basic_call(alice, bob, policy)
    assert [s.name for s in run.steps] == ["INVITE", "100", "180", "200", "ACK", "BYE", "200-BYE"]
    for step in run.steps:
        # the receiver gets the complete original message back, byte for byte
        assert step.opened.message.to_bytes() == step.inner.to_bytes(), step.name
        assert step.opened.first == (step.name == "INVITE")
        expect_signed = policy is SigningPolicy.EVERY_MESSAGE or step.name in SIGNED_WHEN_ESTABLISHING
        assert step.sealed.signed == expect_signed, step.name
        if expect_signed:
            assert step.opened.signer is not None
            sender = ALICE if step.name in ("INVITE", "ACK", "200-BYE") else BOB
            assert step.opened.signer.aor == sender
            assert step.opened.signer.purpose is ibc.Purpose.SIG
        else:
            assert step.opened.signer is None
    # both ends hold the same dialog key, each from its own side
    a_view, b_view = run.steps[0].sealed.dialog, run.steps[0].opened.dialog
    assert a_view.key == b_view.key and a_view.key_id == b_view.key_id
    assert (a_view.local_aor, a_view.peer_aor) == (ALICE, BOB)
    assert (b_view.local_aor, b_view.peer_aor) == (BOB, ALICE)
    assert b_view.call_id == CALL_ID


@pytest.mark.parametrize("policy", POLICIES, ids=lambda p: p.value)
async def test_cancelled_call_round_trips(alice: Party, bob: Party, policy: SigningPolicy) -> None:
    run = await run_cancelled_call(alice, bob, policy)
    assert [s.name for s in run.steps] == ["INVITE", "180", "CANCEL", "200-CANCEL", "487", "ACK-487"]
    for step in run.steps:
        assert step.opened.message.to_bytes() == step.inner.to_bytes(), step.name
    cancel_outer = run.steps[2].sealed.message
    invite_outer = run.steps[0].sealed.message
    assert isinstance(cancel_outer, Request)
    # a proxy matches the CANCEL to the INVITE by top Via branch and Request-URI (RFC 3261 §9.2)
    assert cancel_outer.via[0].branch == invite_outer.via[0].branch
    assert str(cancel_outer.uri) == str(invite_outer.uri)
    assert cancel_outer.call_id == invite_outer.call_id
    assert cancel_outer.from_.tag == invite_outer.from_.tag
    # CANCEL is signed under both policies (it is outside the dialog: no To tag)
    assert run.steps[2].sealed.signed


async def test_eavesdropper_sees_no_identity_call_id_sdp_or_user_agent(alice: Party, bob: Party) -> None:
    run = await run_basic_call(alice, bob, SigningPolicy.EVERY_MESSAGE)
    wire = b"".join(s.sealed.message.to_bytes() for s in run.steps)
    lowered = wire.lower()
    for secret in [
        b"alice@atlanta.example.com", CALL_ID.encode(), b"3848276298220188511",
        ALICE_TAG.encode(), BOB_TAG.encode(), b"v=0", b"m=audio", b"rtpmap", b"192.0.2.101",
        b"192.0.2.201", b"user-agent", b"server:", b"atlantaphone", b"biloxiphone",
        b"subject", b"lunch", b"application/sdp", b"alice <", b"bob <",
    ]:
        assert secret.lower() not in lowered, secret
    # the signer identity is inside the encryption too (sign-then-encrypt)
    assert b"sip:alice@atlanta" not in wire


async def test_outer_messages_carry_only_routing_headers(alice: Party, bob: Party) -> None:
    run = await run_basic_call(alice, bob, SigningPolicy.EVERY_MESSAGE)
    allowed = {"via", "max-forwards", "route", "record-route", "to", "from", "call-id", "cseq",
               "contact", "content-type", "content-disposition", "content-length"}
    outer_call_ids = set()
    for step in run.steps:
        outer = parse_message(step.sealed.message.to_bytes())
        names = {canonical_name(name).lower() for name, _ in outer.headers.items()}
        assert names <= allowed, names - allowed
        assert outer.headers.get("Content-Type") == CONTENT_TYPE
        assert outer.headers.get("Content-Disposition") == CONTENT_DISPOSITION
        # the caller is anonymous in From of its messages and in To of the callee's BYE dialog
        caller_side, callee_side = (
            (outer.to, outer.from_) if step.name in ("BYE", "200-BYE") else (outer.from_, outer.to)
        )
        assert str(caller_side.uri) == ANONYMOUS_URI and caller_side.display is None
        assert str(callee_side.uri) == BOB and callee_side.display is None
        assert outer.cseq == step.inner.cseq
        outer_call_ids.add(outer.call_id)
        if isinstance(outer, Request):
            assert str(outer.uri) == str(step.inner.uri)
    # one opaque Call-ID for the whole dialog, not the inner one
    assert len(outer_call_ids) == 1 and CALL_ID not in outer_call_ids


async def test_outer_names_do_not_link_two_calls_with_the_same_inner_call_id(
    pki, alice: Party, bob: Party
) -> None:
    first = await run_basic_call(alice, bob, SigningPolicy.DIALOG_ESTABLISHING)
    alice2, bob2 = Party(alice.keys), Party(bob.keys)
    second = await run_basic_call(alice2, bob2, SigningPolicy.DIALOG_ESTABLISHING)
    a, b = first.steps[0].sealed.message, second.steps[0].sealed.message
    assert a.call_id != b.call_id
    assert a.from_.tag != b.from_.tag
    assert first.steps[0].sealed.dialog.key_id != second.steps[0].sealed.dialog.key_id


async def test_eavesdropper_view_of_a_cancelled_call(alice: Party, bob: Party) -> None:
    run = await run_cancelled_call(alice, bob, SigningPolicy.DIALOG_ESTABLISHING)
    wire = b"".join(s.sealed.message.to_bytes() for s in run.steps).lower()
    for secret in [b"alice@atlanta.example.com", CALL_ID.encode().lower(), b"v=0",
                   b"user-agent", b"server:", ALICE_TAG.encode(), BOB_TAG.encode()]:
        assert secret not in wire, secret
