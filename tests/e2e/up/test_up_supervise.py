"""``sipsec up`` supervises its children (real processes, real Redis, real gRPC and SIP).

A service SIGKILLed is restarted with back-off and logged while the others keep running; a
domain's redis-server SIGKILLed is restarted from its append-only file with the user accounts
and registrations written before; the crypto-worker SIGKILLed leaves none of its pool
processes behind, under ``sipsec up`` and on its own.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import grpc
import pytest
from sipsec.pkgclient import PkgClient
from sipsec.stores.location import RedisLocationStore, canonical_aor

from tests.e2e.up.test_up import grpc_serving, processes_in
from tests.procs import alive, children_of
from tests.upctl import UpProcess

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

CALLER, CALLEE = "sip:alice@atlanta.com", "sip:bob@biloxi.com"


def _http(method: str, url: str, token: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    req = urllib.request.Request(url, data=json.dumps(body).encode() if body is not None else None, method=method,
                                 headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        raw = resp.read()
    return dict(json.loads(raw)) if raw else {}


class Gateways:
    """The two gateways' control APIs, as ``sipsec up --json`` named them."""

    def __init__(self, ready: dict[str, Any], state: Path) -> None:
        gw = {r["domain"]: r for r in ready["services"] if r["service"] == "gateway"}
        self.base = {d: f"http://{r['address']}:{r['ports']['http']}" for d, r in gw.items()}
        self.token = {d: Path(p).read_text().strip() for d, p in ready["api_tokens"].items()}
        self.creds = json.loads((state / "credentials.json").read_text())

    def login(self) -> None:
        _http("POST", f"{self.base['biloxi.com']}/v1/users", self.token["biloxi.com"],
              {"aor": CALLEE, "password": self.creds[CALLEE], "auto_answer": True})
        _http("POST", f"{self.base['atlanta.com']}/v1/users", self.token["atlanta.com"],
              {"aor": CALLER, "password": self.creds[CALLER]})

    def call(self, timeout: float = 30.0) -> dict[str, Any]:
        """One secured call alice → bob: placed, settled, hung up; its last state."""
        base, token = self.base["atlanta.com"], self.token["atlanta.com"]
        call = _http("POST", f"{base}/v1/calls", token, {"from": CALLER, "to": CALLEE, "secure": True, "wait": False})
        deadline = time.monotonic() + timeout
        while call.get("state") not in ("established", "ended", "failed") and time.monotonic() < deadline:
            time.sleep(0.05)
            call = _http("GET", f"{base}/v1/calls/{call['id']}", token)
        if call.get("state") == "established":
            _http("DELETE", f"{base}/v1/calls/{call['id']}", token)
        return call


def restarted_pid(up: UpProcess, label: str, timeout: float = 20.0) -> int:
    """The pid in ``up``'s "<label> restarted (pid N, ...)" line, waited for."""
    pattern = re.compile(rf"{re.escape(label)} restarted \(pid (\d+)")
    up.wait_for(f"{label} restarted", timeout)
    for line in up.err:
        m = pattern.search(line)
        if m:
            return int(m.group(1))
    raise AssertionError("".join(up.err))



