"""Hazardous materials of suite v1: pairing backend, hashes, FullIdent, Cha–Cheon, threshold math.

Nothing here checks purposes, domains or periods; use ``sipsec.ibc`` unless you are writing
tests, vectors or a new recipe. Randomness is injectable (``rng``) for known-answer vectors.
"""

from __future__ import annotations

from sipsec.ibc.hazmat import backend, bf, cc, hashing, suite, threshold

__all__ = ["backend", "bf", "cc", "hashing", "suite", "threshold"]
