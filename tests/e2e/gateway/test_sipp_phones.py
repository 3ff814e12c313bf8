"""Plain phones (real sipp processes) behind the two gateways: they register and call as usual.

alice's phone (a sipp UAC on 127.0.0.2) uses the atlanta gateway as its outbound proxy and
calls bob@biloxi.com; bob's phone (a sipp UAS on 127.0.0.3, registered with the biloxi
gateway by a sipp REGISTER) answers. Between the gateways every message is secured; the
phones see plain SIP. Each phone answers Digest challenges with the phone password its
user's login returned (sipp answers MD5 challenges only, hence ``phone_digest=MD5``).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.gateway.harness import TwoDomains, login
from tests.sipp import Sipp

SCENARIOS = Path(__file__).parent / "scenarios"
CALLS = 3

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


MD5 = {"phone_digest": "MD5"}  # sipp answers MD5 challenges only


async def test_sipp_phones_call_through_both_gateways() -> None:
    async with TwoDomains(gateway_overrides={"atlanta.com": MD5, "biloxi.com": MD5}) as net:
        alice_pw = (await login(net.atlanta, "alice"))["phone_password"]
        bob_pw = (await login(net.biloxi, "bob"))["phone_password"]
        atlanta_plain = net.atlanta.gateway.plain_address
        biloxi_plain = net.biloxi.gateway.plain_address
        assert atlanta_plain is not None and biloxi_plain is not None

        uas = Sipp(str(SCENARIOS.parent.parent / "sipp" / "scenarios" / "uas_trying.xml"),
                   local_host="127.0.0.3", calls=CALLS, timeout_s=40)
        uas.start()
        try:
            register = Sipp(str(SCENARIOS / "phone_register.xml"), remote=biloxi_plain, local_host="127.0.0.3",
                            calls=1, timeout_s=15,
                            extra_args=["-key", "user", "bob", "-key", "contact_port", str(uas.local_port),
                                        "-au", "bob", "-ap", bob_pw])
            register.start()
            (await register.wait_async()).assert_ok(calls=1)
            assert net.biloxi.gateway.phones["sip:bob@biloxi.com"].peer.port == uas.local_port

            net.atlanta.tap.clear()
            uac = Sipp(str(SCENARIOS / "phone_call_auth.xml"), remote=atlanta_plain, local_host="127.0.0.2",
                       calls=CALLS, rate=2, limit=1, timeout_s=40,
                       extra_args=["-key", "user", "alice", "-key", "callee", "bob@biloxi.com",
                                   "-au", "alice", "-ap", alice_pw])
            uac.start()
            (await uac.wait_async()).assert_ok(calls=CALLS)
            (await uas.wait_async()).assert_ok(calls=CALLS)
        finally:
            uas.stop()

        secure_calls = [c for c in net.atlanta.gateway.secure.calls.values() if c.direction == "outgoing"]
        assert len(secure_calls) == CALLS and all(c.secure and c.status == 200 for c in secure_calls)
        bob_calls = [c for c in net.biloxi.gateway.secure.calls.values() if c.direction == "incoming"]
        assert len(bob_calls) == CALLS and all(c.secure for c in bob_calls)
        assert net.atlanta.gateway.metrics.sample(
            "sipsec_gateway_call_setups_total", outcome="answered", secure="true") == CALLS
        wire = net.atlanta.tap.text().lower()
        assert wire.count(b"invite sip:bob@biloxi.com") == CALLS
        for leaked in (b"alice", b"m=audio", b"subject", b"plain phone"):
            assert leaked not in wire, leaked


async def test_sipp_phone_with_digest_credentials() -> None:
    async with TwoDomains(gateway_overrides={"atlanta.com": MD5}) as net:
        await login(net.atlanta, "alice", phone_password="phonepass7")
        await login(net.biloxi, "bob", auto_answer=True)
        atlanta_plain = net.atlanta.gateway.plain_address
        assert atlanta_plain is not None
        uac = Sipp(str(SCENARIOS / "phone_call_auth.xml"), remote=atlanta_plain, local_host="127.0.0.2",
                   calls=2, rate=2, limit=1, timeout_s=30,
                   extra_args=["-key", "user", "alice", "-key", "callee", "bob@biloxi.com",
                               "-au", "alice", "-ap", "phonepass7"])
        uac.start()
        (await uac.wait_async()).assert_ok(calls=2)
        gw = net.atlanta.gateway
        assert gw.metrics.sample("sipsec_gateway_registrations_total", side="phone", outcome="challenged") == 2
        assert gw.metrics.sample("sipsec_gateway_registrations_total", side="phone", outcome="ok") == 2
        placed = [c for c in gw.secure.calls.values() if c.direction == "outgoing"]
        assert len(placed) == 2 and all(c.secure and c.status == 200 for c in placed)
