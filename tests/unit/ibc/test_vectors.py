"""Known-answer and negative vectors (tests/vectors/ibc), and the independent py_ecc check."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from sipsec import ibc

from ._helpers import VECTORS, load_script

KAT = json.loads((VECTORS / "kat_v1.json").read_text())
NEG = json.loads((VECTORS / "negative_v1.json").read_text())
PARAMS = {
    d["domain"]: ibc.DomainParams.from_bytes(bytes.fromhex(d["params"])) for d in KAT["domains"]
}


def _identity(ent: dict[str, Any]) -> ibc.Identity:
    return ibc.Identity(
        ibc.Aor(ent["aor"]),
        ibc.Purpose(ent["purpose"]),
        ent["period"],
        PARAMS[ent["aor"].rpartition("@")[2]].policy.length_s,
    )


def test_generator_reproduces_committed_vectors(tmp_path: Path) -> None:
    assert load_script("generate").main(["--out", str(tmp_path)]) == 0
    for name in ("kat_v1.json", "negative_v1.json"):
        assert (tmp_path / name).read_bytes() == (VECTORS / name).read_bytes(), name


def test_header_names_provenance() -> None:
    for doc in (KAT, NEG):
        hdr = doc["header"]
        assert "generate.py" in hdr["generated_by"] and "verify_py_ecc.py" in hdr["verified_by"]
        assert bytes.fromhex(hdr["suite_id"]) == ibc.SUITE_ID


def test_kat_through_the_safe_api() -> None:
    keys = {}
    for ent in KAT["identities"]:
        ident = ibc.Identity.for_aor(
            ent["uri"], ibc.Purpose(ent["purpose"]), ent["period"], PARAMS[ent["domain"]].policy
        )
        assert ident == _identity(ent) and ident.to_bytes().hex() == ent["identity_bytes"]
        keys[ent["name"]] = ibc.PrivateKey.from_bytes(ident, bytes.fromhex(ent["d_id"]))
    master = {
        d["domain"]: ibc.MasterSecret.from_bytes(bytes.fromhex(d["master_secret"]))
        for d in KAT["domains"]
    }
    for name, sk in keys.items():
        assert (
            ibc.extract(master[sk.identity.domain], PARAMS[sk.identity.domain], sk.identity) == sk
        ), name
    for ent in KAT["kem"]:
        assert (
            ibc.decapsulate(keys[ent["identity"]], bytes.fromhex(ent["ciphertext"])).hex()
            == ent["key"]
        )
    for ent in KAT["signatures"]:
        sk = keys[ent["identity"]]
        ibc.verify(
            PARAMS[sk.identity.domain],
            sk.identity,
            bytes.fromhex(ent["message"]),
            bytes.fromhex(ent["signature"]),
        )
    for ent in KAT["threshold"]:
        tparams = ibc.DomainParams.from_bytes(bytes.fromhex(ent["params"]))
        partials = [ibc.PartialKey(int(i), bytes.fromhex(v)) for i, v in ent["partials"].items()]
        sk = keys[ent["identity"]]
        assert ibc.combine(tparams, sk.identity, partials).to_bytes().hex() == ent["d_id"]


def _run_negative(ent: dict[str, Any]) -> None:
    op = ent["op"]
    if op == "decapsulate":
        ident = _identity(ent["identity"])
        ibc.decapsulate(
            ibc.PrivateKey.from_bytes(ident, bytes.fromhex(ent["private_key"])),
            bytes.fromhex(ent["ciphertext"]),
        )
    elif op == "verify":
        ibc.verify(
            PARAMS[ent["domain"]],
            _identity(ent["identity"]),
            bytes.fromhex(ent["message"]),
            bytes.fromhex(ent["signature"]),
        )
    elif op == "params":
        ibc.DomainParams.from_bytes(bytes.fromhex(ent["data"]))
    elif op == "private_key":
        ibc.PrivateKey.from_bytes(_identity(ent["identity"]), bytes.fromhex(ent["data"]))
    elif op == "identity":
        ibc.canonical_aor(ent["uri"])
    elif op == "period":
        ibc.PeriodPolicy(ent["length_s"], ent["max_ahead"]).check_issuable(
            ent["period"], ent["now"]
        )
    elif op == "combine":
        tparams = ibc.DomainParams.from_bytes(bytes.fromhex(ent["params"]))
        partials = [ibc.PartialKey(int(i), bytes.fromhex(v)) for i, v in ent["partials"].items()]
        ibc.combine(tparams, _identity(ent["identity"]), partials)
    else:
        raise AssertionError(f"unknown op {op}")


@pytest.mark.parametrize("ent", NEG["vectors"], ids=[e["name"] for e in NEG["vectors"]])
def test_negative_vector(ent: dict[str, Any]) -> None:
    error = getattr(ibc, ent["error"])
    with pytest.raises(error) as info:
        _run_negative(ent)
    if "node" in ent:
        assert info.value.node == ent["node"]


def test_negative_vectors_cover_the_required_cases() -> None:
    names = {e["name"] for e in NEG["vectors"]}
    for required in (
        "kem-tampered-U-bit",
        "kem-tampered-V",
        "kem-tampered-W",
        "kem-wrong-identity",
        "kem-wrong-purpose",
        "kem-wrong-period",
        "kem-U-off-subgroup",
        "kem-wrong-dst",
        "kem-truncated",
        "sig-tampered-U-point",
        "sig-tampered-V-point",
        "sig-wrong-identity",
        "sig-wrong-purpose",
        "sig-wrong-period",
        "sig-V-off-subgroup",
        "sig-wrong-dst",
        "sig-truncated",
        "params-truncated",
        "key-off-subgroup",
        "threshold-lying-node-4",
    ):
        assert required in names


@pytest.mark.slow
def test_independent_py_ecc_verifier() -> None:
    proc = subprocess.run(
        [sys.executable, str(VECTORS / "verify_py_ecc.py")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "checks passed" in proc.stdout


@pytest.mark.slow
def test_independent_verifier_catches_a_bad_vector(tmp_path: Path) -> None:
    kat = json.loads((VECTORS / "kat_v1.json").read_text())
    kem = kat["kem"][0]
    kem["key"] = ("00" if kem["key"][:2] != "00" else "11") + kem["key"][2:]
    (tmp_path / "kat.json").write_text(json.dumps(kat))
    ref = load_script("verify_py_ecc")
    assert (
        ref.main(
            [
                "--quick",
                "--kat",
                str(tmp_path / "kat.json"),
                "--negative",
                str(VECTORS / "negative_v1.json"),
            ]
        )
        == 1
    )
