"""A UA gateway trusted by the PKG through its client certificate (RFC 8446 §4.4.2), not its IP
address: a gateway whose verified certificate bears a name in SIPSEC_PKG_TRUSTED_FORWARDER_NAMES
may name each end user's address in Login, so a guesser behind the same gateway backs off
alone; a client with a valid certificate under another name cannot, and the IP allow-list
still works beside it. Real gRPC PKG nodes on port 0 with TLS, a client CA made here."""

from __future__ import annotations

import datetime
import ipaddress

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from sipsec.pkgclient import PkgClient, PkgRpcError
from sipsec_gateway.__main__ import pkg_client_cert
from sipsec_gateway.config import ConfigError as GatewayConfigError
from sipsec_gateway.config import GatewayConfig
from sipsec_gateway.keys import KeyMaterialError, ParamsDirectory, PkgConnector, UserKeys
from sipsec_gateway.metrics import GatewayMetrics
from sipsec_pkg.config import ConfigError, PkgConfig
from sipsec_pkg.grpc_api import certificate_names, client_source

from tests.integration.pkg.conftest import PASSWORD

ALICE = "sip:alice@atlanta.com"
GATEWAY_NAME = "ua-gateway.atlanta.svc"
_PEM = serialization.Encoding.PEM


class Ca:
    """A client/server CA; ``issue`` makes a (key PEM, certificate PEM) pair signed by it."""

    def __init__(self, name: str = "sipsec forwarder test CA") -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        self.cert = self._build(self.name, self.key.public_key(), ca=True).sign(self.key, hashes.SHA256())
        self.pem = self.cert.public_bytes(_PEM)

    def _build(self, subject: x509.Name, public_key, *, ca: bool) -> x509.CertificateBuilder:
        now = datetime.datetime.now(datetime.UTC)
        return (x509.CertificateBuilder().subject_name(subject).issuer_name(self.name).public_key(public_key)
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(minutes=5))
                .not_valid_after(now + datetime.timedelta(days=1))
                .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))

    def issue(self, cn: str, *, dns: tuple[str, ...] = (), ip: str | None = None, server: bool = False) -> tuple[bytes, bytes]:
        key = ec.generate_private_key(ec.SECP256R1())
        b = self._build(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]), key.public_key(), ca=False)
        san: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
        if ip:
            san.append(x509.IPAddress(ipaddress.ip_address(ip)))
        if san:
            b = b.add_extension(x509.SubjectAlternativeName(san), critical=False)
        eku = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        b = b.add_extension(x509.ExtendedKeyUsage([eku]), critical=False)
        cert = b.sign(self.key, hashes.SHA256())
        key_pem = key.private_bytes(_PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        return key_pem, cert.public_bytes(_PEM)


@pytest.fixture(scope="module")
def ca() -> Ca:
    return Ca()


@pytest.fixture
def tls_node(atlanta, make_node, ca, tmp_path):
    """Starts a TLS PKG requiring client certificates from ``ca``; fast back-off for the tests."""
    key, cert = ca.issue("pkg.atlanta.com", ip="127.0.0.1", server=True)
    (tmp_path / "srv.key").write_bytes(key)
    (tmp_path / "srv.pem").write_bytes(cert)
    (tmp_path / "ca.pem").write_bytes(ca.pem)

    async def start(**overrides):
        node = await make_node(atlanta.material(), plaintext=False, tls_cert=str(tmp_path / "srv.pem"),
                               tls_key=str(tmp_path / "srv.key"), tls_client_ca=str(tmp_path / "ca.pem"),
                               backoff_free_failures=1, backoff_base_s=60, **overrides)
        await node.add_user(ALICE, PASSWORD)
        return node

    return start


@pytest.fixture
async def mtls(ca):
    clients: list[PkgClient] = []

    def factory(node, pair: tuple[bytes, bytes]) -> PkgClient:
        client = PkgClient(f"127.0.0.1:{node.port}", root_certificates=ca.pem, client_cert=pair, timeout_s=5)
        clients.append(client)
        return client

    yield factory
    for c in clients:
        await c.close()


async def _two_guesses(client: PkgClient, address: str) -> None:
    with pytest.raises(PkgRpcError) as err:
        await client.login(ALICE, "guess", client_address=address)
    assert err.value.code is grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(PkgRpcError) as err:  # past the free failure: checked, and a back-off starts
        await client.login(ALICE, "guess", client_address=address)
    assert err.value.code is grpc.StatusCode.UNAUTHENTICATED


@pytest.mark.parametrize("named_by", ["san_dns", "subject_cn"])
async def test_named_gateway_forwards_the_end_users_address(tls_node, mtls, ca, named_by):
    node = await tls_node(trusted_forwarder_names=(GATEWAY_NAME.upper(),))
    pair = (ca.issue("gw-1", dns=("other.example", GATEWAY_NAME)) if named_by == "san_dns"
            else ca.issue(GATEWAY_NAME))
    gateway = mtls(node, pair)
    await _two_guesses(gateway, "127.0.0.66")  # a guesser behind the gateway
    session = await gateway.login(ALICE, PASSWORD, client_address="127.0.0.7")  # alice, elsewhere: not hit
    assert session.aor == ALICE
    with pytest.raises(PkgRpcError) as err:  # the guesser's own address is the one backed off
        await gateway.login(ALICE, PASSWORD, client_address="127.0.0.66")
    assert err.value.code is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert err.value.details["scope"] == "account_client"
    assert node.metrics.login_backoffs.labels("account_client")._value.get() == 1


async def test_valid_certificate_under_another_name_is_not_trusted(tls_node, mtls, ca):
    node = await tls_node(trusted_forwarder_names=(GATEWAY_NAME,))
    # signed by the same CA, but neither its CN nor its SAN names a trusted forwarder
    intruder = mtls(node, ca.issue("ua-gateway", dns=("ua-gateway.atlanta.svc.evil",)))
    await _two_guesses(intruder, "127.0.0.66")
    with pytest.raises(PkgRpcError) as err:  # a fresh "address" buys nothing: the connection's own counts
        await intruder.login(ALICE, PASSWORD, client_address="127.0.0.67")
    assert err.value.code is grpc.StatusCode.RESOURCE_EXHAUSTED


async def test_ip_allow_list_still_works_beside_names(tls_node, mtls, ca):
    node = await tls_node(trusted_forwarder_names=(GATEWAY_NAME,), trusted_forwarders=("127.0.0.1",))
    by_address = mtls(node, ca.issue("some-other-client"))  # not named, but its address is listed
    await _two_guesses(by_address, "127.0.0.66")
    assert (await by_address.login(ALICE, PASSWORD, client_address="127.0.0.7")).aor == ALICE


async def test_named_gateway_must_forward_an_ip(tls_node, mtls, ca):
    node = await tls_node(trusted_forwarder_names=(GATEWAY_NAME,))
    with pytest.raises(PkgRpcError) as err:
        await mtls(node, ca.issue(GATEWAY_NAME)).login(ALICE, PASSWORD, client_address="not-an-address")
    assert err.value.code is grpc.StatusCode.INVALID_ARGUMENT and err.value.reason == "bad_client_address"


async def test_gateway_presents_its_configured_certificate(tls_node, ca, tmp_path):
    """The gateway side end to end: settings → PkgConnector → UserKeys logins naming the user's address."""
    node = await tls_node(trusted_forwarder_names=(GATEWAY_NAME,))
    key, cert = ca.issue(GATEWAY_NAME)
    (tmp_path / "gw.key").write_bytes(key)
    (tmp_path / "gw.pem").write_bytes(cert)
    config = GatewayConfig.from_env({
        "SIPSEC_GATEWAY_DOMAIN": "atlanta.com", "SIPSEC_GATEWAY_PKG": f"127.0.0.1:{node.port}",
        "SIPSEC_GATEWAY_PKG_CA": str(tmp_path / "ca.pem"),
        "SIPSEC_GATEWAY_PKG_CLIENT_CERT": str(tmp_path / "gw.pem"),
        "SIPSEC_GATEWAY_PKG_CLIENT_KEY": str(tmp_path / "gw.key"),
    })
    connector = PkgConnector(tuple(config.pkg_targets), root_certificates=ca.pem,
                             client_cert=pkg_client_cert(config))
    assert "gw.key" not in repr(connector) and "PRIVATE" not in repr(connector)
    metrics = GatewayMetrics()
    directory = ParamsDirectory(connector, "atlanta.com", metrics)
    users = [UserKeys(ALICE, pw, connector, directory, metrics, client_address=addr)
             for pw, addr in (("guess", "127.0.0.66"), ("guess", "127.0.0.66"), ("guess", "127.0.0.66"),
                              (PASSWORD, "127.0.0.7"))]
    try:
        for user in users[:2]:
            with pytest.raises(KeyMaterialError) as err:
                await user.login()
            assert err.value.status == 401
        with pytest.raises(KeyMaterialError) as err:  # the guesser backs off
            await users[2].login()
        assert err.value.status == 429
        await users[3].login()  # alice from her own address is not
    finally:
        for user in users:
            await user.close()
        await directory.close()
    # without the certificate the PKG refuses the TLS handshake
    bare = UserKeys(ALICE, PASSWORD, PkgConnector(tuple(config.pkg_targets), root_certificates=ca.pem),
                    directory, metrics)
    try:
        with pytest.raises(KeyMaterialError) as err:
            await bare.login()
        assert err.value.status == 503
    finally:
        await bare.close()


def test_settings_go_together(tmp_path):
    base = {"SIPSEC_GATEWAY_DOMAIN": "atlanta.com"}
    with pytest.raises(GatewayConfigError, match="go together"):
        GatewayConfig.from_env({**base, "SIPSEC_GATEWAY_PKG_CLIENT_CERT": "gw.pem"})
    with pytest.raises(GatewayConfigError, match="needs TLS"):
        GatewayConfig.from_env({**base, "SIPSEC_GATEWAY_PKG_CLIENT_CERT": "gw.pem",
                                "SIPSEC_GATEWAY_PKG_CLIENT_KEY": "gw.key", "SIPSEC_GATEWAY_PKG_PLAINTEXT": "1"})
    missing = GatewayConfig.from_env({**base, "SIPSEC_GATEWAY_PKG_CLIENT_CERT": str(tmp_path / "none.pem"),
                                      "SIPSEC_GATEWAY_PKG_CLIENT_KEY": str(tmp_path / "none.key")})
    with pytest.raises(GatewayConfigError, match="SIPSEC_GATEWAY_PKG_CLIENT_CERT"):
        pkg_client_cert(missing)
    assert pkg_client_cert(GatewayConfig.from_env(base)) is None
    # names mean nothing without verified client certificates
    with pytest.raises(ConfigError, match="SIPSEC_PKG_TLS_CLIENT_CA"):
        PkgConfig.from_env({"SIPSEC_PKG_TRUSTED_FORWARDER_NAMES": GATEWAY_NAME, "SIPSEC_PKG_PLAINTEXT": "1"})
    with pytest.raises(ConfigError):
        PkgConfig.from_env({"SIPSEC_PKG_TRUSTED_FORWARDER_NAMES": "bad name", "SIPSEC_PKG_TLS_CLIENT_CA": "ca.pem"})
    config = PkgConfig.from_env({"SIPSEC_PKG_TRUSTED_FORWARDER_NAMES": " GW-1.example , gw-2 ",
                                 "SIPSEC_PKG_TLS_CLIENT_CA": "ca.pem"})
    assert config.trusted_forwarder_names == ("gw-1.example", "gw-2")
    assert PkgConfig().trusted_forwarder_names == ()


def test_plaintext_and_ip_less_peers_are_unchanged():
    assert certificate_names({"transport_security_type": [b"insecure"]}) == frozenset()
    assert certificate_names({}) == frozenset()
    tls = {"transport_security_type": [b"ssl"], "x509_common_name": [b"GW"],
           "x509_subject_alternative_name": [b"a.example", b"\xff"]}
    assert certificate_names(tls) == {"gw", "a.example"}
    assert certificate_names({**tls, "peer_dns": [b"b.example"]}) == {"gw", "b.example"}
    # a unix-socket (IP-less) peer: its forwarded address counts only when trusted by name
    assert client_source("unix:/run/pkg.sock", "192.0.2.1", {"10.0.0.5"}) == "unix:/run/pkg.sock"
    assert client_source("unix:/run/pkg.sock", "192.0.2.1", (), trusted_by_certificate=True) == "192.0.2.1"
    assert client_source("10.0.0.9", "", (), trusted_by_certificate=True) == "10.0.0.9"
