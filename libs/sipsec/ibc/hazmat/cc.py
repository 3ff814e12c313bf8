"""Cha–Cheon identity-based signatures (PKC 2003) over BLS12-381, Q_ID and d_ID in G1.

Sign: 1. pick r in Z_r*; 2. U = r Q_ID; 3. h = H(m, U); 4. V = (r + h) d_ID.
Step 1 is hedged: r = hash_to_field(lp(d_ID, 32 fresh random bytes) || m, DST_CC_NONCE), so a
failing random source cannot repeat r across messages (which would reveal d_ID from two
signatures: d_ID = (V1 - V2) / (h1 - h2)).
Verify: e(V, P2) = e(U + h Q_ID, P_pub), checked as ONE multi-pairing
``e(V, P2) * e(-(U + h Q_ID), P_pub) == 1``.
H(m, U) = hash_to_field(U || m, DST_CC_H) over Z_r (RFC 9380 §5.2; U has a fixed 48 bytes).
Signature bytes: ``len(SUITE_ID) (1 byte) || SUITE_ID || U (48) || V (48)``.
"""

from __future__ import annotations

import secrets

from sipsec.ibc._errors import InvalidEncoding, InvalidSignature, MalformedSignature
from sipsec.ibc.hazmat import backend as bk
from sipsec.ibc.hazmat.hashing import hash_to_scalar, lp
from sipsec.ibc.hazmat.suite import CC_SIGNATURE_LEN, DST_CC_H, DST_CC_NONCE, G1_LEN, SUITE_ID

__all__ = ["H", "cc_sign", "cc_verify", "nonce"]

_HEADER = bytes([len(SUITE_ID)]) + SUITE_ID


def H(message: bytes, u: bytes) -> int:  # noqa: N802 - named as in the paper
    """h = H(m, U) in Z_r."""
    return hash_to_scalar(u + message, DST_CC_H)


def nonce(d_id: bk.G1Point, randomness: bytes, message: bytes) -> int:
    """The hedged signing nonce r (step 1)."""
    return hash_to_scalar(lp(bk.g1_to_bytes(d_id), randomness) + message, DST_CC_NONCE)


def cc_sign(
    d_id: bk.G1Point,
    q_id: bk.G1Point,
    message: bytes,
    rng: bk.Rng = secrets.token_bytes,
) -> bytes:
    """Sign ``message`` with d_ID (whose public point is Q_ID)."""
    while True:
        r = nonce(d_id, rng(32), message)  # step 1 (hedged)
        if not r:
            continue
        u = bk.g1_to_bytes(bk.g1_mul(q_id, r))  # step 2
        h = H(message, u)  # step 3
        if (r + h) % bk.R:
            break
    v = bk.g1_mul(d_id, r + h)  # step 4
    return _HEADER + u + bk.g1_to_bytes(v)


def cc_verify(q_id: bk.G1Point, p_pub: bk.G2Point, message: bytes, signature: bytes) -> None:
    """Raise InvalidSignature (MalformedSignature if it cannot parse) unless valid."""
    if len(signature) != CC_SIGNATURE_LEN:
        raise MalformedSignature("signature has the wrong length")
    if not signature.startswith(_HEADER):
        raise MalformedSignature("signature is not of suite v1")
    off = len(_HEADER)
    u_bytes = bytes(signature[off : off + G1_LEN])
    try:
        u = bk.g1_from_bytes(u_bytes)
        v = bk.g1_from_bytes(bytes(signature[off + G1_LEN :]))
    except InvalidEncoding as exc:
        raise MalformedSignature("signature holds an invalid point") from exc
    h = H(message, u_bytes)
    lhs = u + bk.g1_mul(q_id, h)
    if not bk.pairing_check([v, -lhs], [bk.g2_generator(), p_pub]):
        raise InvalidSignature("signature verification failed")
