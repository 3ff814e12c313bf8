"""The arkworks pairing backend, and the same properties checked on the py_ecc reference."""

from __future__ import annotations

import pytest
from sipsec.ibc import InvalidEncoding
from sipsec.ibc.hazmat import backend as bk
from sipsec.ibc.hazmat import hashing

from ._helpers import load_script


def test_bilinearity_and_non_degeneracy() -> None:
    a, b = 0x1234567890ABCDEF, 0xFEDCBA0987654321
    p1, p2 = bk.g1_generator(), bk.g2_generator()
    e = bk.pairing(p1, p2)
    assert e != bk.GT.one()
    assert bk.pairing(bk.g1_mul(p1, a), bk.g2_mul(p2, b)) == bk.pairing(bk.g1_mul(p1, a * b), p2)
    assert bk.pairing(bk.g1_mul(p1, a), p2) == bk.pairing(p1, bk.g2_mul(p2, a))
    assert bk.pairing_check([bk.g1_mul(p1, a), -p1], [p2, bk.g2_mul(p2, a)])
    assert not bk.pairing_check([bk.g1_mul(p1, a), -p1], [p2, bk.g2_mul(p2, a + 1)])


@pytest.mark.parametrize("k", [0, 1, 2, 255, 256, 2**64 + 7, bk.R - 1, bk.R, bk.R + 5, 2**255 - 19])
def test_fixed_base_g2_mul(k: int) -> None:
    assert bk.g2_generator_mul(k) == bk.g2_mul(bk.g2_generator(), k)


@pytest.mark.parametrize("k", [0, 1, 2, 15, 16, 255, 2**64 + 7, bk.R - 1, bk.R, bk.R + 5, 2**255 - 19])
def test_fixed_base_g1_mul(k: int) -> None:
    base = bk.g1_mul(bk.g1_generator(), 0xC0FFEE)
    assert bk.G1FixedBase(base).mul(k) == bk.g1_mul(base, k)
    assert "<hidden>" in repr(bk.G1FixedBase(base))


def test_g1_multiexp() -> None:
    points = [bk.g1_mul(bk.g1_generator(), 1000 + i) for i in range(5)]
    scalars = [0, 1, 2**64 - 1, bk.R - 1, 2**63 + 5]
    expected = bk.G1Point.identity()
    for point, k in zip(points, scalars, strict=True):
        expected = expected + bk.g1_mul(point, k)
    assert bk.g1_multiexp(points, scalars) == expected
    assert bk.g1_multiexp(points[:1], [7]) == bk.g1_mul(points[0], 7)
    assert bk.g1_multiexp([], []) == bk.G1Point.identity()
    with pytest.raises(ValueError):
        bk.g1_multiexp(points, scalars[:2])


def test_encodings_round_trip_and_validate() -> None:
    p = bk.g1_mul(bk.g1_generator(), 99)
    q = bk.g2_mul(bk.g2_generator(), 99)
    assert bk.g1_from_bytes(bk.g1_to_bytes(p)) == p
    assert bk.g2_from_bytes(bk.g2_to_bytes(q)) == q
    with pytest.raises(InvalidEncoding):
        bk.g1_from_bytes(bk.g1_to_bytes(p)[:-1])
    with pytest.raises(InvalidEncoding):
        bk.g2_from_bytes(bk.g2_to_bytes(q) + b"\x00")
    with pytest.raises(InvalidEncoding):
        bk.g1_from_bytes(bk.g1_to_bytes(bk.G1Point.identity()))
    assert bk.g1_from_bytes(bk.g1_to_bytes(bk.G1Point.identity()), allow_identity=True) == (
        bk.G1Point.identity()
    )
    with pytest.raises(InvalidEncoding):  # arkworks alone accepts this as the identity
        bk.g1_from_bytes(b"\xff" * 48, allow_identity=True)
    with pytest.raises(InvalidEncoding):
        bk.g2_from_bytes(b"\x00" * 96)
    with pytest.raises(InvalidEncoding):
        bk.g1_from_bytes(b"\x80" + bk.P.to_bytes(48, "big")[1:])  # x >= p


