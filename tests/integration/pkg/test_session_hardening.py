"""Attacks on PKG sessions and login throttling, reproduced against real gRPC nodes and a real
redis-server, and refused: planted or altered session records, sessions past their absolute
lifetime, sessions outliving a password change or an account's removal, and lockouts used as
a weapon against a user or against a gateway's users."""

from __future__ import annotations

import asyncio
import json

import grpc
import pytest
import redis.asyncio as aioredis
from sipsec.ibc import Purpose
from sipsec.pkgclient import PkgRpcError
from sipsec.stores.pkg import RedisPkgStore, SessionRecord
from sipsec_pkg.service import token_id

from tests.integration.pkg.conftest import PASSWORD

ALICE = "sip:alice@atlanta.com"


async def _refused(client, reason: str) -> None:
    with pytest.raises(PkgRpcError) as err:
        await client.fetch_key(Purpose.SIG)
    assert err.value.code is grpc.StatusCode.UNAUTHENTICATED
    assert err.value.reason == reason


async def test_session_record_planted_in_redis_is_rejected(atlanta, make_node, connect, clock, redis_url):
    node = await make_node(atlanta.material(), store="redis")
    await node.add_user(ALICE, PASSWORD)
    honest = connect(node)
    await honest.login(ALICE, PASSWORD)  # a genuine session exists alongside
    user = await node.store.get_user(ALICE)
    assert user is not None and user.epoch
    attacker = RedisPkgStore(redis_url, "atlanta.com", clock)  # someone who can write Redis
    try:
        now = clock()
        token = "attacker-chosen-token-" + "x" * 30
        # 1. a record made up from scratch, with every field right but no MAC of the PKG
        await attacker.put_session(token_id(token), SessionRecord(ALICE, now, now, user.epoch, b"\0" * 32), 600)
        forger = connect(node)
        forger.session = type(honest.session)(aor=ALICE, token=token, idle_timeout_s=900)
        await _refused(forger, "invalid_session")
        # 2. the genuine record (valid MAC) copied under the attacker's token id
        genuine = await attacker.get_session(token_id(honest.session.token))
        assert genuine is not None and genuine.mac
        await attacker.put_session(token_id(token), genuine, 600)
        await _refused(forger, "invalid_session")
        # 3. the genuine record altered in place (made younger, to outlive its lifetime)
        await attacker.put_session(token_id(honest.session.token),
                                   SessionRecord(ALICE, now + 10_000, now, genuine.epoch, genuine.mac), 600)
        await _refused(honest, "invalid_session")
        # 4. garbage under a session key does not crash the PKG
        raw = aioredis.Redis.from_url(redis_url)
        await raw.set(f"sipsec:pkg:atlanta.com:session:{token_id(token)}", b"{not json")
        await raw.aclose()
        await _refused(forger, "invalid_session")
    finally:
        await attacker.close()
    assert node.metrics.session_rejections.labels("forged")._value.get() == 4
    # the PKG itself still works: a real login gets keys
    fresh = connect(node)
    await fresh.login(ALICE, PASSWORD)
    assert (await fresh.fetch_key(Purpose.SIG)).private_key


async def test_session_ends_at_its_absolute_lifetime_despite_activity(atlanta, make_node, connect, clock, store_kind):
    node = await make_node(atlanta.material(), store=store_kind, idle_timeout_s=900, session_max_lifetime_s=3600)
    await node.add_user(ALICE, PASSWORD)
    client = connect(node)
    session = await client.login(ALICE, PASSWORD)
    assert session.max_lifetime_s == 3600
    for _ in range(4):  # active every 800 s: never idle, 3200 s old
        clock.advance(800)
        await client.fetch_key(Purpose.SIG)
    clock.advance(401)  # 3601 s after login
    await _refused(client, "session_expired")
    assert node.metrics.session_rejections.labels("lifetime")._value.get() == 1
    await client.login(ALICE, PASSWORD)  # logging in again works
    await client.fetch_key(Purpose.SIG)


