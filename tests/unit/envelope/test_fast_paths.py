"""The quick parses and the memos of the envelope agree with the strict walk and with fresh computation.

``parse_signed_data`` and ``parse_auth_enveloped`` first try to read sipsec's one layout and
fall back to the full TLV walk; whatever the input, the result (or the error, its reason
and detail) must be the strict walk's. Mutated valid bodies — every byte flipped, bytes
inserted and dropped, truncations — are compared one by one.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import random
import zlib

import pytest
from sipsec.envelope import (
    Compression,
    EnvelopeBuilder,
    EnvelopeUsageError,
    RejectedEnvelope,
    SigningPolicy,
    cms,
    compression,
    is_secured,
    oids,
    seal,
)
from sipsec.envelope import _der as der
from sipsec.envelope.dialog import DialogKey, derive_dialog_key
from sipsec.sip import Request

from tests.unit.envelope.rfc3665 import ALICE, BOB, Pki, invite

ALICE_ID = cms.WireIdentity("sip:alice@atlanta.example.com", 700, 2592000)
BOB_ID = cms.WireIdentity("sip:bob@biloxi.example.com", 701, 2592000)


def _outcome(fn, data: bytes) -> tuple[object, ...]:  # type: ignore[no-untyped-def]
    try:
        return ("ok", fn(data))
    except RejectedEnvelope as exc:
        return ("error", type(exc), exc.reason, exc.status, str(exc))


def _strict_signed(data: bytes) -> cms.SignedContent:
    content, signer, when, nonce, digest, attrs, signature = cms._signed_data_fields_strict(bytes(data))
    if not hmac.compare_digest(digest, hashlib.sha256(content).digest()):
        raise cms.Forbidden("bad-signature", "message-digest mismatch")
    return cms.SignedContent(content, signer, when, nonce, attrs, signature)


def _mutations(data: bytes, rng: random.Random, count: int) -> list[bytes]:
    out = [data[:n] for n in range(0, len(data), 7)]  # truncations
    for _ in range(count):
        i = rng.randrange(len(data))
        kind = rng.randrange(4)
        if kind == 0:
            out.append(data[:i] + bytes([data[i] ^ (1 << rng.randrange(8))]) + data[i + 1:])
        elif kind == 1:
            out.append(data[:i] + bytes([rng.randrange(256)]) + data[i:])
        elif kind == 2:
            out.append(data[:i] + data[i + 1:])
        else:
            out.append(data[:i] + bytes([rng.randrange(256)]) + data[i + 1:])
    out += [data + b"\x00", b"", b"\x30", b"\x30\x00"]
    return out


def _signed_bodies() -> list[bytes]:
    bodies = []
    for when in (1_700_000_000, 2_600_000_000, 0):  # UTCTime, GeneralizedTime, 1970
        for content in (b"", b"x", cms.mime_wrap(b"INVITE sip:bob@biloxi.example.com SIP/2.0\r\n\r\n" * 4)):
            bodies.append(cms.build_signed_data(content, ALICE_ID, when, b"n" * 12, lambda attrs: b"s" * 96))
    return bodies


def test_signed_data_quick_parse_agrees_with_the_strict_walk() -> None:
    rng = random.Random(5)
    for body in _signed_bodies():
        assert cms._signed_data_fields(body) is not None  # the quick way reads what sipsec writes
        for data in [body, *_mutations(body, rng, 400)]:
            assert _outcome(cms.parse_signed_data, data) == _outcome(_strict_signed, data)


def test_signed_data_with_a_wrong_digest_is_still_a_bad_signature() -> None:
    body = cms.build_signed_data(b"content", ALICE_ID, 1_700_000_000, b"n" * 12, lambda attrs: b"s" * 96)
    i = body.index(hashlib.sha256(b"content").digest())
    forged = body[:i] + bytes(32) + body[i + 32:]
    with pytest.raises(RejectedEnvelope) as info:
        cms.parse_signed_data(forged)
    assert info.value.reason == "bad-signature"


def _aed_bodies() -> list[bytes]:
    cek = os.urandom(32)
    dialog_key, key_id = derive_dialog_key(os.urandom(32))
    kek = cms.kek_recipient_info(key_id, dialog_key, cek)
    kem = cms.kem_recipient_info(BOB_ID, b"c" * 96, os.urandom(32), cek)
    bodies = []
    for recipient in (kek, kem):
        for content_type in (oids.ID_SIGNED_DATA, oids.ID_DATA, oids.ID_CT_COMPRESSED_DATA):
            for content in (b"", b"y" * 300):
                bodies.append(cms.build_auth_enveloped(recipient, content_type, content, cek))
    return bodies


def test_auth_enveloped_quick_parse_agrees_with_the_strict_walk() -> None:
    rng = random.Random(7)
    for body in _aed_bodies():
        assert cms._auth_enveloped_fields(body) is not None
        for data in [body, *_mutations(body, rng, 300)]:
            assert _outcome(cms.parse_auth_enveloped, data) == _outcome(cms._parse_auth_enveloped_strict, data)


def test_identity_memo_returns_what_a_fresh_parse_returns() -> None:
    encoded = ALICE_ID.to_der()
    assert cms.WireIdentity.from_der(encoded) == ALICE_ID == cms.WireIdentity._from_der(encoded)
    assert cms.WireIdentity.from_der(encoded) == ALICE_ID  # remembered: same answer
    for bad in (encoded[:-1], encoded + b"\x00", encoded.replace(b"\x02\x02", b"\x02\x03", 1)):
        for _ in range(2):  # a failure is not remembered as a success
            with pytest.raises(RejectedEnvelope):
                cms.WireIdentity.from_der(bad)
    negative = der.seq(der.utf8("sip:a@b.c"), der.integer(-1), der.integer(5))
    with pytest.raises(RejectedEnvelope, match="bad identity"):
        cms.WireIdentity.from_der(negative)
    big = cms.WireIdentity("sip:" + "a" * 400 + "@b.c", 1, 5)  # too large to remember: parsed afresh
    assert cms.WireIdentity.from_der(big.to_der()) == big


def test_der_encoder_matches_the_definition() -> None:
    def length(n: int) -> bytes:
        if n < 0x80:
            return bytes([n])
        body = n.to_bytes((n.bit_length() + 7) // 8, "big")
        return bytes([0x80 | len(body)]) + body

    for n in [*range(0, 300), 0xFFFF, 0x10000, 0xFFFFFF, 0x1000000, 2**31]:
        assert der.length(n) == length(n)
    for n in [*range(-300, 70000, 7), 127, 128, 255, 256, 2**63, -(2**63)]:
        body = n.to_bytes(max(1, (n.bit_length() + 8) // 8), "big", signed=True)
        assert der.integer(n) == bytes([0x02]) + length(len(body)) + body
    for size in (0, 1, 0x7F, 0x80, 0xFF, 0x100, 0xFFFF, 0x10000):
        assert der.tlv(0x04, b"z" * size) == b"\x04" + length(size) + b"z" * size


def test_dialog_outer_names_are_remembered_per_instance_and_per_tag() -> None:
    key, key_id = derive_dialog_key(b"s" * 32)
    d = DialogKey(key, key_id, "call-1@x", "sip:a@x", "sip:b@y", True)

    def fresh(label: bytes, value: str, size: int) -> str:
        mac = hmac.new(key, label + b"\x00" + value.encode(), hashlib.sha256).digest()[:size]
        return base64.urlsafe_b64encode(mac).decode().rstrip("=")

    assert d.outer_call_id() == fresh(b"sipsec-v1 call-id", "call-1@x", 12)
    assert d.outer_call_id() == fresh(b"sipsec-v1 call-id", "call-1@x", 12)
    tags = [f"tag{i}" for i in range(20)]  # more than are remembered
    for _ in range(2):
        for tag in tags:
            assert d.outer_tag(tag) == fresh(b"sipsec-v1 tag", tag, 6)
    # another dialog (another key or Call-ID) never sees this one's names
    other = DialogKey(derive_dialog_key(b"t" * 32)[0], key_id, "call-1@x", "sip:a@x", "sip:b@y", True)
    assert other.outer_call_id() != d.outer_call_id() and other.outer_tag("tag1") != d.outer_tag("tag1")
    moved = DialogKey(key, key_id, "call-2@x", "sip:a@x", "sip:b@y", True)
    assert moved.outer_call_id() == fresh(b"sipsec-v1 call-id", "call-2@x", 12)
    # the memo is not part of the value
    assert d == DialogKey(key, key_id, "call-1@x", "sip:a@x", "sip:b@y", True)
    assert DialogKey.from_bytes(d.to_bytes()) == d
    assert d.reversed().outer_call_id() == d.outer_call_id()


def test_compression_dictionary_of_a_primer() -> None:
    primer = b"primer bytes " * 50
    content = b"hello primer bytes hello"
    stream = compression.compress(content, primer)
    # the dictionary is the static one followed by the primer (independent raw inflater)
    inflater = zlib.decompressobj(wbits=-15, zdict=compression.DICTIONARY_V1 + primer)
    assert inflater.decompress(stream) == content
    assert compression.decompress(stream, primer=primer) == content
    for wrong in (primer + b"x", b""):  # the stream names no dictionary: another one never gives the content
        try:
            assert compression.decompress(stream, primer=wrong) != content
        except RejectedEnvelope as exc:
            assert exc.reason == "malformed-cms"


def test_is_secured_reads_every_content_type_as_before() -> None:
    def fresh(value: str | None) -> bool:
        media = (value or "").split(";", 1)[0].strip().lower()
        if media != "application/pkcs7-mime" or value is None:
            return False
        params = {k.strip().lower(): v.strip().strip('"').lower()
                  for k, _, v in (p.partition("=") for p in value.split(";")[1:])}
        return params.get("smime-type") == "authenveloped-data"

    values = [None, "application/sdp", 'application/pkcs7-mime; smime-type=authenveloped-data; name="smime.p7m"',
              "Application/PKCS7-MIME;SMIME-TYPE=\"AuthEnveloped-Data\"", "application/pkcs7-mime",
              "application/pkcs7-mime; smime-type=enveloped-data", "application/pkcs7-mime;" + "x=y;" * 100
              + "smime-type=authenveloped-data", " application/pkcs7-mime ; smime-type = authenveloped-data "]
    for value in values * 2:  # asked twice: the remembered answer is the fresh one
        headers = [("Via", "SIP/2.0/UDP h;branch=z9hG4bK1")]
        if value is not None:
            headers.append(("Content-Type", value))
        message = Request("OPTIONS", "sip:a@b.c", headers)
        assert is_secured(message) is fresh(value), value


def test_the_one_call_seal_checks_its_arguments_as_the_builder_does() -> None:
    keys = Pki.create().keyring(ALICE)
    msg = invite()
    cases = [
        dict(keys="nope", to=BOB),
        dict(keys=keys, to=BOB, policy="every"),
        dict(keys=keys, to=BOB, compression="zlib"),
        dict(keys=keys, to=12),
        dict(keys=keys, to="tel:+1555"),
        dict(keys=keys, to=BOB, in_reply_to="INVITE"),
        dict(keys=keys, to=BOB, route=["<sip:p@x;lr>", ""]),
        dict(keys=keys, to=BOB, now=-1),
        dict(keys="nope", to=12, policy="x", now=-1),  # several wrong: the first in setter order
    ]

    def chain(keys, to, policy=SigningPolicy.EVERY_MESSAGE, compression=Compression.SIP_DICTIONARY,  # type: ignore[no-untyped-def]
              in_reply_to=None, route=None, now=None):
        b = EnvelopeBuilder().keys(keys).signing_policy(policy).compression(compression)
        b = b.recipient(to)
        if in_reply_to is not None:
            b = b.in_reply_to(in_reply_to)
        if route is not None:
            b = b.route(route)
        if now is not None:
            b = b.at(now)
        return b.seal(msg)

    for case in cases:
        with pytest.raises(EnvelopeUsageError) as one_call:
            seal(msg, **case)  # type: ignore[arg-type]
        with pytest.raises(EnvelopeUsageError) as builder:
            chain(**case)
        assert str(one_call.value) == str(builder.value), case
    assert isinstance(seal(msg, keys, BOB).message, Request)
