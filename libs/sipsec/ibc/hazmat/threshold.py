"""Threshold-PKG math: Shamir sharing of the master secret over Z_r and Lagrange combination.

Node i (1..n) holds s_i = f(i) for a random polynomial f of degree t-1 with f(0) = s; its
public share is P_pub,i = s_i P2, its partial key d_i = s_i Q_ID, checked by
e(d_i, P2) = e(Q_ID, P_pub,i). Any t partials give d_ID = sum lambda_i d_i (Lagrange at 0).
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence

from sipsec.ibc.hazmat import backend as bk

__all__ = [
    "combine_g1",
    "interpolate_g2",
    "lagrange_at",
    "partial_ok",
    "public_shares_consistent",
    "shamir_split",
]


def shamir_split(secret: int, t: int, n: int, rng: bk.Rng = secrets.token_bytes) -> list[int]:
    """Shares f(1..n) of ``secret`` = f(0) for a random f of degree t-1."""
    if not 1 <= t <= n or n >= bk.R:
        raise ValueError("need 1 <= t <= n")
    coeffs = [secret % bk.R] + [bk.random_scalar(rng) for _ in range(t - 1)]
    shares = []
    for x in range(1, n + 1):
        acc = 0
        for c in reversed(coeffs):  # Horner
            acc = (acc * x + c) % bk.R
        shares.append(acc)
    return shares


def lagrange_at(indices: Sequence[int], x: int = 0) -> list[int]:
    """Lagrange coefficients lambda_i(x) for the distinct evaluation points ``indices``."""
    if len(set(indices)) != len(indices):
        raise ValueError("indices must be distinct")
    coeffs = []
    for i in indices:
        num, den = 1, 1
        for j in indices:
            if j != i:
                num = num * (x - j) % bk.R
                den = den * (i - j) % bk.R
        coeffs.append(num * pow(den, -1, bk.R) % bk.R)
    return coeffs


def combine_g1(indices: Sequence[int], points: Sequence[bk.G1Point]) -> bk.G1Point:
    """sum lambda_i(0) * points[i]."""
    acc = bk.G1Point.identity()
    for lam, point in zip(lagrange_at(indices), points, strict=True):
        acc = acc + bk.g1_mul(point, lam)
    return acc


def interpolate_g2(indices: Sequence[int], points: Sequence[bk.G2Point], x: int) -> bk.G2Point:
    """The G2 value at ``x`` of the degree-(len-1) polynomial through the given points."""
    acc = bk.G2Point.identity()
    for lam, point in zip(lagrange_at(indices, x), points, strict=True):
        acc = acc + bk.g2_mul(point, lam)
    return acc


def public_shares_consistent(p_pub: bk.G2Point, shares: Sequence[bk.G2Point], t: int) -> bool:
    """True iff all public shares and P_pub lie on one polynomial of degree t-1 (Feldman-style)."""
    n = len(shares)
    base = list(range(1, t + 1))
    points = list(shares[:t])
    if interpolate_g2(base, points, 0) != p_pub:
        return False
    return all(interpolate_g2(base, points, j) == shares[j - 1] for j in range(t + 1, n + 1))


def partial_ok(q_id: bk.G1Point, d_i: bk.G1Point, p_pub_i: bk.G2Point) -> bool:
    """e(d_i, P2) = e(Q_ID, P_pub,i), as one multi-pairing check."""
    return bk.pairing_check([d_i, -q_id], [bk.g2_generator(), p_pub_i])
