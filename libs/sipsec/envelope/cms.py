"""The CMS DER layer: build and parse AuthEnvelopedData (RFC 5083/5084) and SignedData (RFC 5652) for sipsec.

This module knows bytes, OIDs and symmetric primitives only; the identity-based
operations arrive as values (a KEM shared secret, a signature) or callables, so the
structures can be read without any key. Structures are written with the small DER
encoder of :mod:`sipsec.envelope._der` (fast) and read with asn1crypto (robust); every
parse is strict: the parsed values are re-encoded and the input must be exactly that
encoding (so only DER, sorted SET OFs, absent parameters — RFC 5754 §2 for SHA-256 —
and the single algorithm suite v1 allows pass), and any failure raises
:class:`~sipsec.envelope.errors.MalformedEnvelope` (400) — or
:class:`~sipsec.envelope.errors.Undecipherable` (493) when a key does not open it.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from asn1crypto import cms
from asn1crypto.core import Asn1Value
from Crypto.Cipher import AES
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap, aes_key_wrap

from sipsec.envelope import _der as der
from sipsec.envelope import compression, oids
from sipsec.envelope.asn1 import GCMParameters, KEMRecipientInfo, SipsecIdentity
from sipsec.envelope.errors import Forbidden, MalformedEnvelope, Undecipherable

__all__ = [
    "CEK_BYTES",
    "GCM_NONCE_BYTES",
    "GCM_TAG_BYTES",
    "KEK_BYTES",
    "MIME_PREFIX",
    "AuthEnveloped",
    "KekRecipient",
    "KemRecipient",
    "SignedContent",
    "WireIdentity",
    "build_auth_enveloped",
    "build_compressed_data",
    "build_signed_content_info",
    "assemble_signed_data",
    "build_signed_data",
    "decrypt_content",
    "dialog_primer",
    "kek_recipient_info",
    "kek_unwrap",
    "kem_recipient_info",
    "kem_unwrap",
    "mime_unwrap",
    "mime_wrap",
    "open_content",
    "parse_auth_enveloped",
    "parse_compressed_data",
    "parse_signed_content_info",
    "parse_signed_data",
    "signed_attributes",
]

CEK_BYTES = 32  # AES-256
KEK_BYTES = 32  # AES-256 key wrap
GCM_NONCE_BYTES = 12  # RFC 5084 §3.2 recommends 12
GCM_TAG_BYTES = 16  # full-length ICV
NONCE_BYTES = 12  # the signed nonce attribute: 96 random bits, as the GCM nonce

#: The S/MIME entity header of the tunnelled SIP message (RFC 3261 §23.4: message/sip).
MIME_PREFIX = b"Content-Type: message/sip\r\n\r\n"


@dataclass(frozen=True)
class WireIdentity:
    """An identity as carried in a :class:`SipsecIdentity` (purpose and suite implied by position)."""

    aor: str
    period: int
    period_length: int

    def to_der(self) -> bytes:
        return der.seq(der.utf8(self.aor), der.integer(self.period), der.integer(self.period_length))

    @classmethod
    def from_asn1(cls, value: SipsecIdentity) -> WireIdentity:
        aor, period, length = value["aor"].native, value["period"].native, value["period_length"].native
        if not isinstance(aor, str) or period < 0 or length <= 0:
            raise MalformedEnvelope("malformed-cms", "bad identity")
        return cls(aor, int(period), int(length))


@dataclass(frozen=True)
class KemRecipient:
    """A parsed RFC 9629 KEMRecipientInfo (algorithms already checked to be suite v1's)."""

    identity: WireIdentity
    kemct: bytes
    kek_length: int
    encrypted_key: bytes = field(repr=False)


@dataclass(frozen=True)
class KekRecipient:
    """A parsed KEKRecipientInfo: the dialog key id and the wrapped content-encryption key."""

    key_id: bytes
    encrypted_key: bytes = field(repr=False)


@dataclass(frozen=True)
class AuthEnveloped:
    """A parsed AuthEnvelopedData with AES-256-GCM content."""

    recipient: KemRecipient | KekRecipient
    content_type: str  # oids.ID_SIGNED_DATA, oids.ID_DATA or oids.ID_CT_COMPRESSED_DATA
    nonce: bytes
    ciphertext: bytes = field(repr=False)
    mac: bytes = field(repr=False)


@dataclass(frozen=True)
class SignedContent:
    """A parsed SignedData with one signer; ``signed_attrs`` is the DER the signature covers."""

    content: bytes = field(repr=False)
    signer: WireIdentity
    signing_time: int
    nonce: bytes
    signed_attrs: bytes = field(repr=False)
    signature: bytes = field(repr=False)


# --- helpers ---------------------------------------------------------------------------

_PARSE_ERRORS = (ValueError, TypeError, KeyError, IndexError, OverflowError, AttributeError)


def _load(spec: type[Asn1Value], data: bytes) -> Asn1Value:
    try:
        return spec.load(data, strict=True)
    except _PARSE_ERRORS as exc:
        raise MalformedEnvelope("malformed-cms", type(exc).__name__) from None


def _require_der(data: bytes, rebuilt: bytes) -> None:
    if data != rebuilt:
        raise MalformedEnvelope("malformed-cms", "not the DER sipsec writes")


def _alg(oid: str) -> bytes:
    """An AlgorithmIdentifier with absent parameters."""
    return der.seq(der.oid(oid))


def _hkdf(secret: bytes, length: int, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=None, info=info).derive(secret)


def _kem_kek(shared_secret: bytes, kek_length: int) -> bytes:
    """RFC 9629 §5: KEK = KDF(IKM = ss, L = kekLength, info = DER(CMSORIforKEMOtherInfo)); no ukm."""
    info = der.seq(_alg(oids.ID_AES256_WRAP), der.integer(kek_length))
    return _hkdf(shared_secret, kek_length, info)


def mime_wrap(sip_message: bytes) -> bytes:
    """The S/MIME entity carried as ``id-data``: a ``message/sip`` header block and the message."""
    return MIME_PREFIX + sip_message


def mime_unwrap(entity: bytes) -> bytes:
    """The SIP message inside a ``message/sip`` MIME entity (header names case-insensitive)."""
    head, sep, body = entity.partition(b"\r\n\r\n")
    if not sep:
        raise MalformedEnvelope("malformed-inner", "no MIME header block")
    content_types = []
    for line in head.split(b"\r\n"):
        name, colon, value = line.partition(b":")
        if not colon:
            raise MalformedEnvelope("malformed-inner", "bad MIME header")
        if name.strip().lower() == b"content-type":
            content_types.append(value.split(b";")[0].strip().lower())
    if content_types != [b"message/sip"]:
        raise MalformedEnvelope("malformed-inner", "content is not message/sip")
    return body


# --- SignedData ---------------------------------------------------------------------------


def _signed_attrs(content_digest: bytes, when: int, nonce: bytes) -> bytes:
    """DER of the SET OF signed attributes (RFC 5652 §5.3, §11), in DER (sorted) order."""
    return der.set_of(
        der.seq(der.oid(oids.ID_CONTENT_TYPE), der.set_of(der.oid(oids.ID_DATA))),
        der.seq(der.oid(oids.ID_MESSAGE_DIGEST), der.set_of(der.octets(content_digest))),
        der.seq(der.oid(oids.ID_SIGNING_TIME), der.set_of(der.signing_time(when))),
        der.seq(der.oid(oids.ID_SIPSEC_AA_NONCE), der.set_of(der.octets(nonce))),
    )


def _signed_data(content: bytes, signed_attrs: bytes, signer: bytes, signature: bytes) -> bytes:
    _, start, _ = der.read_tlv(signed_attrs)
    signer_info = der.seq(
        der.integer(3),
        der.ctx(0, signer, constructed=False),  # sid: subjectKeyIdentifier [0] = DER SipsecIdentity
        _alg(oids.ID_SHA256),
        der.ctx(0, signed_attrs[start:]),  # signedAttrs [0] IMPLICIT
        _alg(oids.ID_SIPSEC_SIG_CC_BLS12381),
        der.octets(signature),
    )
    return der.seq(
        der.integer(3),
        der.set_of(_alg(oids.ID_SHA256)),
        der.seq(der.oid(oids.ID_DATA), der.ctx(0, der.octets(content))),
        der.set_of(signer_info),
    )


def build_signed_data(
    content: bytes,
    signer: WireIdentity,
    signing_time: int,
    nonce: bytes,
    sign: Callable[[bytes], bytes],
) -> bytes:
    """DER of a SignedData (RFC 5652 §5) over ``content`` (``id-data``), one signer.

    Signed attributes: content-type, message-digest (SHA-256), signing-time and a 12-byte
    nonce. ``sign`` receives the DER of the SET OF signed attributes (RFC 5652 §5.4) and
    returns the Cha–Cheon signature. The SignerIdentifier is ``subjectKeyIdentifier`` =
    the DER :class:`SipsecIdentity` of the signer (as the KEM ``rid`` names its recipient):
    it is not a signed attribute, and needs not be — an identity-based signature verifies
    only under the identity it was made for, so a substituted identity fails the
    signature check.
    """
    attrs = signed_attributes(content, signer, signing_time, nonce)
    return assemble_signed_data(content, signer, attrs, sign(attrs))


def signed_attributes(content: bytes, signer: WireIdentity, signing_time: int, nonce: bytes) -> bytes:
    """The DER SET OF signed attributes :func:`build_signed_data` signs (for an async signer).

    ``signer`` is accepted for the callers' symmetry; the identity travels in the sid.
    """
    if len(nonce) != NONCE_BYTES:
        raise ValueError(f"nonce must be {NONCE_BYTES} bytes")
    return _signed_attrs(hashlib.sha256(content).digest(), signing_time, nonce)


def assemble_signed_data(content: bytes, signer: WireIdentity, attrs: bytes, signature: bytes) -> bytes:
    """The SignedData DER from the content, its :func:`signed_attributes` and their signature."""
    return _signed_data(content, attrs, signer.to_der(), signature)


def parse_signed_data(data: bytes) -> SignedContent:
    """Parse a sipsec SignedData and check its message-digest; the signature is left to the caller.

    Raises :class:`MalformedEnvelope` for anything that is not exactly the structure
    :func:`build_signed_data` writes, and ``Forbidden('bad-signature')`` when the digest of
    the content does not match the signed message-digest attribute.
    """
    sd = _load(cms.SignedData, data)
    try:
        if sd["version"].native != "v3" or len(sd["digest_algorithms"]) != 1:
            raise MalformedEnvelope("malformed-cms", "signed-data shape")
        if sd["digest_algorithms"][0]["algorithm"].dotted != oids.ID_SHA256:
            raise MalformedEnvelope("unsupported-algorithm", "digest")
        eci = sd["encap_content_info"]
        if eci["content_type"].dotted != oids.ID_DATA or eci["content"].native is None:
            raise MalformedEnvelope("malformed-cms", "encapsulated content")
        content = bytes(eci["content"].native)
        infos = sd["signer_infos"]
        if len(infos) != 1:
            raise MalformedEnvelope("malformed-cms", "signer count")
        si = infos[0]
        if si["sid"].name != "subject_key_identifier":
            raise MalformedEnvelope("malformed-cms", "signer identifier")
        signer = WireIdentity.from_asn1(_load(SipsecIdentity, bytes(si["sid"].chosen.native)))
        if si["digest_algorithm"]["algorithm"].dotted != oids.ID_SHA256:
            raise MalformedEnvelope("unsupported-algorithm", "digest")
        if si["signature_algorithm"]["algorithm"].dotted != oids.ID_SIPSEC_SIG_CC_BLS12381:
            raise MalformedEnvelope("unsupported-algorithm", "signature")
        found: dict[str, Asn1Value] = {}
        for attr in si["signed_attrs"]:
            values = attr["values"]
            if len(values) != 1:
                raise MalformedEnvelope("malformed-cms", "attribute values")
            found[attr["type"].dotted] = values[0]
        wanted = {oids.ID_CONTENT_TYPE, oids.ID_MESSAGE_DIGEST, oids.ID_SIGNING_TIME,
                  oids.ID_SIPSEC_AA_NONCE}
        if set(found) != wanted or len(si["signed_attrs"]) != len(wanted):
            raise MalformedEnvelope("malformed-cms", "signed attributes")
        digest = bytes(found[oids.ID_MESSAGE_DIGEST].native)
        when = found[oids.ID_SIGNING_TIME].native
        nonce = bytes(found[oids.ID_SIPSEC_AA_NONCE].native)
        if len(nonce) != NONCE_BYTES or not isinstance(when, datetime):
            raise MalformedEnvelope("malformed-cms", "nonce or time")
        signing_time = int(when.timestamp())
        signature = bytes(si["signature"].native)
    except MalformedEnvelope:
        raise
    except _PARSE_ERRORS as exc:
        raise MalformedEnvelope("malformed-cms", type(exc).__name__) from None
    signed_attrs = _signed_attrs(digest, signing_time, nonce)
    _require_der(data, assemble_signed_data(content, signer, signed_attrs, signature))
    if not hmac.compare_digest(digest, hashlib.sha256(content).digest()):
        raise Forbidden("bad-signature", "message-digest mismatch")
    return SignedContent(
        content=content,
        signer=signer,
        signing_time=signing_time,
        nonce=nonce,
        signed_attrs=signed_attrs,
        signature=signature,
    )


def build_signed_content_info(signed_data: bytes) -> bytes:
    """A ContentInfo (``id-signedData``) around the DER of a SignedData (a standalone body)."""
    return der.seq(der.oid(oids.ID_SIGNED_DATA), der.ctx(0, signed_data))


def parse_signed_content_info(data: bytes) -> SignedContent:
    """Inverse of :func:`build_signed_content_info` + :func:`parse_signed_data`."""
    try:
        tag, start, end = der.read_tlv(data)
        if tag != 0x30 or end != len(data):
            raise ValueError("not one SEQUENCE")
        tag, oid_start, oid_end = der.read_tlv(data, start)
        tag0, inner_start, inner_end = der.read_tlv(data, oid_end)
    except ValueError as exc:
        raise MalformedEnvelope("malformed-cms", str(exc)) from None
    inner = data[inner_start:inner_end]
    if tag != 0x06 or data[oid_start - 2 : oid_end] != der.oid(oids.ID_SIGNED_DATA):
        raise MalformedEnvelope("malformed-cms", "not signed-data")
    _require_der(data, build_signed_content_info(inner))
    return parse_signed_data(inner)


# --- CompressedData (RFC 3274) ------------------------------------------------------------

#: What a CompressedData may encapsulate: the signed or the unsigned content of an envelope.
_COMPRESSIBLE = (oids.ID_SIGNED_DATA, oids.ID_DATA)


def _compressed_data(algorithm: str, content_type: str, stream: bytes) -> bytes:
    return der.seq(
        der.integer(0),
        _alg(algorithm),
        der.seq(der.oid(content_type), der.ctx(0, der.octets(stream))),  # eContent [0] EXPLICIT
    )


def build_compressed_data(content_type: str, content: bytes, primer: bytes = b"") -> bytes:
    """DER of a CompressedData (RFC 3274) of ``content`` (``id-signedData`` or ``id-data``).

    Version 0; compressionAlgorithm ``id-sipsec-alg-zlib-sipdict-v1`` (the static
    dictionary), or ``id-sipsec-alg-zlib-sipdict-dialog-v1`` when a dialog's ``primer`` (its
    first request's content) extends it — parameters absent, the OID names the dictionary;
    the zlib stream is the encapsulated eContent.
    """
    if content_type not in _COMPRESSIBLE:
        raise ValueError("only id-signedData or id-data content is compressed")
    algorithm = oids.ID_SIPSEC_ALG_ZLIB_SIPDICT_DIALOG_V1 if primer else oids.ID_SIPSEC_ALG_ZLIB_SIPDICT_V1
    return _compressed_data(algorithm, content_type, compression.compress(content, primer))


def parse_compressed_data(data: bytes, limit: int = compression.MAX_DECOMPRESSED_BYTES,
                          primer: bytes = b"") -> tuple[str, bytes]:
    """``(eContentType, decompressed content)`` of a CompressedData :func:`build_compressed_data` wrote.

    Strict like every parse here (exactly that DER), bounded to ``limit`` output bytes; the
    dialog variant needs the dialog's ``primer``. Anything else raises
    :class:`MalformedEnvelope` (400).
    """
    try:
        tag, start, end = der.read_tlv(data)
        if tag != 0x30 or end != len(data):
            raise ValueError("not one SEQUENCE")
        _, _, pos = der.read_tlv(data, start)  # version
        tag, alg_start, pos = der.read_tlv(data, pos)
        algorithm = data[alg_start:pos]
        tag_eci, eci_start, _ = der.read_tlv(data, pos)
        tag_oid, _, oid_end = der.read_tlv(data, eci_start)
        content_oid = data[eci_start:oid_end]
        _, wrap_start, _ = der.read_tlv(data, oid_end)
        _, stream_start, stream_end = der.read_tlv(data, wrap_start)
    except ValueError as exc:
        raise MalformedEnvelope("malformed-cms", str(exc)) from None
    if tag == 0x30 and algorithm == der.oid(oids.ID_SIPSEC_ALG_ZLIB_SIPDICT_V1):
        algorithm_oid, dictionary_primer = oids.ID_SIPSEC_ALG_ZLIB_SIPDICT_V1, b""
    elif tag == 0x30 and algorithm == der.oid(oids.ID_SIPSEC_ALG_ZLIB_SIPDICT_DIALOG_V1):
        if not primer:
            raise MalformedEnvelope("unsupported-algorithm", "no dialog dictionary here")
        algorithm_oid, dictionary_primer = oids.ID_SIPSEC_ALG_ZLIB_SIPDICT_DIALOG_V1, primer
    else:
        raise MalformedEnvelope("unsupported-algorithm", "compression")
    content_type = next((ct for ct in _COMPRESSIBLE if der.oid(ct) == content_oid), None)
    if content_type is None or tag_eci != 0x30 or tag_oid != 0x06:
        raise MalformedEnvelope("malformed-cms", "compressed content type")
    stream = data[stream_start:stream_end]
    _require_der(data, _compressed_data(algorithm_oid, content_type, stream))
    return content_type, compression.decompress(stream, limit, dictionary_primer)


def dialog_primer(recipient: WireIdentity, first_content: bytes) -> bytes:
    """The dialog dictionary's extension: the first request's recipient identity DER and its content.

    Both ends hold both (the KEM ``rid`` and the decrypted first content); the callee's
    SipsecIdentity in the sid of its signatures is the ``rid``'s bytes. At most
    :data:`~sipsec.envelope.compression.MAX_PRIMER_BYTES` of the content are used.
    """
    return first_content[: compression.MAX_PRIMER_BYTES] + recipient.to_der()


def open_content(content_type: str, content: bytes, primer: bytes = b"") -> tuple[str, bytes]:
    """The decrypted content with any CompressedData layer removed: ``(id-signedData | id-data, bytes)``."""
    if content_type == oids.ID_CT_COMPRESSED_DATA:
        return parse_compressed_data(content, primer=primer)
    return content_type, content


# --- recipients -------------------------------------------------------------------------


def _kem_ri(identity: WireIdentity, kemct: bytes, encrypted_key: bytes) -> bytes:
    kemri = der.seq(
        der.integer(0),
        der.ctx(0, identity.to_der(), constructed=False),  # rid: subjectKeyIdentifier [0]
        _alg(oids.ID_SIPSEC_KEM_BF_BLS12381),
        der.octets(kemct),
        _alg(oids.ID_ALG_HKDF_WITH_SHA256),
        der.integer(KEK_BYTES),
        _alg(oids.ID_AES256_WRAP),
        der.octets(encrypted_key),
    )
    return der.ctx(4, der.oid(oids.ID_ORI_KEM) + kemri)  # ori [4] IMPLICIT OtherRecipientInfo


def _kek_ri(key_id: bytes, encrypted_key: bytes) -> bytes:
    return der.ctx(  # kekri [2] IMPLICIT KEKRecipientInfo, version 4
        2,
        der.integer(4) + der.seq(der.octets(key_id)) + _alg(oids.ID_AES256_WRAP)
        + der.octets(encrypted_key),
    )


def kem_recipient_info(identity: WireIdentity, kemct: bytes, shared_secret: bytes, cek: bytes) -> bytes:
    """DER of an ``ori`` RecipientInfo holding a KEMRecipientInfo for the BF-IBE KEM (RFC 9629)."""
    kek = _kem_kek(shared_secret, KEK_BYTES)
    return _kem_ri(identity, kemct, aes_key_wrap(kek, cek))


def kem_unwrap(recipient: KemRecipient, shared_secret: bytes) -> bytes:
    """The content-encryption key of a KEMRecipientInfo, given the decapsulated secret."""
    kek = _kem_kek(shared_secret, recipient.kek_length)
    try:
        return aes_key_unwrap(kek, recipient.encrypted_key)
    except (InvalidUnwrap, ValueError):
        raise Undecipherable("unwrap-failed") from None


def kek_recipient_info(key_id: bytes, kek: bytes, cek: bytes) -> bytes:
    """DER of a ``kekri`` RecipientInfo (RFC 5652 §6.2.3): CEK wrapped (RFC 3394) under the dialog key."""
    return _kek_ri(key_id, aes_key_wrap(kek, cek))


def kek_unwrap(recipient: KekRecipient, kek: bytes) -> bytes:
    """The content-encryption key of a KEKRecipientInfo, given the dialog key."""
    try:
        return aes_key_unwrap(kek, recipient.encrypted_key)
    except (InvalidUnwrap, ValueError):
        raise Undecipherable("unwrap-failed") from None


# --- AuthEnvelopedData ----------------------------------------------------------------------


def _auth_enveloped(recipient: bytes, content_type: str, nonce: bytes, ciphertext: bytes,
                    mac: bytes) -> bytes:
    aed = der.seq(
        der.integer(0),
        der.set_of(recipient),
        der.seq(
            der.oid(content_type),
            der.seq(der.oid(oids.ID_AES256_GCM), der.seq(der.octets(nonce), der.integer(GCM_TAG_BYTES))),
            der.ctx(0, ciphertext, constructed=False),  # encryptedContent [0] IMPLICIT
        ),
        der.octets(mac),
    )
    return der.seq(der.oid(oids.ID_CT_AUTH_ENVELOPED_DATA), der.ctx(0, aed))


def build_auth_enveloped(recipient: bytes, content_type: str, content: bytes, cek: bytes) -> bytes:
    """DER ContentInfo of an AuthEnvelopedData (RFC 5083) with AES-256-GCM (RFC 5084).

    A fresh 12-byte nonce per message, a 16-byte tag in ``mac``, no authAttrs (so the
    GCM additional data is empty, RFC 5083 §2.2). ``recipient`` is the DER of one
    RecipientInfo; ``content_type`` is ``id-signedData`` (the content is then the DER of a
    SignedData), ``id-data`` (a MIME entity) or ``id-ct-compressedData`` (the DER of a
    :func:`build_compressed_data` holding either).
    """
    if len(cek) != CEK_BYTES:
        raise ValueError("content-encryption key must be 32 bytes")
    nonce = os.urandom(GCM_NONCE_BYTES)
    cipher = AES.new(cek, AES.MODE_GCM, nonce=nonce, mac_len=GCM_TAG_BYTES)
    ciphertext, tag = cipher.encrypt_and_digest(content)
    return _auth_enveloped(recipient, content_type, nonce, ciphertext, tag)


def parse_auth_enveloped(data: bytes) -> AuthEnveloped:
    """Parse a sipsec AuthEnvelopedData ContentInfo; raises MalformedEnvelope on any deviation."""
    info = _load(cms.ContentInfo, data)
    try:
        if info["content_type"].dotted != oids.ID_CT_AUTH_ENVELOPED_DATA:
            raise MalformedEnvelope("malformed-cms", "not authEnveloped-data")
        aed = info["content"]
        ris = aed["recipient_infos"]
        if len(ris) != 1:
            raise MalformedEnvelope("malformed-cms", "recipient count")
        recipient, recipient_der = _parse_recipient(ris[0])
        eci = aed["auth_encrypted_content_info"]
        content_type = eci["content_type"].dotted
        if content_type not in (oids.ID_SIGNED_DATA, oids.ID_DATA, oids.ID_CT_COMPRESSED_DATA):
            raise MalformedEnvelope("malformed-cms", "content type")
        alg = eci["content_encryption_algorithm"]
        if alg["algorithm"].dotted != oids.ID_AES256_GCM:
            raise MalformedEnvelope("unsupported-algorithm", "content encryption")
        params = alg["parameters"]
        if not isinstance(params, GCMParameters):
            raise MalformedEnvelope("malformed-cms", "GCM parameters")
        nonce = bytes(params["aes_nonce"].native)
        if len(nonce) != GCM_NONCE_BYTES or params["aes_icvlen"].native != GCM_TAG_BYTES:
            raise MalformedEnvelope("unsupported-algorithm", "GCM nonce or ICV length")
        ciphertext = eci["encrypted_content"].native
        mac = bytes(aed["mac"].native)
        if ciphertext is None or len(mac) != GCM_TAG_BYTES:
            raise MalformedEnvelope("malformed-cms", "ciphertext or mac")
        ciphertext = bytes(ciphertext)
    except MalformedEnvelope:
        raise
    except _PARSE_ERRORS as exc:
        raise MalformedEnvelope("malformed-cms", type(exc).__name__) from None
    # no originatorInfo, authAttrs or unauthAttrs, version 0, DER: all by re-encoding
    _require_der(data, _auth_enveloped(recipient_der, content_type, nonce, ciphertext, mac))
    return AuthEnveloped(recipient, content_type, nonce, ciphertext, mac)


def _parse_recipient(ri: cms.RecipientInfo) -> tuple[KemRecipient | KekRecipient, bytes]:
    if ri.name == "kekri":
        kekri = ri.chosen
        if kekri["key_encryption_algorithm"]["algorithm"].dotted != oids.ID_AES256_WRAP:
            raise MalformedEnvelope("unsupported-algorithm", "key wrap")
        rec = KekRecipient(bytes(kekri["kekid"]["key_identifier"].native),
                           bytes(kekri["encrypted_key"].native))
        return rec, _kek_ri(rec.key_id, rec.encrypted_key)
    if ri.name == "ori":
        ori = ri.chosen
        if ori["ori_type"].dotted != oids.ID_ORI_KEM:
            raise MalformedEnvelope("unsupported-algorithm", "other recipient type")
        kemri = ori["ori_value"]
        if not isinstance(kemri, KEMRecipientInfo):
            raise MalformedEnvelope("malformed-cms", "kem recipient")
        for name, oid in (("kem", oids.ID_SIPSEC_KEM_BF_BLS12381),
                          ("kdf", oids.ID_ALG_HKDF_WITH_SHA256), ("wrap", oids.ID_AES256_WRAP)):
            if kemri[name]["algorithm"].dotted != oid:
                raise MalformedEnvelope("unsupported-algorithm", name)
        if kemri["kek_length"].native != KEK_BYTES:
            raise MalformedEnvelope("unsupported-algorithm", "kek length")
        rid = kemri["rid"]
        if rid.name != "subject_key_identifier":
            raise MalformedEnvelope("malformed-cms", "kem rid")
        identity = WireIdentity.from_asn1(_load(SipsecIdentity, bytes(rid.chosen.native)))
        kem = KemRecipient(
            identity=identity,
            kemct=bytes(kemri["kemct"].native),
            kek_length=KEK_BYTES,
            encrypted_key=bytes(kemri["encrypted_key"].native),
        )
        return kem, _kem_ri(identity, kem.kemct, kem.encrypted_key)
    raise MalformedEnvelope("unsupported-algorithm", "recipient type")


def decrypt_content(envelope: AuthEnveloped, cek: bytes) -> bytes:
    """AES-256-GCM decryption of the content; raises Undecipherable('decrypt-failed') on any tag failure."""
    cipher = AES.new(cek, AES.MODE_GCM, nonce=envelope.nonce, mac_len=GCM_TAG_BYTES)
    try:
        return bytes(cipher.decrypt_and_verify(envelope.ciphertext, envelope.mac))
    except ValueError:
        raise Undecipherable("decrypt-failed") from None
