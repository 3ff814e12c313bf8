"""Forgeries and failures: every tampered region, wrong keys, expired periods, replays — each with its SIP answer."""

from __future__ import annotations

import os
import time
from collections.abc import Callable

import pytest
from prometheus_client import REGISTRY
from sipsec import ibc
from sipsec.envelope import (
    REASONS,
    DialogKey,
    Forbidden,
    Keyring,
    MalformedEnvelope,
    RejectedEnvelope,
    SigningPolicy,
    Undecipherable,
    _suite,
    cms,
    compression,
    oids,
    open_message,
    seal,
)
from sipsec.sip import Request, Response, parse_message

from tests.unit.envelope.rfc3665 import (
    ALICE,
    BOB,
    CALL_ID,
    Party,
    Pki,
    ack,
    bye,
    invite,
    ringing,
)

EVERY = SigningPolicy.EVERY_MESSAGE
ESTABLISHING = SigningPolicy.DIALOG_ESTABLISHING


def _rejections(reason: str) -> float:
    return REGISTRY.get_sample_value("sipsec_envelope_rejections_total", {"reason": reason}) or 0.0


async def _expect(party: Party, outer: Request | Response | bytes, status: int, reason: str,
                  *, policy: SigningPolicy = EVERY, now: float | None = None) -> RejectedEnvelope:
    msg = parse_message(outer) if isinstance(outer, bytes) else outer
    before = _rejections(reason)
    with pytest.raises(RejectedEnvelope) as info:
        await open_message(msg, party.keys, party.dialogs, party.replay, policy=policy, now=now)
    err = info.value
    assert (err.status, err.reason) == (status, reason), str(err)
    assert REASONS[err.reason] == err.status
    assert _rejections(reason) == before + 1
    return err


async def _open(party: Party, outer: Request | Response, policy: SigningPolicy = EVERY,
                now: float | None = None):
    return await open_message(parse_message(outer.to_bytes()), party.keys, party.dialogs,
                              party.replay, policy=policy, now=now)


async def _established(alice: Party, bob: Party, policy: SigningPolicy = EVERY):
    """Alice's INVITE opened by Bob; returns (alice's dialog, bob's dialog, outer INVITE)."""
    s = seal(invite(), alice.keys, BOB, policy)
    await alice.dialogs.put(s.dialog, 3600, time.time())
    opened = await _open(bob, s.message, policy)
    return s.dialog, opened.dialog, opened.outer


def _flip(data: bytes, index: int) -> bytes:
    return data[:index] + bytes([data[index] ^ 0x01]) + data[index + 1 :]


def _with_body(outer: Request | Response, body: bytes) -> bytes:
    m = outer.copy()
    m.body = body
    return m.to_bytes()


def _flip_in_body(outer: Request | Response, needle: bytes, offset: int = 0) -> bytes:
    body = outer.body
    at = body.index(needle)
    return _with_body(outer, _flip(body, at + offset))


# --- outer headers that are bound --------------------------------------------------------

BOUND_EDITS: list[tuple[str, Callable[[bytes], bytes]]] = [
    ("request-uri", lambda b: b.replace(b"INVITE sip:bob@", b"INVITE sip:bxb@", 1)),
    ("to-uri", lambda b: b.replace(b"t: <sip:bob@", b"t: <sip:bxb@", 1)),
    ("cseq-number", lambda b: b.replace(b"CSeq: 1 INVITE", b"CSeq: 2 INVITE", 1)),
    ("call-id", lambda b: b.replace(b"\r\ni: ", b"\r\ni: x", 1)),
    ("from-tag", lambda b: b.replace(b";tag=", b";tag=x", 1)),
    ("from-uri", lambda b: b.replace(b"sip:anonymous@anonymous.invalid", b"sip:eve@anonymous.invalid", 1)),
    ("contact", lambda b: b.replace(b"m: <sip:alice@client", b"m: <sip:alice@evil", 1)),
]


@pytest.mark.parametrize("edit", BOUND_EDITS, ids=[e[0] for e in BOUND_EDITS])
async def test_tampered_bound_outer_header_of_first_request_is_403(alice: Party, bob: Party, edit) -> None:
    s = seal(invite(), alice.keys, BOB)
    tampered = edit[1](s.message.to_bytes())
    assert tampered != s.message.to_bytes()
    await _expect(bob, tampered, 403, "outer-mismatch")


