"""The CMS DER layer: build and parse AuthEnvelopedData (RFC 5083/5084) and SignedData (RFC 5652) for sipsec.

This module knows bytes, OIDs and symmetric primitives only; the identity-based
operations arrive as values (a KEM shared secret, a signature) or callables, so the
structures can be read without any key. Structures are written with the small DER
encoder of :mod:`sipsec.envelope._der` and read by walking their TLVs (both in
microseconds, where asn1crypto's object model took about a millisecond per message;
asn1crypto and ``openssl cms`` read the same bytes in the tests); every parse is strict:
the parsed values are re-encoded and the input must be exactly that encoding (so only DER, sorted SET OFs, absent parameters — RFC 5754 §2 for SHA-256 —
and the single algorithm suite v1 allows pass), and any failure raises
:class:`~sipsec.envelope.errors.MalformedEnvelope` (400) — or
:class:`~sipsec.envelope.errors.Undecipherable` (493) when a key does not open it.
"""

from __future__ import annotations

import calendar
import hashlib
import hmac
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap, aes_key_wrap

from sipsec.envelope import _der as der
from sipsec.envelope import compression, oids
from sipsec.envelope.errors import Forbidden, MalformedEnvelope, RejectedEnvelope, Undecipherable

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
    "auth_attributes",
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
#: The GCM tag (ICV): 12 bytes, RFC 5084 §3.2's DEFAULT for aes-ICVlen (so GCMParameters
#: omit it, as DER requires of a DEFAULT value); NIST SP 800-38D §5.2.1.2 allows 96-bit tags
#: without the extra limits it puts on 32- and 64-bit ones. The only length sipsec accepts.
GCM_TAG_BYTES = 12
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
        return _identity_der(self.aor, self.period, self.period_length)

    @classmethod
    def from_der(cls, data: bytes) -> WireIdentity:
        """Parse exactly the DER :meth:`to_der` writes; raises :class:`MalformedEnvelope`."""
        if cls is WireIdentity and len(data) <= _MAX_MEMO_IDENTITY:
            return _identity_from_der(bytes(data))  # the same few identities, message after message
        return cls._from_der(data)

    @classmethod
    def _from_der(cls, data: bytes) -> WireIdentity:
        try:
            top = _kids(data, 0, len(data))
            _shape(top, (0x30,), "identity")
            fields = _inner(data, top[0])
            _shape(fields, (0x0C, 0x02, 0x02), "identity")
            aor = _value(data, fields[0]).decode("utf-8")
            period = int.from_bytes(_value(data, fields[1]), "big", signed=True)
            length = int.from_bytes(_value(data, fields[2]), "big", signed=True)
        except ValueError as exc:
            raise MalformedEnvelope("malformed-cms", str(exc)) from None
        if period < 0 or length <= 0:
            raise MalformedEnvelope("malformed-cms", "bad identity")
        identity = cls(aor, period, length)
        _require_der(data, identity.to_der())
        return identity


#: Identities up to this size (a typical one is ~40 bytes) are parsed once and remembered.
_MAX_MEMO_IDENTITY = 256


@lru_cache(maxsize=1024)
def _identity_from_der(data: bytes) -> WireIdentity:
    """:meth:`WireIdentity.from_der`, remembered (only valid encodings: a failure raises, uncached)."""
    return WireIdentity._from_der(data)


@lru_cache(maxsize=1024)
def _identity_der(aor: str, period: int, period_length: int) -> bytes:
    """The DER SipsecIdentity (public values; the same few identities sign and receive every message)."""
    return der.seq(der.utf8(aor), der.integer(period), der.integer(period_length))


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

# Parsing walks the TLVs for the values, then re-encodes them with the encoder above and
# requires the input to be exactly those bytes (the DER check): anything that is not the
# structure sipsec writes is rejected without a general-purpose ASN.1 parser (asn1crypto,
# the independent one, reads the same bytes in the tests).

Kid = tuple[int, int, int, int]  # (tag, start of the TLV, start of its contents, end)


