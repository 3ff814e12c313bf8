"""The ``sipsec-pkg`` console script as a real process: init, users in Redis, serve, SIGTERM drain."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sipsec.ibc import Purpose
from sipsec.pkgclient import PkgClient, PkgRpcError

from tests.conftest import free_port

EXE = str(Path(sys.executable).parent / "sipsec-pkg")


@pytest.mark.e2e
@pytest.mark.slow
async def test_serve_process_with_redis(tmp_path, redis_url):
    from sipsec_pkg.material import generate_kek

    env = {**os.environ, "SIPSEC_PKG_KEK": generate_kek(), "SIPSEC_PKG_DATA_DIR": str(tmp_path),
           "SIPSEC_PKG_STORE": "redis", "SIPSEC_REDIS_URL": redis_url, "SIPSEC_PKG_SCRYPT_N": "16",
           "SIPSEC_PKG_SCRYPT_R": "1", "SIPSEC_PKG_PLAINTEXT": "1", "SIPSEC_PKG_METRICS_PORT": "-1"}
    run = lambda *a, **kw: subprocess.run([EXE, *a], env=env, capture_output=True, text=True, timeout=60, **kw)  # noqa: E731
    assert run("init", "--domain", "atlanta.com").returncode == 0
    assert run("user", "add", "sip:alice@atlanta.com", "--password-stdin", input="pw\n").returncode == 0
    assert run("user", "list").stdout.split() == ["sip:alice@atlanta.com"]
    port = free_port()
    proc = subprocess.Popen([EXE, "serve", "--listen", f"127.0.0.1:{port}"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        client = PkgClient(f"127.0.0.1:{port}", plaintext=True, timeout_s=2)
        deadline = time.monotonic() + 30
        while True:
            try:
                await client.login("sip:alice@atlanta.com", "pw")
                break
            except Exception:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise
                await asyncio.sleep(0.2)
        assert (await client.fetch_key(Purpose.SIG)).private_key
        # a password change with the CLI revokes the running server's sessions (MAC under the KEK)
        assert run("user", "add", "sip:alice@atlanta.com", "--password-stdin", input="new pw\n").returncode == 0
        with pytest.raises(PkgRpcError) as err:
            await client.fetch_key(Purpose.SIG)
        assert err.value.reason == "session_revoked"
        await client.login("sip:alice@atlanta.com", "new pw")
        await client.close()
        assert (tmp_path / "audit.jsonl").read_text().count('"event":"extract"') == 1
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
        _, err = proc.communicate(timeout=5)
        assert "draining" in err and "listening on port" in err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