async def test_tampered_to_tag_and_status_of_response_are_403(alice: Party, bob: Party) -> None:
    _, bob_dialog, outer_inv = await _established(alice, bob)
    s = seal(ringing(), bob.keys, bob_dialog, EVERY, in_reply_to=outer_inv)
    raw = s.message.to_bytes()
    tag = s.message.to.tag
    assert tag is not None
    await _expect(alice, raw.replace(f";tag={tag}".encode(), b";tag=zzzzzzzzzzzz"), 403, "outer-mismatch")
    await _expect(alice, raw.replace(b"SIP/2.0 180 Ringing", b"SIP/2.0 183 Ringing"), 403, "outer-mismatch")
    # the untouched response still opens: the failures consumed nothing
    assert (await _open(alice, s.message)).message.to_bytes() == ringing().to_bytes()


async def test_unbound_routing_headers_may_change_in_transit(alice: Party, bob: Party) -> None:
    s = seal(invite(), alice.keys, BOB)
    raw = s.message.to_bytes().replace(b"Max-Forwards: 70", b"Max-Forwards: 69")
    raw = raw.replace(b"v: SIP/2.0/TCP", b"v: SIP/2.0/TCP proxy.atlanta.example.com;branch=z9hG4bKp1\r\nv: SIP/2.0/TCP", 1)
    opened = await open_message(parse_message(raw), bob.keys, bob.dialogs, bob.replay)
    assert opened.message.to_bytes() == invite().to_bytes()
    assert len(opened.outer.via) == 2


# --- the CMS framing, ciphertext, tag, keys ------------------------------------------------

async def test_cms_framing_bytes_are_400(alice: Party, bob: Party) -> None:
    s = seal(invite(), alice.keys, BOB)
    body = s.message.body
    await _expect(bob, _with_body(s.message, _flip(body, 0)), 400, "malformed-cms")  # outer tag
    await _expect(bob, _with_body(s.message, _flip(body, 3)), 400, "malformed-cms")  # a length
    await _expect(bob, _with_body(s.message, body + b"\x00"), 400, "malformed-cms")  # trailing
    ct = bytes.fromhex("060b2a864886f70d0109100117")  # id-ct-authEnvelopedData
    await _expect(bob, _flip_in_body(s.message, ct, 12), 400, "malformed-cms")
    ori = bytes.fromhex("060b2a864886f70d0109100d03")  # id-ori-kem
    await _expect(bob, _flip_in_body(s.message, ori, 12), 400, "unsupported-algorithm")
    gcm = bytes.fromhex("060960864801650304012e")  # id-aes256-GCM
    await _expect(bob, _flip_in_body(s.message, gcm, 10), 400, "unsupported-algorithm")