def _kids(data: bytes, start: int, end: int) -> list[Kid]:
    """The TLVs that exactly fill ``data[start:end]``; ValueError if they do not.

    :func:`sipsec.envelope._der.read_tlv`, inlined (this runs some 30 times per message).
    """
    out: list[Kid] = []
    pos = start
    size_all = len(data)
    while pos < end:
        if pos + 2 > size_all:
            raise ValueError("truncated")
        tag = data[pos]
        first = data[pos + 1]
        if tag & 0x1F == 0x1F:
            raise ValueError("high tag numbers are not used here")
        body = pos + 2
        if first < 0x80:
            stop = body + first
        else:
            count = first & 0x7F
            if count == 0 or count > 4 or body + count > size_all:
                raise ValueError("bad length")
            stop = body + count + int.from_bytes(data[body : body + count], "big")
            body += count
        if stop > size_all:
            raise ValueError("truncated")
        if stop > end:
            raise ValueError("overruns its parent")
        out.append((tag, pos, body, stop))
        pos = stop
    return out


def _inner(data: bytes, kid: Kid) -> list[Kid]:
    return _kids(data, kid[2], kid[3])


def _shape(kids: list[Kid], tags: tuple[int, ...], what: str) -> None:
    if tuple(k[0] for k in kids) != tags:
        raise ValueError(f"{what} shape")


def _tlv(data: bytes, kid: Kid) -> bytes:
    return data[kid[1] : kid[3]]


def _value(data: bytes, kid: Kid) -> bytes:
    return data[kid[2] : kid[3]]


def _algorithm_is(data: bytes, kid: Kid, oid: str) -> bool:
    """``kid`` is an AlgorithmIdentifier whose algorithm is ``oid``."""
    if kid[0] != 0x30:
        return False
    inner = _inner(data, kid)
    return bool(inner) and _tlv(data, inner[0]) == der.oid(oid)


@lru_cache(maxsize=64)
def _time(tag: int, text: bytes) -> int:
    """Seconds since the epoch of a UTCTime (1950–2049) or GeneralizedTime ``...Z`` value.

    Remembered: messages signed in the same second share it. Only valid values (13 or 15
    bytes) are kept; anything else raises ValueError, which is not remembered.
    """
    digits = text.decode("ascii")
    if not digits.endswith("Z") or not digits[:-1].isdigit():
        raise ValueError("time")
    if tag == 0x17 and len(digits) == 13:
        yy = int(digits[:2])
        year, rest = (1900 + yy if yy >= 50 else 2000 + yy), digits[2:]
    elif tag == 0x18 and len(digits) == 15:
        year, rest = int(digits[:4]), digits[4:]
    else:
        raise ValueError("time")
    month, day, hour, minute, second = (int(rest[i : i + 2]) for i in range(0, 10, 2))
    return calendar.timegm((year, month, day, hour, minute, second, 0, 0, 0))


def _require_der(data: bytes, rebuilt: bytes) -> None:
    if data != rebuilt:
        raise MalformedEnvelope("malformed-cms", "not the DER sipsec writes")


@lru_cache(maxsize=32)
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

#: The signed attributes of every SignerInfo, by the DER of their type.
_SIGNED_ATTR_TYPES = frozenset(der.oid(o) for o in (oids.ID_CONTENT_TYPE, oids.ID_MESSAGE_DIGEST,
                                                      oids.ID_SIGNING_TIME, oids.ID_SIPSEC_AA_NONCE))


_OID_DATA = der.oid(oids.ID_DATA)
_OID_MESSAGE_DIGEST = der.oid(oids.ID_MESSAGE_DIGEST)
_OID_SIGNING_TIME = der.oid(oids.ID_SIGNING_TIME)
_OID_NONCE = der.oid(oids.ID_SIPSEC_AA_NONCE)
#: The content-type attribute: always ``id-data`` (the MIME entity).
_ATTR_CONTENT_TYPE = der.seq(der.oid(oids.ID_CONTENT_TYPE), der.set_of(_OID_DATA))


def _signed_attrs(content_digest: bytes, when: int, nonce: bytes) -> bytes:
    """DER of the SET OF signed attributes (RFC 5652 §5.3, §11), in DER (sorted) order."""
    return der.set_of(
        _ATTR_CONTENT_TYPE,
        der.seq(_OID_MESSAGE_DIGEST, der.set_of(der.octets(content_digest))),
        der.seq(_OID_SIGNING_TIME, der.set_of(der.signing_time(when))),
        der.seq(_OID_NONCE, der.set_of(der.octets(nonce))),
    )