async def test_password_change_revokes_existing_sessions(atlanta, make_node, connect, store_kind):
    node = await make_node(atlanta.material(), store=store_kind)
    await node.add_user(ALICE, PASSWORD)
    a, b = connect(node), connect(node)
    await a.login(ALICE, PASSWORD)
    await b.login(ALICE, PASSWORD)
    await a.fetch_key(Purpose.SIG)
    await node.add_user(ALICE, "a brand new password")  # the password is changed (e.g. it leaked)
    for c in (a, b):
        await _refused(c, "session_revoked")
    assert node.metrics.session_rejections.labels("revoked")._value.get() == 2
    with pytest.raises(PkgRpcError) as err:
        await a.login(ALICE, PASSWORD)
    assert err.value.code is grpc.StatusCode.UNAUTHENTICATED
    await a.login(ALICE, "a brand new password")
    await a.fetch_key(Purpose.SIG)


async def test_restored_session_record_does_not_survive_account_removal(atlanta, make_node, connect, redis_url):
    node = await make_node(atlanta.material(), store="redis")
    await node.add_user(ALICE, PASSWORD)
    client = connect(node)
    await client.login(ALICE, PASSWORD)
    key = f"sipsec:pkg:atlanta.com:session:{token_id(client.session.token)}"
    raw = aioredis.Redis.from_url(redis_url)
    try:
        saved = await raw.get(key)  # a copy of the genuine record, MAC and all
        assert saved is not None and json.loads(saved)["mac"]
        assert await node.service.remove_user(ALICE)
        await node.add_user(ALICE, PASSWORD)  # re-created, even with the same password
        await raw.set(key, saved)  # the old record put back
        await _refused(client, "session_revoked")
    finally:
        await raw.aclose()


async def _guess(client, aor: str, clock, *, client_address: str = "") -> str:
    """One wrong password; waits out a back-off first, so every call is a real, checked failure."""
    for _ in range(2):
        with pytest.raises(PkgRpcError) as err:
            await client.login(aor, "guess", client_address=client_address)
        if err.value.code is grpc.StatusCode.UNAUTHENTICATED:
            return err.value.reason
        assert err.value.code is grpc.StatusCode.RESOURCE_EXHAUSTED
        clock.advance(int(err.value.details["retry_after_s"]))
    raise AssertionError("a waited-out back-off refused again")


@pytest.mark.parametrize("guesses", [5, 50])
async def test_wrong_passwords_from_one_client_do_not_stop_the_user_elsewhere(
    atlanta, make_node, connect, clock, store_kind, guesses
):
    # the gateway (a trusted forwarder) names each end user's address
    node = await make_node(atlanta.material(), store=store_kind, trusted_forwarders=("127.0.0.1",))
    await node.add_user(ALICE, PASSWORD)
    gateway = connect(node)
    for _ in range(guesses):
        assert await _guess(gateway, ALICE, clock, client_address="127.0.0.66") == "bad_credentials"
    session = await gateway.login(ALICE, PASSWORD, client_address="127.0.0.7")  # alice from her own client
    assert session.aor == ALICE
    await gateway.fetch_key(Purpose.SIG)
    assert node.metrics.login_backoffs.labels("account_client")._value.get() == guesses - 3
    # the guesser's own address is backed off, with a bounded wait
    with pytest.raises(PkgRpcError) as err:
        await gateway.login(ALICE, PASSWORD, client_address="127.0.0.66")
    assert err.value.code is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert 1 <= int(err.value.details["retry_after_s"]) <= 900


