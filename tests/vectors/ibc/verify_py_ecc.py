"""Independent verifier of the sipsec.ibc suite-v1 vectors over py_ecc (pure Python).

It shares no code with ``sipsec``: it re-implements suite v1 from its specification
(libs/sipsec/ibc/hazmat/{suite,backend,bf,cc}.py docstrings, tests/vectors/ibc/README.md)
on top of py_ecc's BLS12-381 arithmetic, pairing, RFC 9380 hash_to_G1 and
expand_message_xmd, and stdlib hmac/hashlib. It is also the *reference backend* the unit tests
compare the arkworks backend against (slowly: a pairing here takes about half a second).

Run: ``python tests/vectors/ibc/verify_py_ecc.py [--quick]``; exit status 0 iff every
checked vector holds. ``--quick`` checks the first vector of each kind only.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import sys
import time
from pathlib import Path
from typing import Any

from py_ecc.bls.hash import expand_message_xmd
from py_ecc.bls.hash_to_curve import hash_to_G1
from py_ecc.bls.point_compression import (
    compress_G1,
    compress_G2,
    decompress_G1,
    decompress_G2,
)
from py_ecc.optimized_bls12_381 import (
    FQ12,
    G2,
    Z1,
    add,
    b,
    b2,
    curve_order,
    final_exponentiate,
    is_inf,
    is_on_curve,
    multiply,
    neg,
    normalize,
    pairing,
)
from py_ecc.optimized_bls12_381.optimized_pairing import miller_loop

HERE = Path(__file__).resolve().parent
R = curve_order

# --- suite v1, written down again from the specification ---
SUITE_ID = b"sipsec-v1-BLS12381G1-BF-CC"
DST_ID = {
    "enc": b"SIPSEC-V1-ID-ENC_BLS12381G1_XMD:SHA-256_SSWU_RO_",
    "sig": b"SIPSEC-V1-ID-SIG_BLS12381G1_XMD:SHA-256_SSWU_RO_",
}
DST_BF_H2 = b"SIPSEC-V1-BF-H2-GT-TO-MASK"
DST_BF_H3 = b"SIPSEC-V1-BF-H3_BLS12381FR_XMD:SHA-256_RO_"
DST_BF_H4 = b"SIPSEC-V1-BF-H4-SIGMA-TO-MASK"
DST_BF_KDF = b"SIPSEC-V1-BF-KEM-KDF"
DST_CC_H = b"SIPSEC-V1-CC-H_BLS12381FR_XMD:SHA-256_RO_"
HEADER = bytes([len(SUITE_ID)]) + SUITE_ID


class RefError(Exception):
    """A reference-side decoding or verification failure."""


# --- encodings ---


def lp(*fields: bytes) -> bytes:
    return b"".join(len(f).to_bytes(2, "big") + f for f in fields)


def identity_bytes(aor: str, purpose: str, period: int, length_s: int) -> bytes:
    domain = aor.rpartition("@")[2]
    return lp(
        SUITE_ID,
        purpose.encode(),
        aor.encode(),
        domain.encode(),
        length_s.to_bytes(8, "big"),
        period.to_bytes(8, "big"),
    )


def g1_encode(pt: Any) -> bytes:
    return compress_G1(pt).to_bytes(48, "big")


def g2_encode(pt: Any) -> bytes:
    z1, z2 = compress_G2(pt)
    return z1.to_bytes(48, "big") + z2.to_bytes(48, "big")


def g1_decode(data: bytes, *, check_subgroup: bool = True) -> Any:
    if len(data) != 48:
        raise RefError("G1 length")
    try:
        pt = decompress_G1(int.from_bytes(data, "big"))
    except ValueError as exc:
        raise RefError(f"G1 decode: {exc}") from exc
    if is_inf(pt) or not is_on_curve(pt, b):
        raise RefError("G1 infinity or off curve")
    if check_subgroup and not is_inf(multiply(pt, R)):
        raise RefError("G1 point not in the subgroup")
    if g1_encode(pt) != data:
        raise RefError("G1 non-canonical")
    return pt


def g2_decode(data: bytes, *, check_subgroup: bool = True) -> Any:
    if len(data) != 96:
        raise RefError("G2 length")
    try:
        pt = decompress_G2((int.from_bytes(data[:48], "big"), int.from_bytes(data[48:], "big")))
    except ValueError as exc:
        raise RefError(f"G2 decode: {exc}") from exc
    if is_inf(pt) or not is_on_curve(pt, b2):
        raise RefError("G2 infinity or off curve")
    if check_subgroup and not is_inf(multiply(pt, R)):
        raise RefError("G2 point not in the subgroup")
    if g2_encode(pt) != data:
        raise RefError("G2 non-canonical")
    return pt


def gt_bytes(f: FQ12) -> bytes:
    """arkworks' serialisation of an F_p^12 element given in py_ecc's w-basis.

    py_ecc: F_p^12 = F_p[w]/(w^12 - 2 w^6 + 2). arkworks' tower: w^2 = v, v^3 = u + 1,
    u^2 = -1, so u = w^6 - 1 and a (i, j, k) tower coefficient multiplies w^(i+2j) u^k.
    With c_m the w-basis coefficients: a(m, 1) = c_(m+6), a(m, 0) = c_m + c_(m+6), m = i + 2j.
    """
    c = [int(x) for x in f.coeffs]
    q = 0x1A0111EA397FE69A4B1BA7B6434BACD764774B84F38512BF6730D2A0F6B0F6241EABFFFEB153FFFFB9FEFFFFFFFFAAAB
    out = bytearray()
    for i in range(2):
        for j in range(3):
            m = i + 2 * j
            out += ((c[m] + c[m + 6]) % q).to_bytes(48, "little")
            out += (c[m + 6] % q).to_bytes(48, "little")
    return bytes(out)


def pairing_ark(p1: Any, q2: Any) -> FQ12:
    """e(P, Q) normalised as arkworks computes it: py_ecc's pairing(Q, P) ** (-3 mod r)."""
    return pairing(q2, p1) ** (R - 3)


