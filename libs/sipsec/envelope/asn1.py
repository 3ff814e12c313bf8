"""ASN.1 structures the envelope adds to asn1crypto's CMS: RFC 9629 KEMRecipientInfo, RFC 5084 GCMParameters, sipsec attributes.

Importing this module registers, additively, in asn1crypto's tables:

* ``OtherRecipientInfo`` (RFC 5652 §6.2.5) becomes an OID-keyed choice, with
  ``id-ori-kem`` -> :class:`KEMRecipientInfo` (RFC 9629 §3);
* ``id-aes256-GCM`` parameters -> :class:`GCMParameters` (RFC 5084 §3.2);
* the sipsec signed attributes (:mod:`sipsec.envelope.oids`; ``id-sipsec-aa-signer`` is
  registered so that bodies of the first wire version still decode).

The envelope itself parses its bodies with a strict TLV walker (:mod:`sipsec.envelope.cms`);
these registrations let asn1crypto — the independent parser of the tests, and anyone
inspecting a body — read sipsec bodies as typed structures.

Why RFC 9629 rather than RFC 5409: our Boneh–Franklin FullIdent is used as a KEM (the
``sipsec.ibc`` API is ``encapsulate -> (key, ciphertext)``), and KEMRecipientInfo is the
IETF's generic recipient structure for exactly that shape — it names the KEM, carries its
ciphertext, and derives the key-encryption key with an explicit KDF (HKDF-SHA256, RFC 8619)
before wrapping the content-encryption key (AES-256 key wrap). RFC 5409's
``KeyTransRecipientInfo`` profile is tied to RFC 5408's IBE public-parameter documents,
districts and serial numbers, and to key *transport* of the CEK itself; none of that fits a
BLS12-381 KEM whose parameters come from the PKG service. RFC 5409's one good idea — the
recipient identity as a DER structure inside ``rid.subjectKeyIdentifier`` — is kept: the
``rid`` here holds a DER :class:`SipsecIdentity`.
"""

from __future__ import annotations

from asn1crypto import algos, cms
from asn1crypto.core import (
    Any,
    Integer,
    ObjectIdentifier,
    OctetString,
    Sequence,
    SetOf,
    UTF8String,
)

from sipsec.envelope import oids

__all__ = [
    "AlgorithmIdentifier",
    "CMSORIforKEMOtherInfo",
    "GCMParameters",
    "KEMRecipientInfo",
    "SetOfSipsecIdentity",
    "SipsecIdentity",
]


class AlgorithmIdentifier(Sequence):  # type: ignore[misc]  # asn1crypto is untyped
    """RFC 5280 AlgorithmIdentifier with a plain OID (parameters absent for every sipsec OID)."""

    _fields = [
        ("algorithm", ObjectIdentifier),
        ("parameters", Any, {"optional": True}),
    ]


class GCMParameters(Sequence):  # type: ignore[misc]  # asn1crypto is untyped
    """RFC 5084 §3.2: ``GCMParameters ::= SEQUENCE { aes-nonce OCTET STRING, aes-ICVlen AES-GCM-ICVlen DEFAULT 12 }``."""

    _fields = [
        ("aes_nonce", OctetString),
        ("aes_icvlen", Integer, {"default": 12}),
    ]


class SipsecIdentity(Sequence):  # type: ignore[misc]  # asn1crypto is untyped
    """A sipsec identity on the wire: canonical AOR, key period and period length (seconds).

    ``SipsecIdentity ::= SEQUENCE { aor UTF8String, period INTEGER, periodLength INTEGER }``.
    The purpose (``enc``/``sig``) and the suite follow from where it appears: in a KEM
    ``rid`` it is an encryption identity of the KEM's suite; as a SignerInfo's sid it is a
    signature identity of the signature algorithm's suite.
    """

    _fields = [
        ("aor", UTF8String),
        ("period", Integer),
        ("period_length", Integer),
    ]


class SetOfSipsecIdentity(SetOf):  # type: ignore[misc]  # asn1crypto is untyped
    """Attribute values of ``id-sipsec-aa-signer``."""

    _child_spec = SipsecIdentity


class KEMRecipientInfo(Sequence):  # type: ignore[misc]  # asn1crypto is untyped
    """RFC 9629 §3::

        KEMRecipientInfo ::= SEQUENCE {
          version CMSVersion,  -- always set to 0
          rid RecipientIdentifier,
          kem KEMAlgorithmIdentifier,
          kemct OCTET STRING,
          kdf KeyDerivationAlgorithmIdentifier,
          kekLength INTEGER (1..65535),
          ukm [0] EXPLICIT UserKeyingMaterial OPTIONAL,
          wrap KeyEncryptionAlgorithmIdentifier,
          encryptedKey EncryptedKey }
    """

    _fields = [
        ("version", Integer),
        ("rid", cms.RecipientIdentifier),
        ("kem", AlgorithmIdentifier),
        ("kemct", OctetString),
        ("kdf", AlgorithmIdentifier),
        ("kek_length", Integer),
        ("ukm", OctetString, {"explicit": 0, "optional": True}),
        ("wrap", AlgorithmIdentifier),
        ("encrypted_key", OctetString),
    ]


class CMSORIforKEMOtherInfo(Sequence):  # type: ignore[misc]  # asn1crypto is untyped
    """RFC 9629 §5: the KDF ``info`` input, DER-encoded.

    ``CMSORIforKEMOtherInfo ::= SEQUENCE { wrap KeyEncryptionAlgorithmIdentifier,
    kekLength INTEGER (1..65535), ukm [0] EXPLICIT UserKeyingMaterial OPTIONAL }``
    """

    _fields = [
        ("wrap", AlgorithmIdentifier),
        ("kek_length", Integer),
        ("ukm", OctetString, {"explicit": 0, "optional": True}),
    ]


def _register() -> None:
    """Register the structures above in asn1crypto's OID tables (idempotent, additive)."""
    ori = cms.OtherRecipientInfo
    specs = dict(getattr(ori, "_oid_specs", None) or {})
    specs[oids.ID_ORI_KEM] = KEMRecipientInfo
    ori._oid_pair = ("ori_type", "ori_value")
    ori._oid_specs = specs
    ori()._setup()  # asn1crypto caches field specs per class; recompute them with the OID pair
    algos.EncryptionAlgorithm._oid_specs["aes256_gcm"] = GCMParameters
    cms.CMSAttribute._oid_specs[oids.ID_SIPSEC_AA_SIGNER] = SetOfSipsecIdentity
    cms.CMSAttribute._oid_specs[oids.ID_SIPSEC_AA_NONCE] = cms.SetOfOctetString


_register()