def wait_gone(pids: set[int], timeout: float) -> set[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(alive(p) for p in pids):
        time.sleep(0.1)
    return {p for p in pids if alive(p)}


def wait_serving(target: str, deadline: float) -> None:
    """Until the gRPC health service at ``target`` answers SERVING; fails past ``deadline`` (monotonic)."""
    while True:
        try:
            if grpc_serving(target):
                return
        except grpc.RpcError:  # not listening yet
            pass
        assert time.monotonic() < deadline, f"{target} not serving again in time"
        time.sleep(0.1)


def wait_ready(url: str, deadline: float) -> None:
    """Until ``url`` (a ``/readyz``) answers 200; fails past ``deadline`` (monotonic)."""
    while True:
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:  # noqa: S310 - loopback test URL
                if resp.status == 200:
                    return
        except OSError:  # 503 (HTTPError is an OSError) or not listening yet
            pass
        assert time.monotonic() < deadline, f"{url} not ready again in time"
        time.sleep(0.1)


async def bindings_of(aor: str, url: str, password_file: str) -> list[Any]:
    """The live bindings of ``aor`` read straight from a domain's Redis, as its location user."""
    store = RedisLocationStore(url, password_file=password_file)
    try:
        return list(await store.lookup(canonical_aor(aor)))
    finally:
        await store.close()


def test_a_killed_location_is_restarted_the_rest_keep_running_and_calls_complete(tmp_path: Path) -> None:
    state = tmp_path / "state"
    up = UpProcess("--json", "--grace", "8", "--state-dir", str(state))
    ready = up.ready()
    try:
        rows = ready["services"]
        gws = Gateways(ready, state)
        gws.login()
        assert gws.call()["state"] == "established"
        victim = next(r for r in rows if r["domain"] == "biloxi.com" and r["service"] == "location")
        others = {r["pid"] for r in rows if r is not victim}
        killed_at = time.monotonic()
        os.kill(victim["pid"], signal.SIGKILL)
        new_pid = restarted_pid(up, "biloxi.com/location")
        assert new_pid != victim["pid"]
        # one line: which service, how it ended, the restart count
        assert any("biloxi.com/location exited with status -9 (SIGKILL); restart 1 in" in ln for ln in up.err), up.err
        wait_serving(f"{victim['address']}:{victim['ports']['grpc']}", killed_at + 10)
        # the proxy's readiness checks location over the channel its lookups use: green again
        # means it has reconnected (bounded back-off), all within the 10 s recovery bound
        proxy = next(r for r in rows if r["domain"] == "biloxi.com" and r["service"] == "proxy")
        wait_ready(f"http://{proxy['address']}:{proxy['ports']['metrics']}/readyz", killed_at + 10)
        assert up.proc.poll() is None, "sipsec up must keep running"
        assert all(alive(pid) for pid in others), "the other services keep their processes"
        assert new_pid in processes_in(state)
        call = gws.call()
        assert call["state"] == "established", call
    finally:
        code = up.stop(signal.SIGINT)
    assert code == 0, "".join(up.err)
    assert not processes_in(state)


def test_a_killed_redis_is_restarted_with_its_users_and_registrations(tmp_path: Path) -> None:
    state = tmp_path / "state"
    up = UpProcess("--json", "--grace", "8", "--state-dir", str(state))
    ready = up.ready()
    try:
        rows = ready["services"]
        gws = Gateways(ready, state)
        gws.login()  # registers bob with the biloxi proxy (its binding in biloxi's Redis)
        redis_row = next(r for r in rows if r["domain"] == "biloxi.com" and r["service"] == "redis")
        pkg = next(r for r in rows if r["domain"] == "biloxi.com" and r["service"] == "pkg")
        others = {r["pid"] for r in rows if r is not redis_row}
        url = f"redis://location@{redis_row['address']}/0"  # address: host:port
        password = str(state / "biloxi.com" / "redis" / "location.password")
        assert asyncio.run(bindings_of(CALLEE, url, password)), "bob registered before the Redis restart"
        time.sleep(1.5)  # past the append-only file's one-second fsync window
        os.kill(redis_row["pid"], signal.SIGKILL)
        new_pid = restarted_pid(up, "biloxi.com/redis")
        assert new_pid != redis_row["pid"]
        assert any("biloxi.com/redis exited with status -9 (SIGKILL); restart 1 in" in ln for ln in up.err), up.err

        async def after() -> None:
            deadline = time.monotonic() + 10
            while True:  # the restarted server loads its append-only file
                try:
                    bindings = await bindings_of(CALLEE, url, password)
                    break
                except Exception:  # noqa: BLE001
                    assert time.monotonic() < deadline, "redis not back within 10 s"
                    await asyncio.sleep(0.1)
            assert bindings, "bob's registration was lost with the Redis restart"
            # bob's PKG user record survived: his password still logs in
            async with PkgClient(f"{pkg['address']}:{pkg['ports']['grpc']}", plaintext=True) as client:
                await client.login(CALLEE, gws.creds[CALLEE])

        asyncio.run(after())
        # the default user stays unusable: no anonymous commands, no authenticating as it
        host, port = redis_row["address"].rsplit(":", 1)
        with socket.create_connection((host, int(port)), timeout=5) as c:
            c.sendall(b"PING\r\n")
            assert c.recv(64).startswith(b"-NOAUTH")
            c.sendall(b"AUTH default x\r\n")
            assert c.recv(128).startswith(b"-WRONGPASS")
        assert up.proc.poll() is None and all(alive(pid) for pid in others)
        call = gws.call()
        assert call["state"] == "established", call
    finally:
        code = up.stop(signal.SIGINT)
    assert code == 0, "".join(up.err)
    assert not processes_in(state)


def test_a_killed_worker_leaves_no_pool_process_and_is_restarted(tmp_path: Path) -> None:
    state = tmp_path / "state"
    up = UpProcess("--only", "worker", "--worker-processes", "2", "--json", "--grace", "5",
                   "--state-dir", str(state))
    ready = up.ready()
    try:
        worker = next(r for r in ready["services"] if r["service"] == "worker")
        pool = children_of(worker["pid"])
        assert len(pool) >= 2, pool  # the warmed pool processes (and multiprocessing's helper)
        os.kill(worker["pid"], signal.SIGKILL)
        assert not wait_gone(pool, 5), "pool processes outlived the worker"
        new_pid = restarted_pid(up, "shared/worker")
        assert new_pid != worker["pid"]
        wait_serving(f"127.0.0.1:{worker['ports']['grpc']}", time.monotonic() + 20)
        assert len(children_of(new_pid)) >= 2, "the restarted worker has its pool again"
    finally:
        code = up.stop(signal.SIGINT)
    assert code == 0, "".join(up.err)
    assert not processes_in(state)


def test_pool_processes_die_with_a_worker_killed_outside_sipsec_up(tmp_path: Path) -> None:
    """No supervisor to clean up: each pool process's own parent-death signal ends it."""
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("SIPSEC_")},
           "SIPSEC_WORKER_LISTEN": "127.0.0.1:0", "SIPSEC_WORKER_PLAINTEXT": "true",
           "SIPSEC_WORKER_PROCESSES": "2", "SIPSEC_WORKER_METRICS_PORT": "-1"}
    worker = subprocess.Popen([str(Path(sys.executable).parent / "sipsec-worker"), "serve"], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tmp_path)
    try:
        deadline = time.monotonic() + 60
        while len(children_of(worker.pid)) < 2:
            assert worker.poll() is None and time.monotonic() < deadline, "pool never started"
            time.sleep(0.1)
        time.sleep(1.0)  # past the initialiser
        pool = children_of(worker.pid)
        worker.kill()
        worker.wait()
        assert not wait_gone(pool, 5), "pool processes outlived the worker"
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()


