"""The proxy/registrar with real sipp processes over loopback (RFC 3665 flows)."""

from __future__ import annotations

import asyncio
import os
import random
import re
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sipsec_location.config import LocationConfig
from sipsec_location.server import create_location_server
from sipsec_proxy.config import ProxyConfig
from sipsec_proxy.server import ProxyServer, create_proxy_server

from tests.e2e.proxy import scenarios
from tests.sipp import Sipp, free_port_on

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

USERS = "alice:alice-secret,bob:bob-secret"


def _proxy_config(**kw: object) -> ProxyConfig:
    base: dict[str, object] = dict(domains="atlanta.com", listen="127.0.0.1:0", metrics_port=-1,
                                   users=USERS, digest_algorithms="MD5", rate_limit=0, drain_seconds=0)
    base.update(kw)
    return ProxyConfig(**base)  # type: ignore[arg-type]


@pytest.fixture
async def proxy() -> AsyncIterator[ProxyServer]:
    server = create_proxy_server(_proxy_config())
    await server.start()
    try:
        yield server
    finally:
        await server.stop(0)


async def _register(tmp_path: Path, proxy_addr: tuple[str, int], user: str, domain: str,
                    contact: str, local_host: str = "127.0.0.1") -> None:
    xml = scenarios.write(tmp_path, f"register-{user}.xml", scenarios.register())
    reg = Sipp(xml, remote=proxy_addr, local_host=local_host, service=user, timeout_s=15, extra_args=[
        "-key", "domain", domain, "-key", "contact", contact, "-au", user, "-ap", f"{user}-secret",
        "-auth_uri", domain])
    reg.start()
    (await reg.wait_async()).assert_ok(calls=1)


def _uac(xml: str, proxy_addr: tuple[str, int], callee: str, domain: str, *, calls: int = 1,
         local_host: str = "127.0.0.1", caller: str = "alice@atlanta.com") -> Sipp:
    return Sipp(xml, remote=proxy_addr, local_host=local_host, service=callee, calls=calls,
                timeout_s=20, extra_args=["-key", "domain", domain, "-key", "caller", caller])


async def test_register_with_digest_then_basic_call(proxy: ProxyServer, tmp_path: Path) -> None:
    uas = Sipp(scenarios.write(tmp_path, "uas.xml", scenarios.uas_answer()), timeout_s=20)
    uas.start()
    await _register(tmp_path, proxy.udp_address, "bob", "atlanta.com", f"sip:bob@127.0.0.1:{uas.address[1]}")
    assert proxy.metrics.registrations.labels("ok")._value.get() == 1
    assert proxy.metrics.registrations.labels("challenged")._value.get() == 1
    uac = _uac(scenarios.write(tmp_path, "uac.xml", scenarios.uac_call()), proxy.udp_address, "bob", "atlanta.com")
    uac.start()
    result = await uac.wait_async()
    result.assert_ok(calls=1)
    (await uas.wait_async()).assert_ok(calls=1)
    # the proxy Record-Routed, so the ACK and the BYE went through it (RFC 3665 §3.2 F6..F11)
    log = result.log("messages.log")
    # (the proxy's Record-Route URI may carry its ;sps= marks of the dialog's hops after ;lr)
    assert re.search(rf"Record-Route: <sip:127\.0\.0\.1:{proxy.udp_address[1]};lr(;sps=[\w.-]+)?>", log)
    m = proxy.metrics
    assert m.requests.labels("INVITE", "2xx")._value.get() == 1
    assert m.requests.labels("BYE", "2xx")._value.get() == 1
    assert m.forwarded.labels("ACK")._value.get() == 1


async def test_unknown_callee_is_404(proxy: ProxyServer, tmp_path: Path) -> None:
    uac = _uac(scenarios.write(tmp_path, "uac404.xml", scenarios.uac_reject(404)), proxy.udp_address,
               "nobody", "atlanta.com")
    uac.start()
    (await uac.wait_async()).assert_ok(calls=1)
    assert proxy.metrics.rejections.labels("not-found")._value.get() == 1


async def test_max_forwards_exhausted_is_483(proxy: ProxyServer, tmp_path: Path) -> None:
    uac = _uac(scenarios.write(tmp_path, "uac483.xml", scenarios.uac_reject(483, max_forwards=0)),
               proxy.udp_address, "bob", "atlanta.com")
    uac.start()
    (await uac.wait_async()).assert_ok(calls=1)
    assert proxy.metrics.rejections.labels("too-many-hops")._value.get() == 1


async def test_cancel_before_answer(proxy: ProxyServer, tmp_path: Path) -> None:
    uas = Sipp(scenarios.write(tmp_path, "uas_cancel.xml", scenarios.uas_cancel()), timeout_s=20)
    uas.start()
    await _register(tmp_path, proxy.udp_address, "bob", "atlanta.com", f"sip:bob@127.0.0.1:{uas.address[1]}")
    uac = _uac(scenarios.write(tmp_path, "uac_cancel.xml", scenarios.uac_cancel()), proxy.udp_address,
               "bob", "atlanta.com")
    uac.start()
    (await uac.wait_async()).assert_ok(calls=1)
    (await uas.wait_async()).assert_ok(calls=1)
    assert proxy.metrics.requests.labels("INVITE", "4xx")._value.get() == 1
    assert proxy.metrics.requests.labels("CANCEL", "2xx")._value.get() == 1


