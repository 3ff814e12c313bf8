"""Redis as a trusted store: each service's ACL user does its job and nothing else, on a real
redis-server run with the ACL file every deployment uses (``default`` user off)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import redis.asyncio as aioredis
import redis.exceptions
from sipsec.config import ConfigError
from sipsec.envelope import DialogKey
from sipsec.stores.access import (
    REDIS_USERS,
    acl_file,
    generate_password,
    open_redis,
    redis_username,
)
from sipsec.stores.envelope import RedisDialogStore, RedisReplayCache
from sipsec.stores.location import Binding, RedisLocationStore
from sipsec.stores.pkg import CachedParams, RedisPkgStore, SessionRecord, UserRecord
from sipsec_gateway.store import RedisCallStore

from tests.conftest import AclRedisServer, RedisServer, free_port
from tests.integration.pkg.certs import make_pki


def _client(server: AclRedisServer, user: str) -> aioredis.Redis:
    return open_redis(server.url_for(user), password_file=server.password_files[user])  # type: ignore[no-any-return]


async def test_default_user_cannot_connect_without_a_password(acl_redis: AclRedisServer) -> None:
    anonymous = aioredis.Redis(host="127.0.0.1", port=acl_redis.port)
    try:
        with pytest.raises(redis.exceptions.AuthenticationError):
            await anonymous.ping()
        with pytest.raises(redis.exceptions.AuthenticationError):
            await anonymous.set("sipsec:pkg:x:users", "planted")
    finally:
        await anonymous.aclose()
    for username, password in (("default", "anything-at-all-xx"), ("pkg", "wrong-password-0000"), ("gateway", "")):
        client = aioredis.Redis(host="127.0.0.1", port=acl_redis.port, username=username, password=password)
        try:
            with pytest.raises(redis.exceptions.AuthenticationError):
                await client.ping()
        finally:
            await client.aclose()
    admin = acl_redis.admin_client()
    try:
        assert await admin.dbsize() == 0  # nothing got written by the refused clients
        assert await admin.config_get("protected-mode") == {"protected-mode": "yes"}
    finally:
        await admin.aclose()


async def test_pkg_user_does_its_job(acl_redis: AclRedisServer) -> None:
    store = RedisPkgStore(acl_redis.url_for("pkg"), "atlanta.com", password_file=acl_redis.password_files["pkg"])
    try:
        await store.ping()
        now = time.time()
        await store.put_user(UserRecord("sip:alice@atlanta.com", "scrypt$x", now, "e1"))
        assert (await store.get_user("sip:alice@atlanta.com")) is not None
        assert await store.list_users() == ["sip:alice@atlanta.com"]
        await store.put_session("t1", SessionRecord("sip:alice@atlanta.com", now, now, "e1", b"m" * 32), 60)
        assert (await store.get_session("t1")) is not None
        assert await store.count_sessions(now - 10) == 1
        assert await store.incr_failures("k", 60) == 1
        await store.clear_failures("k")
        await store.set_lock("k", now + 5, 5)
        assert await store.get_lock("k") == pytest.approx(now + 5)
        await store.put_peer_params(CachedParams("biloxi.com", b"p", b"s", b"k", 1, now), 60)
        assert (await store.get_peer_params("biloxi.com")) is not None
        assert await store.delete_session("t1")
        assert await store.delete_user("sip:alice@atlanta.com")
    finally:
        await store.close()


@pytest.mark.parametrize("user", ["location", "proxy"])
async def test_location_users_do_their_job(acl_redis: AclRedisServer, user: str) -> None:
    store = RedisLocationStore(acl_redis.url_for(user), password_file=acl_redis.password_files[user])
    try:
        now = time.time()
        b = Binding("sip:bob@biloxi.com", "sip:bob@192.0.2.4", now + 60, call_id="c1", cseq=1)
        assert [x.contact for x in await store.bind(b, 4)] == ["sip:bob@192.0.2.4"]
        assert len(await store.lookup("sip:bob@biloxi.com")) == 1
        assert await store.count() == 1
        removed, left = await store.unbind("sip:bob@biloxi.com", b.key)
        assert (removed, left) == (1, [])
    finally:
        await store.close()


async def test_gateway_user_does_its_job(acl_redis: AclRedisServer) -> None:
    client = _client(acl_redis, "gateway")
    key = os.urandom(32)
    dialogs, replay, calls = (RedisDialogStore(client, sealing_key=key), RedisReplayCache(client),
                              RedisCallStore(client, sealing_key=key))
    try:
        d = DialogKey(os.urandom(32), os.urandom(8), "c@x", "sip:a@x.example", "sip:b@y.example", False, 1.5)
        await dialogs.put(d, 30, now=0)
        assert await dialogs.get(d.key_id, now=0) == d
        await dialogs.delete(d.key_id)
        assert await replay.remember(b"t1", 30, 0)
        assert await replay.remember_all([b"t2", b"t3"], 30, 0)
        assert await replay.seen([b"t9", b"t3"], 0) == b"t3"
        record = {"id": "call-1", "call_id": "inner@x", "local_aor": "sip:a@x.example"}
        await calls.put("call-1", "inner@x", record, 30)
        assert await calls.get("call-1") == record
        assert await calls.by_call_id("inner@x") == record
        await calls.delete("call-1", "inner@x")
        assert await calls.get("call-1") is None
    finally:
        await client.aclose()


#: (user, command) pairs each outside the user's key patterns or commands.
_REFUSED = [
    ("pkg", ("SET", "sipsec:loc:{sip:bob@biloxi.com}:b:x", "planted")),
    ("pkg", ("SET", "sipsec:envelope:dlg:0011223344556677", "planted")),
    ("pkg", ("KEYS", "*")),
    ("pkg", ("FLUSHALL",)),
    ("pkg", ("EVAL", "return 1", "0")),
    ("location", ("HSET", "sipsec:pkg:atlanta.com:users", "sip:eve@atlanta.com", "{}")),
    ("location", ("GET", "sipsec:gateway:call:1")),
    ("location", ("CONFIG", "GET", "*")),
    ("location", ("SCRIPT", "FLUSH")),
    ("location", ("EVAL", "return redis.call('SET', KEYS[1], 'x')", "1", "sipsec:pkg:atlanta.com:lock:x")),
    ("proxy", ("SET", "sipsec:pkg:atlanta.com:session:t", "planted")),
    ("proxy", ("ACL", "LIST")),
    ("gateway", ("SET", "sipsec:pkg:atlanta.com:session:t", "planted")),
    ("gateway", ("GET", "sipsec:loc:{sip:bob@biloxi.com}:idx")),
    ("gateway", ("SCAN", "0")),
    ("gateway", ("HGETALL", "sipsec:gateway:call:1")),
    ("gateway", ("OBJECT", "ENCODING", "sipsec:gateway:call:1")),
    ("gateway", ("SUBSCRIBE", "x")),
    ("gateway", ("MONITOR",)),
]


@pytest.mark.parametrize(("user", "command"), _REFUSED, ids=[f"{u}-{c[0]}-{i}" for i, (u, c) in enumerate(_REFUSED)])
async def test_users_are_refused_outside_their_patterns(acl_redis: AclRedisServer, user: str,
                                                        command: tuple[str, ...]) -> None:
    client = _client(acl_redis, user)
    try:
        with pytest.raises(redis.exceptions.NoPermissionError):
            await client.execute_command(*command)
    finally:
        await client.aclose()
    admin = acl_redis.admin_client()
    try:
        assert await admin.dbsize() == 0
    finally:
        await admin.aclose()


def test_acl_file_holds_digests_not_passwords() -> None:
    passwords = {name: os.urandom(16).hex() for name in REDIS_USERS}
    text = acl_file(passwords)
    assert text.splitlines()[0].startswith("user default off")
    for name, password in passwords.items():
        assert password not in text
        assert f"user {name} on #" in text
    with pytest.raises(ValueError, match="shorter than 16"):
        acl_file({"pkg": "short"})


def test_open_redis_refuses_a_password_in_the_url(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="password file"):
        open_redis("redis://pkg:secret@127.0.0.1:6379/0")
    with pytest.raises(ConfigError, match="needs a user"):
        path = os.path.join(tmp_path, "pw")
        with open(path, "w") as f:
            f.write("0123456789abcdef0123\n")
        open_redis("redis://127.0.0.1:6379/0", password_file=path)
    with pytest.raises(ConfigError, match="cannot read"):
        open_redis("redis://pkg@127.0.0.1:6379/0", password_file=os.path.join(tmp_path, "missing"))
    with pytest.raises(ConfigError, match="rediss"):
        open_redis("redis://pkg@127.0.0.1:6379/0", ca_file="/etc/ssl/certs/ca-certificates.crt")
    assert redis_username("rediss://gateway@redis:6379/0") == "gateway"


async def test_rediss_verifies_the_server_against_the_ca_file(tmp_path: Path) -> None:
    """TLS to Redis (``rediss://``): the server is verified against ``ca_file``; a server whose
    certificate another CA signed is refused, as is plaintext to the TLS port."""
    pki, other = make_pki("redis test CA"), make_pki("another CA")
    paths = pki.write(tmp_path)
    (tmp_path / "other").mkdir()
    other_ca = other.write(tmp_path / "other")["ca"]
    password, admin = generate_password(), generate_password()
    acl = tmp_path / "users.acl"
    acl.write_text(acl_file({"gateway": password}, extra={"admin": f"on >{admin} ~* &* +@all"}))
    pw_file = tmp_path / "gateway.password"
    pw_file.write_text(password + "\n")
    tls_port = free_port()
    server = RedisServer(("--tls-port", str(tls_port), "--tls-cert-file", paths["server_cert"],
                          "--tls-key-file", paths["server_key"], "--tls-ca-cert-file", paths["ca"],
                          "--tls-auth-clients", "no", "--aclfile", str(acl), "--protected-mode", "yes"),
                         auth=f"AUTH admin {admin}\r\n".encode())
    try:
        good = open_redis(f"rediss://gateway@localhost:{tls_port}/0", password_file=str(pw_file), ca_file=paths["ca"])
        try:
            assert await good.set("sipsec:gateway:call:x", b"1")
        finally:
            await good.aclose()
        wrong_ca = open_redis(f"rediss://gateway@localhost:{tls_port}/0", password_file=str(pw_file),
                              ca_file=other_ca, socket_connect_timeout=5)
        try:
            with pytest.raises(redis.exceptions.ConnectionError, match="(?i)certificate"):
                await wrong_ca.ping()
        finally:
            await wrong_ca.aclose()
        plain = open_redis(f"redis://gateway@localhost:{tls_port}/0", password_file=str(pw_file),
                           socket_connect_timeout=2, socket_timeout=2)
        try:
            with pytest.raises((redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)):
                await plain.ping()
        finally:
            await plain.aclose()
    finally:
        server.stop()
