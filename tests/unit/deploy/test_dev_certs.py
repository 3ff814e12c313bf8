"""scripts/make_dev_certs.py: a CA and certificates that verify (chain and names), run for real."""

from __future__ import annotations

import socket
import ssl
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from cryptography.x509.oid import ExtendedKeyUsageOID
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

from scripts.make_dev_certs import COMPOSE_PARTIES
from tests.unit.deploy._catalog import ROOT

SCRIPT = ROOT / "scripts" / "make_dev_certs.py"


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=60, check=False)


def _chain(path: Path) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(path.read_bytes())


@pytest.fixture(scope="module")
def compose_certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("certs") / "dev-certs"
    done = _run(str(out))
    assert done.returncode == 0, done.stderr
    return out


def test_writes_a_ca_and_every_compose_party_with_private_keys_0600(compose_certs: Path) -> None:
    assert stat.S_IMODE(compose_certs.stat().st_mode) == 0o700
    names = {p.name for p in compose_certs.iterdir()}
    assert names == {"ca.pem"} | {f"{p}.{ext}" for p in COMPOSE_PARTIES for ext in ("pem", "key")}
    for party in COMPOSE_PARTIES:
        key_path = compose_certs / f"{party}.key"
        assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
        key = load_pem_private_key(key_path.read_bytes(), password=None)
        leaf = _chain(compose_certs / f"{party}.pem")[0]
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        assert leaf.public_key() == key.public_key()  # the key belongs to the certificate
    [ca] = _chain(compose_certs / "ca.pem")
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is True
    assert not any(p.suffix == ".key" and p.stem == "ca" for p in compose_certs.iterdir())  # no CA key kept


@pytest.mark.parametrize("party", sorted(COMPOSE_PARTIES))
def test_each_certificate_chains_to_the_ca_for_its_names_only(compose_certs: Path, party: str,
                                                              tmp_path: Path) -> None:
    [ca] = _chain(compose_certs / "ca.pem")
    leaf, *rest = _chain(compose_certs / f"{party}.pem")
    assert rest == [ca]  # the chain file carries leaf then CA
    store = Store([ca])
    for name in COMPOSE_PARTIES[party]:
        verifier = PolicyBuilder().store(store).build_server_verifier(x509.DNSName(name))
        assert verifier.verify(leaf, [])[-1] == ca
    wrong = "proxy-elsewhere"
    with pytest.raises(VerificationError):
        PolicyBuilder().store(store).build_server_verifier(x509.DNSName(wrong)).verify(leaf, [])
    eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH} <= set(eku)
    # each run makes its own CA: another run's CA does not accept this certificate
    assert _run(str(tmp_path / "other")).returncode == 0
    [other_ca] = _chain(tmp_path / "other" / "ca.pem")
    with pytest.raises(VerificationError):
        PolicyBuilder().store(Store([other_ca])).build_server_verifier(
            x509.DNSName(COMPOSE_PARTIES[party][0])).verify(leaf, [])


def test_a_tls_handshake_verifies_the_server_by_name(compose_certs: Path) -> None:
    """A real TLS 1.2+ handshake on loopback: the proxy's certificate, the client verifying it
    against the CA and the name the gateway dials (RFC 5922 §7); another name is refused."""
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    server_ctx.load_cert_chain(compose_certs / "proxy-atlanta.pem", compose_certs / "proxy-atlanta.key")
    client_ctx = ssl.create_default_context(cafile=str(compose_certs / "ca.pem"))
    client_ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(10)
        port = listener.getsockname()[1]

        def serve(n: int) -> None:
            for _ in range(n):
                conn, _ = listener.accept()
                try:
                    with server_ctx.wrap_socket(conn, server_side=True) as tls:
                        tls.sendall(b"ok")
                except (ssl.SSLError, OSError):
                    pass

        thread = threading.Thread(target=serve, args=(2,), daemon=True)
        thread.start()
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, \
                client_ctx.wrap_socket(raw, server_hostname="proxy-atlanta") as tls:
            assert tls.recv(2) == b"ok"
            assert tls.version() in ("TLSv1.2", "TLSv1.3")
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, \
                pytest.raises(ssl.SSLCertVerificationError):
            client_ctx.wrap_socket(raw, server_hostname="proxy-biloxi")
        thread.join(10)


def test_kubernetes_parties_and_refusals(tmp_path: Path) -> None:
    out = tmp_path / "k8s"
    name = "proxy.sipsec-atlanta.svc.cluster.local"
    done = _run(str(out), "--party", f"proxy={name},proxy", "--party", "gateway=gateway.sipsec-atlanta.svc.cluster.local")
    assert done.returncode == 0, done.stderr
    [ca] = _chain(out / "ca.pem")
    leaf = _chain(out / "proxy.pem")[0]
    for host in (name, "proxy"):
        PolicyBuilder().store(Store([ca])).build_server_verifier(x509.DNSName(host)).verify(leaf, [])
    assert leaf.subject.get_attributes_for_oid(x509.oid.NameOID.COMMON_NAME)[0].value == name
    first = (out / "ca.pem").read_bytes()
    again = _run(str(out))  # never overwrites a CA silently
    assert again.returncode == 1 and "exists" in again.stderr and "--force" in again.stderr
    assert (out / "ca.pem").read_bytes() == first
    assert _run(str(out), "--force", "--party", f"proxy={name}").returncode == 0
    assert (out / "ca.pem").read_bytes() != first
    bad = _run(str(tmp_path / "bad"), "--party", "proxy")
    assert bad.returncode == 2 and "NAME=HOST" in bad.stderr
