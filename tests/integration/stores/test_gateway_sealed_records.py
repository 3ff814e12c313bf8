"""The gateway's Redis records are sealed: a record planted by whoever can write Redis is not a
dialog, and nothing in Redis is readable — against a real redis-server with ACLs.

The attack (found in review): the gateway stores each end's dialog key under a *scoped id*,
``SHA-256("sipsec-gateway dialog" 0 AOR 0 key id)[:8]`` — computable from public values. With
the ``dialog-establishing`` signing policy a BYE carries no signature, only the dialog key's
AEAD; so whoever could write a record under that id with a key of their own could make Bob's
gateway accept a BYE "from Alice" that no key issued by any PKG produced.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import pytest
from sipsec import ibc
from sipsec.envelope import DialogKey, Keyring, RejectedEnvelope, SigningPolicy, open_message, seal
from sipsec.sip import Request, parse_message
from sipsec.stores.envelope import RedisDialogStore
from sipsec_gateway.__main__ import main as gateway_main
from sipsec_gateway.__main__ import redis_stores
from sipsec_gateway.api import load_tokens
from sipsec_gateway.calls import CallState
from sipsec_gateway.config import ConfigError, GatewayConfig
from sipsec_gateway.store import ScopedDialogStore

from tests.conftest import AclRedisServer
from tests.integration.gateway.harness import TwoDomains, call, login, wait_for
from tests.unit.envelope.rfc3665 import ALICE, ALICE_TAG, BOB, BOB_TAG, Pki

POLICY = SigningPolicy.DIALOG_ESTABLISHING


def _key_file(tmp_path: Path) -> str:
    path = tmp_path / "sealing.key"
    path.write_bytes(os.urandom(32))
    path.chmod(0o600)
    return str(path)


def _config(server: AclRedisServer, **overrides: Any) -> GatewayConfig:
    return GatewayConfig(store="redis", redis_url=server.url_for("gateway"),
                         redis_password_file=server.password_files["gateway"], **overrides)


def _forged_bye(call_id: str) -> Request:
    text = "\r\n".join([
        "BYE sip:bob@client.biloxi.example.com;transport=tcp SIP/2.0",
        "Via: SIP/2.0/TCP client.atlanta.example.com:5060;branch=z9hG4bKforged1",
        "Max-Forwards: 70", f"From: Alice <{ALICE}>;tag={ALICE_TAG}",
        f"To: Bob <{BOB}>;tag={BOB_TAG}", f"Call-ID: {call_id}", "CSeq: 2 BYE",
    ]) + "\r\nContent-Length: 0\r\n\r\n"
    message = parse_message(text.encode())
    assert isinstance(message, Request)
    return message


async def _attack(server: AclRedisServer, config: GatewayConfig) -> str | None:
    """Plant a dialog record for Bob (as an attacker with write access to Redis), send him a
    BYE "from Alice" sealed under the planted key; the signer-less opened From, or None if refused."""
    pki = Pki.create()
    bob_keys = pki.keyring(BOB)
    # the attacker's own "atlanta" PKG: keys for Alice that Bob's gateway trusts for nothing
    fake_master, fake_params = ibc.setup("atlanta.example.com")
    period = fake_params.policy.current(pki.now)
    fake_alice = Keyring.create(
        ALICE, sig_keys=[ibc.extract(fake_master, fake_params, fake_params.identity(ALICE, ibc.Purpose.SIG, period))],
        enc_keys=[ibc.extract(fake_master, fake_params, fake_params.identity(ALICE, ibc.Purpose.ENC, period))],
        domains=[fake_params, pki.biloxi])

    key, key_id, call_id = os.urandom(32), os.urandom(8), "forged-1@atlanta.example.com"
    scoped = hashlib.sha256(b"sipsec-gateway dialog\x00" + BOB.encode() + b"\x00" + key_id).digest()[:8]
    planted = DialogKey(key, scoped, call_id, BOB, ALICE, False, pki.now)
    admin = server.admin_client()  # the worst case: full write access to Redis
    try:
        await admin.set(f"sipsec:envelope:dlg:{scoped.hex()}", planted.to_bytes(), px=60_000)
    finally:
        await admin.aclose()

    alice_view = DialogKey(key, key_id, call_id, ALICE, BOB, True, pki.now)
    sealed = seal(_forged_bye(call_id), fake_alice, alice_view, POLICY, now=pki.now)
    stores = redis_stores(config)
    try:
        bob_dialogs = ScopedDialogStore(stores["dialog_store"], BOB)  # as the gateway reads them
        try:
            opened = await open_message(parse_message(sealed.message.to_bytes()), bob_keys, bob_dialogs,
                                        stores["replay_cache"], policy=POLICY, now=pki.now)
        except RejectedEnvelope:
            return None
        assert opened.signer is None  # no signature at all: the planted key was its only proof
        return str(opened.message.headers.get("From"))
    finally:
        for store in stores.values():
            await store.aclose()


async def test_a_planted_dialog_record_does_not_let_a_keyless_bye_in(acl_redis: AclRedisServer,
                                                                    tmp_path: Path) -> None:
    # the attack as found: the unsealed store (now only behind the explicit insecure mode) accepts it
    accepted = await _attack(acl_redis, _config(acl_redis, insecure_plain_store=True))
    assert accepted is not None and ALICE in accepted
    acl_redis.flush()
    # the gateway's default with Redis: sealed records; the planted one reads as absent
    assert await _attack(acl_redis, _config(acl_redis, sealing_key_file=_key_file(tmp_path))) is None


def test_the_gateway_refuses_redis_without_a_sealing_key(acl_redis: AclRedisServer, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ConfigError, match="SIPSEC_GATEWAY_SEALING_KEY_FILE"):
        _config(acl_redis)
    for name, value in {"SIPSEC_GATEWAY_STORE": "redis", "SIPSEC_REDIS_URL": acl_redis.url_for("gateway"),
                        "SIPSEC_GATEWAY_REDIS_PASSWORD_FILE": acl_redis.password_files["gateway"]}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("SIPSEC_GATEWAY_SEALING_KEY_FILE", raising=False)
    monkeypatch.delenv("SIPSEC_GATEWAY_INSECURE_PLAIN_STORE", raising=False)
    monkeypatch.setenv("SIPSEC_GATEWAY_PKG_FINGERPRINT", "sha256:" + "ab" * 32)  # the pin is required too
    # this test's own state directory, its tokens made beforehand: the only line is the refusal
    # (with ~/.local/state, a first run on a fresh machine also printed the token's path)
    monkeypatch.setenv("SIPSEC_GATEWAY_STATE_DIR", str(tmp_path / "state"))
    load_tokens("", str(tmp_path / "state"))
    capsys.readouterr()
    assert gateway_main(["serve"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "SIPSEC_GATEWAY_SEALING_KEY_FILE" in err[0]
    # a wrong Redis password: refused at start, one line naming the settings, the password not shown
    key_file = _key_file(tmp_path)
    wrong = tmp_path / "wrong.password"
    wrong.write_text("not-the-gateway-password-0123\n")
    monkeypatch.setenv("SIPSEC_GATEWAY_SEALING_KEY_FILE", key_file)
    monkeypatch.setenv("SIPSEC_GATEWAY_REDIS_PASSWORD_FILE", str(wrong))
    assert gateway_main(["serve"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "SIPSEC_GATEWAY_REDIS_PASSWORD_FILE" in err[0], err
    assert "not-the-gateway-password" not in err[0]
    # a key file that holds no 32-byte key is refused as clearly
    bad = tmp_path / "bad.key"
    bad.write_text("not a key\n")
    with pytest.raises(ConfigError, match="SIPSEC_GATEWAY_SEALING_KEY_FILE.*32-byte"):
        redis_stores(_config(acl_redis, sealing_key_file=str(bad)))


async def test_a_secured_call_leaves_nothing_readable_in_redis(acl_redis: AclRedisServer, tmp_path: Path) -> None:
    """A whole secured call (INVITE with SDP, 200, ACK) through two gateways whose stores are the
    ones ``sipsec-gateway serve`` builds (ACL user, sealing key): then every key and value in
    Redis is scanned for the dialog key, the first INVITE, SDP, AORs and the inner Call-ID."""
    config = _config(acl_redis, sealing_key_file=_key_file(tmp_path))
    kwargs = {name: redis_stores(config) for name in ("atlanta.com", "biloxi.com")}
    overrides = {name: {"signing": POLICY.value} for name in kwargs}
    async with TwoDomains(gateway_kwargs=kwargs, gateway_overrides=overrides) as net:
        for stores in kwargs.values():
            for store in stores.values():
                net.push(store.aclose)
        await login(net.atlanta, "alice")
        await login(net.biloxi, "bob", auto_answer=True)
        placed = await call(net.atlanta, "sip:alice@atlanta.com", "sip:bob@biloxi.com")
        assert placed["state"] == "established" and placed["secure"]
        alice_call = net.atlanta.gateway.find_call(placed["id"])
        assert alice_call is not None and alice_call.key is not None
        bob_call = next(c for c in net.biloxi.gateway.secure.calls.values() if c.direction == "incoming")
        await wait_for(lambda: bob_call.state is CallState.ESTABLISHED)

        admin = acl_redis.admin_client()
        try:
            names = [k async for k in admin.scan_iter(count=1000)]
            dump = b""
            for name in names:
                value = await admin.get(name)
                dump += name + b"\n" + (value or b"") + b"\n"
        finally:
            await admin.aclose()
        assert any(n.startswith(b"sipsec:envelope:dlg:") for n in names)
        assert any(n.startswith(b"sipsec:gateway:call:") for n in names)
        assert any(n.startswith(b"sipsec:gateway:cid:") for n in names)
        secrets = [alice_call.key.key, alice_call.key.key.hex().encode(), alice_call.call_id.encode(),
                   b"INVITE", b"v=0", b"m=audio", b"alice", b"bob", b"atlanta.com", b"biloxi.com",
                   alice_call.key.primer[:64] if alice_call.key.primer else b"INVITE"]
        for secret in secrets:
            assert secret not in dump, f"{secret[:20]!r} readable in Redis"

        # and the sealed records still serve their purpose: the call ends cleanly
        hung = await net.atlanta.client.delete(f"/v1/calls/{placed['id']}")
        assert hung.status_code == 200, hung.text
        await wait_for(lambda: bob_call.state is CallState.ENDED)


def test_redis_dialog_store_reports_sealing() -> None:
    import redis.asyncio as aioredis

    client = aioredis.Redis()
    assert RedisDialogStore(client, sealing_key=os.urandom(32)).sealed
    assert not RedisDialogStore(client).sealed
