"""The pairing backend of suite v1 over ``py-arkworks-bls12381`` (native BLS12-381).

Groups: G1 and G2 of BLS12-381 (prime order ``R``), GT in F_p^12, e: G1 x G2 -> GT.

Encodings
---------
* G1 / G2: the compressed encodings of the IETF pairing-friendly-curves draft (ZCash format),
  48 and 96 bytes. Decoding checks the length, that the point is on the curve, that it is in
  the prime-order subgroup, and that the encoding is canonical (it re-encodes to the same
  bytes: arkworks alone accepts, e.g., an infinity flag with garbage behind it).
* GT: ``gt_to_bytes`` is arkworks' canonical serialisation of F_p^12, which ``str(gt)`` gives
  in hex: the tower F_p^12 = F_p^6[w]/(w^2 - v), F_p^6 = F_p^2[v]/(v^3 - (u + 1)),
  F_p^2 = F_p[u]/(u^2 + 1), written as 12 F_p elements of 48 bytes, little-endian, in the order
  c0.c0.c0, c0.c0.c1, c0.c1.c0, c0.c1.c1, c0.c2.c0, c0.c2.c1, c1.c0.c0, ..., c1.c2.c1
  (576 bytes). The arkworks pairing equals py_ecc's ``pairing(Q, P)`` raised to the power
  -3 (mod R): py_ecc's Miller loop ignores the sign of the BLS parameter x (a conjugation,
  i.e. an inversion in GT) and arkworks' final exponentiation (Hayashida–Hayasaka–Teruya)
  computes the cube of the textbook one. Any non-degenerate bilinear map is a fixed power
  of another, so the schemes are unaffected; the reference verifier applies this map.

Scalars are Python ints in [0, R). Neither this backend nor arkworks' scalar multiplication
promises constant time at the micro-architectural level.
"""

from __future__ import annotations

import functools
import secrets
from collections.abc import Callable, Sequence
from typing import Final

from py_arkworks_bls12381 import GT, G1Point, G2Point, Scalar

from sipsec.ibc._errors import InvalidEncoding

__all__ = [
    "GT",
    "P",
    "R",
    "G1Point",
    "G2Point",
    "Rng",
    "g1_from_bytes",
    "g1_generator",
    "g1_mul",
    "g1_to_bytes",
    "g2_from_bytes",
    "g2_from_bytes_unchecked_subgroup",
    "g2_generator",
    "g2_generator_mul",
    "g2_mul",
    "g2_to_bytes",
    "gt_to_bytes",
    "hash_to_g1",
    "pairing",
    "pairing_check",
    "random_scalar",
    "scalar",
]

#: Order of G1, G2 and GT.
R: Final = 0x73EDA753299D7D483339D80809A1D80553BDA402FFFE5BFEFFFFFFFF00000001
#: Base field modulus.
P: Final = 0x1A0111EA397FE69A4B1BA7B6434BACD764774B84F38512BF6730D2A0F6B0F6241EABFFFEB153FFFFB9FEFFFFFFFFAAAB

#: Source of randomness: ``rng(n)`` returns n bytes. Injectable for known-answer vectors only.
Rng = Callable[[int], bytes]

_G1_LEN: Final = 48
_G2_LEN: Final = 96
_G1_GEN: Final = G1Point()
_G2_GEN: Final = G2Point()
_G1_INF: Final = G1Point.identity()
_G2_INF: Final = G2Point.identity()


def g1_generator() -> G1Point:
    """The standard generator P1 of G1."""
    return _G1_GEN


def g2_generator() -> G2Point:
    """The standard generator P2 of G2."""
    return _G2_GEN


def scalar(k: int) -> Scalar:
    """An arkworks scalar from an int (reduced mod R)."""
    return Scalar(k % R)


def random_scalar(rng: Rng = secrets.token_bytes) -> int:
    """A uniformly random non-zero scalar: 48 random bytes reduced mod R (bias < 2^-128)."""
    while True:
        k = int.from_bytes(rng(48), "big") % R
        if k:
            return k


def g1_mul(point: G1Point, k: int) -> G1Point:
    """k * point in G1."""
    return point * scalar(k)


def g2_mul(point: G2Point, k: int) -> G2Point:
    """k * point in G2."""
    return point * scalar(k)