async def test_client_address_from_an_untrusted_peer_is_ignored(atlanta, make_node, connect, clock):
    node = await make_node(atlanta.material(), backoff_free_failures=1, backoff_base_s=60)
    await node.add_user(ALICE, PASSWORD)
    client = connect(node)
    for _ in range(2):
        with pytest.raises(PkgRpcError):
            await client.login(ALICE, "guess", client_address="127.0.0.66")
    with pytest.raises(PkgRpcError) as err:  # a fresh "address" buys nothing: the peer's own one counts
        await client.login(ALICE, PASSWORD, client_address="127.0.0.67")
    assert err.value.code is grpc.StatusCode.RESOURCE_EXHAUSTED


async def test_forwarded_client_address_must_be_an_ip(atlanta, make_node, connect):
    node = await make_node(atlanta.material(), trusted_forwarders=("127.0.0.1",))
    await node.add_user(ALICE, PASSWORD)
    with pytest.raises(PkgRpcError) as err:
        await connect(node).login(ALICE, PASSWORD, client_address="not-an-address")
    assert err.value.code is grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.reason == "bad_client_address"


@pytest.mark.parametrize("guesses", [20, 50])
async def test_failures_through_the_gateway_address_do_not_stop_its_other_users(
    atlanta, make_node, connect, clock, store_kind, guesses
):
    # no forwarding: every login arrives from the gateway's one address (default budget 20)
    node = await make_node(atlanta.material(), store=store_kind)
    for user in ("alice", "bob", "carol"):
        await node.add_user(f"sip:{user}@atlanta.com", PASSWORD)
    gateway = connect(node)
    await gateway.login("sip:bob@atlanta.com", PASSWORD)  # bob has logged in through it before
    for _ in range(guesses):
        await _guess(gateway, ALICE, clock)
    assert (await gateway.login("sip:bob@atlanta.com", PASSWORD)).aor == "sip:bob@atlanta.com"
    await gateway.fetch_key(Purpose.SIG)
    if guesses <= 20:  # within the address's budget nothing else is slowed
        assert (await gateway.login("sip:carol@atlanta.com", PASSWORD)).aor == "sip:carol@atlanta.com"
        return
    # past it, an account new to the address waits a bounded time, then gets in
    with pytest.raises(PkgRpcError) as err:
        await gateway.login("sip:carol@atlanta.com", PASSWORD)
    assert err.value.code is grpc.StatusCode.RESOURCE_EXHAUSTED and err.value.details["scope"] == "client_address"
    wait = int(err.value.details["retry_after_s"])
    assert 1 <= wait <= 60
    clock.advance(wait)
    assert (await gateway.login("sip:carol@atlanta.com", PASSWORD)).aor == "sip:carol@atlanta.com"
    assert node.metrics.login_throttled.labels("client_address")._value.get() >= 1


async def test_parallel_guesses_from_one_client_are_checked_one_at_a_time(atlanta, make_node, connect, store_kind):
    """A burst of simultaneous guesses cannot all pass the back-off check before the first failure
    is counted: while one guess of an (account, client) pair is being checked, the others are refused
    unchecked (RESOURCE_EXHAUSTED, scope account_client)."""
    node = await make_node(atlanta.material(), store=store_kind, trusted_forwarders=("127.0.0.1",))
    await node.add_user(ALICE, PASSWORD)
    gateway = connect(node)
    burst = 20
    results = await asyncio.gather(
        *(gateway.login(ALICE, f"guess-{i}", client_address="127.0.0.66") for i in range(burst)),
        return_exceptions=True)
    codes = [r.code for r in results if isinstance(r, PkgRpcError)]
    assert len(codes) == burst  # none got in
    checked = codes.count(grpc.StatusCode.UNAUTHENTICATED)
    refused = codes.count(grpc.StatusCode.RESOURCE_EXHAUSTED)
    assert checked + refused == burst
    assert 1 <= checked <= 4  # at most the free failures and the one that starts the back-off
    # alice from her own client is not affected
    session = await gateway.login(ALICE, PASSWORD, client_address="127.0.0.7")
    assert session.aor == ALICE