async def test_ciphertext_tag_and_nonce_bytes_are_493(alice: Party, bob: Party) -> None:
    s = seal(invite(), alice.keys, BOB)
    env = cms.parse_auth_enveloped(s.message.body)
    await _expect(bob, _flip_in_body(s.message, env.ciphertext, len(env.ciphertext) // 2), 493, "decrypt-failed")
    await _expect(bob, _flip_in_body(s.message, env.mac, 11), 493, "decrypt-failed")
    await _expect(bob, _flip_in_body(s.message, env.nonce, 0), 493, "decrypt-failed")
    assert isinstance(env.recipient, cms.KemRecipient)
    await _expect(bob, _flip_in_body(s.message, env.recipient.encrypted_key, 3), 493, "unwrap-failed")
    await _expect(bob, _flip_in_body(s.message, env.recipient.kemct, 100), 493, "kem-failed")
    # and the genuine message still opens afterwards
    assert (await _open(bob, s.message)).first


async def test_dialog_key_message_regions_are_493(alice: Party, bob: Party) -> None:
    alice_dialog, _, _ = await _established(alice, bob)
    s = seal(ack(), alice.keys, alice_dialog)
    env = cms.parse_auth_enveloped(s.message.body)
    assert isinstance(env.recipient, cms.KekRecipient)
    await _expect(bob, _flip_in_body(s.message, env.recipient.key_id, 0), 493, "unknown-dialog")
    await _expect(bob, _flip_in_body(s.message, env.recipient.encrypted_key, 20), 493, "unwrap-failed")
    await _expect(bob, _flip_in_body(s.message, env.ciphertext, 7), 493, "decrypt-failed")
    await _expect(bob, _flip_in_body(s.message, env.mac, 0), 493, "decrypt-failed")


# --- signature and signed attributes (an insider holding the dialog key re-encrypts) -------

def _signed_der(outer: Request | Response, dialog: DialogKey) -> bytes:
    """The SignedData inside a sealed message: decrypted with the dialog key and decompressed."""
    env = cms.parse_auth_enveloped(outer.body)
    assert isinstance(env.recipient, cms.KekRecipient)
    content_type, content = cms.open_content(
        env.content_type, cms.decrypt_content(env, cms.kek_unwrap(env.recipient, dialog.key)), dialog.primer)
    assert content_type == oids.ID_SIGNED_DATA
    return content


def _reseal(outer: Request | Response, dialog: DialogKey, mutate: Callable[[bytes], bytes]) -> bytes:
    """Decrypt with the dialog key, mutate the SignedData DER, re-compress and re-encrypt: GCM passes, the signature must not."""
    cek = os.urandom(32)
    content = cms.build_compressed_data(oids.ID_SIGNED_DATA, mutate(_signed_der(outer, dialog)), dialog.primer)
    body = cms.build_auth_enveloped(
        cms.kek_recipient_info(dialog.key_id, dialog.key, cek), oids.ID_CT_COMPRESSED_DATA, content, cek
    )
    return _with_body(outer, body)


async def test_signature_and_signed_attribute_bytes_are_403(alice: Party, bob: Party) -> None:
    alice_dialog, _, _ = await _established(alice, bob)
    s = seal(ack(), alice.keys, alice_dialog)
    signed_der = _signed_der(s.message, alice_dialog)
    parsed = cms.parse_signed_data(signed_der)

    def flip_at(needle: bytes, offset: int) -> Callable[[bytes], bytes]:
        return lambda der: _flip(der, der.index(needle) + offset)

    await _expect(bob, _reseal(s.message, alice_dialog, flip_at(parsed.signature, len(parsed.signature) - 5)),
                  403, "bad-signature")
    await _expect(bob, _reseal(s.message, alice_dialog, flip_at(parsed.nonce, 4)), 403, "bad-signature")
    await _expect(bob, _reseal(s.message, alice_dialog, flip_at(b"sip:alice@atlanta", 4)), 403, "bad-signature")
    # the content itself: the message-digest attribute no longer matches
    await _expect(bob, _reseal(s.message, alice_dialog, flip_at(b"ACK sip:", 1)), 403, "bad-signature")
    # dropping the signature (re-encrypting the bare content) meets the receiver's policy check
    await _expect(
        bob,
        _with_body(s.message, _rebuild_unsigned(alice_dialog, cms.mime_wrap(ack().to_bytes()))),
        403, "unsigned",
    )
    assert (await _open(bob, s.message)).signer is not None


async def test_flipped_deflate_bits_under_a_valid_encryption_never_open(alice: Party, bob: Party) -> None:
    """Raw DEFLATE has no checksum (GCM and the signature check integrity): an insider who
    flips bits of the compressed stream and re-encrypts gets a 400 or 403, never an opened message."""
    alice_dialog, _, _ = await _established(alice, bob)
    s = seal(ack(), alice.keys, alice_dialog)
    env = cms.parse_auth_enveloped(s.message.body)
    assert isinstance(env.recipient, cms.KekRecipient)
    compressed = cms.decrypt_content(env, cms.kek_unwrap(env.recipient, alice_dialog.key))
    stream = compression.compress(_signed_der(s.message, alice_dialog), alice_dialog.primer)
    at = compressed.index(stream)
    outcomes = set()
    # not the last byte: its unused padding bits after the final block are ignored by inflate
    # (the same content, which the signature covers: test_fuzz.py allows exactly that)
    for offset in range(0, len(stream) - 1, max(1, len(stream) // 24)):
        for bit in (0x01, 0x10):
            cek = os.urandom(32)
            bad = compressed[: at + offset] + bytes([compressed[at + offset] ^ bit]) + compressed[at + offset + 1 :]
            body = cms.build_auth_enveloped(cms.kek_recipient_info(alice_dialog.key_id, alice_dialog.key, cek),
                                            oids.ID_CT_COMPRESSED_DATA, bad, cek)
            with pytest.raises(RejectedEnvelope) as info:
                await open_message(parse_message(_with_body(s.message, body)), bob.keys, bob.dialogs, bob.replay)
            assert info.value.status in (400, 403), str(info.value)
            outcomes.add(info.value.reason)
    assert outcomes <= {"malformed-cms", "malformed-inner", "bad-signature"}, outcomes
    assert (await _open(bob, s.message)).signer is not None  # the genuine message still opens


async def test_substituted_signer_identity_in_the_sid_is_403(pki: Pki, alice: Party, bob: Party) -> None:
    """The sid is not signed: a dialog-key holder who swaps it must still fail the signature."""
    alice_dialog, _, _ = await _established(alice, bob)
    s = seal(ack(), alice.keys, alice_dialog)
    parsed = cms.parse_signed_data(_signed_der(s.message, alice_dialog))
    current = pki.atlanta.policy.current(time.time())
    length = pki.atlanta.policy.length_s
    for other in (cms.WireIdentity(ALICE, current - 1, length),  # the same AOR, previous period
                  cms.WireIdentity("sip:dave@atlanta.example.com", current, length)):
        assert other != parsed.signer

        def swap(_: bytes, other: cms.WireIdentity = other) -> bytes:
            return cms.assemble_signed_data(parsed.content, other, parsed.signed_attrs, parsed.signature)

        await _expect(bob, _reseal(s.message, alice_dialog, swap), 403, "bad-signature")
    assert (await _open(bob, s.message)).signer is not None


def _rebuild_unsigned(dialog: DialogKey, entity: bytes) -> bytes:
    cek = os.urandom(32)
    return cms.build_auth_enveloped(cms.kek_recipient_info(dialog.key_id, dialog.key, cek),
                                    oids.ID_DATA, entity, cek)


async def test_dialog_key_holder_cannot_sign_as_the_other_party(alice: Party, bob: Party) -> None:
    alice_dialog, bob_dialog, _ = await _established(alice, bob)
    # Bob holds the dialog key; he forges an ACK "from Alice", signed with his own key
    forged = ack()
    bob_key = bob.keys.signing_key(time.time())
    ident = bob_key.identity
    signed = cms.build_signed_data(
        cms.mime_wrap(forged.to_bytes()),
        cms.WireIdentity(ident.aor, ident.period, ident.period_length_s),
        int(time.time()), os.urandom(cms.NONCE_BYTES), lambda d: _suite.compact(ibc.sign(bob_key, d)),
    )
    cek = os.urandom(32)
    body = cms.build_auth_enveloped(cms.kek_recipient_info(bob_dialog.key_id, bob_dialog.key, cek),
                                    oids.ID_SIGNED_DATA, signed, cek)
    outer = seal(ack(), alice.keys, alice_dialog).message
    await _expect(bob, _with_body(outer, body), 403, "signer-mismatch")


async def test_garbage_inner_content_is_400(alice: Party, bob: Party) -> None:
    alice_dialog, _, _ = await _established(alice, bob)
    outer = seal(ack(), alice.keys, alice_dialog, ESTABLISHING).message
    await _expect(bob, _with_body(outer, _rebuild_unsigned(alice_dialog, b"Content-Type: text/plain\r\n\r\nhi")),
                  400, "malformed-inner", policy=ESTABLISHING)
    await _expect(bob, _with_body(outer, _rebuild_unsigned(alice_dialog, cms.mime_wrap(b"NOT SIP\r\n\r\n"))),
                  400, "malformed-inner", policy=ESTABLISHING)


# --- keys, periods, freshness, dialogs -----------------------------------------------------

async def test_wrong_recipient_is_493(alice: Party, carol: Party) -> None:
    s = seal(invite(), alice.keys, BOB)
    await _expect(carol, s.message, 493, "wrong-recipient")


async def test_message_encrypted_to_an_expired_period_is_493(pki: Pki, alice: Party, bob: Party) -> None:
    current = pki.biloxi.policy.current(pki.now)
    old = pki.biloxi.identity(BOB, ibc.Purpose.ENC, current - 2)
    s = seal(invite(), alice.keys, old)
    await _expect(bob, s.message, 493, "key-period")


async def test_signature_from_an_expired_period_is_403(pki: Pki, bob: Party) -> None:
    length = pki.atlanta.policy.length_s
    then = pki.now - 2 * length
    old_alice = Party(pki.keyring(ALICE, periods=(pki.atlanta.policy.current(then),)))
    s = seal(invite(), old_alice.keys, BOB, now=then)
    # encrypted to Bob's key of that old period too: give Bob that key so only the signer check fails
    bob_old = Party(Keyring.create(
        BOB, sig_keys=bob.keys.sig_keys,
        enc_keys=bob.keys.enc_keys + pki.keyring(BOB, periods=(pki.biloxi.policy.current(then),)).enc_keys,
        domains=[pki.atlanta, pki.biloxi],
    ))
    await _expect(bob_old, s.message, 403, "signer-period")


async def test_stale_signing_time_is_403(alice: Party, bob: Party) -> None:

    now = time.time()
    s = seal(invite(), alice.keys, BOB, now=now - 1000)
    await _expect(bob, s.message, 403, "stale", now=now)


async def test_replayed_messages_are_403(alice: Party, bob: Party) -> None:
    s = seal(invite(), alice.keys, BOB, ESTABLISHING)
    await alice.dialogs.put(s.dialog, 3600, time.time())
    await _open(bob, s.message, ESTABLISHING)
    await _expect(bob, s.message, 403, "replay", policy=ESTABLISHING)
    # an unsigned dialog-key message is also caught (by its GCM nonce)
    a = seal(ack(), alice.keys, s.dialog, ESTABLISHING)
    assert not a.signed
    await _open(bob, a.message, ESTABLISHING)
    await _expect(bob, a.message, 403, "replay", policy=ESTABLISHING)


async def test_dialog_key_used_on_another_dialog_is_403(alice: Party, bob: Party) -> None:
    first, _, _ = await _established(alice, bob)
    # a second dialog between the same two parties
    s2 = seal(invite("other-call@atlanta.example.com"), alice.keys, BOB)
    await _open(bob, s2.message)
    # a BYE of dialog 2 sealed under dialog 1's key (what a confused or malicious peer could send)
    misused = DialogKey(first.key, first.key_id, "other-call@atlanta.example.com",
                        first.local_aor, first.peer_aor, True)
    s = seal(ack("other-call@atlanta.example.com"), alice.keys, misused)
    await _expect(bob, s.message, 403, "dialog-mismatch")


async def test_receiver_policy_requires_signatures(alice: Party, bob: Party) -> None:
    alice_dialog, _, _ = await _established(alice, bob, ESTABLISHING)
    s = seal(ack(), alice.keys, alice_dialog, ESTABLISHING)
    assert not s.signed
    await _expect(bob, s.message, 403, "unsigned", policy=EVERY)


async def test_signer_from_untrusted_domain_is_403(pki: Pki, alice: Party) -> None:
    isolated = Party(Keyring.create(BOB, sig_keys=pki.keyring(BOB).sig_keys,
                                    enc_keys=pki.keyring(BOB).enc_keys, domains=[pki.biloxi]))
    await _expect(isolated, seal(invite(), alice.keys, BOB).message, 403, "unknown-domain")


async def test_plain_message_is_400_not_secured(bob: Party) -> None:
    await _expect(bob, invite(), 400, "not-secured")


async def test_response_to_unknown_dialog_is_493(alice: Party, bob: Party, pki: Pki) -> None:
    _, bob_dialog, outer_inv = await _established(alice, bob)
    s = seal(ringing(), bob.keys, bob_dialog, EVERY, in_reply_to=outer_inv)
    stranger = Party(pki.keyring(ALICE))  # Alice's keys, but a UA that never sent that INVITE
    await _expect(stranger, s.message, 493, "unknown-dialog")


def test_every_reason_maps_to_its_class() -> None:
    for reason, status in REASONS.items():
        cls = {400: MalformedEnvelope, 403: Forbidden, 493: Undecipherable}[status]
        err = cls(reason)
        assert err.status == status and err.reason == reason
        assert str(status) in str(err)


async def test_bye_from_callee_opens_and_forged_outer_call_id_of_it_fails(alice: Party, bob: Party) -> None:
    alice_dialog, bob_dialog, _ = await _established(alice, bob)
    s = seal(bye(), bob.keys, bob_dialog)
    raw = s.message.to_bytes().replace(s.message.call_id.encode(), b"0" * 20)
    await _expect(alice, raw, 403, "outer-mismatch")
    opened = await _open(alice, s.message)
    assert opened.message.to_bytes() == bye().to_bytes()
    assert opened.dialog.call_id == CALL_ID and opened.dialog.local_is_caller