def pairing_product_is_one(pairs: list[tuple[Any, Any]]) -> bool:
    """prod e(P_i, Q_i) == 1, with one final exponentiation."""
    acc = FQ12.one()
    for p1, q2 in pairs:
        acc = acc * miller_loop(q2, p1, False)
    return final_exponentiate(acc) == FQ12.one()


# --- hashes ---


def hkdf(salt: bytes, ikm: bytes, info: bytes, length: int) -> bytes:
    prk = hmac.new(salt, ikm, hashlib.sha256).digest()
    okm, block, i = b"", b"", 1
    while len(okm) < length:
        block = hmac.new(prk, block + info + bytes([i]), hashlib.sha256).digest()
        okm += block
        i += 1
    return okm[:length]


def hash_to_scalar(msg: bytes, dst: bytes) -> int:
    return int.from_bytes(expand_message_xmd(msg, dst, 48, hashlib.sha256), "big") % R


def hash_to_g1(msg: bytes, dst: bytes) -> Any:
    return hash_to_G1(msg, dst, hashlib.sha256)


def xor(a: bytes, c: bytes) -> bytes:
    return bytes(x ^ y for x, y in zip(a, c, strict=True))


# --- the schemes, reference side ---


def bf_decapsulate(d: Any, ident: bytes, ct: bytes) -> tuple[bytes, bytes, bytes]:
    """FullIdent decryption; returns (key, sigma, M) or raises RefError."""
    if len(ct) != len(HEADER) + 160 or not ct.startswith(HEADER):
        raise RefError("ciphertext framing")
    off = len(HEADER)
    u_bytes, v, w = ct[off : off + 96], ct[off + 96 : off + 128], ct[off + 128 :]
    u = g2_decode(u_bytes, check_subgroup=False)
    g = pairing_ark(d, u)
    sigma = xor(v, hkdf(DST_BF_H2, gt_bytes(g), b"", 32))
    m = xor(w, hkdf(DST_BF_H4, sigma, b"", 32))
    r = hash_to_scalar(sigma + m, DST_BF_H3)
    if g2_encode(multiply(G2, r)) != u_bytes:
        raise RefError("FullIdent check U = r P2 failed")
    return hkdf(DST_BF_KDF, m, lp(ident, ct), 32), sigma, m


def cc_verify(q: Any, p_pub: Any, msg: bytes, sig: bytes) -> tuple[Any, int]:
    """Cha–Cheon verification; returns (U, h) or raises RefError."""
    if len(sig) != len(HEADER) + 96 or not sig.startswith(HEADER):
        raise RefError("signature framing")
    off = len(HEADER)
    u_bytes = sig[off : off + 48]
    u, v = g1_decode(u_bytes), g1_decode(sig[off + 48 :])
    h = hash_to_scalar(u_bytes + msg, DST_CC_H)
    if not pairing_product_is_one([(v, G2), (neg(add(u, multiply(q, h))), p_pub)]):
        raise RefError("Cha-Cheon equation failed")
    return u, h


