"""Hash primitives of suite v1: RFC 5869 HKDF-SHA-256 and RFC 9380 hash_to_field over Z_r."""

from __future__ import annotations

import hashlib
import hmac

from sipsec.ibc.hazmat.backend import R

__all__ = [
    "expand_message_xmd",
    "hash_to_scalar",
    "hkdf",
    "hkdf_expand",
    "hkdf_extract",
    "lp",
]

_HASH_LEN = 32
_BLOCK_LEN = 64
#: RFC 9380 §5 L = ceil((ceil(log2(r)) + k) / 8) with k = 128 security bits.
_SCALAR_L = 48


def lp(*fields: bytes) -> bytes:
    """Length-prefix and concatenate: ``I2OSP(len(f), 2) || f`` for each field."""
    out = bytearray()
    for field in fields:
        if len(field) > 0xFFFF:
            raise ValueError("field longer than 65535 bytes")
        out += len(field).to_bytes(2, "big")
        out += field
    return bytes(out)


def hkdf_extract(salt: bytes, ikm: bytes) -> bytes:
    """RFC 5869 §2.2 HKDF-Extract with SHA-256."""
    return hmac.digest(salt, ikm, "sha256")


def hkdf_expand(prk: bytes, info: bytes, length: int) -> bytes:
    """RFC 5869 §2.3 HKDF-Expand with SHA-256."""
    if length > 255 * _HASH_LEN:
        raise ValueError("HKDF output too long")
    okm = bytearray()
    block = b""
    counter = 1
    while len(okm) < length:
        block = hmac.digest(prk, block + info + bytes([counter]), "sha256")
        okm += block
        counter += 1
    return bytes(okm[:length])


def hkdf(salt: bytes, ikm: bytes, info: bytes, length: int) -> bytes:
    """RFC 5869 HKDF-SHA-256 (extract then expand)."""
    return hkdf_expand(hkdf_extract(salt, ikm), info, length)


def expand_message_xmd(msg: bytes, dst: bytes, len_in_bytes: int) -> bytes:
    """RFC 9380 §5.3.1 expand_message_xmd with SHA-256."""
    if not 0 < len(dst) <= 255:
        raise ValueError("DST must be 1..255 bytes")
    ell = -(-len_in_bytes // _HASH_LEN)
    if ell > 255 or len_in_bytes > 65535:
        raise ValueError("requested output too long")
    dst_prime = dst + bytes([len(dst)])
    z_pad = bytes(_BLOCK_LEN)
    l_i_b_str = len_in_bytes.to_bytes(2, "big")
    b0 = hashlib.sha256(z_pad + msg + l_i_b_str + b"\x00" + dst_prime).digest()
    b_i = hashlib.sha256(b0 + b"\x01" + dst_prime).digest()
    out = bytearray(b_i)
    for i in range(2, ell + 1):
        b_i = hashlib.sha256(
            bytes(x ^ y for x, y in zip(b0, b_i, strict=True)) + bytes([i]) + dst_prime
        ).digest()
        out += b_i
    return bytes(out[:len_in_bytes])


def hash_to_scalar(msg: bytes, dst: bytes) -> int:
    """RFC 9380 §5.2 hash_to_field(msg, count=1) over Z_r (m = 1, L = 48, XMD:SHA-256)."""
    return int.from_bytes(expand_message_xmd(msg, dst, _SCALAR_L), "big") % R
