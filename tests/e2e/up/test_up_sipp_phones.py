"""Plain phones (real sipp processes) call through ``sipsec up``'s processes: real Redis per
domain, real gRPC, real SIP over UDP on the gateways' plain side.

bob's phone (a sipp UAS on 127.0.0.3) registers with the biloxi gateway's plain side; alice's
phone (a sipp UAC on 127.0.0.2) uses the atlanta gateway's plain side as its outbound proxy and
calls bob@biloxi.com. Between the gateways every message is secured (TLS through both proxies).
Each phone answers Digest challenges with the phone password its user's login returned.
"""

from __future__ import annotations

import json
import os
import signal
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.up.test_up import processes_in
from tests.sipp import Sipp
from tests.upctl import UpProcess

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

SCENARIOS = Path(__file__).parent.parent / "gateway" / "scenarios"
UAS_SCENARIO = Path(__file__).parent.parent / "sipp" / "scenarios" / "uas_trying.xml"
CALLS = 3


def post_json(url: str, body: dict[str, Any], token: str) -> tuple[int, dict[str, Any]]:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return int(resp.status), dict(json.loads(resp.read()))


def sample(base_url: str, name: str, **labels: str) -> float:
    """One sample of a gateway's /metrics, on its metrics port (0 when the labelled child does not exist yet)."""
    with urllib.request.urlopen(f"{base_url}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return float(s.value)
    return 0.0


def test_sipp_phones_call_through_sipsec_up(tmp_path: Path) -> None:
    state = tmp_path / "state"
    up = UpProcess("--json", "--grace", "8", "--state-dir", str(state))
    up.wait_for("sipsec up: ready")
    try:
        ready = json.loads(up.out[0])
        rows = ready["services"]
        gw = {r["domain"]: r for r in rows if r["service"] == "gateway"}
        assert gw["atlanta.com"]["health"] == gw["biloxi.com"]["health"] == "healthy"
        atlanta_plain = (gw["atlanta.com"]["address"], int(gw["atlanta.com"]["ports"]["plain"]))
        biloxi_plain = (gw["biloxi.com"]["address"], int(gw["biloxi.com"]["ports"]["plain"]))
        assert (atlanta_plain[0], biloxi_plain[0]) == ("127.0.0.2", "127.0.0.3")
        base = {d: f"http://{r['address']}:{r['ports']['http']}" for d, r in gw.items()}
        metrics = {d: f"http://{r['address']}:{r['ports']['metrics']}" for d, r in gw.items()}
        # each gateway generated its control API token in up's state directory, named on the ready line
        tokens = {d: Path(path).read_text().strip() for d, path in ready["api_tokens"].items()}
        assert set(tokens) == {"atlanta.com", "biloxi.com"}
        assert all(Path(p).is_relative_to(state) for p in ready["api_tokens"].values())
        creds = json.loads((state / "credentials.json").read_text())
        # log both users in through their gateways' control API (as ``sipsec up --calls`` does);
        # each login returns, once, the generated password the user's phone answers Digest with
        phone_pw = {}
        for domain, user in (("atlanta.com", "alice"), ("biloxi.com", "bob")):
            aor = f"sip:{user}@{domain}"
            status, doc = post_json(f"{base[domain]}/v1/users", {"aor": aor, "password": creds[aor]}, tokens[domain])
            assert status == 201, doc
            phone_pw[user] = doc["phone_password"]

        uas = Sipp(str(UAS_SCENARIO), local_host="127.0.0.3", calls=CALLS, timeout_s=25)
        uas.start()
        try:
            register = Sipp(str(SCENARIOS / "phone_register.xml"), remote=biloxi_plain, local_host="127.0.0.3",
                            calls=1, timeout_s=10,
                            extra_args=["-key", "user", "bob", "-key", "contact_port", str(uas.local_port),
                                        "-au", "bob", "-ap", phone_pw["bob"]])
            register.start()
            register.wait().assert_ok(calls=1)
            assert sample(metrics["biloxi.com"], "sipsec_gateway_registrations_total",
                          side="phone", outcome="ok") == 1

            uac = Sipp(str(SCENARIOS / "phone_call_auth.xml"), remote=atlanta_plain, local_host="127.0.0.2",
                       calls=CALLS, rate=2, limit=1, timeout_s=25,
                       extra_args=["-key", "user", "alice", "-key", "callee", "bob@biloxi.com",
                                   "-au", "alice", "-ap", phone_pw["alice"]])
            uac.start()
            uac.wait().assert_ok(calls=CALLS)
            uas.wait().assert_ok(calls=CALLS)
        finally:
            uas.stop()
        # the calls between the gateways were secured end to end
        assert sample(metrics["atlanta.com"], "sipsec_gateway_call_setups_total",
                      outcome="answered", secure="true") == CALLS
    finally:
        code = up.stop(signal.SIGINT)
    assert code == 0, "".join(up.err)
    assert "sipsec up: stopped" in "".join(up.err)
    assert not processes_in(state)
    assert os.path.isdir(state), "a given --state-dir is kept"