async def test_forking_to_two_contacts(tmp_path: Path) -> None:
    """Two registered contacts of bob: both ring, the first 200 wins, the other fork is cancelled."""
    server = create_proxy_server(_proxy_config(auth="none"))
    await server.start()
    try:
        answer = Sipp(scenarios.write(tmp_path, "uas.xml", scenarios.uas_answer()), timeout_s=20)
        ring = Sipp(scenarios.write(tmp_path, "uas_c.xml", scenarios.uas_cancel()), timeout_s=20)
        answer.start()
        ring.start()
        from sipsec_proxy.locator import BindRequest
        await server.locator.bind("sip:bob@atlanta.com", BindRequest(
            f"sip:bob@127.0.0.1:{answer.address[1]}", 600, 500), "c1", 1, "")
        await server.locator.bind("sip:bob@atlanta.com", BindRequest(
            f"sip:bob@127.0.0.1:{ring.address[1]}", 600, 900), "c2", 1, "")
        uac = _uac(scenarios.write(tmp_path, "uac.xml", scenarios.uac_call()), server.udp_address,
                   "bob", "atlanta.com")
        uac.start()
        (await uac.wait_async()).assert_ok(calls=1)
        (await answer.wait_async()).assert_ok(calls=1)
        (await ring.wait_async()).assert_ok(calls=1)
    finally:
        await server.stop(0)


async def test_two_domains_each_with_proxy_and_location(tmp_path: Path) -> None:
    """alice@atlanta.com (127.0.0.2) calls bob@biloxi.com (127.0.0.3): uac -> atlanta -> biloxi -> uas."""
    locs = []
    for _ in range(2):
        loc, port = create_location_server(LocationConfig(listen="127.0.0.1:0", metrics_port=-1))
        await loc.start()
        locs.append((loc, port))
    a_port, b_port = free_port_on("127.0.0.2"), free_port_on("127.0.0.3")
    atlanta = create_proxy_server(_proxy_config(
        domains="atlanta.com", listen=f"127.0.0.2:{a_port}", location=f"127.0.0.1:{locs[0][1]}",
        routes=f"biloxi.com=127.0.0.3:{b_port}"))
    biloxi = create_proxy_server(_proxy_config(
        domains="biloxi.com", listen=f"127.0.0.3:{b_port}", location=f"127.0.0.1:{locs[1][1]}",
        routes=f"atlanta.com=127.0.0.2:{a_port}"))
    await atlanta.start()
    await biloxi.start()
    try:
        uas = Sipp(scenarios.write(tmp_path, "uas.xml", scenarios.uas_answer()), local_host="127.0.0.3",
                   timeout_s=20)
        uas.start()
        await _register(tmp_path, biloxi.udp_address, "bob", "biloxi.com",
                        f"sip:bob@127.0.0.3:{uas.address[1]}", local_host="127.0.0.3")
        uac = _uac(scenarios.write(tmp_path, "uac.xml", scenarios.uac_call()), atlanta.udp_address,
                   "bob", "biloxi.com", local_host="127.0.0.2")
        uac.start()
        result = await uac.wait_async()
        result.assert_ok(calls=1)
        (await uas.wait_async()).assert_ok(calls=1)
        log = result.log("messages.log")  # both proxies Record-Routed (RFC 3665 §3.2 F5)
        for host, port in (("127.0.0.2", a_port), ("127.0.0.3", b_port)):
            assert re.search(rf"<sip:{re.escape(host)}:{port};lr(;sps=[\w.-]+)?>", log)
        assert atlanta.metrics.requests.labels("INVITE", "2xx")._value.get() == 1
        assert biloxi.metrics.requests.labels("INVITE", "2xx")._value.get() == 1
        assert locs[1][0].metrics.rpc.handled.labels("sipsec.location.v1.LocationService", "Bind", "OK")._value.get() == 1
    finally:
        await atlanta.stop(0)
        await biloxi.stop(0)
        for loc, _ in locs:
            await loc.stop(0)


def _garbage(rng: random.Random, port: int) -> bytes:
    kinds = [
        lambda: rng.randbytes(rng.randint(1, 1400)),
        lambda: b"INVITE sip:bob@atlanta.com SIP/2.0\r\nVia: garbage\r\n\r\n",
        lambda: b"INVITE sip:bob@atlanta.com SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bKx\r\n"
                b"CSeq: x INVITE\r\n\r\n",
        lambda: b"REGISTER sip:atlanta.com SIP/7.0\r\n\r\n",
        lambda: b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1:1;branch=z9hG4bKnothere\r\n"
                b"From: <sip:a@b>;tag=1\r\nTo: <sip:b@c>\r\nCall-ID: x\r\nCSeq: 1 INVITE\r\n\r\n",
        lambda: b"OPTIONS sip:atlanta.com SIP/2.0\r\n" + b"X: " + b"a" * 70000 + b"\r\n\r\n",
        lambda: b"\x00\xff" * 50,
        lambda: (f"BYE sip:x@127.0.0.1:{port} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bK1\r\n"
                 "Max-Forwards: abc\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:b@c>\r\nCall-ID: y\r\n"
                 "CSeq: 1 BYE\r\n\r\n").encode(),
    ]
    return rng.choice(kinds)()