def test_hash_to_g1_is_domain_separated_and_cached() -> None:
    a = bk.hash_to_g1(b"msg", b"DST-A")
    assert a == bk.hash_to_g1(b"msg", b"DST-A")
    assert a != bk.hash_to_g1(b"msg", b"DST-B") != bk.hash_to_g1(b"msg2", b"DST-A")
    assert a.is_in_subgroup()
    with pytest.raises(ValueError):
        bk.hash_to_g1(b"msg", b"")


def test_rfc9380_g1_vector() -> None:
    # RFC 9380 Appendix J.9.1, BLS12381G1_XMD:SHA-256_SSWU_RO_, msg = "abc"
    dst = b"QUUX-V01-CS02-with-BLS12381G1_XMD:SHA-256_SSWU_RO_"
    x = 0x03567BC5EF9C690C2AB2ECDF6A96EF1C139CC0B2F284DCA0A9A7943388A49A3AEE664BA5379A7655D3C68900BE2F6903
    y = 0x0B9C15F3FE6E5CF4211F346271D7B01C8F3B28BE689C8429C85B67AF215533311F0B8DFAAA154FA6B88176C229F2885D
    point = bk.hash_to_g1(b"abc", dst)
    assert point.to_xy_bytes_be() == x.to_bytes(48, "big") + y.to_bytes(48, "big")


def test_rfc9380_expand_message_xmd_vector() -> None:
    # RFC 9380 Appendix K.1, expand_message_xmd(SHA-256), msg = "abc", len_in_bytes = 0x20
    out = hashing.expand_message_xmd(b"abc", b"QUUX-V01-CS02-with-expander-SHA256-128", 0x20)
    assert out.hex() == "d8ccab23b5985ccea865c6c97b6e5b8350e794e603b4b97902f53a8a0d605615"


def test_hkdf_rfc5869_case1() -> None:
    okm = hashing.hkdf(bytes(range(13)), b"\x0b" * 22, bytes(range(0xF0, 0xFA)), 42)
    assert okm.hex() == (
        "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865"
    )


def test_hash_to_scalar_range() -> None:
    values = {hashing.hash_to_scalar(bytes([i]), b"DST") for i in range(50)}
    assert len(values) == 50 and all(0 <= v < bk.R for v in values)


def test_gt_encoding() -> None:
    e = bk.pairing(bk.g1_generator(), bk.g2_generator())
    raw = bk.gt_to_bytes(e)
    assert len(raw) == 576 and raw != bk.gt_to_bytes(bk.GT.one())
    assert bk.gt_to_bytes(bk.GT.one()) == b"\x01" + bytes(575)


@pytest.mark.slow
def test_backend_agrees_with_py_ecc_reference() -> None:
    ref = load_script("verify_py_ecc")
    from py_ecc.optimized_bls12_381 import G1, G2, multiply

    k = 0xC0FFEE1234
    # same points, same encodings
    assert ref.g1_encode(multiply(G1, k)) == bk.g1_to_bytes(bk.g1_mul(bk.g1_generator(), k))
    assert ref.g2_encode(multiply(G2, k)) == bk.g2_to_bytes(bk.g2_generator_mul(k))
    # same RFC 9380 hash-to-curve
    assert ref.g1_encode(ref.hash_to_g1(b"sipsec", b"DST-X")) == bk.g1_to_bytes(
        bk.hash_to_g1(b"sipsec", b"DST-X")
    )
    # same pairing value, same GT encoding (after the documented normalisation)
    a = multiply(G1, k)
    assert ref.gt_bytes(ref.pairing_ark(a, G2)) == bk.gt_to_bytes(
        bk.pairing(bk.g1_mul(bk.g1_generator(), k), bk.g2_generator())
    )
    # the reference decoder enforces the subgroup too
    off = load_script("generate").g1_off_subgroup()
    with pytest.raises(ref.RefError):
        ref.g1_decode(off)
    with pytest.raises(InvalidEncoding):
        bk.g1_from_bytes(off)
