"""Sealing at rest, KEK loading, domain init/load (1-of-1 and t-of-n)."""

from __future__ import annotations

import base64
import json
import os
import stat

import pytest
from sipsec.pkgclient import verify_signed_params
from sipsec_pkg.material import (
    DomainMaterial,
    MaterialError,
    generate_kek,
    init_domain,
    load_kek,
    load_material,
    seal,
    unseal,
    write_domain,
)

KEK = bytes(range(32))


def test_seal_roundtrip_and_binding():
    blob = seal(KEK, b"secret scalar", kind="share", domain="atlanta.com", index=2)
    assert b"secret scalar" not in blob
    assert unseal(KEK, blob, kind="share", domain="atlanta.com", index=2) == b"secret scalar"
    for kw in ({"kind": "master", "domain": "atlanta.com", "index": 2},
               {"kind": "share", "domain": "biloxi.com", "index": 2},
               {"kind": "share", "domain": "atlanta.com", "index": 3}):
        with pytest.raises(MaterialError):
            unseal(KEK, blob, **kw)
    with pytest.raises(MaterialError, match="wrong KEK"):
        unseal(bytes(32), blob, kind="share", domain="atlanta.com", index=2)
    doc = json.loads(blob)
    ct = bytearray(base64.b64decode(doc["ciphertext"]))
    ct[0] ^= 1
    doc["ciphertext"] = base64.b64encode(bytes(ct)).decode()
    with pytest.raises(MaterialError):
        unseal(KEK, json.dumps(doc).encode(), kind="share", domain="atlanta.com", index=2)
    with pytest.raises(MaterialError, match="malformed"):
        unseal(KEK, b"{not json", kind="share", domain="atlanta.com", index=2)


def test_load_kek_from_env_or_file(tmp_path):
    b64 = base64.b64encode(KEK).decode()
    assert load_kek(b64) == KEK
    raw = tmp_path / "kek.bin"
    raw.write_bytes(KEK)
    assert load_kek("", str(raw)) == KEK
    text = tmp_path / "kek.txt"  # a Kubernetes Secret mounted as a file, trailing newline
    text.write_text(b64 + "\n")
    assert load_kek("", str(text)) == KEK
    assert len(base64.b64decode(generate_kek())) == 32
    for bad in ("", "short", base64.b64encode(b"x" * 16).decode()):
        with pytest.raises(MaterialError):
            load_kek(bad, "")
    with pytest.raises(MaterialError, match="cannot read"):
        load_kek("", str(tmp_path / "missing"))


def test_init_write_load_one_of_one(tmp_path):
    init = init_domain("atlanta.com")
    secret = init.master.to_bytes()
    written = write_domain(init, tmp_path, KEK)
    names = sorted(p.name for p in written)
    assert names == ["federation.sealed", "master.sealed", "params.json"]
    for p in tmp_path.iterdir():
        assert secret not in p.read_bytes() and secret.hex().encode() not in p.read_bytes()
    assert stat.S_IMODE(os.stat(tmp_path / "master.sealed").st_mode) == 0o600
    material = load_material(tmp_path, KEK)
    assert material.master.to_bytes() == secret and material.node_index == 0
    assert material.signed.fingerprint == init.signed.fingerprint
    verify_signed_params(material.signed, expected_domain="atlanta.com", pinned_fingerprint=init.signed.fingerprint)
    assert secret.hex() not in repr(material) and secret.hex() not in repr(init)
    with pytest.raises(MaterialError, match="already initialised"):
        write_domain(init_domain("atlanta.com"), tmp_path, KEK)
    with pytest.raises(MaterialError):
        load_material(tmp_path, bytes(32))
    with pytest.raises(MaterialError, match="missing"):
        load_material(tmp_path, KEK, node=1)


def test_init_write_load_threshold(tmp_path):
    init = init_domain("biloxi.com", threshold=3, nodes=5)
    assert init.master is None
    write_domain(init, tmp_path, KEK)
    assert sorted(p.name for p in tmp_path.glob("share-*.sealed")) == [f"share-{i}.sealed" for i in range(1, 6)]
    assert not (tmp_path / "master.sealed").exists()
    for i in (1, 5):
        m = load_material(tmp_path, KEK, node=i)
        assert m.node_index == i and m.params.threshold == 3
    with pytest.raises(MaterialError, match="SIPSEC_PKG_NODE"):
        load_material(tmp_path, KEK, node=0)
    (tmp_path / "share-2.sealed").replace(tmp_path / "share-3.sealed")  # a share passed off as another node's
    with pytest.raises(MaterialError):
        load_material(tmp_path, KEK, node=3)
    with pytest.raises(MaterialError):
        init_domain("biloxi.com", threshold=4, nodes=3)


def test_self_check_refuses_a_share_of_another_domain():
    a = init_domain("chicago.com", threshold=2, nodes=3)
    b = init_domain("chicago.com", threshold=2, nodes=3)
    with pytest.raises(MaterialError, match="does not match"):
        DomainMaterial(a.params, a.signed, share=b.material(1).share).self_check()
    with pytest.raises(MaterialError):
        DomainMaterial(a.params, a.signed).self_check()


def test_tampered_params_file_is_refused(tmp_path):
    write_domain(init_domain("atlanta.com"), tmp_path, KEK)
    doc = json.loads((tmp_path / "params.json").read_text())
    other = init_domain("atlanta.com")
    doc["params"] = base64.b64encode(other.params.to_bytes()).decode()
    (tmp_path / "params.json").write_text(json.dumps(doc))
    with pytest.raises(MaterialError, match="does not verify"):
        load_material(tmp_path, KEK)
