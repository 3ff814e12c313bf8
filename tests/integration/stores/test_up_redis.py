"""``sipsec up`` starts each domain's redis-server as a deployment runs it: ACL users with
generated passwords in 0600 files, the default user off, protected mode on."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
import redis.asyncio as aioredis
import redis.exceptions
from sipsec.stores.access import REDIS_USERS, open_redis, read_sealing_key
from sipsec_cli.up import DOMAINS, Supervisor, UpOptions
from sipsec_cli.up.environment import redis_env, sealing_key_file


async def test_up_redis_has_acl_users_and_refuses_anonymous_clients(tmp_path: Path) -> None:
    sup = Supervisor(UpOptions(state_dir=str(tmp_path), grace_s=5))
    try:
        sup.start_redis()
        for d in DOMAINS:
            files = sup.topo.redis_password_files[d.name]
            assert set(files) == set(REDIS_USERS)
            acl = tmp_path / d.name / "redis" / "users.acl"
            for path in (*files.values(), acl, sealing_key_file(sup.topo, d)):
                assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
            for password_file in files.values():
                assert password_file.read_text().strip() not in acl.read_text()  # digests only
            assert len(read_sealing_key(sealing_key_file(sup.topo, d), "sealing key")) == 32  # 64 hex digits

            _, _, port = sup.redis[d.name]
            anonymous = aioredis.Redis(host=d.host, port=port)
            try:
                with pytest.raises(redis.exceptions.AuthenticationError):
                    await anonymous.ping()
            finally:
                await anonymous.aclose()
            for user in REDIS_USERS:
                env = redis_env(sup.topo, d, user)
                client = open_redis(env["SIPSEC_REDIS_URL"], password_file=env[f"SIPSEC_{user.upper()}_REDIS_PASSWORD_FILE"])
                try:
                    assert await client.ping()
                    with pytest.raises(redis.exceptions.NoPermissionError):
                        await client.execute_command("CONFIG", "GET", "protected-mode")
                finally:
                    await client.aclose()
    finally:
        sup.stop()
