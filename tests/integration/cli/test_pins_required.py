"""Pins are required outside the insecure development mode, as real processes.

Parameters fetched from a PKG without a pinned fingerprint authenticate nothing (whoever
answers on the PKG's address could hand out their own), so ``sipsec-gateway serve`` without
``SIPSEC_GATEWAY_PKG_FINGERPRINT``, ``sipsec-proxy serve`` with ``SIPSEC_PROXY_PKG_TARGET`` but
without ``SIPSEC_PROXY_PKG_FINGERPRINT``, and ``sipsec-pkg serve`` with a federation peer
without a fingerprint exit 1 with one line naming the setting; with ``SIPSEC_INSECURE_DEV=1``
the gateway and the proxy start and log an ``INSECURE:`` warning naming it.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from sipsec_pkg.node import PkgNode

from tests.conftest import free_port
from tests.integration.gateway.harness import material, start_pkg
from tests.sipp import free_port_on

BIN = Path(sys.executable).parent


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIPSEC_")}
    env.update({"SIPSEC_LOG_LEVEL": "WARNING", **extra})
    return env


def _refused(argv: list[str], env: dict[str, str]) -> tuple[int, str]:
    proc = subprocess.run([str(BIN / argv[0]), *argv[1:]], env=env, capture_output=True, text=True,
                          timeout=60, stdin=subprocess.DEVNULL)
    return proc.returncode, proc.stderr


def _gateway_env(tmp_path: Path, pkg_port: int, **extra: str) -> tuple[dict[str, str], int]:
    http_port = free_port()
    return _env(**{
        "SIPSEC_GATEWAY_DOMAIN": "atlanta.com",
        "SIPSEC_GATEWAY_SIP_LISTEN": f"127.0.0.2:{free_port_on('127.0.0.2')}",
        "SIPSEC_GATEWAY_PROXY": "127.0.0.2:5060",
        "SIPSEC_GATEWAY_PKG": f"127.0.0.1:{pkg_port}", "SIPSEC_GATEWAY_PKG_PLAINTEXT": "1",
        "SIPSEC_GATEWAY_HTTP_LISTEN": f"127.0.0.1:{http_port}", "SIPSEC_GATEWAY_METRICS_PORT": "-1",
        "SIPSEC_GATEWAY_STATE_DIR": str(tmp_path / "state"), "SIPSEC_GATEWAY_DRAIN_SECONDS": "0.2",
        **extra}), http_port


def _proxy_env(pkg_port: int, **extra: str) -> dict[str, str]:
    return _env(**{
        "SIPSEC_PROXY_DOMAINS": "atlanta.com", "SIPSEC_PROXY_LISTEN": f"127.0.0.2:{free_port_on('127.0.0.2')}",
        "SIPSEC_PROXY_METRICS_PORT": "-1", "SIPSEC_PROXY_DRAIN_SECONDS": "0",
        "SIPSEC_PROXY_PKG_TARGET": f"127.0.0.1:{pkg_port}", "SIPSEC_PROXY_PKG_PLAINTEXT": "1", **extra})


@pytest.fixture
async def pkg() -> AsyncIterator[PkgNode]:
    node = await start_pkg("atlanta.com", free_port(), {})
    yield node
    await node.stop(0)


async def _stop(proc: subprocess.Popen[str]) -> str:
    proc.send_signal(signal.SIGTERM)
    code = await asyncio.get_running_loop().run_in_executor(None, proc.wait, 20)
    _, err = proc.communicate()
    assert code == 0, err
    return err


async def test_gateway_without_pin_refuses_to_start_and_starts_in_dev_mode(tmp_path: Path, pkg: PkgNode) -> None:
    env, http_port = _gateway_env(tmp_path, pkg.port)
    code, err = await asyncio.to_thread(_refused, ["sipsec-gateway", "serve"], env)
    assert code == 1 and "SIPSEC_GATEWAY_PKG_FINGERPRINT is required" in err, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err

    env, http_port = _gateway_env(tmp_path, pkg.port, SIPSEC_INSECURE_DEV="1")
    proc = subprocess.Popen([str(BIN / "sipsec-gateway"), "serve"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{http_port}", timeout=5) as api:
            for _ in range(400):
                assert proc.poll() is None, proc.communicate()[1]
                try:
                    if (await api.get("/healthz")).status_code == 200:
                        break
                except httpx.TransportError:
                    await asyncio.sleep(0.05)
            else:
                pytest.fail("the gateway did not answer /healthz")
        err = await _stop(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert "INSECURE: SIPSEC_GATEWAY_PKG_FINGERPRINT is empty" in err, err


async def test_gateway_with_its_pin_starts_without_warning(tmp_path: Path, pkg: PkgNode) -> None:
    env, http_port = _gateway_env(tmp_path, pkg.port,
                                  SIPSEC_GATEWAY_PKG_FINGERPRINT=material("atlanta.com").signed.fingerprint)
    proc = subprocess.Popen([str(BIN / "sipsec-gateway"), "serve"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{http_port}", timeout=5) as api:
            for _ in range(400):
                assert proc.poll() is None, proc.communicate()[1]
                try:
                    if (await api.get("/healthz")).status_code == 200:
                        break
                except httpx.TransportError:
                    await asyncio.sleep(0.05)
        err = await _stop(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert "INSECURE" not in err, err


async def test_proxy_with_pkg_target_and_no_pin_refuses_to_start_and_starts_in_dev_mode(pkg: PkgNode) -> None:
    code, err = await asyncio.to_thread(_refused, ["sipsec-proxy", "serve"], _proxy_env(pkg.port))
    assert code == 1 and "SIPSEC_PROXY_PKG_FINGERPRINT is required" in err, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err

    proc = subprocess.Popen([str(BIN / "sipsec-proxy"), "serve"], env=_proxy_env(pkg.port, SIPSEC_INSECURE_DEV="1"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
    try:
        assert proc.stdout is not None
        line = await asyncio.get_running_loop().run_in_executor(None, proc.stdout.readline)
        assert line.startswith("sipsec-proxy listening on"), (line, proc.poll())
        err = await _stop(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert "INSECURE: SIPSEC_PROXY_PKG_FINGERPRINT is empty" in err, err


def test_proxy_without_pkg_target_needs_no_pin() -> None:
    """No PKG, no parameters to authenticate: the proxy of plain phones (digest) needs no pin."""
    from sipsec_proxy.config import ProxyConfig

    assert ProxyConfig.from_env({}).check_trust() == []


def test_pkg_refuses_a_federation_peer_without_fingerprint(tmp_path: Path) -> None:
    env = _env(SIPSEC_PKG_PEERS="biloxi.com,127.0.0.1:1,", SIPSEC_PKG_DATA_DIR=str(tmp_path),
               SIPSEC_PKG_PLAINTEXT="1")
    code, err = _refused(["sipsec-pkg", "serve"], env)
    assert code == 1 and "SIPSEC_PKG_PEERS: peer biloxi.com has no pinned fingerprint" in err, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