def test_proxy_workers_die_with_their_parent_killed(tmp_path: Path) -> None:
    """``SIPSEC_PROXY_WORKERS=2``: the parent SIGKILLed, its workers get the parent-death signal."""
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("SIPSEC_")},
           "SIPSEC_PROXY_WORKERS": "2", "SIPSEC_PROXY_LISTEN": "127.0.0.1:0",
           "SIPSEC_PROXY_DOMAINS": "example.test", "SIPSEC_PROXY_METRICS_PORT": "-1"}
    parent = subprocess.Popen([str(Path(sys.executable).parent / "sipsec-proxy"), "serve"], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=tmp_path)
    try:
        assert parent.stdout is not None
        assert "(2 workers)" in parent.stdout.readline()  # printed once both workers listen
        workers = children_of(parent.pid)
        assert len(workers) == 2, workers
        parent.kill()
        parent.wait()
        assert not wait_gone(workers, 5), "proxy workers outlived their parent"
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()


def test_restart_back_off_doubles_to_its_cap_and_resets_after_a_stable_run() -> None:
    from sipsec_cli.up.supervise import RestartPolicy, describe_exit

    policy = RestartPolicy()
    delays, previous = [], None
    for _ in range(8):  # a child that dies right after each start
        previous = policy.delay(previous, uptime_s=1.0)
        delays.append(previous)
    assert delays == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0, 10.0]
    assert policy.delay(10.0, uptime_s=30.0) == 0.5  # stayed up 30 s: back to the first delay
    assert describe_exit(-9) == "status -9 (SIGKILL)" and describe_exit(3) == "status 3"


def test_a_restarted_sipsec_up_logs_its_users_in_again(tmp_path: Path) -> None:
    """``sipsec up`` stopped and started again on the same state directory: the users its gateways
    had logged in are logged in again from the (sealed) store, though every port is new — the
    gateways keep their users under a name that does not hold the address."""
    state = tmp_path / "state"
    up = UpProcess("--json", "--grace", "8", "--state-dir", str(state))
    ready = up.ready()
    try:
        Gateways(ready, state).login()
    finally:
        code = up.stop(signal.SIGINT)
    assert code == 0, "".join(up.err)
    again = UpProcess("--json", "--grace", "8", "--state-dir", str(state))
    ready = again.ready()
    try:
        gws = Gateways(ready, state)
        # no login this time: the users come back by themselves (retried while the PKG starts)
        deadline = time.monotonic() + 30
        while True:
            users = {d: _http("GET", f"{gws.base[d]}/v1/users", gws.token[d]) for d in gws.base}
            aors = {d: [u["aor"] for u in doc.get("users", [])] for d, doc in users.items()}
            if aors == {"atlanta.com": [CALLER], "biloxi.com": [CALLEE]}:
                break
            assert time.monotonic() < deadline, f"users not restored after the restart: {aors}"
            time.sleep(0.2)
        call = gws.call()
        assert call["state"] == "established", call
    finally:
        code = again.stop(signal.SIGINT)
    assert code == 0, "".join(again.err)
    assert not processes_in(state)
