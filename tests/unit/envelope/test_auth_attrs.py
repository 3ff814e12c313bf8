"""Authenticated attributes of the AuthEnvelopedData (RFC 5083 §2.1, §2.2): the content-type
attribute is present, is GCM's associated data, and a body without it or with another one is refused."""

from __future__ import annotations

import os
import time

import pytest
from asn1crypto import cms as asn1_cms
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sipsec.envelope import (
    Compression,
    MalformedEnvelope,
    SigningPolicy,
    cms,
    oids,
    open_message,
    seal,
)
from sipsec.envelope import _der as der
from sipsec.sip import Request, Response, parse_message

from tests.unit.envelope.rfc3665 import BOB, Party, ack, invite


def _later(alice: Party, policy: SigningPolicy = SigningPolicy.EVERY_MESSAGE,
           compression: Compression = Compression.SIP_DICTIONARY, call_id: str = "attrs@a") -> tuple[bytes, bytes]:
    """(a dialog message's body, the dialog key) from Alice to Bob."""
    first = seal(invite(call_id), alice.keys, BOB)
    later = seal(ack(call_id), alice.keys, first.dialog, policy, compression=compression)
    return bytes(later.message.body), first.dialog.key


def _cek(body: bytes, dialog_key: bytes) -> bytes:
    env = cms.parse_auth_enveloped(body)
    assert isinstance(env.recipient, cms.KekRecipient)
    return cms.kek_unwrap(env.recipient, dialog_key)


def _gcm_decrypt(cek: bytes, nonce: bytes, ciphertext: bytes, tag: bytes, aad: bytes | None) -> bytes:
    """AES-256-GCM decryption with the 12-byte tag (RFC 5084's default ICV length), done here
    with the library primitive, independently of sipsec.envelope.cms."""
    assert len(tag) == 12
    decryptor = Cipher(algorithms.AES(cek), modes.GCM(nonce, tag, min_tag_length=12)).decryptor()
    if aad is not None:
        decryptor.authenticate_additional_data(aad)
    return decryptor.update(ciphertext) + decryptor.finalize()


def _rebuild(body: bytes, dialog_key: bytes, attrs_field: bytes | None, aad: bytes | None,
             content_type: str | None = None) -> bytes:
    """The same message re-encrypted under its CEK with ``aad`` and written with ``attrs_field``
    (None: no authAttrs) — what a sender with other attributes would have written."""
    env = cms.parse_auth_enveloped(body)
    assert isinstance(env.recipient, cms.KekRecipient)
    cek = _cek(body, dialog_key)
    content = cms.decrypt_content(env, cek)
    nonce = os.urandom(12)
    sealed = AESGCM(cek).encrypt(nonce, content, aad)  # the 12-byte tag is the first 12 of these 16
    ctype = content_type or env.content_type
    eci = der.seq(der.oid(ctype), der.seq(der.oid(oids.ID_AES256_GCM), der.seq(der.octets(nonce))),
                  der.ctx(0, sealed[:-16], constructed=False))
    aed = der.seq(der.integer(0), der.set_of(cms._kek_ri(env.recipient.key_id, env.recipient.encrypted_key)),
                  eci, attrs_field or b"", der.octets(sealed[-16:-4]))
    return der.seq(der.oid(oids.ID_CT_AUTH_ENVELOPED_DATA), der.ctx(0, aed))


