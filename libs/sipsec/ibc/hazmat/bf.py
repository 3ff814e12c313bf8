"""Boneh–Franklin FullIdent (the Fujisaki–Okamoto CCA form, thesis §2.3.1) used as a KEM.

Group placement of suite v1: Q_ID = H1(ID) and d_ID = s * Q_ID in G1, P_pub = s * P2 and
U = r * P2 in G2. The FullIdent "message" M is a fresh 256-bit secret; the KEM key is
``HKDF-SHA-256(salt=DST_BF_KDF, ikm=M, info=lp(identity, ciphertext))``, binding the key to the
recipient identity and to the whole ciphertext.

Encrypt (thesis §2.3.1, numbered as there):
  1. pick sigma (n = 256 bits) at random, and M;       2. r = H3(sigma, M);
  3. C = <U, V, W> = <r P2, sigma xor H2(g_ID^r), M xor H4(sigma)>, g_ID = e(Q_ID, P_pub)
     (g_ID^r: from a recipient's second encapsulation on, by a fixed-base comb of g_ID from
     the cache of public tables, ``backend.public_pairing_power``, 64 GT multiplications
     instead of a pairing; on the first, as e(r Q_ID, P_pub). The table is public, r is not,
     and like r P2 by ``g2_generator_mul`` its lookups are indexed by the digits of r, so
     neither is constant time; see ``backend``).
Decrypt:
  1. sigma = V xor H2(e(d_ID, U));  2. M = W xor H4(sigma);  3. r = H3(sigma, M);
  4. reject unless U = r P2.
Hashes: H2(x) = HKDF(salt=DST_BF_H2, ikm=gt_to_bytes(x), info="", 32);
H3(sigma, M) = hash_to_field(sigma || M, DST_BF_H3) over Z_r (RFC 9380 §5.2);
H4(sigma) = HKDF(salt=DST_BF_H4, ikm=sigma, info="", 32).
Ciphertext bytes: ``len(SUITE_ID) (1 byte) || SUITE_ID || U (96) || V (32) || W (32)``.
"""

from __future__ import annotations

import hmac
import secrets

from sipsec.ibc._errors import InvalidCiphertext, InvalidEncoding, MalformedCiphertext
from sipsec.ibc.hazmat import backend as bk
from sipsec.ibc.hazmat.hashing import hash_to_scalar, hkdf, lp
from sipsec.ibc.hazmat.suite import (
    DST_BF_H2,
    DST_BF_H3,
    DST_BF_H4,
    DST_BF_KDF,
    G2_LEN,
    KEM_CIPHERTEXT_LEN,
    KEM_KEY_LEN,
    SIGMA_LEN,
    SUITE_ID,
)

__all__ = ["H2", "H3", "H4", "bf_decapsulate", "bf_encapsulate", "kem_key"]

_HEADER = bytes([len(SUITE_ID)]) + SUITE_ID


def _xor(a: bytes, b: bytes) -> bytes:
    return bytes(x ^ y for x, y in zip(a, b, strict=True))


def H2(g: bk.GT) -> bytes:  # noqa: N802 - named as in the paper
    """H2: GT -> {0,1}^256."""
    return hkdf(DST_BF_H2, bk.gt_to_bytes(g), b"", SIGMA_LEN)


def H3(sigma: bytes, m: bytes) -> int:  # noqa: N802
    """H3: {0,1}^256 x {0,1}^256 -> Z_r."""
    return hash_to_scalar(sigma + m, DST_BF_H3)


def H4(sigma: bytes) -> bytes:  # noqa: N802
    """H4: {0,1}^256 -> {0,1}^256."""
    return hkdf(DST_BF_H4, sigma, b"", KEM_KEY_LEN)


def kem_key(m: bytes, identity: bytes, ciphertext: bytes) -> bytes:
    """The 256-bit KEM output derived from the FullIdent message M."""
    return hkdf(DST_BF_KDF, m, lp(identity, ciphertext), KEM_KEY_LEN)


def bf_encapsulate(
    q_id: bk.G1Point,
    p_pub: bk.G2Point,
    identity: bytes,
    rng: bk.Rng = secrets.token_bytes,
) -> tuple[bytes, bytes]:
    """FullIdent encryption of a fresh M to Q_ID; returns (key, ciphertext)."""
    while True:
        sigma = rng(SIGMA_LEN)  # step 1
        m = rng(KEM_KEY_LEN)
        r = H3(sigma, m)  # step 2
        if r:
            break
    u = bk.g2_generator_mul(r)  # step 3
    g_r = bk.public_pairing_power(q_id, p_pub, r)  # e(Q_ID, P_pub)^r = e(r Q_ID, P_pub)
    v = _xor(sigma, H2(g_r))
    w = _xor(m, H4(sigma))
    ciphertext = _HEADER + bk.g2_to_bytes(u) + v + w
    return kem_key(m, identity, ciphertext), ciphertext


def bf_decapsulate(d_id: bk.G1Point, identity: bytes, ciphertext: bytes) -> bytes:
    """FullIdent decryption; raises InvalidCiphertext (MalformedCiphertext if it cannot parse)."""
    if len(ciphertext) != KEM_CIPHERTEXT_LEN:
        raise MalformedCiphertext("ciphertext has the wrong length")
    if not ciphertext.startswith(_HEADER):
        raise MalformedCiphertext("ciphertext is not of suite v1")
    off = len(_HEADER)
    u_bytes = bytes(ciphertext[off : off + G2_LEN])
    v = ciphertext[off + G2_LEN : off + G2_LEN + SIGMA_LEN]
    w = ciphertext[off + G2_LEN + SIGMA_LEN :]
    try:
        u = bk.g2_from_bytes_unchecked_subgroup(u_bytes)
    except InvalidEncoding as exc:
        raise MalformedCiphertext("ciphertext U is not a valid point") from exc
    sigma = _xor(v, H2(bk.pairing(d_id, u)))  # step 1
    m = _xor(w, H4(sigma))  # step 2
    r = H3(sigma, m)  # step 3
    if not hmac.compare_digest(bk.g2_to_bytes(bk.g2_generator_mul(r)), u_bytes):  # step 4
        raise InvalidCiphertext("ciphertext failed the FullIdent integrity check")
    return kem_key(m, identity, bytes(ciphertext))