def _g2_table() -> list[list[G2Point]]:
    # Fixed-base comb for P2: table[i][j] = j * 256^i * P2, 32 windows of 8 bits.
    table: list[list[G2Point]] = []
    base = _G2_GEN
    for _ in range(32):
        row = [_G2_INF, base]
        for _ in range(254):
            row.append(row[-1] + base)
        table.append(row)
        base = row[-1] + base
    return table


@functools.cache
def _g2_generator_table() -> list[list[G2Point]]:
    return _g2_table()


def g2_generator_mul(k: int) -> G2Point:
    """k * P2 by a precomputed fixed-base table (about 6x faster than a generic multiplication)."""
    table = _g2_generator_table()
    digits = (k % R).to_bytes(32, "little")
    acc = _G2_INF
    for row, digit in zip(table, digits, strict=True):
        if digit:
            acc = acc + row[digit]
    return acc


def g1_to_bytes(point: G1Point) -> bytes:
    """Compressed encoding of a G1 point (48 bytes)."""
    return point.to_compressed_bytes()


def g2_to_bytes(point: G2Point) -> bytes:
    """Compressed encoding of a G2 point (96 bytes)."""
    return point.to_compressed_bytes()


def g1_from_bytes(data: bytes, *, allow_identity: bool = False) -> G1Point:
    """Decode a compressed G1 point, checking curve, subgroup and canonical form.

    Raises InvalidEncoding; the identity is refused unless ``allow_identity``.
    """
    if len(data) != _G1_LEN:
        raise InvalidEncoding(f"G1 point must be {_G1_LEN} bytes, got {len(data)}")
    try:
        point = G1Point.from_compressed_bytes(bytes(data))
    except (ValueError, OverflowError) as exc:
        raise InvalidEncoding("G1 point not on the curve or not in the subgroup") from exc
    if point.to_compressed_bytes() != data:
        raise InvalidEncoding("non-canonical G1 encoding")
    if not allow_identity and point == _G1_INF:
        raise InvalidEncoding("G1 point is the identity")
    return point


def _g2_decode(data: bytes, check_subgroup: bool, allow_identity: bool) -> G2Point:
    if len(data) != _G2_LEN:
        raise InvalidEncoding(f"G2 point must be {_G2_LEN} bytes, got {len(data)}")
    try:
        if check_subgroup:
            point = G2Point.from_compressed_bytes(bytes(data))
        else:
            point = G2Point.from_compressed_bytes_unchecked(bytes(data))
    except (ValueError, OverflowError) as exc:
        raise InvalidEncoding("G2 point not on the curve or not in the subgroup") from exc
    if point.to_compressed_bytes() != data:
        raise InvalidEncoding("non-canonical G2 encoding")
    if not allow_identity and point == _G2_INF:
        raise InvalidEncoding("G2 point is the identity")
    return point


def g2_from_bytes(data: bytes, *, allow_identity: bool = False) -> G2Point:
    """Decode a compressed G2 point, checking curve, subgroup and canonical form."""
    return _g2_decode(data, True, allow_identity)


def g2_from_bytes_unchecked_subgroup(data: bytes) -> G2Point:
    """Decode a compressed G2 point on the curve WITHOUT the subgroup check.

    Only for the FullIdent ``U``, whose re-encryption check ``U == r * P2`` rejects any
    point outside the subgroup anyway (``r * P2`` always lies in it).
    """
    return _g2_decode(data, False, False)


@functools.lru_cache(maxsize=4096)
def hash_to_g1(msg: bytes, dst: bytes) -> G1Point:
    """RFC 9380 ``BLS12381G1_XMD:SHA-256_SSWU_RO_`` hash_to_curve (cached: public, deterministic)."""
    if not 0 < len(dst) <= 255:
        raise ValueError("DST must be 1..255 bytes")
    return G1Point.hash_to_curve(bytes(msg), bytes(dst))


def pairing(a: G1Point, b: G2Point) -> GT:
    """e(a, b)."""
    return GT.pairing(a, b)


def pairing_check(g1s: Sequence[G1Point], g2s: Sequence[G2Point]) -> bool:
    """True iff prod e(g1s[i], g2s[i]) == 1, computed as one multi-pairing."""
    return GT.pairing_check(list(g1s), list(g2s))


def gt_to_bytes(value: GT) -> bytes:
    """Canonical 576-byte encoding of a GT element (see the module docstring)."""
    out = bytes.fromhex(str(value))
    if len(out) != 576:
        raise ValueError("unexpected GT serialisation length")
    return out
