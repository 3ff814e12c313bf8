"""Suite v1 constants: the suite id, the domain-separation tags and the encoded sizes.

Every hash in suite v1 has its own tag, and the identity hash has one tag per purpose,
so no output of one hash can be replayed as the input or output of another (RFC 9380 §3.1).
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "CC_SIGNATURE_LEN",
    "DST_BF_H2",
    "DST_BF_H3",
    "DST_BF_H4",
    "DST_BF_KDF",
    "DST_CC_H",
    "DST_CC_NONCE",
    "DST_ID_ENC",
    "DST_ID_SIG",
    "G1_LEN",
    "G2_LEN",
    "GT_LEN",
    "KEM_CIPHERTEXT_LEN",
    "KEM_KEY_LEN",
    "SCALAR_LEN",
    "SIGMA_LEN",
    "SUITE_ID",
]

#: Suite v1: BLS12-381, identities and identity keys in G1, P_pub in G2,
#: Boneh–Franklin FullIdent (KEM) and Cha–Cheon IBS.
SUITE_ID: Final = b"sipsec-v1-BLS12381G1-BF-CC"

#: H1, identity -> G1 (RFC 9380 ``BLS12381G1_XMD:SHA-256_SSWU_RO_``), one tag per purpose.
DST_ID_ENC: Final = b"SIPSEC-V1-ID-ENC_BLS12381G1_XMD:SHA-256_SSWU_RO_"
DST_ID_SIG: Final = b"SIPSEC-V1-ID-SIG_BLS12381G1_XMD:SHA-256_SSWU_RO_"

#: Boneh–Franklin FullIdent (thesis §2.3.1): H2: GT -> {0,1}^n (HKDF-SHA-256 salt),
#: H3: (sigma, M) -> Z_r (RFC 9380 hash_to_field, XMD:SHA-256), H4: sigma -> {0,1}^n (HKDF salt),
#: and the KEM's final key derivation (HKDF salt).
DST_BF_H2: Final = b"SIPSEC-V1-BF-H2-GT-TO-MASK"
DST_BF_H3: Final = b"SIPSEC-V1-BF-H3_BLS12381FR_XMD:SHA-256_RO_"
DST_BF_H4: Final = b"SIPSEC-V1-BF-H4-SIGMA-TO-MASK"
DST_BF_KDF: Final = b"SIPSEC-V1-BF-KEM-KDF"

#: Cha–Cheon: h = H(m, U) -> Z_r (RFC 9380 hash_to_field, XMD:SHA-256).
DST_CC_H: Final = b"SIPSEC-V1-CC-H_BLS12381FR_XMD:SHA-256_RO_"
#: Cha–Cheon signer's hedged nonce r = hash_to_field(lp(d_ID, 32 random bytes) || m); signer-side
#: only (a verifier never sees it), so it does not affect interoperability.
DST_CC_NONCE: Final = b"SIPSEC-V1-CC-NONCE_BLS12381FR_XMD:SHA-256_RO_"

G1_LEN: Final = 48  # compressed G1 (ZCash / IETF pairing-friendly-curves encoding)
G2_LEN: Final = 96  # compressed G2
GT_LEN: Final = 576  # 12 Fp elements, 48 bytes little-endian each (see backend.gt_to_bytes)
SCALAR_LEN: Final = 32  # big-endian element of Z_r
SIGMA_LEN: Final = 32  # FullIdent n = 256 bits
KEM_KEY_LEN: Final = 32  # a 256-bit content-encryption key

#: ``len(SUITE_ID) || SUITE_ID || U (G2) || V (sigma mask) || W (message mask)``
KEM_CIPHERTEXT_LEN: Final = 1 + len(SUITE_ID) + G2_LEN + SIGMA_LEN + KEM_KEY_LEN
#: ``len(SUITE_ID) || SUITE_ID || U (G1) || V (G1)``
CC_SIGNATURE_LEN: Final = 1 + len(SUITE_ID) + G1_LEN + G1_LEN
