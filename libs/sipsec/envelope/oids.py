"""Every object identifier the sipsec envelope puts on the wire, standard and private, in one place.

Private arc
-----------
sipsec has no IANA Private Enterprise Number, so its private identifiers live under a
UUID arc (ITU-T X.667 / RFC 4122 §1: ``2.25.<uuid-as-integer>``), which anyone may use
without registration and which cannot collide with another organisation's arc. The UUID
was generated once (v4) for this project: ``ab94e3d4-2968-4e72-b91c-e9bba47f7bd2``.

    SIPSEC_ARC                 2.25.228071068130449234857567677297616452562
      .1  algorithms
        .1.1  id-sipsec-kem-bf-bls12381   Boneh–Franklin FullIdent KEM, suite v1
        .1.2  id-sipsec-sig-cc-bls12381   Cha–Cheon IBS, suite v1 (signs the DER of signedAttrs)
        .1.3  id-sipsec-alg-zlib-sipdict-v1  RFC 3274 compression algorithm: zlib (RFC 1950)
                                             with preset dictionary v1 — retired, no longer
                                             written or read (the arc is never reused)
        .1.4  id-sipsec-alg-zlib-sipdict-dialog-v1  the same, the dictionary extended by the
                                             dialog's first request — retired likewise
        .1.5  id-sipsec-alg-deflate-sipdict-v2  RFC 3274 compression algorithm: raw DEFLATE
                                             (RFC 1951, no zlib framing) with preset
                                             dictionary v1 (compression.py)
        .1.6  id-sipsec-alg-deflate-sipdict-dialog-v2  the same, the dictionary extended by
                                             the dialog's first request (DialogKey.primer)
      .2  attributes (CMS signed attributes)
        .2.1  id-sipsec-aa-signer         SipsecIdentity of the signer (purpose ``sig``) — wire
                                          version 1 only; the signer is now the SignerInfo's sid
        .2.2  id-sipsec-aa-nonce          OCTET STRING (12 random bytes), replay protection

Each algorithm OID names one whole suite (curve, group placement, hashes), so it carries
no parameters: a new suite gets a new OID, never a parameter switch. The arc is the only
place to change should the project obtain a PEN; nothing else spells an OID.
"""

from __future__ import annotations

__all__ = [
    "ID_AES256_GCM",
    "ID_AES256_WRAP",
    "ID_ALG_HKDF_WITH_SHA256",
    "ID_CONTENT_TYPE",
    "ID_CT_AUTH_ENVELOPED_DATA",
    "ID_CT_COMPRESSED_DATA",
    "ID_DATA",
    "ID_MESSAGE_DIGEST",
    "ID_ORI_KEM",
    "ID_SHA256",
    "ID_SIGNED_DATA",
    "ID_SIGNING_TIME",
    "ID_SIPSEC_AA_NONCE",
    "ID_SIPSEC_AA_SIGNER",
    "ID_SIPSEC_ALG_DEFLATE_SIPDICT_DIALOG_V2",
    "ID_SIPSEC_ALG_DEFLATE_SIPDICT_V2",
    "ID_SIPSEC_ALG_ZLIB_SIPDICT_DIALOG_V1",
    "ID_SIPSEC_ALG_ZLIB_SIPDICT_V1",
    "ID_SIPSEC_KEM_BF_BLS12381",
    "ID_SIPSEC_SIG_CC_BLS12381",
    "SIPSEC_ARC",
    "SIPSEC_UUID",
]

# --- standard identifiers -------------------------------------------------------------
ID_DATA = "1.2.840.113549.1.7.1"  # RFC 5652 §4
ID_SIGNED_DATA = "1.2.840.113549.1.7.2"  # RFC 5652 §5
ID_CT_AUTH_ENVELOPED_DATA = "1.2.840.113549.1.9.16.1.23"  # RFC 5083 §1
ID_CT_COMPRESSED_DATA = "1.2.840.113549.1.9.16.1.9"  # RFC 3274 §1.1
ID_CONTENT_TYPE = "1.2.840.113549.1.9.3"  # RFC 5652 §11.1
ID_MESSAGE_DIGEST = "1.2.840.113549.1.9.4"  # RFC 5652 §11.2
ID_SIGNING_TIME = "1.2.840.113549.1.9.5"  # RFC 5652 §11.3
ID_SHA256 = "2.16.840.1.101.3.4.2.1"  # RFC 5754 §2.2
ID_AES256_GCM = "2.16.840.1.101.3.4.1.46"  # RFC 5084 §3.2
ID_AES256_WRAP = "2.16.840.1.101.3.4.1.45"  # RFC 3565 §2.3.2 (RFC 3394 key wrap)
ID_ORI_KEM = "1.2.840.113549.1.9.16.13.3"  # RFC 9629 §3
ID_ALG_HKDF_WITH_SHA256 = "1.2.840.113549.1.9.16.3.28"  # RFC 8619 §2

# --- private identifiers ----------------------------------------------------------------
SIPSEC_UUID = "ab94e3d4-2968-4e72-b91c-e9bba47f7bd2"
SIPSEC_ARC = "2.25.228071068130449234857567677297616452562"

ID_SIPSEC_KEM_BF_BLS12381 = SIPSEC_ARC + ".1.1"
ID_SIPSEC_SIG_CC_BLS12381 = SIPSEC_ARC + ".1.2"
ID_SIPSEC_ALG_ZLIB_SIPDICT_V1 = SIPSEC_ARC + ".1.3"  # retired: see the arc above
ID_SIPSEC_ALG_ZLIB_SIPDICT_DIALOG_V1 = SIPSEC_ARC + ".1.4"  # retired: see the arc above
ID_SIPSEC_ALG_DEFLATE_SIPDICT_V2 = SIPSEC_ARC + ".1.5"
ID_SIPSEC_ALG_DEFLATE_SIPDICT_DIALOG_V2 = SIPSEC_ARC + ".1.6"
ID_SIPSEC_AA_SIGNER = SIPSEC_ARC + ".2.1"
ID_SIPSEC_AA_NONCE = SIPSEC_ARC + ".2.2"