def parse_params(data: bytes) -> dict[str, Any]:
    """Decode the documented DomainParams encoding."""
    pos = 0

    def take(n: int) -> bytes:
        nonlocal pos
        if pos + n > len(data):
            raise RefError("params truncated")
        out = data[pos : pos + n]
        pos += n
        return out

    if take(4) != b"SSP\x01":
        raise RefError("params magic")
    suite = take(take(1)[0])
    domain = take(take(1)[0]).decode("ascii")
    version = int.from_bytes(take(4), "big")
    length_s = int.from_bytes(take(8), "big")
    max_ahead = int.from_bytes(take(2), "big")
    p_pub = take(96)
    threshold = int.from_bytes(take(2), "big")
    n = int.from_bytes(take(2), "big")
    shares = [take(96) for _ in range(n)]
    if pos != len(data):
        raise RefError("params trailing bytes")
    return {
        "suite_id": suite,
        "domain": domain,
        "version": version,
        "length_s": length_s,
        "max_ahead": max_ahead,
        "p_pub": p_pub,
        "threshold": threshold,
        "shares": shares,
    }


def lagrange_at_zero(indices: list[int]) -> list[int]:
    out = []
    for i in indices:
        num, den = 1, 1
        for j in indices:
            if j != i:
                num, den = num * (-j) % R, den * (i - j) % R
        out.append(num * pow(den, -1, R) % R)
    return out


# --- vector checks ---


def _hex(x: str) -> bytes:
    return bytes.fromhex(x)


def check_kat(kat: dict[str, Any], quick: bool, log: list[str]) -> None:
    hdr = kat["header"]
    assert _hex(hdr["suite_id"]) == SUITE_ID, "suite id"
    assert {k: _hex(v) for k, v in hdr["dst"].items()} == {
        "id_enc": DST_ID["enc"],
        "id_sig": DST_ID["sig"],
        "bf_h2": DST_BF_H2,
        "bf_h3": DST_BF_H3,
        "bf_h4": DST_BF_H4,
        "bf_kdf": DST_BF_KDF,
        "cc_h": DST_CC_H,
    }, "DSTs differ from the specification"
    domains: dict[str, dict[str, Any]] = {}
    for dom in kat["domains"]:
        s = int(dom["master_secret"], 16)
        params = parse_params(_hex(dom["params"]))
        assert params["suite_id"] == SUITE_ID and params["domain"] == dom["domain"], "params"
        p_pub = g2_decode(params["p_pub"])
        assert normalize(multiply(G2, s)) == normalize(p_pub), "P_pub != s P2"
        domains[dom["domain"]] = {"s": s, "p_pub": p_pub, "length_s": params["length_s"]}
        log.append(f"domain {dom['domain']}: P_pub = s P2")
    keys: dict[str, Any] = {}
    ids = kat["identities"][: 2 if quick else None]
    for ent in kat["identities"]:
        dom = domains[ent["domain"]]
        ib = identity_bytes(ent["aor"], ent["purpose"], ent["period"], dom["length_s"])
        assert ib == _hex(ent["identity_bytes"]), f"identity bytes of {ent['name']}"
        q = hash_to_g1(ib, DST_ID[ent["purpose"]])
        assert g1_encode(q) == _hex(ent["q_id"]), f"Q_ID of {ent['name']}"
        d = g1_decode(_hex(ent["d_id"]))
        assert normalize(multiply(q, dom["s"])) == normalize(d), f"d_ID of {ent['name']}"
        keys[ent["name"]] = {"q": q, "d": d, "ib": ib, "p_pub": dom["p_pub"]}
        log.append(f"identity {ent['name']}: Q_ID (RFC 9380), d_ID = s Q_ID")
    for ent in ids:
        k = keys[ent["name"]]
        assert pairing_product_is_one([(k["d"], G2), (neg(k["q"]), k["p_pub"])]), "e(d,P2)"
        log.append(f"identity {ent['name']}: e(d_ID, P2) = e(Q_ID, P_pub)")
    for ent in kat["kem"][: 1 if quick else None]:
        k = keys[ent["identity"]]
        key, sigma, m = bf_decapsulate(k["d"], k["ib"], _hex(ent["ciphertext"]))
        assert sigma == _hex(ent["sigma"]) and m == _hex(ent["m"]), "sigma/M"
        assert key == _hex(ent["key"]), f"KEM key of {ent['name']}"
        log.append(f"kem {ent['name']}: decapsulated, U = H3(sigma, M) P2, key matches")
    for ent in kat["signatures"][: 1 if quick else None]:
        k = keys[ent["identity"]]
        u, _h = cc_verify(k["q"], k["p_pub"], _hex(ent["message"]), _hex(ent["signature"]))
        assert normalize(u) == normalize(multiply(k["q"], int(ent["r"], 16))), "U = r Q_ID"
        log.append(f"signature {ent['name']}: e(V, P2) = e(U + h Q_ID, P_pub)")
    for ent in kat["threshold"][: 1 if quick else None]:
        dom = domains[ent["domain"]]
        t = ent["t"]
        shares = {int(i): int(v, 16) for i, v in ent["shares"].items()}
        idx = sorted(shares)[:t]
        assert sum(lam * shares[i] for lam, i in zip(lagrange_at_zero(idx), idx)) % R == dom["s"]
        params = parse_params(_hex(ent["params"]))
        assert params["threshold"] == t and len(params["shares"]) == ent["n"], "threshold params"
        for i, pub in enumerate(params["shares"], start=1):
            assert normalize(g2_decode(pub)) == normalize(multiply(G2, shares[i])), "P_pub,i"
        k = keys[ent["identity"]]
        parts = {int(i): g1_decode(_hex(v)) for i, v in ent["partials"].items()}
        first = min(parts)
        assert pairing_product_is_one(
            [(parts[first], G2), (neg(k["q"]), g2_decode(params["shares"][first - 1]))]
        ), "partial check"
        combined = Z1
        for lam, i in zip(lagrange_at_zero(idx), idx):
            assert normalize(parts[i]) == normalize(multiply(k["q"], shares[i])), "d_i"
            combined = add(combined, multiply(parts[i], lam))
        assert normalize(combined) == normalize(k["d"]), "combined d_ID"
        log.append(f"threshold {ent['name']}: shares, P_pub,i, partials, Lagrange combine")


