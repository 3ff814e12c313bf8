"""The Prometheus endpoint: per-RPC latency and codes, extractions, sessions, failures; no AOR/token labels."""

from __future__ import annotations

import asyncio
import urllib.request

import pytest
from sipsec.ibc import Purpose
from sipsec.pkgclient import PkgRpcError

from tests.integration.pkg.conftest import PASSWORD


def _scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        return resp.read().decode()


async def test_metrics_endpoint(atlanta, make_node, connect):
    node = await make_node(atlanta.material(), metrics_port=0, metrics_host="127.0.0.1")
    other = await make_node(atlanta.material(), metrics_port=0, metrics_host="127.0.0.1")  # own registry each
    assert node.metrics_port and other.metrics_port and node.metrics_port != other.metrics_port
    await node.add_user("sip:alice@atlanta.com", PASSWORD)
    client = connect(node)
    with pytest.raises(PkgRpcError):
        await client.login("sip:alice@atlanta.com", "nope")
    session = await client.login("sip:alice@atlanta.com", PASSWORD)
    await client.fetch_key(Purpose.ENC)
    await client.fetch_key(Purpose.SIG)
    with pytest.raises(PkgRpcError):
        await client.get_domain_params("nowhere.example")
    text = await asyncio.to_thread(_scrape, node.metrics_port)
    service = 'service="sipsec.pkg.v1.KeyGeneratorService"'
    assert f'sipsec_rpc_server_handled_total{{code="OK",method="Login",{service}}} 1.0' in text
    assert f'sipsec_rpc_server_handled_total{{code="UNAUTHENTICATED",method="Login",{service}}} 1.0' in text
    assert f'sipsec_rpc_server_handled_total{{code="NOT_FOUND",method="GetDomainParams",{service}}} 1.0' in text
    assert f'sipsec_rpc_server_handling_seconds_count{{method="GetPrivateKey",{service}}} 2.0' in text
    assert 'sipsec_pkg_extractions_total{mode="full",period="current",purpose="enc"} 1.0' in text
    assert 'sipsec_pkg_login_failures_total{reason="bad_credentials"} 1.0' in text
    assert "sipsec_pkg_active_sessions 1.0" in text
    assert 'sipsec_pkg_federation_errors_total{reason="unknown_domain"} 1.0' in text
    assert "alice" not in text and session.token not in text and "nowhere" not in text
    assert "sipsec_rpc_server_handled_total{" not in await asyncio.to_thread(_scrape, other.metrics_port)