async def test_malformed_burst_then_call_succeeds(proxy: ProxyServer, tmp_path: Path) -> None:
    uas = Sipp(scenarios.write(tmp_path, "uas.xml", scenarios.uas_answer()), timeout_s=20)
    uas.start()
    await _register(tmp_path, proxy.udp_address, "bob", "atlanta.com", f"sip:bob@127.0.0.1:{uas.address[1]}")
    rng = random.Random(3665)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for i in range(2000):
            try:
                s.sendto(_garbage(rng, proxy.udp_address[1]), proxy.udp_address)
            except OSError:
                pass  # datagram too long for the socket: fine
            if i % 200 == 0:
                await asyncio.sleep(0.01)
    await asyncio.sleep(0.3)
    assert proxy.core is not None and proxy.core.transaction_count < 50
    uac = _uac(scenarios.write(tmp_path, "uac.xml", scenarios.uac_call()), proxy.udp_address, "bob", "atlanta.com")
    uac.start()
    (await uac.wait_async()).assert_ok(calls=1)
    (await uas.wait_async()).assert_ok(calls=1)
    assert proxy.metrics.rejections.labels("stray-response")._value.get() > 0


def test_bindings_survive_proxy_restart_with_redis(redis_url: str, tmp_path: Path) -> None:
    """sipsec-proxy processes with SIPSEC_PROXY_LOCATION=redis: register, restart, call."""
    exe = os.path.join(os.path.dirname(sys.executable), "sipsec-proxy")
    port = free_port_on("127.0.0.1")
    env = {**os.environ, "SIPSEC_PROXY_DOMAINS": "atlanta.com", "SIPSEC_PROXY_LISTEN": f"127.0.0.1:{port}",
           "SIPSEC_PROXY_LOCATION": "redis", "SIPSEC_REDIS_URL": redis_url, "SIPSEC_PROXY_USERS": USERS,
           "SIPSEC_PROXY_DIGEST_ALGORITHMS": "MD5", "SIPSEC_PROXY_METRICS_PORT": "-1",
           "SIPSEC_PROXY_DRAIN_SECONDS": "0"}

    def start() -> subprocess.Popen[str]:
        proc = subprocess.Popen([exe, "serve"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert proc.stdout is not None
        assert "listening" in proc.stdout.readline()
        return proc

    uas = Sipp(scenarios.write(tmp_path, "uas.xml", scenarios.uas_answer()), timeout_s=25)
    uas.start()
    first = start()
    try:
        asyncio.run(_register(tmp_path, ("127.0.0.1", port), "bob", "atlanta.com",
                              f"sip:bob@127.0.0.1:{uas.address[1]}"))
    finally:
        first.send_signal(signal.SIGTERM)
        assert first.wait(10) == 0
    second = start()
    try:
        uac = _uac(scenarios.write(tmp_path, "uac.xml", scenarios.uac_call()), ("127.0.0.1", port), "bob",
                   "atlanta.com")
        uac.start()
        uac.wait().assert_ok(calls=1)
        uas.wait().assert_ok(calls=1)
    finally:
        second.send_signal(signal.SIGTERM)
        assert second.wait(10) == 0


def test_console_script_help_and_workers_share_the_port(tmp_path: Path) -> None:
    """sipsec-proxy serve --help; then 2 workers on one UDP port (SO_REUSEPORT) proxy 60 sipp calls."""
    exe = os.path.join(os.path.dirname(sys.executable), "sipsec-proxy")
    out = subprocess.run([exe, "serve", "--help"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0 and "SIPSEC_PROXY_DOMAINS" in out.stdout
    port = free_port_on("127.0.0.1")
    env = {**os.environ, "SIPSEC_PROXY_DOMAINS": "bench.test", "SIPSEC_PROXY_LISTEN": f"127.0.0.1:{port}",
           "SIPSEC_PROXY_AUTH": "none", "SIPSEC_PROXY_METRICS_PORT": "-1", "SIPSEC_PROXY_WORKERS": "2",
           "SIPSEC_PROXY_DRAIN_SECONDS": "0", "SIPSEC_LOG_LEVEL": "ERROR",
           # sipp's uac names the uas by address (no registration): a configured peer host
           "SIPSEC_PROXY_PEERS": "127.0.0.1"}
    proc = subprocess.Popen([exe, "serve"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        assert "(2 workers)" in proc.stdout.readline()
        uas = Sipp("uas", calls=60, timeout_s=20, trace_msg=False)
        uas.start()
        uac = Sipp("uac", remote=uas.address, calls=60, rate=60, timeout_s=20, trace_msg=False,
                   extra_args=["-rsa", f"127.0.0.1:{port}", "-d", "0"])
        uac.start()
        uac.wait().assert_ok(calls=60)
        uas.wait().assert_ok(calls=60)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
