"""A domain's key material: creation (``init``), sealing at rest under a KEK, loading at start.

Files in the data directory:

- ``params.json``      public: signed domain parameters and the federation key fingerprint
- ``master.sealed``    1-of-1: the master secret, AES-256-GCM under the KEK
- ``share-<i>.sealed`` t-of-n: node i's Shamir share (give each node only its own)
- ``federation.sealed`` the Ed25519 federation signing key (needed only to re-sign parameters)

The KEK is 32 bytes, base64 in ``SIPSEC_PKG_KEK`` or in (or raw in) the file named by
``SIPSEC_PKG_KEK_FILE`` — the shape of a mounted Kubernetes Secret. The authenticated header
(format, kind, domain, index) is bound as AES-GCM associated data, so a sealed share cannot be
passed off as another node's or another domain's.

The same KEK also keys the MAC of login sessions (:func:`derive_session_key`, HKDF-SHA256 with a
label and the domain, RFC 5869), so every node that can unseal the domain's material can vouch
for a session, and the shared store that holds the sessions cannot.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat
from sipsec.ibc import (
    DomainParams,
    IbcError,
    MasterSecret,
    MasterShare,
    PeriodPolicy,
    Purpose,
    extract,
    partial_extract,
    setup,
    setup_threshold,
    sign,
    verify,
    verify_partial,
)
from sipsec.pkgclient import (
    ParamsVerificationError,
    SignedParams,
    sign_params,
    verify_signed_params,
)

__all__ = [
    "KEK_BYTES",
    "DomainInit",
    "DomainMaterial",
    "MaterialError",
    "derive_session_key",
    "generate_kek",
    "init_domain",
    "load_kek",
    "load_material",
    "load_signed_params",
    "seal",
    "unseal",
    "write_domain",
]

KEK_BYTES = 32
_FORMAT = "sipsec-pkg-sealed-v1"


class MaterialError(Exception):
    """Key material is missing, malformed, sealed under another KEK, or inconsistent."""


def generate_kek() -> str:
    """A fresh KEK, base64 (what goes into the Kubernetes Secret)."""
    return base64.b64encode(secrets.token_bytes(KEK_BYTES)).decode()


def _decode_kek(data: bytes, source: str) -> bytes:
    if len(data) == KEK_BYTES:
        return data
    try:
        kek = base64.b64decode(data.strip(), validate=True)
    except (binascii.Error, ValueError):
        kek = b""
    if len(kek) != KEK_BYTES:
        raise MaterialError(f"{source} must hold a {KEK_BYTES}-byte key, base64-encoded or raw")
    return kek


def load_kek(env_value: str = "", file_path: str = "") -> bytes:
    """The KEK from ``SIPSEC_PKG_KEK`` (base64) or ``SIPSEC_PKG_KEK_FILE``; raises MaterialError."""
    if env_value:
        return _decode_kek(env_value.encode(), "SIPSEC_PKG_KEK")
    if file_path:
        try:
            return _decode_kek(Path(file_path).read_bytes(), "SIPSEC_PKG_KEK_FILE")
        except OSError as exc:
            raise MaterialError(f"cannot read SIPSEC_PKG_KEK_FILE: {exc.strerror}") from None
    raise MaterialError("no key-encryption key: set SIPSEC_PKG_KEK or SIPSEC_PKG_KEK_FILE")


def derive_session_key(kek: bytes, domain: str) -> bytes:
    """The 32-byte key of the session-record MAC, derived from the KEK (HKDF-SHA256, RFC 5869 §2).

    Domain-separated from the sealing use of the KEK by its ``info`` label.
    """
    if len(kek) != KEK_BYTES:
        raise MaterialError(f"the KEK must be {KEK_BYTES} bytes")
    info = b"sipsec-pkg session mac v1\x00" + domain.encode()
    return HKDF(algorithm=SHA256(), length=32, salt=None, info=info).derive(kek)


def _aad(kind: str, domain: str, index: int) -> bytes:
    return json.dumps({"format": _FORMAT, "kind": kind, "domain": domain, "index": index}, sort_keys=True).encode()


def seal(kek: bytes, secret: bytes, *, kind: str, domain: str, index: int = 0) -> bytes:
    """AES-256-GCM-seals ``secret``; the JSON result is safe to store on disk."""
    nonce = secrets.token_bytes(12)
    ct = AESGCM(kek).encrypt(nonce, secret, _aad(kind, domain, index))
    doc = {
        "format": _FORMAT, "kind": kind, "domain": domain, "index": index,
        "nonce": base64.b64encode(nonce).decode(), "ciphertext": base64.b64encode(ct).decode(),
    }
    return (json.dumps(doc, sort_keys=True, indent=1) + "\n").encode()


def unseal(kek: bytes, data: bytes, *, kind: str, domain: str, index: int = 0) -> bytes:
    """Opens what ``seal`` made for exactly this kind/domain/index; raises MaterialError."""
    try:
        doc = json.loads(data)
        if doc.get("format") != _FORMAT:
            raise MaterialError("not a sealed sipsec-pkg file")
        nonce = base64.b64decode(doc["nonce"])
        ct = base64.b64decode(doc["ciphertext"])
        return AESGCM(kek).decrypt(nonce, ct, _aad(kind, domain, index))
    except InvalidTag:
        raise MaterialError(f"cannot unseal the {kind}: wrong KEK, or the file was altered or belongs elsewhere") from None
    except (ValueError, KeyError, TypeError, binascii.Error):
        raise MaterialError(f"the sealed {kind} file is malformed") from None


@dataclass(frozen=True)
class DomainMaterial:
    """What one running node holds: the signed parameters and either the master secret or one share."""

    params: DomainParams
    signed: SignedParams
    master: MasterSecret | None = field(default=None, repr=False)
    share: MasterShare | None = field(default=None, repr=False)

    @property
    def node_index(self) -> int:
        """0 for a 1-of-1 PKG, else the share index 1..n."""
        return self.share.index if self.share is not None else 0

    def self_check(self) -> None:
        """Proves the secret fits the public parameters (one extraction + one check); raises MaterialError."""
        if (self.master is None) == (self.share is None):
            raise MaterialError("a node holds exactly one of: the master secret, a share")
        probe = self.params.identity(f"sip:pkg-self-check@{self.params.domain}", Purpose.SIG, 0)
        try:
            if self.master is not None:
                if self.params.threshold != 1:
                    raise MaterialError("a threshold domain has no whole master secret")
                key = extract(self.master, self.params, probe)
                verify(self.params, probe, b"self-check", sign(key, b"self-check"))
            else:
                assert self.share is not None
                verify_partial(self.params, probe, partial_extract(self.share, probe))
        except IbcError:
            raise MaterialError("the secret does not match the domain's public parameters") from None


@dataclass(frozen=True)
class DomainInit:
    """The result of creating a domain, before (or instead of) writing it to disk."""

    params: DomainParams
    signed: SignedParams
    federation_key: Ed25519PrivateKey = field(repr=False)
    master: MasterSecret | None = field(default=None, repr=False)
    shares: tuple[MasterShare, ...] = field(default=(), repr=False)

    def material(self, node: int = 0) -> DomainMaterial:
        """The material of node ``node`` (0: the 1-of-1 PKG)."""
        if node == 0:
            if self.master is None:
                raise MaterialError("a threshold domain has only share nodes (1..n)")
            return DomainMaterial(self.params, self.signed, master=self.master)
        for share in self.shares:
            if share.index == node:
                return DomainMaterial(self.params, self.signed, share=share)
        raise MaterialError(f"no share for node {node}")


def init_domain(
    domain: str, *, threshold: int = 1, nodes: int = 1, policy: PeriodPolicy | None = None,
    federation_key: Ed25519PrivateKey | None = None,
) -> DomainInit:
    """Creates a domain (1-of-1 by default, t-of-n with ``threshold``/``nodes``) and signs its parameters."""
    policy = policy or PeriodPolicy()
    if not 1 <= threshold <= nodes:
        raise MaterialError("need 1 <= threshold <= nodes")
    fed = federation_key or Ed25519PrivateKey.generate()
    if threshold == 1 and nodes == 1:
        master, params = setup(domain, policy)
        return DomainInit(params, sign_params(params, fed), fed, master=master)
    shares, params = setup_threshold(domain, threshold, nodes, policy)
    return DomainInit(params, sign_params(params, fed), fed, shares=tuple(shares))


def _write(path: Path, data: bytes, mode: int) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)


def write_domain(init: DomainInit, data_dir: str | Path, kek: bytes, *, force: bool = False) -> list[Path]:
    """Writes params.json and the sealed secrets; refuses to overwrite a domain unless ``force``."""
    out = Path(data_dir)
    out.mkdir(parents=True, exist_ok=True)
    params_path = out / "params.json"
    if params_path.exists() and not force:
        raise MaterialError(f"{params_path} exists; a domain is already initialised there (use --force)")
    domain = init.params.domain
    written: list[Path] = []
    if init.master is not None:
        path = out / "master.sealed"
        _write(path, seal(kek, init.master.to_bytes(), kind="master", domain=domain), 0o600)
        written.append(path)
    for share in init.shares:
        path = out / f"share-{share.index}.sealed"
        _write(path, seal(kek, share.to_bytes(), kind="share", domain=domain, index=share.index), 0o600)
        written.append(path)
    raw_fed = init.federation_key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    path = out / "federation.sealed"
    _write(path, seal(kek, raw_fed, kind="federation", domain=domain), 0o600)
    written.append(path)
    s = init.signed
    doc = {
        "domain": s.domain, "version": s.version, "threshold": init.params.threshold,
        "nodes": len(init.shares) or 1, "fingerprint": s.fingerprint,
        "params": base64.b64encode(s.params).decode(),
        "signature": base64.b64encode(s.signature).decode(),
        "signer_public_key": base64.b64encode(s.signer_public_key).decode(),
    }
    _write(params_path, (json.dumps(doc, indent=1, sort_keys=True) + "\n").encode(), 0o644)
    written.insert(0, params_path)
    return written


def load_signed_params(data_dir: str | Path) -> SignedParams:
    """Reads params.json; raises MaterialError."""
    path = Path(data_dir) / "params.json"
    try:
        doc = json.loads(path.read_bytes())
        return SignedParams(
            domain=str(doc["domain"]),
            params=base64.b64decode(doc["params"]),
            signature=base64.b64decode(doc["signature"]),
            signer_public_key=base64.b64decode(doc["signer_public_key"]),
            version=int(doc["version"]),
        )
    except OSError as exc:
        raise MaterialError(f"cannot read {path}: {exc.strerror} (run `sipsec-pkg init` first)") from None
    except (ValueError, KeyError, TypeError, binascii.Error):
        raise MaterialError(f"{path} is malformed") from None


def load_material(data_dir: str | Path, kek: bytes, node: int = 0) -> DomainMaterial:
    """Loads and checks node ``node``'s material (0: the master secret; i: share-i.sealed)."""
    signed = load_signed_params(data_dir)
    try:
        params = verify_signed_params(signed, expected_domain=signed.domain, pinned_fingerprint=None)
    except ParamsVerificationError as exc:
        raise MaterialError(f"params.json does not verify: {exc}") from None
    base = Path(data_dir)
    if node == 0:
        path = base / "master.sealed"
        if not path.exists():
            raise MaterialError(f"{path} is missing (a threshold domain needs SIPSEC_PKG_NODE=1..n)")
        secret = unseal(kek, path.read_bytes(), kind="master", domain=params.domain)
        material = DomainMaterial(params, signed, master=MasterSecret.from_bytes(secret))
    else:
        path = base / f"share-{node}.sealed"
        if not path.exists():
            raise MaterialError(f"{path} is missing")
        secret = unseal(kek, path.read_bytes(), kind="share", domain=params.domain, index=node)
        share = MasterShare.from_bytes(secret)
        if share.index != node:
            raise MaterialError(f"{path} holds the share of node {share.index}")
        material = DomainMaterial(params, signed, share=share)
    material.self_check()
    return material
