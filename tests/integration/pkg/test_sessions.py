"""Login, logout, idle expiry, wrong passwords and back-off against a real gRPC PKG (memory and Redis)."""

from __future__ import annotations

import grpc
import pytest
from sipsec.ibc import Purpose
from sipsec.pkgclient import PkgRpcError

from tests.integration.pkg.conftest import PASSWORD


async def test_login_then_logout_ends_the_session(atlanta, make_node, connect, store_kind):
    node = await make_node(atlanta.material(), store=store_kind)
    await node.add_user("sip:alice@atlanta.com", PASSWORD)
    client = connect(node)
    session = await client.login('"Alice" <sip:alice@ATLANTA.com:5060;transport=udp>', PASSWORD)
    assert session.aor == "sip:alice@atlanta.com"
    assert session.idle_timeout_s == 900
    assert len(session.token) >= 40
    await client.fetch_key(Purpose.SIG)
    token = session.token
    await client.logout()
    client.session = type(session)(aor=session.aor, token=token, idle_timeout_s=900)
    with pytest.raises(PkgRpcError) as err:
        await client.fetch_key(Purpose.SIG)
    assert err.value.code is grpc.StatusCode.UNAUTHENTICATED
    assert err.value.reason == "invalid_session"


async def test_idle_session_expires_and_activity_keeps_it_alive(atlanta, make_node, connect, clock, store_kind):
    node = await make_node(atlanta.material(), store=store_kind, idle_timeout_s=60)
    await node.add_user("sip:alice@atlanta.com", PASSWORD)
    client = connect(node)
    await client.login("sip:alice@atlanta.com", PASSWORD)
    for _ in range(3):  # each use resets the idle timer
        clock.advance(50)
        await client.fetch_key(Purpose.ENC)
    clock.advance(61)
    with pytest.raises(PkgRpcError) as err:
        await client.fetch_key(Purpose.ENC)
    assert err.value.code is grpc.StatusCode.UNAUTHENTICATED
    assert err.value.reason == "session_expired"
    # the expired session is gone for good, even if the clock went back
    clock.advance(-61)
    with pytest.raises(PkgRpcError) as err:
        await client.fetch_key(Purpose.ENC)
    assert err.value.code is grpc.StatusCode.UNAUTHENTICATED


async def test_wrong_password_and_unknown_user_look_the_same(atlanta, make_node, connect, store_kind):
    node = await make_node(atlanta.material(), store=store_kind)
    await node.add_user("sip:alice@atlanta.com", PASSWORD)
    client = connect(node)
    errors = []
    for aor, pw in (("sip:alice@atlanta.com", "wrong"), ("sip:nobody@atlanta.com", PASSWORD)):
        with pytest.raises(PkgRpcError) as err:
            await client.login(aor, pw)
        errors.append((err.value.code, err.value.reason, str(err.value)))
    assert errors[0] == errors[1]
    assert errors[0][0] is grpc.StatusCode.UNAUTHENTICATED
    assert "wrong" not in errors[0][2] and PASSWORD not in errors[0][2]
    assert node.metrics.login_failures.labels("bad_credentials")._value.get() == 2


async def test_malformed_login_is_invalid_argument(atlanta, make_node, connect):
    node = await make_node(atlanta.material())
    client = connect(node)
    for aor in ("not an aor", "sip:bob@biloxi.com", "x" * 5000):
        with pytest.raises(PkgRpcError) as err:
            await client.login(aor, PASSWORD)
        assert err.value.code is grpc.StatusCode.INVALID_ARGUMENT


