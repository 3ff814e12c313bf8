"""Drives docker-compose.yml on the local engine for tests/compose: build, up, health, calls
placed by real sipp phones, captures, faults, teardown. Everything runs through the real
``docker`` / ``docker-compose`` CLIs and the host's ``sipp`` and ``tcpdump``."""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sipsec.aio.ports import spare_port

from tests.sipp import Sipp

ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = ROOT / "tests" / "e2e" / "gateway" / "scenarios"
UAS_SCENARIO = ROOT / "tests" / "e2e" / "sipp" / "scenarios" / "uas_trying.xml"
DOMAINS = {"atlanta": "atlanta.com", "biloxi": "biloxi.com"}
#: published ports per domain (the compose file's SIPSEC_<DOMAIN>_<WHAT>_PORT variables)
PORTS = ("SIP", "SIPS", "PHONES", "API", "PKG")
UP_TIMEOUT_S = 240.0


class ComposeError(AssertionError):
    """A compose step failed; carries the command's output."""


def run(argv: list[str], *, env: dict[str, str] | None = None, timeout: float = 120.0,
        check: bool = True, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    out = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout,
                         input=stdin)
    if check and out.returncode != 0:
        raise ComposeError(f"{' '.join(argv[:6])}... exited {out.returncode}:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
    return out


@dataclass
class Deployment:
    """One compose project (a unique name, its own published ports, secrets in ``secrets``)."""

    workdir: Path
    project: str = field(default_factory=lambda: "sipsec-ct-" + secrets.token_hex(3))
    ports: dict[str, int] = field(default_factory=dict)
    passwords: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.secrets = self.workdir / "secrets"
        for d in DOMAINS:
            for what in PORTS:
                udp = what in ("SIP", "PHONES")
                self.ports[f"SIPSEC_{d.upper()}_{what}_PORT"] = spare_port("127.0.0.1", tcp=True, udp=udp)

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "COMPOSE_PROJECT_NAME": self.project, "SIPSEC_COMPOSE_SECRETS": str(self.secrets),
                "SIPSEC_BASE_IMAGE": "sipsec-base:bookworm", "SIPSEC_REDIS_BASE_IMAGE": "sipsec-redis:bookworm",
                "SIPSEC_PHONE_DIGEST": "MD5",  # sipp answers MD5 challenges only
                **{k: str(v) for k, v in self.ports.items()}}

    def compose(self, *args: str, timeout: float = 120.0, check: bool = True,
                stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return run(["docker-compose", *args], env=self.env, timeout=timeout, check=check, stdin=stdin)

    # -- containers -----------------------------------------------------------------------

    def containers(self, service: str) -> list[str]:
        out = self.compose("ps", "-q", service)
        return [c for c in out.stdout.split() if c]

    def container(self, service: str) -> str:
        found = self.containers(service)
        assert len(found) == 1, f"{service}: {len(found)} containers"
        return found[0]

    def inspect(self, container: str) -> dict[str, Any]:
        data = json.loads(run(["docker", "inspect", container]).stdout)
        return dict(data[0])

    def health(self, container: str) -> str:
        state = self.inspect(container)["State"]
        if not state.get("Running"):
            return "exited" if state.get("Status") == "exited" else str(state.get("Status"))
        return str(state.get("Health", {}).get("Status", "running"))

    def wait_healthy(self, services: list[str], timeout: float = UP_TIMEOUT_S) -> float:
        """Seconds until every container of ``services`` reports healthy."""
        start = time.monotonic()
        while True:
            states = {c: self.health(c) for s in services for c in self.containers(s)}
            if states and all(v == "healthy" for v in states.values()):
                return time.monotonic() - start
            if time.monotonic() - start > timeout:
                raise ComposeError(f"not healthy after {timeout:.0f}s: {states}\n{self.logs()}")
            time.sleep(0.5)

    def logs(self, tail: int = 40) -> str:
        return self.compose("logs", "--no-color", f"--tail={tail}", check=False, timeout=60).stdout[-12000:]

    def network(self, name: str) -> dict[str, Any]:
        data = json.loads(run(["docker", "network", "inspect", f"{self.project}_{name}"]).stdout)
        return dict(data[0])

    def gateway_ip(self, network: str) -> str:
        """The host's address on a compose network (its bridge's gateway)."""
        return str(self.network(network)["IPAM"]["Config"][0]["Gateway"])

    def ip_of(self, service: str, network: str) -> str:
        nets = self.inspect(self.container(service))["NetworkSettings"]["Networks"]
        return str(nets[f"{self.project}_{network}"]["IPAddress"])

    def bridge(self, network: str) -> str:
        net = self.network(network)
        return str(net["Options"].get("com.docker.network.bridge.name") or "br-" + net["Id"][:12])

    # -- life cycle -----------------------------------------------------------------------

    def up(self) -> float:
        start = time.monotonic()
        self.compose("up", "-d", "--no-build", timeout=UP_TIMEOUT_S)
        services = self.compose("config", "--services").stdout.split()
        self.wait_healthy([s for s in services if not s.startswith("pkg-init-")])
        return time.monotonic() - start

    def down(self) -> None:
        self.compose("down", "-v", "--remove-orphans", "-t", "5", timeout=180, check=False)

    # -- provisioning ---------------------------------------------------------------------

    def provision(self, domain: str, user: str) -> str:
        """Sets ``user``'s PKG password with the admin CLI inside the PKG container, logs the user
        in at the domain's gateway (control API); returns the phone password."""
        password = secrets.token_hex(16)
        aor = f"sip:{user}@{DOMAINS[domain]}"
        run(["docker", "exec", "-i", self.container(f"pkg-{domain}"), "sipsec-pkg", "user", "add", aor,
             "--password-stdin"], stdin=password + "\n")
        phone_password = secrets.token_hex(12)
        self.login(domain, aor, password, phone_password)
        self.passwords[aor] = password
        return phone_password

    def login(self, domain: str, aor: str, password: str, phone_password: str) -> None:
        token = (self.secrets / f"{domain}_gateway_api_token").read_text().strip()
        body = json.dumps({"aor": aor, "password": password, "phone_password": phone_password}).encode()
        req = urllib.request.Request(f"http://127.0.0.1:{self.ports[f'SIPSEC_{domain.upper()}_API_PORT']}/v1/users",
                                     data=body, method="POST", headers={
                                         "Authorization": f"Bearer {token}", "Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as resp:  # noqa: S310 (loopback)
            assert resp.status == 201, resp.read()


@dataclass
class Phones:
    """bob's phone (a sipp UAS on the host's side of biloxi-phones, registered with the biloxi
    gateway) and alice's (sipp UACs on the host's side of atlanta-phones, through the atlanta gateway)."""

    dep: Deployment
    alice_pw: str
    bob_pw: str
    uas: Sipp | None = None
    failed_runs: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.alice_host = self.dep.gateway_ip("atlanta-phones")
        self.bob_host = self.dep.gateway_ip("biloxi-phones")
        self.atlanta_gw = (self.dep.ip_of("gateway-atlanta", "atlanta-phones"), 5080)
        self.biloxi_gw = (self.dep.ip_of("gateway-biloxi", "biloxi-phones"), 5080)

    def start_bob(self, calls: int = 100000) -> None:
        port = spare_port(self.bob_host, tcp=False, udp=True)
        self.uas = Sipp(str(UAS_SCENARIO), local_host=self.bob_host, local_port=port, calls=calls,
                        timeout_s=3600, trace_msg=False)
        self.uas.start()
        self.register_bob()

    def register_bob(self) -> bool:
        assert self.uas is not None
        reg = Sipp(str(SCENARIOS / "phone_register.xml"), remote=self.biloxi_gw, local_host=self.bob_host,
                   local_port=spare_port(self.bob_host, tcp=False, udp=True), calls=1, timeout_s=15,
                   trace_msg=False,
                   extra_args=["-key", "user", "bob", "-key", "contact_port", str(self.uas.local_port),
                               "-au", "bob", "-ap", self.bob_pw])
        reg.start()
        result = reg.wait()
        reg.cleanup(keep_failed=False)
        return result.returncode == 0

    def calls(self, n: int, *, rate: float = 5, limit: int = 10, timeout_s: float = 120) -> tuple[int, int]:
        """alice calls bob ``n`` times; (successful, failed) as sipp counted them."""
        uac = Sipp(str(SCENARIOS / "phone_call_auth.xml"), remote=self.atlanta_gw, local_host=self.alice_host,
                   local_port=spare_port(self.alice_host, tcp=False, udp=True), calls=n, rate=rate, limit=limit,
                   timeout_s=timeout_s, trace_msg=True,
                   extra_args=["-key", "user", "alice", "-key", "callee", "bob@biloxi.com",
                               "-au", "alice", "-ap", self.alice_pw, "-recv_timeout", "8000"])
        uac.start()
        result = uac.wait()
        if result.successful_calls != n:
            self.failed_runs.append(str(uac.workdir))  # kept for inspection
        uac.cleanup(keep_failed=True)
        ok = max(result.successful_calls, 0)
        return ok, n - ok

    def stop(self) -> None:
        if self.uas is not None:
            self.uas.cleanup(keep_failed=False)


@contextmanager
def capture(interface: str, path: Path) -> Iterator[Path]:
    """tcpdump on ``interface`` (full packets) into ``path`` while the block runs."""
    proc = subprocess.Popen(["tcpdump", "-i", interface, "-s", "0", "-U", "-w", str(path)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    time.sleep(1.0)  # tcpdump is listening once it has opened the interface
    if proc.poll() is not None:
        raise ComposeError(f"tcpdump on {interface} exited: {proc.stderr.read().decode() if proc.stderr else ''}")
    try:
        yield path
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def capture_text(path: Path) -> tuple[int, bytes]:
    """(packets, every payload byte as text) of a capture."""
    out = subprocess.run(["tcpdump", "-r", str(path), "-nn", "-A"], capture_output=True, timeout=120)
    packets = sum(1 for line in out.stdout.splitlines() if b" IP " in line[:40])
    return packets, out.stdout.lower()
