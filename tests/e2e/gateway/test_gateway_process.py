"""``sipsec-gateway serve`` as a real process, configured from environment variables only."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.conftest import free_port
from tests.integration.gateway.harness import PASSWORD, TwoDomains, login, material
from tests.sipp import free_port_on

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

SCRIPT = Path(sys.executable).parent / "sipsec-gateway"


async def test_gateway_process_serves_api_places_a_secured_call_and_drains_on_sigterm(tmp_path: Path) -> None:
    async with TwoDomains() as net:
        await login(net.biloxi, "bob", auto_answer=True)
        http_port, metrics_port = free_port(), free_port()
        env = dict(os.environ)
        env.update({
            "SIPSEC_GATEWAY_DOMAIN": "atlanta.com",
            "SIPSEC_GATEWAY_SIP_LISTEN": f"127.0.0.2:{free_port_on('127.0.0.2')}",
            "SIPSEC_GATEWAY_PROXY": f"127.0.0.2:{net.atlanta.proxy_port}",
            "SIPSEC_GATEWAY_PKG": f"127.0.0.1:{net.pkg_ports['atlanta.com']}",
            "SIPSEC_GATEWAY_PKG_PLAINTEXT": "1",
            "SIPSEC_GATEWAY_PKG_FINGERPRINT": material("atlanta.com").signed.fingerprint,
            "SIPSEC_GATEWAY_PEER_DOMAINS": "biloxi.com",
            "SIPSEC_GATEWAY_HTTP_LISTEN": f"127.0.0.1:{http_port}",
            "SIPSEC_GATEWAY_METRICS_HOST": "127.0.0.1",
            "SIPSEC_GATEWAY_METRICS_PORT": str(metrics_port),
            "SIPSEC_GATEWAY_STATE_DIR": str(tmp_path / "state"),  # no token file: one is made here
            "SIPSEC_GATEWAY_DRAIN_SECONDS": "1",
            "SIPSEC_GATEWAY_CALL_GRACE_S": "1",  # calls in progress may go on 1 s after SIGTERM, then BYE
            "SIPSEC_LOG_LEVEL": "WARNING",
        })
        proc = subprocess.Popen([str(SCRIPT), "serve"], env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT)
        try:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{http_port}", timeout=20) as api:
                for _ in range(200):
                    try:
                        if (await api.get("/healthz")).status_code == 200:
                            break
                    except httpx.TransportError:
                        pass
                    assert proc.poll() is None, proc.stdout.read() if proc.stdout else b""
                    await asyncio.sleep(0.05)
                anonymous = await api.post("/v1/users", json={"aor": "sip:alice@atlanta.com", "password": PASSWORD})
                assert anonymous.status_code == 401 and anonymous.headers["www-authenticate"].startswith("Bearer")
                token = (tmp_path / "state" / "api-token").read_text().strip()
                api.headers["Authorization"] = f"Bearer {token}"
                login_resp = await api.post("/v1/users", json={"aor": "sip:alice@atlanta.com", "password": PASSWORD})
                assert login_resp.status_code == 201, login_resp.text
                placed = await api.post("/v1/calls", json={"from": "sip:alice@atlanta.com",
                                                           "to": "sip:bob@biloxi.com"})
                assert placed.status_code == 201 and placed.json()["state"] == "established", placed.text
                assert (await api.get("/metrics")).status_code == 404  # not on the control API's port
                async with httpx.AsyncClient(timeout=20) as http:
                    metrics = (await http.get(f"http://127.0.0.1:{metrics_port}/metrics")).text
                assert 'sipsec_gateway_call_setups_total{outcome="answered",secure="true"} 1.0' in metrics
                assert "sipsec_envelope_operations_total" in metrics  # the process-wide envelope metrics too
            proc.send_signal(signal.SIGTERM)
            code = await asyncio.get_running_loop().run_in_executor(None, proc.wait, 15)
            output = proc.stdout.read() if proc.stdout else b""
            assert code == 0, output
            # the generated token's file was announced, the token itself never written to the log
            assert b"api-token" in output and token.encode() not in output
            # the drain hung up the live call: bob's side saw the BYE
            bob = next(c for c in net.biloxi.gateway.secure.calls.values() if c.direction == "incoming")
            assert bob.state.value == "ended"
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
