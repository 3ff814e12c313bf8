"""Key material from a real PKG: current and next period, renewal across periods, re-login after expiry."""

from __future__ import annotations

import time

import pytest
from sipsec.ibc import Purpose
from sipsec_gateway.gateway import Gateway, GatewayError
from sipsec_gateway.keys import KeyMaterialError, ParamsDirectory, PkgConnector, UserKeys
from sipsec_gateway.metrics import GatewayMetrics
from sipsec_pkg.clock import ManualClock
from sipsec_pkg.node import PkgNode

from tests.integration.gateway.harness import FAST_SCRYPT, PASSWORD, gateway_config, material


async def test_keys_for_current_and_next_period_are_renewed_across_periods() -> None:
    clock = ManualClock(time.time())
    node = PkgNode.in_memory(material("atlanta.com").material(), clock=clock, scrypt=FAST_SCRYPT,
                             idle_timeout_s=3600)
    await node.start()
    await node.add_user("sip:alice@atlanta.com", PASSWORD)
    metrics = GatewayMetrics()
    connector = PkgConnector((f"127.0.0.1:{node.port}",), plaintext=True)
    directory = ParamsDirectory(connector, "atlanta.com", metrics)
    keys = UserKeys("sip:alice@Atlanta.COM:5060", PASSWORD, connector, directory, metrics, clock=clock)
    try:
        await keys.login()
        assert await keys.refresh_keys()
        policy = (await directory.own()).policy
        current = policy.current(clock())
        assert keys.periods == [current, current + 1]
        assert not await keys.refresh_keys()  # nothing new to fetch
        ring = keys.keyring()
        assert ring.signing_key(clock()).identity.period == current
        assert ring.enc_key("sip:alice@atlanta.com", current + 1, policy.length_s) is not None
        assert keys.renew_at() == policy.bounds(current)[1]

        assert keys.holds_next()
        # one period later (the PKG session has expired meanwhile: the gateway logs in again)
        clock.advance(policy.length_s)
        assert not keys.holds_next()  # the maintenance loop fetches it now
        assert await keys.refresh_keys()
        assert keys.holds_next()
        assert keys.periods == [current, current + 1, current + 2]
        clock.advance(policy.length_s)
        assert await keys.refresh_keys()
        assert keys.periods == [current + 1, current + 2, current + 3]  # older than previous: dropped
        assert keys.keyring().signing_key(clock()).identity.purpose is Purpose.SIG
        assert metrics.sample("sipsec_gateway_key_fetches_total", kind="login", outcome="ok") == 3  # + one per expired session
        assert "secret" not in repr(keys).lower() and PASSWORD not in repr(keys)

        # the PKG gone: a missing next-period key only warns (it is retried later) ...
        await node.stop(0)
        clock.advance(policy.length_s)
        assert not await keys.refresh_keys()
        assert keys.periods == [current + 2, current + 3]
        # ... a missing current-period key is a clear error
        clock.advance(policy.length_s)
        with pytest.raises(KeyMaterialError) as err:
            await keys.refresh_keys()
        assert err.value.status == 503
    finally:
        await keys.close()
        await directory.close()
        await node.stop(0)


async def test_gateway_login_errors_map_to_http_statuses() -> None:
    node = PkgNode.in_memory(material("atlanta.com").material(), scrypt=FAST_SCRYPT)
    await node.start()
    await node.add_user("sip:alice@atlanta.com", PASSWORD)
    gateway = Gateway(gateway_config("atlanta.com", node.port, 9, register_expires=600))
    await gateway.start()
    try:
        with pytest.raises(GatewayError) as err:
            await gateway.login("sip:alice@atlanta.com", "not the password")
        assert err.value.status == 401
        # keys fine, but no proxy answers the REGISTER (port 9: nothing there): 504, user not kept
        with pytest.raises(GatewayError) as err:
            await _login_with_short_register(gateway)
        assert err.value.status == 504
        assert gateway.users == {}
    finally:
        await gateway.stop(0)
        await node.stop(0)


async def _login_with_short_register(gateway: Gateway) -> None:
    original = gateway.register

    async def short(aor: str, *, expires: int | None = None, timeout: float = 10.0) -> None:
        await original(aor, expires=expires, timeout=0.5)

    gateway.register = short  # type: ignore[method-assign]
    await gateway.login("sip:alice@atlanta.com", PASSWORD)