_V3 = der.integer(3)
_SHA256_ALG = der.seq(der.oid(oids.ID_SHA256))
_SIG_ALG = der.seq(der.oid(oids.ID_SIPSEC_SIG_CC_BLS12381))
_DIGEST_ALGORITHMS = der.set_of(_SHA256_ALG)


def _signed_data(content: bytes, signed_attrs: bytes, signer: bytes, signature: bytes) -> bytes:
    _, start, _ = der.read_tlv(signed_attrs)
    signer_info = der.seq(
        _V3,
        der.ctx(0, signer, constructed=False),  # sid: subjectKeyIdentifier [0] = DER SipsecIdentity
        _SHA256_ALG,
        der.ctx(0, signed_attrs[start:]),  # signedAttrs [0] IMPLICIT
        _SIG_ALG,
        der.octets(signature),
    )
    return der.seq(
        _V3,
        _DIGEST_ALGORITHMS,
        der.seq(_OID_DATA, der.ctx(0, der.octets(content))),
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
    data = bytes(data)
    fields = _signed_data_fields(data)
    if fields is None:
        fields = _signed_data_fields_strict(data)
    content, signer, signing_time, nonce, digest, signed_attrs, signature = fields
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


#: (content, signer, signing time, nonce, message digest, signed attributes DER, signature)
_SignedFields = tuple[bytes, WireIdentity, int, bytes, bytes, bytes, bytes]
#: What every SignedData sipsec writes starts its SEQUENCE with: version 3, digestAlgorithms {SHA-256}.
_SIGNED_DATA_HEAD = _V3 + _DIGEST_ALGORITHMS


def _signed_data_fields(data: bytes) -> _SignedFields | None:
    """The fields of ``data`` when it is exactly the DER sipsec writes, else None.

    The quick way: read the TLV headers of the one layout sipsec writes, then re-encode the
    values found and require ``data`` to be exactly that encoding (the DER check). None
    means "not shown to be canonical": :func:`_signed_data_fields_strict` then walks the
    input and raises the precise error — so errors, and what is accepted, are the strict
    walk's (an input passes here only if it is the encoding of its values, which the
    strict walk accepts with the same values).
    """
    read = der.read_tlv
    try:
        tag, pos, end = read(data, 0)
        if tag != 0x30 or end != len(data) or not data.startswith(_SIGNED_DATA_HEAD, pos):
            return None
        _, eci, eci_end = read(data, pos + len(_SIGNED_DATA_HEAD))  # encapContentInfo
        if not data.startswith(_OID_DATA, eci):
            return None
        _, wrapped, _ = read(data, eci + len(_OID_DATA))  # eContent [0] EXPLICIT
        _, c0, c1 = read(data, wrapped)  # OCTET STRING
        _, si_set, _ = read(data, eci_end)  # signerInfos SET OF
        _, si, _ = read(data, si_set)  # SignerInfo
        _, _, pos = read(data, si)  # version
        _, s0, s1 = read(data, pos)  # sid [0]
        _, _, pos = read(data, s1)  # digestAlgorithm
        _, a0, a1 = read(data, pos)  # signedAttrs [0]
        found: dict[bytes, tuple[int, int, int]] = {}
        pos = a0
        while pos < a1:
            _, attr, attr_end = read(data, pos)  # Attribute SEQUENCE
            _, o0, o1 = read(data, attr)  # attrType
            _, v0, _ = read(data, o1)  # attrValues SET
            found[data[attr:o1]] = read(data, v0)  # the one value
            pos = attr_end
        _, _, pos = read(data, a1)  # signatureAlgorithm
        _, g0, g1 = read(data, pos)  # signature OCTET STRING
        if len(found) != len(_SIGNED_ATTR_TYPES) or found.keys() != _SIGNED_ATTR_TYPES:
            return None
        _, d0, d1 = found[_OID_MESSAGE_DIGEST]
        _, n0, n1 = found[_OID_NONCE]
        when_tag, t0, t1 = found[_OID_SIGNING_TIME]
        if n1 - n0 != NONCE_BYTES or when_tag not in (0x17, 0x18):
            return None
        signing_time = _time(when_tag, data[t0:t1])
        signer = WireIdentity.from_der(data[s0:s1])
    except (ValueError, IndexError, MalformedEnvelope):
        return None
    content, digest, nonce, signature = data[c0:c1], data[d0:d1], data[n0:n1], data[g0:g1]
    signed_attrs = _signed_attrs(digest, signing_time, nonce)
    if data != assemble_signed_data(content, signer, signed_attrs, signature):
        return None
    return content, signer, signing_time, nonce, digest, signed_attrs, signature


def _signed_data_fields_strict(data: bytes) -> _SignedFields:
    """The fields of a SignedData by a full walk of its TLVs; raises the error that describes a deviation."""
    try:
        top = _kids(data, 0, len(data))
        _shape(top, (0x30,), "signed-data")
        sd = _inner(data, top[0])
        _shape(sd, (0x02, 0x31, 0x30, 0x31), "signed-data")
        digest_algorithms = _inner(data, sd[1])
        if _tlv(data, sd[0]) != _V3 or len(digest_algorithms) != 1:
            raise MalformedEnvelope("malformed-cms", "signed-data shape")
        if not _algorithm_is(data, digest_algorithms[0], oids.ID_SHA256):
            raise MalformedEnvelope("unsupported-algorithm", "digest")
        eci = _inner(data, sd[2])
        _shape(eci, (0x06, 0xA0), "encapsulated content")
        wrapped = _inner(data, eci[1])
        if _tlv(data, eci[0]) != _OID_DATA or [k[0] for k in wrapped] != [0x04]:
            raise MalformedEnvelope("malformed-cms", "encapsulated content")
        content = _value(data, wrapped[0])
        infos = _inner(data, sd[3])
        if len(infos) != 1:
            raise MalformedEnvelope("malformed-cms", "signer count")
        si = _inner(data, infos[0]) if infos[0][0] == 0x30 else []
        if len(si) < 2 or si[1][0] != 0x80:
            raise MalformedEnvelope("malformed-cms", "signer identifier")
        _shape(si, (0x02, 0x80, 0x30, 0xA0, 0x30, 0x04), "signer info")
        signer = WireIdentity.from_der(_value(data, si[1]))
        if not _algorithm_is(data, si[2], oids.ID_SHA256):
            raise MalformedEnvelope("unsupported-algorithm", "digest")
        if not _algorithm_is(data, si[4], oids.ID_SIPSEC_SIG_CC_BLS12381):
            raise MalformedEnvelope("unsupported-algorithm", "signature")
        attrs = _inner(data, si[3])
        found: dict[bytes, Kid] = {}
        for attr in attrs:
            parts = _inner(data, attr) if attr[0] == 0x30 else []
            _shape(parts, (0x06, 0x31), "signed attribute")
            values = _inner(data, parts[1])
            if len(values) != 1:
                raise MalformedEnvelope("malformed-cms", "attribute values")
            found[_tlv(data, parts[0])] = values[0]
        if set(found) != _SIGNED_ATTR_TYPES or len(attrs) != len(_SIGNED_ATTR_TYPES):
            raise MalformedEnvelope("malformed-cms", "signed attributes")
        digest = _value(data, found[_OID_MESSAGE_DIGEST])
        when = found[_OID_SIGNING_TIME]
        nonce = _value(data, found[_OID_NONCE])
        if len(nonce) != NONCE_BYTES or when[0] not in (0x17, 0x18):
            raise MalformedEnvelope("malformed-cms", "nonce or time")
        signing_time = _time(when[0], _value(data, when))
        signature = _value(data, si[5])
    except ValueError as exc:
        raise MalformedEnvelope("malformed-cms", str(exc)) from None
    signed_attrs = _signed_attrs(digest, signing_time, nonce)
    _require_der(data, assemble_signed_data(content, signer, signed_attrs, signature))
    return content, signer, signing_time, nonce, digest, signed_attrs, signature


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


_OID_DEFLATE_V2 = der.oid(oids.ID_SIPSEC_ALG_DEFLATE_SIPDICT_V2)
_OID_DEFLATE_DIALOG_V2 = der.oid(oids.ID_SIPSEC_ALG_DEFLATE_SIPDICT_DIALOG_V2)


def _compressed_data(algorithm: str, content_type: str, stream: bytes) -> bytes:
    return der.seq(
        der.integer(0),
        _alg(algorithm),
        der.seq(der.oid(content_type), der.ctx(0, der.octets(stream))),  # eContent [0] EXPLICIT
    )


def build_compressed_data(content_type: str, content: bytes, primer: bytes = b"") -> bytes:
    """DER of a CompressedData (RFC 3274) of ``content`` (``id-signedData`` or ``id-data``).

    Version 0; compressionAlgorithm ``id-sipsec-alg-deflate-sipdict-v2`` (the static
    dictionary), or ``id-sipsec-alg-deflate-sipdict-dialog-v2`` when a dialog's ``primer``
    (its first request's content) extends it — parameters absent, the OID names the
    dictionary; the raw DEFLATE stream (RFC 1951) is the encapsulated eContent.
    """
    if content_type not in _COMPRESSIBLE:
        raise ValueError("only id-signedData or id-data content is compressed")
    algorithm = oids.ID_SIPSEC_ALG_DEFLATE_SIPDICT_DIALOG_V2 if primer else oids.ID_SIPSEC_ALG_DEFLATE_SIPDICT_V2
    return _compressed_data(algorithm, content_type, compression.compress(content, primer))


def parse_compressed_data(data: bytes, limit: int = compression.MAX_DECOMPRESSED_BYTES,
                          primer: bytes = b"") -> tuple[str, bytes]:
    """``(eContentType, decompressed content)`` of a CompressedData :func:`build_compressed_data` wrote.

    Strict like every parse here (exactly that DER), bounded to ``limit`` output bytes; the
    dialog variant needs the dialog's ``primer``. Anything else raises
    :class:`MalformedEnvelope` (400) — the retired zlib algorithms (v1) included
    (``unsupported-algorithm``).
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
    if tag == 0x30 and algorithm == _OID_DEFLATE_V2:
        algorithm_oid, dictionary_primer = oids.ID_SIPSEC_ALG_DEFLATE_SIPDICT_V2, b""
    elif tag == 0x30 and algorithm == _OID_DEFLATE_DIALOG_V2:
        if not primer:
            raise MalformedEnvelope("unsupported-algorithm", "no dialog dictionary here")
        algorithm_oid, dictionary_primer = oids.ID_SIPSEC_ALG_DEFLATE_SIPDICT_DIALOG_V2, primer
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

#: The content types an AuthEnvelopedData may carry, by their DER.
_CONTENT_TYPES = {der.oid(o): o for o in (oids.ID_SIGNED_DATA, oids.ID_DATA, oids.ID_CT_COMPRESSED_DATA)}


def _gcm_seal(cek: bytes, nonce: bytes, content: bytes, aad: bytes) -> tuple[bytes, bytes]:
    """AES-256-GCM encryption: ``(ciphertext, 12-byte tag)``.

    A truncated GCM tag is the leading bytes of the full one (NIST SP 800-38D §7.1, MSB_t),
    so ``cryptography``'s native AESGCM (~40x faster per message than pycryptodome's GCM,
    whose mode object is built in Python) seals, and its 16-byte tag is cut to 12.
    """
    if len(cek) != CEK_BYTES:
        raise ValueError("content-encryption key must be 32 bytes")
    sealed = AESGCM(cek).encrypt(nonce, content, aad)
    return sealed[:-16], sealed[-16 : -16 + GCM_TAG_BYTES]


def _gcm_open(cek: bytes, nonce: bytes, ciphertext: bytes, tag: bytes, aad: bytes) -> bytes:
    """AES-256-GCM decryption checking a 12-byte tag (in constant time, by OpenSSL); InvalidTag on failure.

    AESGCM checks 16-byte tags only, so this uses the GCM mode object, which takes a
    truncated tag (``min_tag_length``); exactly :data:`GCM_TAG_BYTES` are accepted.
    """
    if len(cek) != CEK_BYTES:
        raise ValueError("content-encryption key must be 32 bytes")
    if len(tag) != GCM_TAG_BYTES:
        raise InvalidTag
    decryptor = Cipher(algorithms.AES(cek), modes.GCM(nonce, tag, min_tag_length=GCM_TAG_BYTES)).decryptor()
    decryptor.authenticate_additional_data(aad)
    return decryptor.update(ciphertext) + decryptor.finalize()



_V0 = der.integer(0)
_OID_GCM = der.oid(oids.ID_AES256_GCM)
_OID_AUTH_ENVELOPED = der.oid(oids.ID_CT_AUTH_ENVELOPED_DATA)


_ATTR_CONTENT_TYPE_OID = der.oid(oids.ID_CONTENT_TYPE)


@lru_cache(maxsize=8)
def auth_attributes(content_type: str) -> bytes:
    """The DER of the AuthEnvelopedData's authAttrs for ``content_type``, as GCM's associated data.

    RFC 5083 §2.1: authAttrs MUST be present when the content type is not id-data, and
    then hold the content-type attribute (RFC 5652 §11.1) naming the EncryptedContentInfo's
    contentType; sipsec writes exactly that one attribute, for every content type (id-data
    included: one layout). RFC 5083 §2.2: the additional authenticated data is the DER of
    AuthAttributes with the universal SET OF tag (0x31), not the IMPLICIT [1] of the field.
    """
    return der.set_of(der.seq(_ATTR_CONTENT_TYPE_OID, der.set_of(der.oid(content_type))))


@lru_cache(maxsize=8)
def _auth_attrs_field(content_type: str) -> bytes:
    """authAttrs as the field is written: [1] IMPLICIT (constructed, 0xA1) around the SET OF."""
    return b"\xa1" + auth_attributes(content_type)[1:]


def _auth_enveloped(recipient: bytes, content_type: str, nonce: bytes, ciphertext: bytes,
                    mac: bytes) -> bytes:
    aed = der.seq(
        _V0,
        der.set_of(recipient),
        der.seq(
            der.oid(content_type),
            # GCMParameters { aes-nonce }: aes-ICVlen is the DEFAULT 12, which DER omits
            der.seq(_OID_GCM, der.seq(der.octets(nonce))),
            der.ctx(0, ciphertext, constructed=False),  # encryptedContent [0] IMPLICIT
        ),
        _auth_attrs_field(content_type),  # authAttrs [1] IMPLICIT: the content-type attribute
        der.octets(mac),
    )
    return der.seq(_OID_AUTH_ENVELOPED, der.ctx(0, aed))


def build_auth_enveloped(recipient: bytes, content_type: str, content: bytes, cek: bytes) -> bytes:
    """DER ContentInfo of an AuthEnvelopedData (RFC 5083) with AES-256-GCM (RFC 5084).

    A fresh 12-byte nonce per message, a 12-byte tag in ``mac`` (RFC 5084's default
    aes-ICVlen, absent from the GCMParameters); authAttrs hold the
    content-type attribute (RFC 5083 §2.1), and their DER is GCM's additional data
    (:func:`auth_attributes`, RFC 5083 §2.2). ``recipient`` is the DER of one
    RecipientInfo; ``content_type`` is ``id-signedData`` (the content is then the DER of a
    SignedData), ``id-data`` (a MIME entity) or ``id-ct-compressedData`` (the DER of a
    :func:`build_compressed_data` holding either).
    """
    if len(cek) != CEK_BYTES:
        raise ValueError("content-encryption key must be 32 bytes")
    nonce = os.urandom(GCM_NONCE_BYTES)
    ciphertext, tag = _gcm_seal(cek, nonce, content, auth_attributes(content_type))
    return _auth_enveloped(recipient, content_type, nonce, ciphertext, tag)


def parse_auth_enveloped(data: bytes) -> AuthEnveloped:
    """Parse a sipsec AuthEnvelopedData ContentInfo; raises MalformedEnvelope on any deviation."""
    data = bytes(data)
    parsed = _auth_enveloped_fields(data)
    return parsed if parsed is not None else _parse_auth_enveloped_strict(data)


_KEKRI_VERSION = der.integer(4)


def _auth_enveloped_fields(data: bytes) -> AuthEnveloped | None:
    """The AuthEnvelopedData in ``data`` when it is exactly the DER sipsec writes, else None
    (then :func:`_parse_auth_enveloped_strict` decides, and names the deviation).

    As :func:`_signed_data_fields`: read the headers of sipsec's one layout, re-encode what
    was found and require exactly those bytes.
    """
    read = der.read_tlv
    try:
        tag, pos, end = read(data, 0)
        if tag != 0x30 or end != len(data) or not data.startswith(_OID_AUTH_ENVELOPED, pos):
            return None
        _, pos, _ = read(data, pos + len(_OID_AUTH_ENVELOPED))  # content [0] EXPLICIT
        _, pos, _ = read(data, pos)  # AuthEnvelopedData SEQUENCE
        _, _, pos = read(data, pos)  # version
        _, ri_set, eci = read(data, pos)  # recipientInfos SET OF
        ri_tag, ri_start, ri_end = read(data, ri_set)
        _, ct0, eci_end = read(data, eci)  # authEncryptedContentInfo
        _, _, ct1 = read(data, ct0)  # contentType
        content_type = _CONTENT_TYPES.get(data[ct0:ct1])
        _, alg, alg_end = read(data, ct1)  # contentEncryptionAlgorithm
        _, gcm_params, _ = read(data, alg + len(_OID_GCM))  # GCMParameters SEQUENCE
        _, n0, n1 = read(data, gcm_params)  # aes-nonce (no aes-ICVlen: compared below)
        _, e0, e1 = read(data, alg_end)  # encryptedContent [0] IMPLICIT
        _, _, attrs_end = read(data, eci_end)  # authAttrs [1] IMPLICIT (compared below)
        _, m0, m1 = read(data, attrs_end)  # mac
        if content_type is None or ri_tag not in (0xA2, 0xA4) or n1 - n0 != GCM_NONCE_BYTES:
            return None
        if m1 - m0 != GCM_TAG_BYTES:
            return None
        if ri_tag == 0xA2 and data.startswith(_KEKRI_VERSION, ri_start):  # the dialog messages' kekri
            _, kid, kid_end = read(data, ri_start + len(_KEKRI_VERSION))  # KEKIdentifier
            _, k0, k1 = read(data, kid)  # keyIdentifier
            _, _, pos = read(data, kid_end)  # keyEncryptionAlgorithm
            _, w0, w1 = read(data, pos)  # encryptedKey
            recipient: KemRecipient | KekRecipient = KekRecipient(data[k0:k1], data[w0:w1])
            recipient_der = _kek_ri(data[k0:k1], data[w0:w1])  # compared below, with the rest
        else:
            recipient, recipient_der = _parse_recipient(data, (ri_tag, ri_set, ri_start, ri_end))
    except (ValueError, IndexError, RejectedEnvelope):
        return None
    nonce, ciphertext, mac = data[n0:n1], data[e0:e1], data[m0:m1]
    if data != _auth_enveloped(recipient_der, content_type, nonce, ciphertext, mac):
        return None
    return AuthEnveloped(recipient, content_type, nonce, ciphertext, mac)


def _parse_auth_enveloped_strict(data: bytes) -> AuthEnveloped:
    """:func:`parse_auth_enveloped` by a full walk of the TLVs: raises the error that describes a deviation."""
    try:
        top = _kids(data, 0, len(data))
        _shape(top, (0x30,), "content info")
        info = _inner(data, top[0])
        _shape(info, (0x06, 0xA0), "content info")
        if _tlv(data, info[0]) != _OID_AUTH_ENVELOPED:
            raise MalformedEnvelope("malformed-cms", "not authEnveloped-data")
        wrapped = _inner(data, info[1])
        _shape(wrapped, (0x30,), "auth-enveloped-data")
        aed = _inner(data, wrapped[0])
        if tuple(k[0] for k in aed) == (0x02, 0x31, 0x30, 0x04):
            raise MalformedEnvelope("malformed-cms", "no authenticated attributes (RFC 5083 §2.1)")
        _shape(aed, (0x02, 0x31, 0x30, 0xA1, 0x04), "auth-enveloped-data")
        ris = _inner(data, aed[1])
        if len(ris) != 1:
            raise MalformedEnvelope("malformed-cms", "recipient count")
        recipient, recipient_der = _parse_recipient(data, ris[0])
        eci = _inner(data, aed[2])
        _shape(eci, (0x06, 0x30, 0x80), "encrypted content info")
        content_type = _CONTENT_TYPES.get(_tlv(data, eci[0]))
        if content_type is None:
            raise MalformedEnvelope("malformed-cms", "content type")
        if not _algorithm_is(data, eci[1], oids.ID_AES256_GCM):
            raise MalformedEnvelope("unsupported-algorithm", "content encryption")
        alg = _inner(data, eci[1])
        params = _inner(data, alg[1]) if len(alg) == 2 and alg[1][0] == 0x30 else []
        if not 1 <= len(params) <= 2 or params[0][0] != 0x04 or (len(params) == 2 and params[1][0] != 0x02):
            raise MalformedEnvelope("malformed-cms", "GCM parameters")
        if len(params) == 2:  # an explicit aes-ICVlen: sipsec uses only the DEFAULT 12, never encoded
            if _tlv(data, params[1]) == der.integer(GCM_TAG_BYTES):
                raise MalformedEnvelope("malformed-cms", "GCM ICV length 12 is the DEFAULT, which DER omits")
            raise MalformedEnvelope("unsupported-algorithm", "GCM ICV length (only 12 bytes, RFC 5084 §3.2)")
        nonce = _value(data, params[0])
        if len(nonce) != GCM_NONCE_BYTES:
            raise MalformedEnvelope("unsupported-algorithm", "GCM nonce length")
        ciphertext = _value(data, eci[2])
        if _tlv(data, aed[3]) != _auth_attrs_field(content_type):
            raise MalformedEnvelope("malformed-cms", "authenticated attributes are not exactly the "
                                    "content-type attribute of the content (RFC 5083 §2.1)")
        mac = _value(data, aed[4])
        if len(mac) != GCM_TAG_BYTES:
            raise MalformedEnvelope("malformed-cms", "mac is not a 12-byte GCM tag")
    except ValueError as exc:
        raise MalformedEnvelope("malformed-cms", str(exc)) from None
    # no originatorInfo or unauthAttrs, version 0, DER: all by re-encoding
    _require_der(data, _auth_enveloped(recipient_der, content_type, nonce, ciphertext, mac))
    return AuthEnveloped(recipient, content_type, nonce, ciphertext, mac)


def _parse_recipient(data: bytes, ri: Kid) -> tuple[KemRecipient | KekRecipient, bytes]:
    if ri[0] == 0xA2:  # kekri [2]
        kekri = _inner(data, ri)
        _shape(kekri, (0x02, 0x30, 0x30, 0x04), "kek recipient")
        if not _algorithm_is(data, kekri[2], oids.ID_AES256_WRAP):
            raise MalformedEnvelope("unsupported-algorithm", "key wrap")
        kekid = _inner(data, kekri[1])
        _shape(kekid, (0x04,), "kek identifier")
        rec = KekRecipient(_value(data, kekid[0]), _value(data, kekri[3]))
        return rec, _kek_ri(rec.key_id, rec.encrypted_key)
    if ri[0] == 0xA4:  # ori [4]
        ori = _inner(data, ri)
        if not ori or _tlv(data, ori[0]) != der.oid(oids.ID_ORI_KEM):
            raise MalformedEnvelope("unsupported-algorithm", "other recipient type")
        _shape(ori, (0x06, 0x30), "other recipient")
        kemri = _inner(data, ori[1])
        _shape(kemri, (0x02, 0x80, 0x30, 0x04, 0x30, 0x02, 0x30, 0x04), "kem recipient")
        for index, name, oid in ((2, "kem", oids.ID_SIPSEC_KEM_BF_BLS12381),
                                 (4, "kdf", oids.ID_ALG_HKDF_WITH_SHA256), (6, "wrap", oids.ID_AES256_WRAP)):
            if not _algorithm_is(data, kemri[index], oid):
                raise MalformedEnvelope("unsupported-algorithm", name)
        if _tlv(data, kemri[5]) != der.integer(KEK_BYTES):
            raise MalformedEnvelope("unsupported-algorithm", "kek length")
        identity = WireIdentity.from_der(_value(data, kemri[1]))
        kem = KemRecipient(
            identity=identity,
            kemct=_value(data, kemri[3]),
            kek_length=KEK_BYTES,
            encrypted_key=_value(data, kemri[7]),
        )
        return kem, _kem_ri(identity, kem.kemct, kem.encrypted_key)
    raise MalformedEnvelope("unsupported-algorithm", "recipient type")


def decrypt_content(envelope: AuthEnveloped, cek: bytes) -> bytes:
    """AES-256-GCM decryption of the content; raises Undecipherable('decrypt-failed') on any tag failure."""
    try:
        return _gcm_open(cek, envelope.nonce, envelope.ciphertext, envelope.mac,
                         auth_attributes(envelope.content_type))
    except InvalidTag:
        raise Undecipherable("decrypt-failed") from None
