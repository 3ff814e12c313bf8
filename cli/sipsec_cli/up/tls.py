"""A per-run certificate authority for SIP over TLS between the gateways and the proxies.

``sipsec up`` (and the in-process topology with ``tls=True``) secure the gateway↔proxy and
proxy↔proxy legs with TLS (RFC 3261 §26.2, §26.3.1): each run makes its own CA and one
certificate per proxy and gateway, whose subjectAltNames carry the addresses the others
connect to (IP addresses here, so RFC 5922 §7.1's name check applies to them as IP SANs).
Private keys are written 0600; nothing is reused across runs unless the files are kept.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["Pki", "TlsFiles", "make_pki"]

_VALIDITY = datetime.timedelta(days=30)


@dataclass(frozen=True)
class TlsFiles:
    """One party's certificate chain and key (PEM files)."""

    cert: Path
    key: Path


@dataclass(frozen=True)
class Pki:
    """The run's CA certificate and the certificates issued under it, by party name."""

    ca: Path
    parties: Mapping[str, TlsFiles]

    def __getitem__(self, name: str) -> TlsFiles:
        return self.parties[name]


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "sipsec up"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    data = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.chmod(path, 0o600)


def _san(names: Iterable[str]) -> x509.SubjectAlternativeName:
    entries: list[x509.GeneralName] = []
    for name in dict.fromkeys(names):
        try:
            entries.append(x509.IPAddress(ipaddress.ip_address(name.strip("[]"))))
        except ValueError:
            entries.append(x509.DNSName(name))
    return x509.SubjectAlternativeName(entries)


def make_pki(directory: Path, parties: Mapping[str, Iterable[str]], *, ca_name: str = "sipsec up CA") -> Pki:
    """Make a CA and one certificate per party in ``directory`` (created 0700).

    ``parties`` maps a party name (a file name: ``proxy-atlanta.com``) to the host names and
    IP addresses its certificate must carry. The files: ``ca.pem``, ``<party>.pem`` (leaf then
    CA), ``<party>.key`` (0600). Both server and client authentication are allowed.
    """
    directory.mkdir(parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(_name(ca_name)).issuer_name(_name(ca_name))
        .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + _VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False, data_encipherment=False,
                                     key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    ca_pem = ca_cert.public_bytes(serialization.Encoding.PEM)
    ca_path = directory / "ca.pem"
    ca_path.write_bytes(ca_pem)
    issued: dict[str, TlsFiles] = {}
    for party, names in parties.items():
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(party)).issuer_name(ca_cert.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + _VALIDITY)
            .add_extension(_san(names), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                           critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        key_path, cert_path = directory / f"{party}.key", directory / f"{party}.pem"
        _write_key(key_path, key)
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM) + ca_pem)
        issued[party] = TlsFiles(cert_path, key_path)
    return Pki(ca_path, issued)
