"""Generate the suite-v1 known-answer and negative vectors with sipsec.ibc (deterministic rng).

Run from the repository root: ``.venv/bin/python tests/vectors/ibc/generate.py``. It rewrites
kat_v1.json and negative_v1.json here; the output is a pure function of the seeds below, so a
re-run yields byte-identical files (tests/unit/ibc/test_vectors.py checks that the
implementation still reproduces them, and verify_py_ecc.py checks them independently).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import py_arkworks_bls12381
from sipsec import ibc
from sipsec.ibc.hazmat import backend as bk
from sipsec.ibc.hazmat import bf, cc, suite

HERE = Path(__file__).resolve().parent
PERIOD = 684  # 2026-03-11 .. 2026-04-10 with 30-day periods
MESSAGES = {
    "invite": b"INVITE sip:bob@biloxi.com SIP/2.0\r\nCall-ID: a84b4c76e66710\r\n\r\n",
    "empty": b"",
}


class Drbg:
    """Deterministic rng for vectors only: SHAKE-256(seed || label || counter)."""

    def __init__(self, seed: str) -> None:
        self.seed = seed.encode()
        self.counter = 0
        self.outputs: list[bytes] = []

    def __call__(self, n: int) -> bytes:
        self.counter += 1
        out = hashlib.shake_256(self.seed + b"|" + str(self.counter).encode()).digest(n)
        self.outputs.append(out)
        return out


def _find_point(seed: str, decoder: Callable[[bytes], object], size: int, want_ok: bool) -> bytes:
    """A compressed encoding that ``decoder`` (unchecked-subgroup) accepts iff want_ok."""
    for ctr in range(10_000):
        raw = bytearray(hashlib.shake_256(f"{seed}|{ctr}".encode()).digest(size))
        raw[0] = (raw[0] & 0x1F) | 0x80
        if int.from_bytes(raw[:48], "big") & ((1 << 381) - 1) >= bk.P:
            continue
        try:
            decoder(bytes(raw))
            ok = True
        except ValueError:
            ok = False
        if ok == want_ok:
            return bytes(raw)
    raise RuntimeError("no point found")


def g1_off_subgroup() -> bytes:
    data = _find_point("g1-off", bk.G1Point.from_compressed_bytes_unchecked, 48, True)
    assert not bk.G1Point.from_compressed_bytes_unchecked(data).is_in_subgroup()
    return data


def g2_off_subgroup() -> bytes:
    data = _find_point("g2-off", bk.G2Point.from_compressed_bytes_unchecked, 96, True)
    assert not bk.G2Point.from_compressed_bytes_unchecked(data).is_in_subgroup()
    return data


def g1_not_on_curve() -> bytes:
    return _find_point("g1-bad", bk.G1Point.from_compressed_bytes_unchecked, 48, False)


def flip(data: bytes, pos: int, bit: int = 1) -> bytes:
    out = bytearray(data)
    out[pos] ^= bit
    return bytes(out)


def ident_json(i: ibc.Identity) -> dict[str, Any]:
    return {"aor": i.aor, "purpose": i.purpose.value, "period": i.period}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(HERE), help="output folder (default: next to this script)")
    out = Path(ap.parse_args(argv).out)
    header = {
        "description": "sipsec.ibc suite v1 known-answer vectors",
        "generated_by": "tests/vectors/ibc/generate.py (sipsec.ibc with a SHAKE-256 deterministic rng)",
        "implementation": f"sipsec.ibc over py-arkworks-bls12381 {getattr(py_arkworks_bls12381, '__version__', '0.5.0')}",
        "verified_by": "tests/vectors/ibc/verify_py_ecc.py (independent, py_ecc)",
        "suite_id": suite.SUITE_ID.hex(),
        "dst": {
            "id_enc": suite.DST_ID_ENC.hex(),
            "id_sig": suite.DST_ID_SIG.hex(),
            "bf_h2": suite.DST_BF_H2.hex(),
            "bf_h3": suite.DST_BF_H3.hex(),
            "bf_h4": suite.DST_BF_H4.hex(),
            "bf_kdf": suite.DST_BF_KDF.hex(),
            "cc_h": suite.DST_CC_H.hex(),
        },
        "encoding": "hex; points compressed (ZCash); scalars big-endian",
    }
    policy = ibc.PeriodPolicy()
    masters: dict[str, ibc.MasterSecret] = {}
    params: dict[str, ibc.DomainParams] = {}
    domains = []
    for name in ("atlanta.com", "biloxi.com"):
        m, p = ibc.setup(name, policy, rng=Drbg(f"master/{name}"))
        masters[name], params[name] = m, p
        domains.append(
            {
                "domain": name,
                "seed": f"master/{name}",
                "master_secret": m.to_bytes().hex(),
                "params": p.to_bytes().hex(),
            }
        )

    specs = [
        ("alice-enc", "sip:alice@atlanta.com", ibc.Purpose.ENC, PERIOD),
        ("alice-sig", "sip:alice@atlanta.com", ibc.Purpose.SIG, PERIOD),
        ("bob-enc", "sip:bob@biloxi.com", ibc.Purpose.ENC, PERIOD),
        ("bob-sig", "sip:bob@biloxi.com", ibc.Purpose.SIG, PERIOD),
        ("bob-enc-next", "sip:bob@biloxi.com", ibc.Purpose.ENC, PERIOD + 1),
        ("bob-sig-next", "sip:bob@biloxi.com", ibc.Purpose.SIG, PERIOD + 1),
        (
            "carol-enc",
            '"Carol" <SIPS:Carol%41@Biloxi.COM:5061;transport=tls>',
            ibc.Purpose.ENC,
            PERIOD,
        ),
        ("carol-sig", "sips:CarolA@biloxi.com", ibc.Purpose.SIG, PERIOD),
    ]
    ids: dict[str, ibc.Identity] = {}
    keys: dict[str, ibc.PrivateKey] = {}
    identities = []
    for name, uri, purpose, period in specs:
        i = ibc.Identity.for_aor(uri, purpose, period, policy)
        k = ibc.extract(masters[i.domain], params[i.domain], i)
        ids[name], keys[name] = i, k
        identities.append(
            {
                "name": name,
                "uri": uri,
                "domain": i.domain,
                **ident_json(i),
                "identity_bytes": i.to_bytes().hex(),
                "q_id": bk.g1_to_bytes(ibc.identity_point(i)).hex(),
                "d_id": k.to_bytes().hex(),
            }
        )

    kem = []
    cts: dict[str, tuple[bytes, bytes]] = {}
    for name, target in (
        ("to-bob-1", "bob-enc"),
        ("to-bob-2", "bob-enc"),
        ("to-alice", "alice-enc"),
    ):
        rng = Drbg(f"kem/{name}")
        key, ct = ibc.encapsulate(params[ids[target].domain], ids[target], rng=rng)
        assert ibc.decapsulate(keys[target], ct) == key
        cts[name] = (key, ct)
        kem.append(
            {
                "name": name,
                "identity": target,
                "seed": f"kem/{name}",
                "sigma": rng.outputs[0].hex(),
                "m": rng.outputs[1].hex(),
                "key": key.hex(),
                "ciphertext": ct.hex(),
            }
        )

    sigs = []
    sig_by: dict[str, bytes] = {}
    for name, signer, msg in (
        ("alice-invite", "alice-sig", "invite"),
        ("alice-empty", "alice-sig", "empty"),
        ("bob-invite", "bob-sig", "invite"),
    ):
        rng = Drbg(f"sig/{name}")
        sig = ibc.sign(keys[signer], MESSAGES[msg], rng=rng)
        ibc.verify(params[ids[signer].domain], ids[signer], MESSAGES[msg], sig)
        sig_by[name] = sig
        sigs.append(
            {
                "name": name,
                "identity": signer,
                "seed": f"sig/{name}",
                "message": MESSAGES[msg].hex(),
                "r": hex(cc.nonce(keys[signer]._point(), rng.outputs[0], MESSAGES[msg])),
                "signature": sig.hex(),
            }
        )

    shares, tparams = ibc.split_master(
        masters["atlanta.com"], params["atlanta.com"], 3, 5, rng=Drbg("threshold/atlanta")
    )
    partials = [ibc.partial_extract(s, ids["alice-enc"]) for s in shares]
    combined = ibc.combine(tparams, ids["alice-enc"], partials[2:])
    assert combined == keys["alice-enc"]
    threshold = [
        {
            "name": "atlanta-3-of-5",
            "domain": "atlanta.com",
            "seed": "threshold/atlanta",
            "t": 3,
            "n": 5,
            "shares": {str(s.index): s.to_bytes()[2:].hex() for s in shares},
            "params": tparams.to_bytes().hex(),
            "identity": "alice-enc",
            "partials": {str(p.index): p.value.hex() for p in partials},
            "combined_from": [3, 4, 5],
            "d_id": combined.to_bytes().hex(),
        }
    ]

    kat = {
        "header": header,
        "domains": domains,
        "identities": identities,
        "kem": kem,
        "signatures": sigs,
        "threshold": threshold,
    }

    # --- negative vectors ---
    off1, off2, bad1 = g1_off_subgroup(), g2_off_subgroup(), g1_not_on_curve()
    inf1 = bk.g1_to_bytes(bk.G1Point.identity())
    inf2 = bk.g2_to_bytes(bk.G2Point.identity())
    hl = len(suite.SUITE_ID) + 1
    _, ct = cts["to-bob-1"]
    u = ct[hl : hl + 96]
    u2 = bk.g2_to_bytes(bk.g2_from_bytes(u) + bk.g2_generator())
    neg: list[dict[str, Any]] = []

    def dec(name: str, key: str, c: bytes, error: str, note: str, **extra: Any) -> None:
        neg.append(
            {
                "name": name,
                "op": "decapsulate",
                "identity": ident_json(keys[key].identity),
                "private_key": keys[key].to_bytes().hex(),
                "ciphertext": c.hex(),
                "error": error,
                "note": note,
                **extra,
            }
        )

    dec(
        "kem-tampered-U-bit",
        "bob-enc",
        flip(ct, hl + 95),
        "InvalidCiphertext",
        "last bit of U flipped",
    )
    dec(
        "kem-tampered-U-point",
        "bob-enc",
        ct[:hl] + u2 + ct[hl + 96 :],
        "InvalidCiphertext",
        "U replaced by the valid point U + P2",
        reference="rejects",
    )
    dec(
        "kem-tampered-V",
        "bob-enc",
        flip(ct, hl + 96 + 5),
        "InvalidCiphertext",
        "one bit of V flipped",
        reference="rejects",
    )
    dec(
        "kem-tampered-W",
        "bob-enc",
        flip(ct, len(ct) - 1, 0x80),
        "InvalidCiphertext",
        "one bit of W flipped",
    )
    dec(
        "kem-U-off-subgroup",
        "bob-enc",
        ct[:hl] + off2 + ct[hl + 96 :],
        "InvalidCiphertext",
        "U on the curve but not in G2",
        reference="g2_off_subgroup",
        point=off2.hex(),
    )
    dec("kem-U-identity", "bob-enc", ct[:hl] + inf2 + ct[hl + 96 :], "InvalidCiphertext", "U = O")
    dec("kem-truncated", "bob-enc", ct[:-1], "InvalidCiphertext", "last byte dropped")
    dec("kem-extended", "bob-enc", ct + b"\x00", "InvalidCiphertext", "a byte appended")
    dec("kem-wrong-suite", "bob-enc", flip(ct, 5, 0x20), "InvalidCiphertext", "suite id altered")
    dec(
        "kem-wrong-identity",
        "carol-enc",
        ct,
        "InvalidCiphertext",
        "ciphertext to bob, opened by carol",
        reference="rejects",
    )
    dec(
        "kem-wrong-period",
        "bob-enc-next",
        ct,
        "InvalidCiphertext",
        "ciphertext for period P, key for P+1",
        reference="rejects",
    )
    dec("kem-wrong-purpose", "bob-sig", ct, "InvalidIdentity", "a sig key refused by decapsulate")
    neg.append(
        {
            "name": "kem-wrong-purpose-key",
            "op": "decapsulate",
            "identity": ident_json(ids["bob-enc"]),
            "private_key": keys["bob-sig"].to_bytes().hex(),
            "ciphertext": ct.hex(),
            "error": "InvalidCiphertext",
            "note": "bob's sig d_ID presented as his enc key",
        }
    )
    wrong_q = bk.hash_to_g1(ids["bob-enc"].to_bytes(), suite.DST_ID_SIG)
    _, ct_dst = bf.bf_encapsulate(
        wrong_q, params["biloxi.com"].p_pub_point(), ids["bob-enc"].to_bytes(), Drbg("neg/dst")
    )
    dec(
        "kem-wrong-dst",
        "bob-enc",
        ct_dst,
        "InvalidCiphertext",
        "ciphertext to Q_ID hashed with the SIG DST",
        reference="rejects",
    )

    sig = sig_by["alice-invite"]
    su = sig[hl : hl + 48]
    sv = sig[hl + 48 :]
    msg = MESSAGES["invite"]

    def ver(
        name: str,
        ident: str,
        s: bytes,
        error: str,
        note: str,
        m: bytes = msg,
        domain: str | None = None,
        **extra: Any,
    ) -> None:
        neg.append(
            {
                "name": name,
                "op": "verify",
                "domain": domain or ids[ident].domain,
                "identity": ident_json(ids[ident]),
                "message": m.hex(),
                "signature": s.hex(),
                "error": error,
                "note": note,
                **extra,
            }
        )

    p1 = bk.g1_generator()
    ver(
        "sig-tampered-U-bit",
        "alice-sig",
        flip(sig, hl + 47),
        "InvalidSignature",
        "last bit of U flipped",
    )
    ver(
        "sig-tampered-U-point",
        "alice-sig",
        sig[:hl] + bk.g1_to_bytes(bk.g1_from_bytes(su) + p1) + sv,
        "InvalidSignature",
        "U replaced by the valid point U + P1",
    )
    ver(
        "sig-tampered-V-point",
        "alice-sig",
        sig[:hl] + su + bk.g1_to_bytes(bk.g1_from_bytes(sv) + p1),
        "InvalidSignature",
        "V replaced by the valid point V + P1",
        reference="rejects",
    )
    ver(
        "sig-V-off-subgroup",
        "alice-sig",
        sig[:hl] + su + off1,
        "InvalidSignature",
        "V on the curve but not in G1",
        reference="g1_off_subgroup",
        point=off1.hex(),
    )
    ver(
        "sig-V-not-on-curve",
        "alice-sig",
        sig[:hl] + su + bad1,
        "InvalidSignature",
        "V's x has no y on the curve",
        reference="not_on_curve",
        point=bad1.hex(),
    )
    ver("sig-U-identity", "alice-sig", sig[:hl] + inf1 + sv, "InvalidSignature", "U = O")
    ver("sig-truncated", "alice-sig", sig[:-1], "InvalidSignature", "last byte dropped")
    ver("sig-wrong-suite", "alice-sig", flip(sig, 3, 0x20), "InvalidSignature", "suite id altered")
    ver(
        "sig-wrong-message",
        "alice-sig",
        sig,
        "InvalidSignature",
        "message altered",
        m=msg + b" ",
        reference="rejects",
    )
    ver(
        "sig-wrong-identity",
        "carol-sig",
        sig_by["bob-invite"],
        "InvalidSignature",
        "bob's signature, carol's identity",
    )
    ver(
        "sig-wrong-period",
        "bob-sig-next",
        sig_by["bob-invite"],
        "InvalidSignature",
        "signed in P, verified for P+1",
        reference="rejects",
    )
    ver(
        "sig-wrong-purpose",
        "bob-enc",
        sig_by["bob-invite"],
        "InvalidIdentity",
        "verify refuses an enc identity",
    )
    ver(
        "sig-wrong-domain-params",
        "alice-sig",
        sig,
        "InvalidIdentity",
        "atlanta identity, biloxi params",
        domain="biloxi.com",
    )
    q_enc_dst = bk.hash_to_g1(ids["alice-sig"].to_bytes(), suite.DST_ID_ENC)
    d_wrong = bk.g1_mul(q_enc_dst, masters["atlanta.com"]._value())
    sig_dst = cc.cc_sign(d_wrong, q_enc_dst, msg, Drbg("neg/sig-dst"))
    ver(
        "sig-wrong-dst",
        "alice-sig",
        sig_dst,
        "InvalidSignature",
        "signed with a key hashed under the ENC DST",
        reference="rejects",
    )

    pb = params["atlanta.com"].to_bytes()
    p_off = pb.find(params["atlanta.com"].p_pub)
    tpb = tparams.to_bytes()
    share_off = len(tpb) - 5 * 96
    swapped = (
        tpb[:share_off]
        + tpb[share_off + 96 : share_off + 192]
        + tpb[share_off : share_off + 96]
        + tpb[share_off + 192 :]
    )
    for name, data, note in (
        ("params-truncated", pb[:-1], "last byte dropped"),
        ("params-trailing", pb + b"\x00", "a byte appended"),
        ("params-bad-magic", b"XSP\x01" + pb[4:], "magic altered"),
        ("params-unknown-suite", flip(pb, 6, 0x20), "suite id altered"),
        ("params-p-pub-off-subgroup", pb[:p_off] + off2 + pb[p_off + 96 :], "P_pub not in G2"),
        ("params-p-pub-identity", pb[:p_off] + inf2 + pb[p_off + 96 :], "P_pub = O"),
        ("params-shares-inconsistent", swapped, "public shares of nodes 1 and 2 swapped"),
        (
            "params-threshold-above-n",
            tpb[: share_off - 4] + (6).to_bytes(2, "big") + tpb[share_off - 2 :],
            "threshold 6 of 5",
        ),
    ):
        neg.append(
            {
                "name": name,
                "op": "params",
                "data": data.hex(),
                "error": "InvalidEncoding",
                "note": note,
            }
        )

    for name, data, note, extra in (
        (
            "key-off-subgroup",
            off1,
            "d_ID not in G1",
            {"reference": "g1_off_subgroup", "point": off1.hex()},
        ),
        (
            "key-not-on-curve",
            bad1,
            "d_ID off the curve",
            {"reference": "not_on_curve", "point": bad1.hex()},
        ),
        ("key-identity", inf1, "d_ID = O", {}),
        ("key-truncated", keys["alice-enc"].to_bytes()[:-1], "47 bytes", {}),
        ("key-non-canonical-infinity", b"\xff" * 48, "infinity flag with garbage", {}),
    ):
        neg.append(
            {
                "name": name,
                "op": "private_key",
                "identity": ident_json(ids["alice-enc"]),
                "data": data.hex(),
                "error": "InvalidEncoding",
                "note": note,
                **extra,
            }
        )

    for uri in (
        "tel:+15551234567",
        "sip:atlanta.com",
        "mailto:alice@atlanta.com",
        "sip:al ice@atlanta.com",
        "sip:alice@",
        "sip:alice@atlanta.com:99999",
        "<sip:alice@atlanta.com",
        "sip:alice@-bad-.com",
        "http://alice@atlanta.com",
        "",
    ):
        neg.append(
            {
                "name": f"aor-{uri or 'empty'}",
                "op": "identity",
                "uri": uri,
                "error": "InvalidIdentity",
            }
        )

    now = PERIOD * policy.length_s + 1000.0
    for name, period in (("period-far-future", PERIOD + 2), ("period-past", PERIOD - 1)):
        neg.append(
            {
                "name": name,
                "op": "period",
                "length_s": policy.length_s,
                "max_ahead": policy.max_ahead,
                "period": period,
                "now": now,
                "error": "PeriodNotAllowed",
            }
        )

    liar = bk.g1_to_bytes(bk.g1_from_bytes(partials[3].value) + p1)
    neg.append(
        {
            "name": "threshold-lying-node-4",
            "op": "combine",
            "domain": "atlanta.com",
            "params": tparams.to_bytes().hex(),
            "identity": ident_json(ids["alice-enc"]),
            "partials": {
                "2": partials[1].value.hex(),
                "4": liar.hex(),
                "5": partials[4].value.hex(),
            },
            "error": "BadShare",
            "node": 4,
        }
    )
    neg.append(
        {
            "name": "threshold-too-few",
            "op": "combine",
            "domain": "atlanta.com",
            "params": tparams.to_bytes().hex(),
            "identity": ident_json(ids["alice-enc"]),
            "partials": {"1": partials[0].value.hex(), "2": partials[1].value.hex()},
            "error": "InsufficientShares",
        }
    )

    negative = {
        "header": {
            **header,
            "description": "sipsec.ibc suite v1 negative vectors",
            "kat": "kat_v1.json (domains and identities referenced here)",
        },
        "vectors": neg,
    }
    (out / "kat_v1.json").write_text(json.dumps(kat, indent=1) + "\n")
    (out / "negative_v1.json").write_text(json.dumps(negative, indent=1) + "\n")
    print(
        f"wrote {len(identities)} identities, {len(kem)} KEM, {len(sigs)} signatures, "
        f"{len(threshold)} threshold, {len(neg)} negative vectors"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
