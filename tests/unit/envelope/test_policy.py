"""Signing policy, capability headers, the plain-fallback decision and the sealing builder's misuse checks."""

from __future__ import annotations

import pytest
from sipsec.envelope import (
    EnvelopeBuilder,
    EnvelopeUsageError,
    Fallback,
    SecurityPolicy,
    SigningPolicy,
    advertise,
    capability_headers,
    fallback_after,
    is_secured,
    needs_signature,
    peer_accepts_secured,
    seal,
)
from sipsec.sip import Request

from tests.unit.envelope.rfc3665 import (
    BOB,
    Party,
    ack,
    bye,
    cancel,
    invite,
    ok_bye,
    ok_invite,
    ringing,
    trying,
)


def test_signing_policy_decides_per_message() -> None:
    every, establishing = SigningPolicy.EVERY_MESSAGE, SigningPolicy.DIALOG_ESTABLISHING
    for m in (invite(), trying(), ringing(), ok_invite(), ack(), bye(), ok_bye(), cancel()):
        assert needs_signature(every, m)
    assert [needs_signature(establishing, m) for m in
            (invite(), cancel(), trying(), ringing(), ok_invite(), ack(), bye(), ok_bye())] == [
        True, True, False, True, True, False, False, False]


def test_capability_headers_and_detection() -> None:
    assert capability_headers() == [("Accept", "application/pkcs7-mime, application/sdp"),
                                    ("Supported", "sipsec")]
    m = invite()
    assert not peer_accepts_secured(m)  # it says "Supported: replaces, timer" only
    advertise(m)
    assert peer_accepts_secured(m)
    assert m.headers.get("Supported") == "replaces, timer, sipsec"
    advertise(m)  # idempotent
    assert m.headers.get_all("Supported").count("sipsec") == 1
    assert "application/pkcs7-mime" in (m.headers.get("Accept") or "")
    assert not is_secured(m)


@pytest.mark.parametrize(("policy", "status", "retried", "expected"), [
    (SecurityPolicy.PREFER_SECURE, 493, False, Fallback.RETRY_PLAIN),
    (SecurityPolicy.PREFER_SECURE, 415, False, Fallback.RETRY_PLAIN),
    (SecurityPolicy.PREFER_SECURE, 420, False, Fallback.RETRY_PLAIN),
    (SecurityPolicy.PREFER_SECURE, 493, True, Fallback.FAIL),
    (SecurityPolicy.SECURE_ONLY, 493, False, Fallback.FAIL),
    (SecurityPolicy.SECURE_ONLY, 415, False, Fallback.FAIL),
    (SecurityPolicy.SECURE_ONLY, 486, False, Fallback.NONE),
    (SecurityPolicy.PREFER_SECURE, 200, False, Fallback.NONE),
    (SecurityPolicy.PREFER_SECURE, 403, False, Fallback.NONE),
])
def test_fallback_decision(policy: SecurityPolicy, status: int, retried: bool, expected: Fallback) -> None:
    assert fallback_after(policy, status, already_retried=retried) is expected


def test_plain_policy_never_falls_back() -> None:
    with pytest.raises(ValueError):
        fallback_after(SecurityPolicy.PLAIN, 493)


def test_builder_is_immutable_and_refuses_double_setting(alice: Party) -> None:
    base = EnvelopeBuilder()
    with_keys = base.keys(alice.keys)
    assert base != with_keys and base._keys is None
    with pytest.raises(EnvelopeUsageError, match="already set"):
        with_keys.keys(alice.keys)
    with pytest.raises(EnvelopeUsageError, match="already set"):
        with_keys.recipient(BOB).recipient(BOB)
    with pytest.raises(EnvelopeUsageError):
        base.recipient(12)  # type: ignore[arg-type]
    with pytest.raises(EnvelopeUsageError):
        base.at(-1)


def test_seal_misuse_raises_before_any_cryptography(alice: Party, bob: Party) -> None:
    first = seal(invite(), alice.keys, BOB)
    cases = [
        lambda: EnvelopeBuilder().recipient(BOB).seal(invite()),  # no keys
        lambda: EnvelopeBuilder().keys(alice.keys).seal(invite()),  # neither recipient nor dialog
        lambda: EnvelopeBuilder().keys(alice.keys).recipient(BOB).dialog(first.dialog).seal(invite()),
        lambda: seal(ringing(), bob.keys, BOB),  # a response to a recipient
        lambda: seal(ringing(), alice.keys, first.dialog),  # a response without in_reply_to
        lambda: seal(ack(), alice.keys, BOB),  # an in-dialog request to a recipient
        lambda: seal(invite(), bob.keys, BOB),  # From is not the keyring's AOR
        lambda: seal(invite(), alice.keys, "sip:carol@biloxi.example.com"),  # recipient is not To
        lambda: seal(invite(), alice.keys, "sip:dave@chicago.example.com"),  # untrusted domain
        lambda: seal(invite("another@atlanta.example.com"), alice.keys, first.dialog),  # other dialog
        lambda: seal(invite(), alice.keys, BOB, in_reply_to=invite()),  # in_reply_to on a request
    ]
    for case in cases:
        with pytest.raises(EnvelopeUsageError):
            case()
    no_tag = invite()
    no_tag.headers.set("From", "<sip:alice@atlanta.example.com>")
    with pytest.raises(EnvelopeUsageError):
        seal(no_tag, alice.keys, BOB)


def test_sealed_outer_is_a_request_with_the_inner_request_line(alice: Party) -> None:
    sealed = seal(invite(), alice.keys, BOB, route=["<sip:proxy.atlanta.example.com;lr>"])
    assert isinstance(sealed.message, Request)
    assert is_secured(sealed.message)
    assert sealed.message.headers.get_all("Route") == ["<sip:proxy.atlanta.example.com;lr>"]
    assert repr(sealed.dialog).count("key=") == 0  # the key never shows in repr


async def test_rejection_answers_the_outer_request(alice: Party, bob: Party) -> None:
    from sipsec.envelope import (
        RejectedEnvelope,
        open_message,
        rejection_response,
        unsupported_media_response,
    )

    outer = seal(invite(), alice.keys, BOB).message
    stranger = Party(alice.keys)  # Alice's own keys: the INVITE is not for her
    try:
        await open_message(outer, stranger.keys, stranger.dialogs, stranger.replay)
    except RejectedEnvelope as exc:
        answer = rejection_response(outer, exc.status, exc.phrase, to_tag="x1")
    else:
        raise AssertionError("opened a message for another AOR")
    assert (answer.status, answer.reason) == (493, "Undecipherable")
    assert answer.call_id == outer.call_id and answer.cseq == outer.cseq
    assert answer.to.tag == "x1" and answer.via[0].branch == outer.via[0].branch
    assert "application/pkcs7-mime" in (answer.headers.get("Accept") or "")
    assert "wrong-recipient" not in answer.to_bytes().decode()  # no detail on the wire
    plain_ua = unsupported_media_response(outer, to_tag="x2")
    assert plain_ua.status == 415 and plain_ua.headers.get("Accept") == "application/sdp"
    # the caller's decision after either answer
    assert fallback_after(SecurityPolicy.PREFER_SECURE, answer.status) is Fallback.RETRY_PLAIN
    assert fallback_after(SecurityPolicy.SECURE_ONLY, plain_ua.status) is Fallback.FAIL
