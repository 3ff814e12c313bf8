"""The CMS DER layer: real RFC 5083/5652/9629 structures that openssl parses, strict parsing, RFC 3394 wrap."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest
from asn1crypto import cms as asn1_cms
from cryptography.hazmat.primitives.keywrap import aes_key_wrap
from hypothesis import given, settings
from hypothesis import strategies as st
from sipsec import ibc
from sipsec.envelope import (
    MalformedEnvelope,
    SigningPolicy,
    Undecipherable,
    asn1,
    cms,
    oids,
    seal,
    sign_register,
)
from sipsec.envelope.dialog import derive_dialog_key
from sipsec.sip import parse_message

from tests.unit.envelope.rfc3665 import ALICE, BOB, Party, Pki, ack, invite

ALICE_ID = cms.WireIdentity(ALICE, 700, 2592000)


def _tlv(tag: int, content: bytes) -> bytes:
    n = len(content)
    if n < 0x80:
        return bytes([tag, n]) + content
    size = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(size)]) + size + content


def _openssl(*args: str, data: bytes, tmp_path: Path) -> str:
    path = tmp_path / f"body-{os.urandom(4).hex()}.der"
    path.write_bytes(data)
    proc = subprocess.run(["openssl", *args, "-inform", "DER", "-in", str(path)],
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def _openssl_cms_print(body: bytes, tmp_path: Path) -> str:
    """``openssl cms -cmsout -print`` of an AuthEnvelopedData body.

    OpenSSL releases before the fix of openssl/openssl#26101 (PR #31695, 2026) read
    authAttrs as [2] instead of RFC 5083's [1] and fail on a conforming body with a wrong
    tag at the mac. On those the failure must be exactly that, and the same body with its
    authAttrs tagged [2] (all they get wrong) must print.
    """
    path = tmp_path / f"body-{os.urandom(4).hex()}.der"
    path.write_bytes(body)
    proc = subprocess.run(["openssl", "cms", "-cmsout", "-print", "-inform", "DER", "-in", str(path)],
                          capture_output=True, text=True, timeout=30)
    if proc.returncode == 0:
        return proc.stdout
    assert "wrong tag" in proc.stderr and "Field=mac, Type=CMS_AuthEnvelopedData" in proc.stderr, proc.stderr
    attrs = b"\xa1" + cms.auth_attributes(cms.parse_auth_enveloped(body).content_type)[1:]
    mac = 2 + cms.GCM_TAG_BYTES
    assert body[-mac - len(attrs) : -mac] == attrs
    return _openssl("cms", "-cmsout", "-print",
                    data=body[: -mac - len(attrs)] + b"\xa2" + attrs[1:] + body[-mac:], tmp_path=tmp_path)


def test_rfc3394_wrap_known_answer() -> None:
    # RFC 3394 §4.6: wrap 256 bits of key data with a 256-bit KEK
    kek = bytes.fromhex("000102030405060708090A0B0C0D0E0F101112131415161718191A1B1C1D1E1F")
    key = bytes.fromhex("00112233445566778899AABBCCDDEEFF000102030405060708090A0B0C0D0E0F")
    expected = bytes.fromhex(
        "28C9F404C4B810F4CBCCB35CFB87F8263F5786E2D80ED326CBC7F0E71A99F43BFB988B9B7A02DD21"
    )
    assert aes_key_wrap(kek, key) == expected
    recipient = cms.KekRecipient(b"k" * 8, expected)
    assert cms.kek_unwrap(recipient, kek) == key
    with pytest.raises(Undecipherable) as info:
        cms.kek_unwrap(recipient, bytes(32))
    assert info.value.reason == "unwrap-failed"


def test_signed_data_round_trip_and_structure() -> None:
    content = cms.mime_wrap(b"OPTIONS sip:x@y SIP/2.0\r\n\r\n")
    nonce = os.urandom(cms.NONCE_BYTES)
    seen: list[bytes] = []

    def sign(data: bytes) -> bytes:
        seen.append(data)
        return b"\x01" * 64

    der = cms.build_signed_data(content, ALICE_ID, 1_700_000_000, nonce, sign)
    parsed = cms.parse_signed_data(der)
    assert parsed.content == content and parsed.signer == ALICE_ID
    assert parsed.signing_time == 1_700_000_000 and parsed.nonce == nonce
    # RFC 5652 §5.4: the signature covers the DER of the SET OF signed attributes
    assert seen == [parsed.signed_attrs] and parsed.signed_attrs[0] == 0x31
    sd = asn1_cms.SignedData.load(der)
    si = sd["signer_infos"][0]
    types = {a["type"].dotted for a in si["signed_attrs"]}
    assert types == {oids.ID_CONTENT_TYPE, oids.ID_MESSAGE_DIGEST, oids.ID_SIGNING_TIME,
                     oids.ID_SIPSEC_AA_NONCE}
    # the signer identity is the SignerIdentifier: subjectKeyIdentifier = DER SipsecIdentity
    assert si["sid"].name == "subject_key_identifier"
    assert si["sid"].chosen.native == ALICE_ID.to_der()
    assert si["signature_algorithm"]["algorithm"].dotted == oids.ID_SIPSEC_SIG_CC_BLS12381
    assert mime_of(parsed.content) == b"OPTIONS sip:x@y SIP/2.0\r\n\r\n"


def mime_of(entity: bytes) -> bytes:
    return cms.mime_unwrap(entity)


def test_mime_unwrap_requires_message_sip() -> None:
    assert cms.mime_unwrap(b"content-type:  Message/SIP ; x=1\r\n\r\nBODY") == b"BODY"
    for bad in [b"no header block", b"Content-Type: text/plain\r\n\r\nx", b"garbage\r\n\r\nx",
                b"Content-Type: message/sip\r\nContent-Type: message/sip\r\n\r\nx"]:
        with pytest.raises(MalformedEnvelope):
            cms.mime_unwrap(bad)


def test_kem_recipient_round_trip_with_real_ibe(pki: Pki) -> None:
    bob_id = pki.biloxi.identity(BOB, ibc.Purpose.ENC, pki.biloxi.policy.current(pki.now))
    key = ibc.extract(pki.biloxi_master, pki.biloxi, bob_id)
    shared, kemct = ibc.encapsulate(pki.biloxi, bob_id)
    cek = os.urandom(32)
    wire_id = cms.WireIdentity(bob_id.aor, bob_id.period, bob_id.period_length_s)
    der = cms.build_auth_enveloped(cms.kem_recipient_info(wire_id, kemct, shared, cek),
                                   oids.ID_DATA, b"secret", cek)
    env = cms.parse_auth_enveloped(der)
    assert isinstance(env.recipient, cms.KemRecipient)
    assert env.recipient.identity == wire_id and env.recipient.kemct == kemct
    recovered = ibc.decapsulate(key, env.recipient.kemct)
    assert cms.decrypt_content(env, cms.kem_unwrap(env.recipient, recovered)) == b"secret"
    # the registered OtherRecipientInfo choice decodes to a typed KEMRecipientInfo
    info = asn1_cms.ContentInfo.load(der)
    ori = info["content"]["recipient_infos"][0].chosen
    assert isinstance(ori["ori_value"], asn1.KEMRecipientInfo)
    assert ori["ori_value"]["kdf"]["algorithm"].dotted == oids.ID_ALG_HKDF_WITH_SHA256
    # the key id derived by both ends is what a dialog-key message names
    assert derive_dialog_key(shared) == derive_dialog_key(recovered)


def test_non_der_encodings_are_refused() -> None:
    cek, kek = os.urandom(32), os.urandom(32)
    der = cms.build_auth_enveloped(cms.kek_recipient_info(b"12345678", kek, cek), oids.ID_DATA, b"x", cek)
    assert cms.decrypt_content(cms.parse_auth_enveloped(der), cek) == b"x"
    aed_contents = asn1_cms.ContentInfo.load(der)["content"].contents
    assert aed_contents[:3] == b"\x02\x01\x00"
    # the same structure, BER-valid, with a non-minimal INTEGER version and long-form lengths
    ber_aed = _tlv(0x30, b"\x02\x02\x00\x00" + aed_contents[3:])
    ber = _tlv(0x30, bytes.fromhex("060b2a864886f70d0109100117") + _tlv(0xA0, ber_aed))
    assert asn1_cms.ContentInfo.load(ber)["content"]["version"].native == "v0"  # BER parses...
    with pytest.raises(MalformedEnvelope) as info:
        cms.parse_auth_enveloped(ber)  # ...DER does not
    assert info.value.reason == "malformed-cms"
    for bad in [b"", b"\x30\x00", der[:-1], der + b"\x00", b"\x30\x80" + der[2:]]:
        with pytest.raises(MalformedEnvelope):
            cms.parse_auth_enveloped(bad)


def test_gcm_parameters_and_versions(pki: Pki) -> None:
    cek, kek = os.urandom(32), os.urandom(32)
    der = cms.build_auth_enveloped(cms.kek_recipient_info(b"12345678", kek, cek), oids.ID_DATA, b"x", cek)
    aed = asn1_cms.ContentInfo.load(der)["content"]
    alg = aed["auth_encrypted_content_info"]["content_encryption_algorithm"]
    assert alg["algorithm"].dotted == oids.ID_AES256_GCM
    assert isinstance(alg["parameters"], asn1.GCMParameters)
    assert len(alg["parameters"]["aes_nonce"].native) == 12
    # RFC 5084 §3.2: aes-ICVlen DEFAULT 12 — a 12-byte tag, the field absent as DER requires
    assert alg["parameters"]["aes_icvlen"].native == 12 == cms.GCM_TAG_BYTES
    assert alg["parameters"].dump() == cms.der.seq(cms.der.octets(alg["parameters"]["aes_nonce"].native))
    assert len(aed["mac"].native) == 12
    assert aed["version"].native == "v0"
    kekri = aed["recipient_infos"][0].chosen
    assert kekri["version"].native == "v4"
    assert kekri["key_encryption_algorithm"]["algorithm"].dotted == oids.ID_AES256_WRAP


def test_only_the_default_12_byte_gcm_tag_is_accepted() -> None:
    der = cms.der
    cek, kek = os.urandom(32), os.urandom(32)
    body = cms.build_auth_enveloped(cms.kek_recipient_info(b"12345678", kek, cek), oids.ID_DATA, b"x", cek)
    env = cms.parse_auth_enveloped(body)
    assert isinstance(env.recipient, cms.KekRecipient) and len(env.mac) == 12

    def variant(gcm_params: bytes, mac: bytes) -> bytes:
        """The same AuthEnvelopedData with other GCMParameters and mac (everything else as written)."""
        eci = der.seq(der.oid(env.content_type), der.seq(der.oid(oids.ID_AES256_GCM), gcm_params),
                      der.ctx(0, env.ciphertext, constructed=False))
        assert isinstance(env.recipient, cms.KekRecipient)
        aed = der.seq(der.integer(0), der.set_of(cms._kek_ri(env.recipient.key_id, env.recipient.encrypted_key)),
                      eci, b"\xa1" + cms.auth_attributes(env.content_type)[1:], der.octets(mac))
        return der.seq(der.oid(oids.ID_CT_AUTH_ENVELOPED_DATA), der.ctx(0, aed))

    params = der.seq(der.octets(env.nonce))
    assert variant(params, env.mac) == body  # the helper writes exactly what sipsec writes
    full_tag = env.mac + os.urandom(4)
    cases = [
        (der.seq(der.octets(env.nonce), der.integer(16)), full_tag, "unsupported-algorithm"),
        (der.seq(der.octets(env.nonce), der.integer(8)), env.mac[:8], "unsupported-algorithm"),
        (der.seq(der.octets(env.nonce), der.integer(12)), env.mac, "malformed-cms"),  # the DEFAULT, encoded
        (params, full_tag, "malformed-cms"),  # a 16-byte mac under the default ICV length
        (params, env.mac[:8], "malformed-cms"),
    ]
    for gcm_params, mac, reason in cases:
        bad = variant(gcm_params, mac)
        assert asn1_cms.ContentInfo.load(bad)["content"]["mac"].native == mac  # well-formed CMS...
        with pytest.raises(MalformedEnvelope) as info:  # ...that sipsec refuses
            cms.parse_auth_enveloped(bad)
        assert info.value.reason == reason, (gcm_params.hex(), len(mac))
    # and a tag of another length never reaches GCM, even if handed over directly
    for mac in (full_tag, env.mac[:8]):
        with pytest.raises(Undecipherable):
            cms.decrypt_content(cms.AuthEnveloped(env.recipient, env.content_type, env.nonce, env.ciphertext,
                                                  mac), cek)
    assert cms.decrypt_content(env, cek) == b"x"


def test_private_oids_live_under_one_arc() -> None:
    private = [v for k, v in vars(oids).items() if k.startswith("ID_SIPSEC_")]
    assert private and all(v.startswith(oids.SIPSEC_ARC + ".") for v in private)
    assert len(set(private)) == len(private)
    assert int(oids.SIPSEC_ARC.split(".")[2]) == int(oids.SIPSEC_UUID.replace("-", ""), 16)


async def test_openssl_parses_real_bodies(tmp_path: Path, pki: Pki) -> None:
    alice = Party(pki.keyring(ALICE))
    first = seal(invite(), alice.keys, BOB)
    later = seal(ack(), alice.keys, first.dialog, SigningPolicy.EVERY_MESSAGE)
    kem_print = _openssl_cms_print(first.message.body, tmp_path)
    assert "id-smime-ct-authEnvelopedData" in kem_print
    assert "d.ori" in kem_print and "1.2.840.113549.1.9.16.13.3" in kem_print
    assert "aes-256-gcm" in kem_print
    kek_print = _openssl_cms_print(later.message.body, tmp_path)
    assert "d.kekri" in kek_print and "id-aes256-wrap" in kek_print
    for printed in (kem_print, kek_print):  # authAttrs: the content-type attribute (RFC 5083 §2.1)
        assert "authAttrs" in printed and "contentType" in printed, printed
    for body in (first.message.body, later.message.body):
        parsed = _openssl("asn1parse", data=body, tmp_path=tmp_path)
        assert "id-smime-ct-authEnvelopedData" in parsed and "error" not in parsed.lower()
        # [1] IMPLICIT authAttrs: SET OF { SEQUENCE { contentType, SET { id-smime-ct-compressedData } } }
        assert "cont [ 1 ]" in parsed and ":contentType" in parsed, parsed
    # the inner SignedData (what the recipient decrypts), as a ContentInfo
    env = cms.parse_auth_enveloped(later.message.body)
    assert isinstance(env.recipient, cms.KekRecipient)
    compressed = cms.decrypt_content(env, cms.kek_unwrap(env.recipient, first.dialog.key))
    assert env.content_type == oids.ID_CT_COMPRESSED_DATA
    # the CompressedData (RFC 3274) layer, as a ContentInfo
    cd_info = asn1_cms.ContentInfo({"content_type": "compressed_data",
                                    "content": asn1_cms.CompressedData.load(compressed)})
    cd_print = _openssl("cms", "-cmsout", "-print", data=cd_info.dump(), tmp_path=tmp_path)
    assert "id-smime-ct-compressedData" in cd_print
    assert oids.ID_SIPSEC_ALG_DEFLATE_SIPDICT_DIALOG_V2 in cd_print and "pkcs7-signedData" in cd_print
    _openssl("asn1parse", data=cd_info.dump(), tmp_path=tmp_path)
    content_type, signed = cms.parse_compressed_data(compressed, primer=first.dialog.primer)
    assert content_type == oids.ID_SIGNED_DATA
    info = asn1_cms.ContentInfo({"content_type": "signed_data", "content": asn1_cms.SignedData.load(signed)})
    sd_print = _openssl("cms", "-cmsout", "-print", data=info.dump(), tmp_path=tmp_path)
    for name in ("pkcs7-signedData", "contentType", "messageDigest", "signingTime",
                 "d.subjectKeyIdentifier", oids.ID_SIPSEC_AA_NONCE, oids.ID_SIPSEC_SIG_CC_BLS12381):
        assert name in sd_print, name
    assert cms.mime_unwrap(cms.parse_signed_data(signed).content) == ack().to_bytes()
    _openssl("asn1parse", data=info.dump(), tmp_path=tmp_path)
    # the signer identity is in the sid: asn1parse shows the SipsecIdentity's AOR
    sid = asn1_cms.SignedData.load(signed)["signer_infos"][0]["sid"].chosen.native
    assert "sip:alice@atlanta.example.com" in _openssl("asn1parse", data=sid, tmp_path=tmp_path)
    # and the signed REGISTER body
    register = parse_message(
        b"REGISTER sip:atlanta.example.com SIP/2.0\r\nVia: SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bKnashds7\r\n"
        b"Max-Forwards: 70\r\nTo: <sip:alice@atlanta.example.com>\r\nFrom: <sip:alice@atlanta.example.com>;tag=456248\r\n"
        b"Call-ID: 843817637684230@998sdasdh09\r\nCSeq: 1826 REGISTER\r\nContact: <sip:alice@192.0.2.4>\r\n"
        b"Expires: 7200\r\nContent-Length: 0\r\n\r\n"
    )
    signed_register = sign_register(register, alice.keys, now=time.time())
    reg_print = _openssl("cms", "-cmsout", "-print", data=signed_register.body, tmp_path=tmp_path)
    assert "pkcs7-signedData" in reg_print and "eContentType: pkcs7-data" in reg_print
    assert "signingTime" in reg_print


def test_suite_prefix_is_elided_on_the_wire_and_restored(pki: Pki) -> None:
    from sipsec.envelope import EnvelopeUsageError, _suite

    bob_id = pki.biloxi.identity(BOB, ibc.Purpose.ENC, pki.biloxi.policy.current(pki.now))
    _, kemct = ibc.encapsulate(pki.biloxi, bob_id)
    assert len(kemct) == ibc.KEM_CIPHERTEXT_LEN and kemct.startswith(_suite.SUITE_PREFIX)
    wire = _suite.compact(kemct)
    assert len(wire) == ibc.KEM_CIPHERTEXT_LEN - 1 - len(ibc.SUITE_ID)
    assert _suite.expand(wire) == kemct
    with pytest.raises(EnvelopeUsageError):
        _suite.compact(b"\x05other" + wire)
    # a sealed first request carries the compact form
    alice = Party(pki.keyring(ALICE))
    env = cms.parse_auth_enveloped(seal(invite(), alice.keys, BOB).message.body)
    assert isinstance(env.recipient, cms.KemRecipient)
    assert len(env.recipient.kemct) == len(wire)
    assert ibc.SUITE_ID not in seal(invite(), alice.keys, BOB).message.body


@settings(max_examples=60, deadline=None)
@given(when=st.integers(min_value=-631_152_000, max_value=8_000_000_000), content=st.binary(max_size=300),
       period=st.integers(min_value=0, max_value=2**40), aor=st.sampled_from([ALICE, BOB, "sip:ü@example.com"]))
def test_the_tlv_walker_reads_what_asn1crypto_reads(when: int, content: bytes, period: int, aor: str) -> None:
    """Differential: the library's own strict parser and asn1crypto (independent) agree on every field,
    across the UTCTime / GeneralizedTime boundary of signing-time (1950, 2050)."""
    signer = cms.WireIdentity(aor, period, 2592000)
    nonce = os.urandom(cms.NONCE_BYTES)
    der = cms.build_signed_data(content, signer, when, nonce, lambda _: os.urandom(96))
    ours = cms.parse_signed_data(der)
    si = asn1_cms.SignedData.load(der)["signer_infos"][0]
    attrs = {a["type"].dotted: a["values"][0] for a in si["signed_attrs"]}
    assert ours.content == asn1_cms.SignedData.load(der)["encap_content_info"]["content"].native == content
    assert ours.signing_time == int(attrs[oids.ID_SIGNING_TIME].native.timestamp()) == when
    assert ours.nonce == attrs[oids.ID_SIPSEC_AA_NONCE].native == nonce
    assert ours.signature == si["signature"].native
    theirs = asn1.SipsecIdentity.load(si["sid"].chosen.native)
    assert (ours.signer.aor, ours.signer.period, ours.signer.period_length) == (
        theirs["aor"].native, theirs["period"].native, theirs["period_length"].native) == (aor, period, 2592000)
    # and the same for an AuthEnvelopedData around it, KEK recipient
    cek = os.urandom(32)
    body = cms.build_auth_enveloped(cms.kek_recipient_info(b"dialog-1", os.urandom(32), cek),
                                    oids.ID_SIGNED_DATA, der, cek)
    env = cms.parse_auth_enveloped(body)
    aed = asn1_cms.ContentInfo.load(body)["content"]
    eci = aed["auth_encrypted_content_info"]
    assert env.nonce == eci["content_encryption_algorithm"]["parameters"]["aes_nonce"].native
    assert env.ciphertext == eci["encrypted_content"].native and env.mac == aed["mac"].native
    assert isinstance(env.recipient, cms.KekRecipient)
    assert env.recipient.key_id == aed["recipient_infos"][0].chosen["kekid"]["key_identifier"].native
    assert cms.decrypt_content(env, cek) == der
