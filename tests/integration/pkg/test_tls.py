"""TLS on the PKG's gRPC port: server authentication, optional client certificates."""

from __future__ import annotations

import grpc
import pytest
from sipsec.pkgclient import PkgClient, PkgRpcError
from sipsec_pkg.config import ConfigError

from tests.integration.pkg.certs import make_pki
from tests.integration.pkg.conftest import PASSWORD


@pytest.fixture(scope="module")
def pki():
    return make_pki()


async def test_client_needs_the_ca(atlanta, make_node, pki, tmp_path):
    paths = pki.write(tmp_path)
    node = await make_node(atlanta.material(), plaintext=False, tls_cert=paths["server_cert"], tls_key=paths["server_key"])
    await node.add_user("sip:alice@atlanta.com", PASSWORD)
    without = PkgClient(f"127.0.0.1:{node.port}", timeout_s=2)  # system roots only
    other_ca = PkgClient(f"127.0.0.1:{node.port}", root_certificates=make_pki("other CA").ca, timeout_s=2)
    plain = PkgClient(f"127.0.0.1:{node.port}", plaintext=True, timeout_s=2)
    good = PkgClient(f"127.0.0.1:{node.port}", root_certificates=pki.ca, timeout_s=5)
    try:
        for bad in (without, other_ca, plain):
            with pytest.raises(PkgRpcError) as err:
                await bad.login("sip:alice@atlanta.com", PASSWORD)
            assert err.value.code is grpc.StatusCode.UNAVAILABLE
        assert (await good.login("sip:alice@atlanta.com", PASSWORD)).aor == "sip:alice@atlanta.com"
        assert (await good.get_system_params()).params.domain == "atlanta.com"
    finally:
        for c in (without, other_ca, plain, good):
            await c.close()


async def test_client_certificates_required_when_configured(atlanta, make_node, pki, tmp_path):
    paths = pki.write(tmp_path)
    node = await make_node(atlanta.material(), plaintext=False, tls_cert=paths["server_cert"],
                           tls_key=paths["server_key"], tls_client_ca=paths["ca"])
    anonymous = PkgClient(f"127.0.0.1:{node.port}", root_certificates=pki.ca, timeout_s=2)
    mutual = PkgClient(f"127.0.0.1:{node.port}", root_certificates=pki.ca,
                       client_cert=(pki.client_key, pki.client_cert), timeout_s=5)
    try:
        with pytest.raises(PkgRpcError) as err:
            await anonymous.get_system_params()
        assert err.value.code is grpc.StatusCode.UNAVAILABLE
        assert (await mutual.get_system_params()).params.domain == "atlanta.com"
    finally:
        await anonymous.close()
        await mutual.close()


def test_tls_is_required_unless_plaintext_is_explicit():
    from sipsec_pkg.config import PkgConfig

    with pytest.raises(ConfigError, match="SIPSEC_PKG_PLAINTEXT"):
        PkgConfig().server_tls()
    assert PkgConfig(plaintext=True).server_tls() is None
