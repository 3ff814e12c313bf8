"""Cha–Cheon identity-based signatures (PKC 2003) over BLS12-381, Q_ID and d_ID in G1.

Sign: 1. pick r in Z_r*; 2. U = r Q_ID; 3. h = H(m, U); 4. V = (r + h) d_ID.
Step 1 is hedged: r = hash_to_field(lp(d_ID, 32 fresh random bytes) || m, DST_CC_NONCE), so a
failing random source cannot repeat r across messages (which would reveal d_ID from two
signatures: d_ID = (V1 - V2) / (h1 - h2)). Steps 2 and 4 may use a signer's fixed-base
combs (``SignerTables``): the same points, about 3.5x faster, not constant time (their
lookups are indexed by the digits of r and r + h; nor are arkworks' own multiplications).
Verify: e(V, P2) = e(U + h Q_ID, P_pub), checked as ONE multi-pairing
``e(V, P2) * e(-(U + h Q_ID), P_pub) == 1``; h Q_ID goes through the cache of public
identity-point tables (``backend.g1_public_mul``): from a signer's second verification on,
~3x faster than a generic multiplication, the same point.
H(m, U) = hash_to_field(U || m, DST_CC_H) over Z_r (RFC 9380 §5.2; U has a fixed 48 bytes).
Signature bytes: ``len(SUITE_ID) (1 byte) || SUITE_ID || U (48) || V (48)``.

Batch verification (``cc_verify_batch``) is the small-exponent test of Bellare, Garay and
Rabin (Eurocrypt 1998): with fresh secret weights rho_i drawn uniformly from [1, 2^64) it
checks ONE multi-pairing, with one pair per distinct P_pub::

    e(sum rho_i V_i, P2) * prod_{P_pub} e(-sum_{i: P_pub} rho_i (U_i + h_i Q_i), P_pub) == 1

Soundness: write x_i = e(V_i, P2) * e(-(U_i + h_i Q_i), P_pub_i) in GT (prime order R; the
points were checked to lie in G1 on decoding, so nothing escapes into a small subgroup). The
batch holds iff prod x_i^rho_i = 1; if some x_j != 1, then for any other weights at most one
of the 2^64 - 1 values of rho_j satisfies it, so a batch holding an invalid signature passes
with probability at most 2^-64. The weights are drawn after the signatures are fixed, so
invalid signatures cannot be made to cancel (V1 + D and V2 - D pass an unweighted sum).
The sums are merged: sum rho_i V_i and, per P_pub, sum rho_i U_i are multi-scalar
multiplications with 64-bit scalars, and the Q terms become one (sum rho_i h_i) Q_ID per
distinct (P_pub, Q_ID), by the identity's cached table when it has one (else one
multi-scalar multiplication over the rest; only a single Q_ID per P_pub counts as a use towards
building a table: within a multi-scalar multiplication a table saves little). The batch is
computed as a GT value A_B (a multi-pairing costs what the check does) and holds iff A_B = 1. When it does not, the bad
items are found by halving with the same weights (Law and Matt, "Finding invalid
signatures in pairing-based batches", IMA Cryptography and Coding 2007, divide and
conquer): write A_S = prod_{i in S} x_i^rho_i; for a set S with known A_S only its left
half L is paired (one multi-pairing over L's sums) and A_R = A_S / A_L follows by one
multiplication in GT (the division is a pairing of L's negated sums, so no GT inverse is
needed). A half with value 1 is valid (the same 2^-64 bound); a single item's value is 1
iff its signature is valid (rho_i is invertible mod R), so a bad item is flagged exactly,
without a separate check. One forged signature in a batch of n costs log2(n) more
multi-pairings over ever smaller halves, instead of n single checks (n = 32: about 2x a
valid batch, where checking each item alone cost ~6x).
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from typing import NamedTuple

from sipsec.ibc._errors import InvalidEncoding, InvalidSignature, MalformedSignature
from sipsec.ibc.hazmat import backend as bk
from sipsec.ibc.hazmat.hashing import hash_to_scalar, lp
from sipsec.ibc.hazmat.suite import CC_SIGNATURE_LEN, DST_CC_H, DST_CC_NONCE, G1_LEN, SUITE_ID
from sipsec.ibc.hazmat.tables import SECOND_USE

__all__ = ["H", "SignerTables", "cc_sign", "cc_verify", "cc_verify_batch", "nonce"]

_HEADER = bytes([len(SUITE_ID)]) + SUITE_ID
_FAILED = "signature verification failed"
_WEIGHTS = 2**64 - 1  # batch weights are uniform in [1, 2^64)


def H(message: bytes, u: bytes) -> int:  # noqa: N802 - named as in the paper
    """h = H(m, U) in Z_r."""
    return hash_to_scalar(u + message, DST_CC_H)


def nonce(d_id: bk.G1Point, randomness: bytes, message: bytes) -> int:
    """The hedged signing nonce r (step 1)."""
    return hash_to_scalar(lp(bk.g1_to_bytes(d_id), randomness) + message, DST_CC_NONCE)


class SignerTables:
    """Fixed-base combs of one signer for steps 2 and 4: as secret as d_ID itself.

    ``q_point`` is the (public) Q_ID they were built for.
    """

    __slots__ = ("d_id", "q_id", "q_point")

    def __init__(self, d_id: bk.G1Point, q_id: bk.G1Point) -> None:
        self.d_id = bk.G1FixedBase(d_id)
        self.q_id = bk.G1FixedBase(q_id)
        self.q_point = q_id

    def __repr__(self) -> str:
        return "SignerTables(<hidden>)"

    def __reduce__(self) -> str | tuple[object, ...]:
        raise TypeError("SignerTables is not picklable")


def cc_sign(
    d_id: bk.G1Point,
    q_id: bk.G1Point,
    message: bytes,
    rng: bk.Rng = secrets.token_bytes,
    tables: SignerTables | None = None,
) -> bytes:
    """Sign ``message`` with d_ID (whose public point is Q_ID).

    ``tables``, built from the same d_ID and Q_ID, speed up steps 2 and 4; the signature is
    the same either way.
    """
    while True:
        r = nonce(d_id, rng(32), message)  # step 1 (hedged)
        if not r:
            continue
        u_point = bk.g1_mul(q_id, r) if tables is None else tables.q_id.mul(r)
        u = bk.g1_to_bytes(u_point)  # step 2
        h = H(message, u)  # step 3
        if (r + h) % bk.R:
            break
    v = bk.g1_mul(d_id, r + h) if tables is None else tables.d_id.mul(r + h)  # step 4
    return _HEADER + u + bk.g1_to_bytes(v)


def _parse(signature: bytes) -> tuple[bytes, bk.G1Point, bk.G1Point]:
    """(U as bytes, U, V); raises MalformedSignature."""
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
    return u_bytes, u, v


def _holds(q_id: bk.G1Point, p_pub: bk.G2Point, h: int, u: bk.G1Point, v: bk.G1Point) -> bool:
    """e(V, P2) * e(-(U + h Q_ID), P_pub) == 1."""
    lhs = u + bk.g1_public_mul(q_id, h)
    return bk.pairing_check([v, -lhs], [bk.g2_generator(), p_pub])


def cc_verify(q_id: bk.G1Point, p_pub: bk.G2Point, message: bytes, signature: bytes) -> None:
    """Raise InvalidSignature (MalformedSignature if it cannot parse) unless valid."""
    u_bytes, u, v = _parse(signature)
    if not _holds(q_id, p_pub, H(message, u_bytes), u, v):
        raise InvalidSignature(_FAILED)


class _Parsed(NamedTuple):
    position: int
    q_id: bk.G1Point
    p_pub: bk.G2Point
    h: int
    u: bk.G1Point
    v: bk.G1Point


class _Domain(NamedTuple):
    """The terms of one P_pub: U_i with their weights, and sum rho_i h_i per Q_ID."""

    us: list[bk.G1Point]
    weights: list[int]
    q_coefficients: dict[bk.G1Point, int]


def _weights(count: int) -> list[int]:
    """Fresh secret weights rho_i in [1, 2^64) (module docstring)."""
    return [secrets.randbelow(_WEIGHTS) + 1 for _ in range(count)]


def _terms(items: Sequence[_Parsed], weights: Sequence[int]) -> tuple[list[bk.G1Point], list[bk.G2Point]]:
    """The pairs whose product is A = prod x_i^rho_i over ``items``: (G1 sums, their G2 points)."""
    domains: dict[bk.G2Point, _Domain] = {}
    for item, rho in zip(items, weights, strict=True):
        domain = domains.setdefault(item.p_pub, _Domain([], [], {}))
        domain.us.append(item.u)
        domain.weights.append(rho)
        coefficients = domain.q_coefficients
        coefficients[item.q_id] = (coefficients.get(item.q_id, 0) + rho * item.h) % bk.R
    g1s = [bk.g1_multiexp([item.v for item in items], weights)]
    g2s = [bk.g2_generator()]
    for p_pub, domain in domains.items():
        lhs = bk.g1_multiexp(domain.us, domain.weights)
        q_points: list[bk.G1Point] = []
        q_scalars: list[int] = []
        # One Q_ID: a multiplication, which its table makes ~3x cheaper (a use that counts
        # towards building one). Several: one multi-scalar multiplication, ~0.04 ms a point at
        # 16 points against ~0.038 ms by a table, so an existing table is used and none is built.
        cache = bk.PUBLIC_G1_TABLES
        single = len(domain.q_coefficients) == 1 or cache.policy == SECOND_USE  # as the first policy did
        lookup = cache.get if single else cache.peek
        for q_id, coefficient in domain.q_coefficients.items():
            table = lookup(q_id)  # identity points are public and reused
            if table is None:
                q_points.append(q_id)
                q_scalars.append(coefficient)
            else:
                lhs = lhs + table.mul(coefficient)
        if q_points:
            lhs = lhs + bk.g1_multiexp(q_points, q_scalars)
        g1s.append(-lhs)
        g2s.append(p_pub)
    return g1s, g2s


def _isolate(items: Sequence[_Parsed], weights: Sequence[int], value: bk.GT, inverted: bool,
             bad: list[int]) -> None:
    """Append to ``bad`` the positions of the invalid items of ``items``.

    ``value`` is A_S of ``items`` under ``weights`` (or its inverse when ``inverted``): only
    the left half is paired, the right half's value follows by one GT multiplication.
    """
    if value == bk.GT.one():
        return
    if len(items) == 1:
        bad.append(items[0].position)
        return
    half = len(items) // 2
    g1s, g2s = _terms(items[:half], weights[:half])
    if not inverted:
        g1s = [-point for point in g1s]
    left = bk.multi_pairing(g1s, g2s)  # A_L, of the sign opposite to ``value``
    _isolate(items[:half], weights[:half], left, not inverted, bad)
    _isolate(items[half:], weights[half:], value * left, inverted, bad)


def cc_verify_batch(
    items: Sequence[tuple[bk.G1Point, bk.G2Point, bytes, bytes]],
) -> list[InvalidSignature | None]:
    """Verify ``(Q_ID, P_pub, message, signature)`` items together (module docstring).

    One entry per item, in order: None if the signature is valid, else the error
    ``cc_verify`` raises for it (MalformedSignature or InvalidSignature, same message).
    Never raises for a bad item; a batch of one is exactly ``cc_verify``.
    """
    results: list[InvalidSignature | None] = [None] * len(items)
    parsed: list[_Parsed] = []
    for index, (q_id, p_pub, message, signature) in enumerate(items):
        try:
            u_bytes, u, v = _parse(signature)
        except MalformedSignature as exc:
            results[index] = exc
            continue
        parsed.append(_Parsed(index, q_id, p_pub, H(message, u_bytes), u, v))
    if len(parsed) == 1:
        item = parsed[0]
        if not _holds(item.q_id, item.p_pub, item.h, item.u, item.v):
            results[item.position] = InvalidSignature(_FAILED)
        return results
    if not parsed:
        return results
    weights = _weights(len(parsed))
    bad: list[int] = []  # the batch as a GT value (as costly as the check); if not 1, find exactly
    _isolate(parsed, weights, bk.multi_pairing(*_terms(parsed, weights)), False, bad)  # the bad items
    for position in bad:
        results[position] = InvalidSignature(_FAILED)
    return results