async def test_repeated_failures_back_off_that_client_then_release(atlanta, make_node, connect, clock, store_kind):
    # was a hard per-user lockout; now the same client backs off (right password refused too) for a
    # bounded, growing time, other users are unaffected, and the back-off ends by itself
    node = await make_node(atlanta.material(), store=store_kind, backoff_free_failures=2, backoff_base_s=60,
                           backoff_max_s=300)
    await node.add_user("sip:alice@atlanta.com", PASSWORD)
    await node.add_user("sip:carol@atlanta.com", PASSWORD)
    client = connect(node)
    for _ in range(3):
        with pytest.raises(PkgRpcError) as err:
            await client.login("sip:alice@atlanta.com", "guess")
        assert err.value.code is grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(PkgRpcError) as err:  # even the right password waits for the back-off from here
        await client.login("sip:alice@atlanta.com", PASSWORD)
    assert err.value.code is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert err.value.reason == "backoff" and err.value.details["scope"] == "account_client"
    assert 1 <= int(err.value.details["retry_after_s"]) <= 60
    await client.login("sip:carol@atlanta.com", PASSWORD)  # other users are unaffected
    assert node.metrics.login_backoffs.labels("account_client")._value.get() == 1
    assert node.metrics.login_throttled.labels("account_client")._value.get() == 1
    clock.advance(61)
    assert (await client.login("sip:alice@atlanta.com", PASSWORD)).aor == "sip:alice@atlanta.com"


async def test_failures_across_users_slow_the_address_for_new_accounts(atlanta, make_node, connect, clock, store_kind):
    # was a hard per-source lockout; now an address over its failure budget is slowed for accounts
    # that never logged in from it, while those that did still log in
    node = await make_node(atlanta.material(), store=store_kind, address_failure_budget=4, backoff_base_s=30,
                           address_backoff_max_s=60)
    await node.add_user("sip:alice@atlanta.com", PASSWORD)
    await node.add_user("sip:dave@atlanta.com", PASSWORD)
    client = connect(node)
    await client.login("sip:alice@atlanta.com", PASSWORD)
    for i in range(5):
        with pytest.raises(PkgRpcError):
            await client.login(f"sip:user{i}@atlanta.com", "guess")
    with pytest.raises(PkgRpcError) as err:
        await client.login("sip:dave@atlanta.com", PASSWORD)
    assert err.value.code is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert err.value.reason == "backoff" and err.value.details["scope"] == "client_address"
    assert 1 <= int(err.value.details["retry_after_s"]) <= 30
    assert node.metrics.login_backoffs.labels("client_address")._value.get() == 1
    assert (await client.login("sip:alice@atlanta.com", PASSWORD)).aor == "sip:alice@atlanta.com"
    clock.advance(31)
    assert (await client.login("sip:dave@atlanta.com", PASSWORD)).aor == "sip:dave@atlanta.com"


async def test_removed_user_session_stops_working(atlanta, make_node, connect, store_kind):
    node = await make_node(atlanta.material(), store=store_kind)
    await node.add_user("sip:alice@atlanta.com", PASSWORD)
    client = connect(node)
    await client.login("sip:alice@atlanta.com", PASSWORD)
    other = connect(node)
    await other.login("sip:alice@atlanta.com", PASSWORD)
    assert node.metrics.active_sessions._value.get() == 2
    assert await node.service.remove_user("sip:alice@atlanta.com")
    assert node.metrics.active_sessions._value.get() == 0
    for c in (client, other):
        with pytest.raises(PkgRpcError) as err:
            await c.fetch_key(Purpose.SIG)
        assert err.value.code is grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(PkgRpcError):
        await client.login("sip:alice@atlanta.com", PASSWORD)


async def test_active_sessions_gauge(atlanta, make_node, connect, store_kind):
    node = await make_node(atlanta.material(), store=store_kind)
    await node.add_user("sip:alice@atlanta.com", PASSWORD)
    a, b = connect(node), connect(node)
    await a.login("sip:alice@atlanta.com", PASSWORD)
    await b.login("sip:alice@atlanta.com", PASSWORD)
    assert node.metrics.active_sessions._value.get() == 2
    await a.logout()
    assert node.metrics.active_sessions._value.get() == 1
