"""Secured calls through a real Kamailio between the two domains' proxies: unmodified, and doing
NAT Contact aliasing (nathelper ``add_contact_alias``) on every request and reply.

Each domain's proxy routes the other domain to the Kamailio (``routes``) and trusts it as a
next hop (``peers``); the Kamailio relays a dialog-creating request to the proxy of its
Request-URI's domain, record-routes INVITEs and loose-routes the rest, so every message of
the call — INVITE, 180, 200, ACK, BYE either way, its 200 — crosses it.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from sipsec.sip import Request, parse_message
from sipsec_gateway.calls import CallState

from tests.integration.gateway.harness import TwoDomains, call, login, wait_for
from tests.sipp import free_port_on

pytestmark = [pytest.mark.e2e]

HERE = Path(__file__).parent
HOST = "127.0.0.4"
ALICE = "sip:alice@atlanta.com"
BOB = "sip:bob@biloxi.com"
KAMAILIO = shutil.which("kamailio") or "/usr/sbin/kamailio"


@asynccontextmanager
async def kamailio(tmp: Path, port: int, atlanta: str, biloxi: str, *, alias: bool) -> AsyncIterator[Path]:
    """A Kamailio on ``HOST:port`` with tests/e2e/kamailio/middle.cfg; yields its log file."""
    assert os.access(KAMAILIO, os.X_OK), "kamailio is not installed (scripts/install-system-deps.sh)"
    cfg = tmp / "middle.cfg"
    cfg.write_text((HERE / "middle.cfg").read_text().replace("@ATLANTA@", atlanta).replace("@BILOXI@", biloxi))
    log = tmp / "kamailio.log"
    args = [KAMAILIO, "-f", str(cfg), "-DD", "-E", "-n", "1", "-l", f"udp:{HOST}:{port}",
            "-m", "64", "-M", "8", "-P", str(tmp / "kamailio.pid"), "-Y", str(tmp)]
    if alias:
        args += ["-A", "WITH_ALIAS"]
    with log.open("wb") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        while b"Listening on" not in log.read_bytes():  # printed once the sockets are bound
            assert proc.poll() is None, f"kamailio exited ({proc.returncode}): {log.read_text()[-2000:]}"
            assert loop.time() < deadline, f"kamailio did not start: {log.read_text()[-2000:]}"
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)  # its worker processes fork after that line
        assert proc.poll() is None, f"kamailio exited ({proc.returncode}): {log.read_text()[-2000:]}"
        yield log
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _crossed(net: TwoDomains, port: int) -> list[str]:
    """Start lines of what each proxy received from the Kamailio (its Via on top)."""
    lines = []
    for d in (net.atlanta, net.biloxi):
        for data in d.tap.seen:
            message = parse_message(data)
            via = message.top_via
            if isinstance(message, Request) and via is not None and (via.host, via.port) == (HOST, port):
                lines.append(data.split(b"\r\n", 1)[0].decode())
    return lines


@pytest.mark.parametrize("alias", [False, True], ids=["unmodified", "add_contact_alias"])
async def test_secured_calls_through_a_kamailio_middle_proxy(tmp_path: Path, alias: bool) -> None:
    port = free_port_on(HOST)
    hop = f"{HOST}:{port}"
    routes = {"atlanta.com": {"routes": f"biloxi.com={hop}", "peers": hop},
              "biloxi.com": {"routes": f"atlanta.com={hop}", "peers": hop}}
    async with TwoDomains(proxy_overrides=routes) as net:
        addresses = {d.name: f"{d.host}:{d.proxy_port}" for d in (net.atlanta, net.biloxi)}
        async with kamailio(tmp_path, port, addresses["atlanta.com"], addresses["biloxi.com"], alias=alias) as log:
            await login(net.atlanta, "alice", auto_answer=True)
            await login(net.biloxi, "bob", auto_answer=True)
            for d in (net.atlanta, net.biloxi):
                d.tap.clear()
            # alice calls bob and hangs up; bob calls alice and alice hangs up; alice calls bob, bob hangs up
            plan = [(net.atlanta, ALICE, BOB, net.atlanta), (net.biloxi, BOB, ALICE, net.atlanta),
                    (net.atlanta, ALICE, BOB, net.biloxi)]
            for caller, frm, to, hangs_up in plan:
                placed = await call(caller, frm, to)
                assert placed["state"] == "established" and placed["secure"], (placed, log.read_text()[-3000:])
                if hangs_up is caller:
                    ours = caller.gateway.find_call(placed["id"])
                    call_id = placed["id"]
                else:
                    ours = next(c for c in hangs_up.gateway.secure.calls.values()
                                if c.direction == "incoming" and c.state is CallState.ESTABLISHED)
                    call_id = ours.id
                hung = await hangs_up.client.delete(f"/v1/calls/{call_id}")
                assert hung.status_code == 200 and hung.json()["sip_status"] == 200, hung.text
                other = caller if hangs_up is not caller else (net.biloxi if caller is net.atlanta else net.atlanta)
                await wait_for(lambda o=other: all(c.state is CallState.ENDED for c in o.gateway.secure.calls.values()))
            crossed = _crossed(net, port)
            for method in ("INVITE", "ACK", "BYE"):
                assert sum(line.startswith(method + " ") for line in crossed) == 3, crossed
            wire = net.atlanta.tap.text() + net.biloxi.tap.text()
            assert (b";alias=" in wire) is alias
            for d in (net.atlanta, net.biloxi):
                assert d.gateway.metrics.sample("sipsec_gateway_envelope_rejections_total",
                                                reason="outer-mismatch") == 0
