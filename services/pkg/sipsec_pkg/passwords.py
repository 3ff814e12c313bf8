"""scrypt password hashes (``scrypt$N$r$p$salt$hash``): cost parameters travel with each hash."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass

__all__ = ["ScryptParams", "hash_password", "password_matches"]

_PREFIX = "scrypt"
_DKLEN = 32


@dataclass(frozen=True)
class ScryptParams:
    """Cost of new hashes. The default (N=2^15, r=8, p=1: 32 MiB, ~0.1 s) follows OWASP's floor."""

    n: int = 2**15
    r: int = 8
    p: int = 1

    def __post_init__(self) -> None:
        if self.n < 2 or self.n & (self.n - 1) or self.r < 1 or self.p < 1:
            raise ValueError("scrypt N must be a power of two > 1, r and p positive")


def _scrypt(password: bytes, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(password, salt=salt, n=n, r=r, p=p, dklen=_DKLEN, maxmem=256 * r * n + (1 << 20))


def hash_password(password: str, params: ScryptParams = ScryptParams()) -> str:
    """A fresh salted hash of ``password``."""
    salt = secrets.token_bytes(16)
    digest = _scrypt(password.encode(), salt, params.n, params.r, params.p)
    b64 = base64.b64encode
    return f"{_PREFIX}${params.n}${params.r}${params.p}${b64(salt).decode()}${b64(digest).decode()}"


def password_matches(password: str, encoded: str) -> bool:
    """Recomputes the hash with its stored cost and compares in constant time."""
    try:
        prefix, n, r, p, salt, digest = encoded.split("$")
        if prefix != _PREFIX:
            return False
        want = base64.b64decode(digest)
        got = _scrypt(password.encode(), base64.b64decode(salt), int(n), int(r), int(p))
    except ValueError:
        return False
    return hmac.compare_digest(got, want)
