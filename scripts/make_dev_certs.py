#!/usr/bin/env python3
"""Make a development CA and the SIP-over-TLS certificates of a sipsec deployment.

SIP over TLS (RFC 3261 §26.2, §26.3.1) on the gateway↔proxy and proxy↔proxy legs needs one
certificate per proxy and ua-gateway, whose subjectAltName DNS names are the names the other
side connects to (RFC 5922 §7.1 matches them). This script makes a fresh CA and those
certificates with the ``cryptography`` package, for ``docker-compose.yml`` (the default
parties, the compose service names) or for Kubernetes (``--party`` with cluster DNS names;
k8s/README.md, "TLS and client certificates").

Files written into DIR (created 0700; refused when it already holds a ``ca.pem`` unless
``--force``): ``ca.pem``; per party ``<party>.pem`` (leaf then CA) and ``<party>.key``
(PKCS#8, mode 0600). The CA's private key is never written: to add a party, make them all
again. Development and tests only; a production provider uses its own CA.

    .venv/bin/python scripts/make_dev_certs.py dev-certs
    .venv/bin/python scripts/make_dev_certs.py out --party proxy=proxy.sipsec-atlanta.svc.cluster.local
"""

from __future__ import annotations

import argparse
import datetime
import ipaddress
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["COMPOSE_PARTIES", "main", "make_certs"]

#: docker-compose.yml's proxies and gateways, by the service names the others connect to
COMPOSE_PARTIES: Mapping[str, tuple[str, ...]] = {
    "proxy-atlanta": ("proxy-atlanta",),
    "gateway-atlanta": ("gateway-atlanta",),
    "proxy-biloxi": ("proxy-biloxi",),
    "gateway-biloxi": ("gateway-biloxi",),
}

_VALIDITY = datetime.timedelta(days=90)
_NO_USAGE = dict(content_commitment=False, key_encipherment=False, data_encipherment=False,
                 key_agreement=False, encipher_only=False, decipher_only=False)


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "sipsec development"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _san(names: Sequence[str]) -> x509.SubjectAlternativeName:
    entries: list[x509.GeneralName] = []
    for name in dict.fromkeys(names):
        try:
            entries.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            entries.append(x509.DNSName(name))
    return x509.SubjectAlternativeName(entries)


def _write(path: Path, data: bytes, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.chmod(path, mode)


def make_certs(directory: Path, parties: Mapping[str, Sequence[str]], *, force: bool = False) -> Path:
    """Write the CA and one certificate per party into ``directory``; returns the CA file.

    ``parties`` maps a file name to the DNS names (or IP addresses) its certificate carries;
    the first is also the subject CN. Raises FileExistsError when ``directory`` already
    holds a CA and ``force`` is not set, ValueError for a party without names.
    """
    for party, names in parties.items():
        if not names or not party or "/" in party or party.startswith("."):
            raise ValueError(f"party {party!r} needs a plain file name and at least one name")
    directory.mkdir(parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    if (directory / "ca.pem").exists() and not force:
        raise FileExistsError(f"{directory / 'ca.pem'} exists (use --force to replace every file)")
    now = datetime.datetime.now(datetime.UTC)
    start, end = now - datetime.timedelta(minutes=5), now + _VALIDITY
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(_name("sipsec development CA")).issuer_name(_name("sipsec development CA"))
        .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(start).not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True, **_NO_USAGE),
                       critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    ca_pem = ca_cert.public_bytes(serialization.Encoding.PEM)
    _write(directory / "ca.pem", ca_pem, 0o644)
    for party, names in parties.items():
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(names[0])).issuer_name(ca_cert.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(start).not_valid_after(end)
            .add_extension(_san(names), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=False, crl_sign=False, **_NO_USAGE),
                           critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                           critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        _write(directory / f"{party}.key",
               key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption()), 0o600)
        _write(directory / f"{party}.pem", cert.public_bytes(serialization.Encoding.PEM) + ca_pem, 0o644)
    return directory / "ca.pem"


def _party(text: str) -> tuple[str, tuple[str, ...]]:
    party, sep, names = text.partition("=")
    hosts = tuple(n.strip() for n in names.split(",") if n.strip())
    if not sep or not party or not hosts:
        raise argparse.ArgumentTypeError(f"{text!r} is not NAME=HOST[,HOST...]")
    return party, hosts


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``make_dev_certs.py DIR [--party NAME=HOST[,HOST...]]... [--force]``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("directory", type=Path, help="output directory (created 0700)")
    parser.add_argument("--party", action="append", type=_party, default=[], metavar="NAME=HOST[,HOST...]",
                        help="a certificate NAME.pem/NAME.key for these DNS names or addresses "
                             "(repeatable; default: docker-compose.yml's proxies and gateways)")
    parser.add_argument("--force", action="store_true", help="replace the files of an earlier run")
    args = parser.parse_args(argv)
    parties = dict(args.party) if args.party else dict(COMPOSE_PARTIES)
    try:
        ca = make_certs(args.directory, parties, force=args.force)
    except (OSError, ValueError) as exc:
        print(f"make_dev_certs: {exc}", file=sys.stderr)
        return 1
    print(f"{ca}: CA; certificates: {', '.join(sorted(parties))}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
