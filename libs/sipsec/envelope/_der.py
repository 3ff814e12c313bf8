"""A minimal DER (X.690 §10) encoder for the few types the envelope writes, and a TLV reader.

Building CMS with asn1crypto's object model costs milliseconds per message; these
helpers write the same bytes in microseconds. Parsing (:mod:`sipsec.envelope.cms`) walks
the TLVs with :func:`read_tlv`, re-encodes the values it found with these helpers and
requires the input to be exactly that encoding — the DER check.
"""

from __future__ import annotations

import time
from functools import lru_cache

__all__ = [
    "ctx",
    "integer",
    "length",
    "octets",
    "oid",
    "read_tlv",
    "seq",
    "set_of",
    "signing_time",
    "tlv",
    "utf8",
]


#: One-byte encodings: a tag, or a short-form length (< 0x80), by value.
_BYTE = tuple(bytes([i]) for i in range(256))


def length(n: int) -> bytes:
    """X.690 §10.1: definite length in the minimum number of octets."""
    if n < 0x80:
        return _BYTE[n]
    if n < 0x100:
        return b"\x81" + _BYTE[n]
    if n < 0x10000:
        return b"\x82" + n.to_bytes(2, "big")
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return _BYTE[0x80 | len(body)] + body


def tlv(tag: int, content: bytes) -> bytes:
    n = len(content)
    if n < 0x80:
        return _BYTE[tag] + _BYTE[n] + content
    return _BYTE[tag] + length(n) + content


def seq(*parts: bytes) -> bytes:
    return tlv(0x30, b"".join(parts))


def set_of(*parts: bytes) -> bytes:
    """X.690 §11.6: the components of a SET OF in ascending order of their encodings."""
    return tlv(0x31, b"".join(sorted(parts)))


def ctx(number: int, content: bytes, *, constructed: bool = True) -> bytes:
    """A context-specific tag ``[number]`` (IMPLICIT: ``content`` is the value's contents)."""
    return tlv((0xA0 if constructed else 0x80) | number, content)


def integer(n: int) -> bytes:
    if 0 <= n < 0x80:
        return _SMALL_INTEGERS[n]
    return _integer(n)


def _integer(n: int) -> bytes:
    body = n.to_bytes(max(1, (n.bit_length() + 8) // 8), "big", signed=True)
    return tlv(0x02, body)


_SMALL_INTEGERS = tuple(_integer(i) for i in range(0x80))


def octets(data: bytes) -> bytes:
    return tlv(0x04, data)


def utf8(text: str) -> bytes:
    return tlv(0x0C, text.encode("utf-8"))


@lru_cache(maxsize=64)
def oid(dotted: str) -> bytes:
    """X.690 §8.19: an OBJECT IDENTIFIER."""
    arcs = [int(a) for a in dotted.split(".")]
    if len(arcs) < 2 or arcs[0] > 2 or (arcs[0] < 2 and arcs[1] >= 40):
        raise ValueError("bad OID")
    out = bytearray()
    for arc in [arcs[0] * 40 + arcs[1], *arcs[2:]]:
        chunk = [arc & 0x7F]
        arc >>= 7
        while arc:
            chunk.append(0x80 | (arc & 0x7F))
            arc >>= 7
        out += bytes(reversed(chunk))
    return tlv(0x06, bytes(out))


@lru_cache(maxsize=64)
def signing_time(t: int) -> bytes:
    """RFC 5652 §11.3: UTCTime for 1950–2049, GeneralizedTime otherwise (whole seconds, Z)."""
    st = time.gmtime(t)
    if 1950 <= st.tm_year <= 2049:
        return tlv(0x17, time.strftime("%y%m%d%H%M%SZ", st).encode("ascii"))
    return tlv(0x18, time.strftime("%Y%m%d%H%M%SZ", st).encode("ascii"))


def read_tlv(data: bytes, pos: int = 0) -> tuple[int, int, int]:
    """``(tag, start of contents, end)`` of the DER TLV at ``pos``; ValueError if it does not fit."""
    if pos + 2 > len(data):
        raise ValueError("truncated")
    tag, first = data[pos], data[pos + 1]
    if tag & 0x1F == 0x1F:
        raise ValueError("high tag numbers are not used here")
    pos += 2
    if first < 0x80:
        size = first
    else:
        count = first & 0x7F
        if count == 0 or count > 4 or pos + count > len(data):
            raise ValueError("bad length")
        size = int.from_bytes(data[pos : pos + count], "big")
        pos += count
    end = pos + size
    if end > len(data):
        raise ValueError("truncated")
    return tag, pos, end
