"""``sipsec up``'s read-only ``inspect`` Redis user: it names and counts keys, never reads or writes one."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
import redis.asyncio as aioredis
import redis.exceptions
from sipsec_cli.up import DOMAINS, Supervisor, UpOptions
from sipsec_cli.up.supervise import INSPECT_USER


async def test_inspect_counts_keys_and_reads_no_value(tmp_path: Path) -> None:
    sup = Supervisor(UpOptions(state_dir=str(tmp_path), grace_s=5))
    try:
        sup.start_redis()
        d = DOMAINS[0]
        password_file = tmp_path / d.name / "redis" / f"{INSPECT_USER}.password"
        assert stat.S_IMODE(password_file.stat().st_mode) == 0o600
        password = password_file.read_text().strip()
        assert password not in (tmp_path / d.name / "redis" / "users.acl").read_text()  # its digest only
        _, _, port = sup.redis[d.name]
        client = aioredis.Redis(host=d.host, port=port, username=INSPECT_USER, password=password)
        try:
            assert await client.ping()
            assert await client.hlen(f"sipsec:pkg:{d.name}:users") == 0
            cursor, keys = await client.scan(0, match="sipsec:*")
            assert keys == []
            for command in (("GET", "sipsec:pkg:x"), ("SET", "sipsec:pkg:x", "1"), ("HGETALL", "sipsec:pkg:x"),
                            ("FLUSHALL",), ("CONFIG", "GET", "dir")):
                with pytest.raises(redis.exceptions.NoPermissionError):
                    await client.execute_command(*command)
        finally:
            await client.aclose()
    finally:
        sup.stop()
