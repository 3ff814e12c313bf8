"""``sipsec up`` runs SIP over TLS between the gateways and the proxies and between the proxies.

A secured call between the domains through the real processes: the run's CA and the
certificates are in the state directory (keys 0600), and the proxies' metrics show the call's
messages received over TLS only (none over TCP, the transport ``sipsec up`` used before).
"""

from __future__ import annotations

import json
import re
import signal
import stat
from pathlib import Path

import httpx
import pytest

from tests.e2e.up.test_up import metrics
from tests.upctl import UpProcess

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def _received(text: str, transport: str) -> float:
    pattern = rf'^sipsec_sip_messages_received_total\{{[^}}]*transport="{transport}"[^}}]*\}} ([0-9.e+]+)$'
    return sum(float(m.group(1)) for m in re.finditer(pattern, text, re.MULTILINE))


async def test_up_secured_call_goes_over_tls_on_gateway_and_proxy_legs() -> None:
    up = UpProcess("--json", "--grace", "8")
    up.wait_for("sipsec up: ready")
    doc = json.loads(up.out[0])
    state = Path(doc["state_dir"])
    by = {(r["domain"], r["service"]): r for r in doc["services"]}
    try:
        for name in ("ca.pem", "proxy-atlanta.com.pem", "gateway-biloxi.com.pem"):
            assert (state / "tls" / name).is_file()
        for key in (state / "tls").glob("*.key"):
            assert stat.S_IMODE(key.stat().st_mode) == 0o600, key
        creds = json.loads((state / "credentials.json").read_text())
        apis = {}
        for d in ("atlanta.com", "biloxi.com"):
            row = by[(d, "gateway")]
            token = (state / d / "gateway" / "api-token").read_text().strip()
            apis[d] = httpx.AsyncClient(base_url=f"http://{row['address']}:{row['ports']['http']}", timeout=30,
                                        headers={"Authorization": f"Bearer {token}"})
        try:
            for d, user, extra in (("atlanta.com", "alice", {}), ("biloxi.com", "bob", {"auto_answer": True})):
                aor = f"sip:{user}@{d}"
                resp = await apis[d].post("/v1/users", json={"aor": aor, "password": creds[aor], **extra})
                assert resp.status_code == 201, resp.text
            placed = await apis["atlanta.com"].post("/v1/calls", json={
                "from": "sip:alice@atlanta.com", "to": "sip:bob@biloxi.com", "secure": True})
            assert placed.status_code == 201 and placed.json()["state"] == "established", placed.text
        finally:
            for api in apis.values():
                await api.aclose()
        for d in ("atlanta.com", "biloxi.com"):
            row = by[(d, "proxy")]
            text = metrics(row["address"], row["ports"]["metrics"])
            # REGISTER from its gateway, and the INVITE/ACK and responses between the proxies and
            # to the gateways: all over TLS; nothing over TCP
            assert _received(text, "TLS") >= 3, (d, text[-2000:])
            assert _received(text, "TCP") == 0, d
    finally:
        code = up.stop(signal.SIGINT)
    assert code == 0, "".join(up.err)