@pytest.mark.parametrize(("policy", "compression", "content_type"), [
    (SigningPolicy.EVERY_MESSAGE, Compression.SIP_DICTIONARY, oids.ID_CT_COMPRESSED_DATA),
    (SigningPolicy.EVERY_MESSAGE, Compression.NONE, oids.ID_SIGNED_DATA),
    (SigningPolicy.DIALOG_ESTABLISHING, Compression.NONE, oids.ID_DATA),
])
def test_auth_attrs_name_the_content_type_and_are_the_gcm_aad(
    alice: Party, policy: SigningPolicy, compression: Compression, content_type: str,
) -> None:
    body, dialog_key = _later(alice, policy, compression, f"attrs-{content_type}@a")
    env = cms.parse_auth_enveloped(body)
    assert env.content_type == content_type
    # asn1crypto, the independent parser: authAttrs [1] holds exactly the content-type attribute
    aed = asn1_cms.ContentInfo.load(body)["content"]
    attrs = aed["auth_attrs"]
    assert len(attrs) == 1 and attrs[0]["type"].native == "content_type"
    assert attrs[0]["values"][0].dotted == content_type == aed["auth_encrypted_content_info"]["content_type"].dotted
    # on the wire [1] IMPLICIT; the associated data is the same DER with the SET OF tag (RFC 5083 §2.2)
    aad = cms.auth_attributes(content_type)
    assert aad[0] == 0x31 and attrs.dump()[0] == 0xA1 and attrs.dump()[1:] == aad[1:]
    cek = _cek(body, dialog_key)
    _gcm_decrypt(cek, env.nonce, env.ciphertext, env.mac, aad)
    with pytest.raises(InvalidTag):
        _gcm_decrypt(cek, env.nonce, env.ciphertext, env.mac, None)


def test_missing_or_altered_auth_attrs_are_refused(alice: Party) -> None:
    body, key = _later(alice, call_id="attrs-2@a")
    content_type = cms.parse_auth_enveloped(body).content_type
    field = b"\xa1" + cms.auth_attributes(content_type)[1:]
    # the unmodified layout, rebuilt, still parses (the helper writes what sipsec writes)
    assert cms.parse_auth_enveloped(_rebuild(body, key, field, cms.auth_attributes(content_type))).content_type \
        == content_type
    cases = {
        "missing": _rebuild(body, key, None, None),
        # a content-type attribute that does not match the EncryptedContentInfo (and is its AAD)
        "mismatched": _rebuild(body, key, b"\xa1" + cms.auth_attributes(oids.ID_DATA)[1:],
                               cms.auth_attributes(oids.ID_DATA)),
        # the matching attribute plus another one
        "extra": _rebuild(body, key, _with_extra(content_type), b"\x31" + _with_extra(content_type)[1:]),
        # the right attributes, but one byte of them altered after encryption
        "altered": body.replace(field, field[:-1] + bytes([field[-1] ^ 1])),
    }
    for name, data in cases.items():
        with pytest.raises(MalformedEnvelope) as info:
            cms.parse_auth_enveloped(data)
        assert info.value.reason == "malformed-cms" and info.value.status == 400, name
    # a body whose content type is id-data but authAttrs say compressed: refused too
    with pytest.raises(MalformedEnvelope):
        cms.parse_auth_enveloped(_rebuild(body, key, field, cms.auth_attributes(content_type), oids.ID_DATA))


def _with_extra(content_type: str) -> bytes:
    extra = der.seq(der.oid(oids.ID_SIGNING_TIME), der.set_of(der.signing_time(int(time.time()))))
    ct = der.seq(der.oid(oids.ID_CONTENT_TYPE), der.set_of(der.oid(content_type)))
    return b"\xa1" + der.set_of(ct, extra)[1:]


async def test_open_refuses_a_message_without_auth_attrs(alice: Party, bob: Party) -> None:
    now = time.time()
    first = seal(invite("attrs-3@a"), alice.keys, BOB, now=now)
    await open_message(first.message, bob.keys, bob.dialogs, bob.replay, now=now)
    later = seal(ack("attrs-3@a"), alice.keys, first.dialog, now=now).message
    stripped = parse_message(later.to_bytes())
    assert isinstance(stripped, Request | Response)
    stripped.body = _rebuild(bytes(later.body), first.dialog.key, None, None)
    with pytest.raises(MalformedEnvelope) as info:
        await open_message(stripped, bob.keys, bob.dialogs, bob.replay, now=now)
    assert info.value.reason == "malformed-cms"
    # the message as sealed opens
    opened = await open_message(later, bob.keys, bob.dialogs, bob.replay, now=now)
    assert opened.signer is not None
