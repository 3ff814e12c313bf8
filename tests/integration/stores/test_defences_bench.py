"""bench/defences.py, run small: every figure it reports is present, progress on stderr."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def test_defences_bench_json_shape() -> None:
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "defences.py"), "--json", "--n", "40"],
                          capture_output=True, text=True, timeout=180, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    figures = json.loads(proc.stdout)  # stdout is exactly the JSON object
    assert "[defences] record sealing" in proc.stderr and "redis-server" in proc.stderr
    assert set(figures["record_sealing"]) == {"seal_unseal_1500b_us", "unseal_1500b_us", "blind_call_id_us"}
    assert set(figures["pkg_session_mac"]) == {"seal_us", "verify_us"}
    assert set(figures["redis"]) == {
        "replay_redis_seen_us", "replay_redis_message_us", "replay_local_message_us", "get_as_acl_user_us",
        "get_unauthenticated_us", "connect_ping_unauthenticated_us", "connect_ping_acl_us"}
    for group in ("record_sealing", "pkg_session_mac", "redis"):
        assert all(v > 0 for v in figures[group].values()), figures[group]
    # a Redis round trip is always more than a dictionary lookup
    assert figures["redis"]["replay_redis_message_us"] > figures["redis"]["replay_local_message_us"]
    assert figures["open_first_invite_cpu_ms"] > 0