def _reference_rejects(ent: dict[str, Any], kat: dict[str, Any]) -> bool:
    """Run a decapsulate/verify negative vector through the reference; True iff it fails."""
    ident = ent["identity"]
    dom = next(d for d in kat["domains"] if d["domain"] == ident["aor"].rpartition("@")[2])
    params = parse_params(_hex(dom["params"]))
    ib = identity_bytes(ident["aor"], ident["purpose"], ident["period"], params["length_s"])
    try:
        if ent["op"] == "decapsulate":
            bf_decapsulate(g1_decode(_hex(ent["private_key"])), ib, _hex(ent["ciphertext"]))
        else:
            vparams = parse_params(
                _hex(next(d for d in kat["domains"] if d["domain"] == ent["domain"])["params"])
            )
            q = hash_to_g1(ib, DST_ID[ident["purpose"]])
            cc_verify(q, g2_decode(vparams["p_pub"]), _hex(ent["message"]), _hex(ent["signature"]))
    except RefError:
        return True
    return False


def check_negative(neg_vectors: dict[str, Any], kat: dict[str, Any], log: list[str]) -> None:
    """Confirm, independently, what the negative vectors marked with a reference claim say."""
    for ent in neg_vectors["vectors"]:
        claim = ent.get("reference")
        if claim == "rejects":
            assert _reference_rejects(ent, kat), ent["name"]
        elif claim == "g1_off_subgroup":
            pt = g1_decode(_hex(ent["point"]), check_subgroup=False)
            assert not is_inf(multiply(pt, R)), ent["name"]
        elif claim == "g2_off_subgroup":
            pt = g2_decode(_hex(ent["point"]), check_subgroup=False)
            assert not is_inf(multiply(pt, R)), ent["name"]
        elif claim == "not_on_curve":
            try:
                g1_decode(_hex(ent["point"]), check_subgroup=False)
            except RefError:
                pass
            else:
                raise AssertionError(ent["name"])
        else:
            continue
        log.append(f"negative {ent['name']}: {claim} confirmed")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kat", default=str(HERE / "kat_v1.json"))
    ap.add_argument("--negative", default=str(HERE / "negative_v1.json"))
    ap.add_argument("--quick", action="store_true", help="first vector of each kind only")
    args = ap.parse_args(argv)
    start = time.monotonic()
    log: list[str] = []
    try:
        kat = json.loads(Path(args.kat).read_text())
        check_kat(kat, args.quick, log)
        check_negative(json.loads(Path(args.negative).read_text()), kat, log)
    except (AssertionError, RefError) as exc:
        for line in log:
            print("ok  ", line)
        print(f"FAIL {exc}")
        return 1
    for line in log:
        print("ok  ", line)
    print(f"all {len(log)} checks passed in {time.monotonic() - start:.1f} s (py_ecc)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
