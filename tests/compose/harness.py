"""Drives docker-compose.yml on the local engine for tests/compose: build, up, health, calls
placed by real sipp phones, captures, faults, the compose Prometheus's view, what each domain's
Redis holds, teardown. Everything runs through the real ``docker`` / ``docker-compose`` CLIs
and the host's ``sipp`` and ``tcpdump``."""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from sipsec.aio.ports import spare_port

from tests.faults.harness import PHONE_REFRESH_S, CalleePhone, Inventory, RedisInspector
from tests.faults.harness import SCENARIOS as FAULT_SCENARIOS
from tests.sipp import Sipp

ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = ROOT / "tests" / "e2e" / "gateway" / "scenarios"
DOMAINS = {"atlanta": "atlanta.com", "biloxi": "biloxi.com"}
#: published ports per domain (the compose file's SIPSEC_<DOMAIN>_<WHAT>_PORT variables)
PORTS = ("SIP", "SIPS", "PHONES", "API", "PKG")
FAULTSUITE = ROOT / "tests" / "compose" / "faultsuite.yml"
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
    #: with the fault suite's clock-skew injection (tests/compose/faultsuite.yml over the shipped file)
    faultsuite: bool = False

    def __post_init__(self) -> None:
        self.secrets = self.workdir / "secrets"
        self.skew_dir = self.workdir / "skew"
        if self.faultsuite:
            # read inside the container by its user (10001): world-readable, nothing secret
            self.skew_dir.mkdir(mode=0o755, exist_ok=True)
            self.skew_dir.chmod(0o755)
            self.set_skew(0)
        for d in DOMAINS:
            for what in PORTS:
                udp = what in ("SIP", "PHONES")
                self.ports[f"SIPSEC_{d.upper()}_{what}_PORT"] = spare_port("127.0.0.1", tcp=True, udp=udp)
        for what in ("PROMETHEUS", "GRAFANA"):
            self.ports[f"SIPSEC_{what}_PORT"] = spare_port("127.0.0.1", tcp=True, udp=False)

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "COMPOSE_PROJECT_NAME": self.project, "SIPSEC_COMPOSE_SECRETS": str(self.secrets),
                "SIPSEC_BASE_IMAGE": "sipsec-base:bookworm", "SIPSEC_REDIS_BASE_IMAGE": "sipsec-redis:bookworm",
                # the official Prometheus and exporter images' offline equivalents (scripts/make-base-image.sh)
                "SIPSEC_PROMETHEUS_IMAGE": "sipsec-prometheus:bookworm",
                "SIPSEC_REDIS_EXPORTER_IMAGE": "sipsec-redis-exporter:bookworm",
                "SIPSEC_PHONE_DIGEST": "MD5",  # sipp answers MD5 challenges only
                "FAULTSUITE_CLOCKSHIM": str(ROOT / "tests" / "faults" / "clockshim"),
                "FAULTSUITE_SKEW_DIR": str(self.skew_dir),
                **{k: str(v) for k, v in self.ports.items()}}

    def compose(self, *args: str, timeout: float = 120.0, check: bool = True,
                stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        files = ["-f", str(ROOT / "docker-compose.yml"), "-f", str(FAULTSUITE)] if self.faultsuite else []
        return run(["docker-compose", *files, *args], env=self.env, timeout=timeout, check=check, stdin=stdin)

    def set_skew(self, seconds: float) -> None:
        """biloxi's gateway's clock offset (with ``faultsuite``; read there within half a second)."""
        path = self.skew_dir / "skew"
        path.write_text(f"{seconds}\n")
        path.chmod(0o644)

    # -- containers -----------------------------------------------------------------------

    def containers(self, service: str) -> list[str]:
        out = self.compose("ps", "-q", service)
        return [c for c in out.stdout.split() if c]

    def container(self, service: str) -> str:
        found = self.containers(service)
        assert len(found) == 1, f"{service}: {len(found)} containers"
        return found[0]

    def pid(self, service: str) -> int:
        """The host pid of ``service``'s container's first process (what a crash or a SIGTERM
        from the orchestrator hits; ``docker kill`` would also mark it stopped by hand, so that
        its restart policy would not start it again)."""
        pid = int(self.inspect(self.container(service))["State"]["Pid"])
        assert pid > 0, f"{service} is not running"
        return pid

    def signal(self, service: str, sig: int) -> None:
        os.kill(self.pid(service), sig)

    def inspect(self, container: str) -> dict[str, Any]:
        data = json.loads(run(["docker", "inspect", container]).stdout)
        return dict(data[0])

    def health(self, container: str) -> str:
        """``healthy``/``unhealthy``/``starting``; ``running`` for a container without a
        healthcheck (the Redis exporters: their image has no shell); else the container's status."""
        state = self.inspect(container)["State"]
        if not state.get("Running"):
            return "exited" if state.get("Status") == "exited" else str(state.get("Status"))
        return str(state.get("Health", {}).get("Status", "running"))

    def wait_healthy(self, services: list[str], timeout: float = UP_TIMEOUT_S) -> float:
        """Seconds until every container of ``services`` reports healthy (or, having no
        healthcheck, runs)."""
        start = time.monotonic()
        while True:
            states = {c: self.health(c) for s in services for c in self.containers(s)}
            if states and all(v in ("healthy", "running") for v in states.values()):
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
        self.wait_healthy(self.long_running())
        return time.monotonic() - start

    def long_running(self) -> list[str]:
        """The services ``up`` starts and keeps running: not the one-shot inits, not those of a
        profile (Grafana)."""
        config = yaml.safe_load(self.compose("config").stdout)
        return [name for name, spec in config["services"].items()
                if not name.startswith("pkg-init-") and not spec.get("profiles")]

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


    # -- monitoring -----------------------------------------------------------------------

    def prometheus(self, path: str) -> Any:
        """The ``data`` of a Prometheus HTTP API answer (``/api/v1/...``), from the published port."""
        url = f"http://127.0.0.1:{self.ports['SIPSEC_PROMETHEUS_PORT']}{path}"
        with urllib.request.urlopen(url, timeout=20) as resp:  # noqa: S310 (loopback)
            doc = json.loads(resp.read())
        assert doc["status"] == "success", doc
        return doc["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """The samples of an instant query."""
        result: list[dict[str, Any]] = self.prometheus(
            "/api/v1/query?" + urllib.parse.urlencode({"query": expr}))["result"]
        return result

    # -- what must survive ---------------------------------------------------------------

    def inventory(self) -> Inventory:
        """Accounts, registrations and in-window replay tokens in both domains' Redis, counted as
        the fault suite counts them on `sipsec up` (its read-only ``inspect`` user)."""
        return Inventory.take({name: ContainerInspector(self, short) for short, name in DOMAINS.items()})


class ContainerInspector(RedisInspector):
    """:class:`tests.faults.harness.RedisInspector`'s view from inside a compose Redis container:
    ``redis-cli`` there, as the read-only ``inspect`` user, its password read from the
    container's own secret file (never on a command line or in this process)."""

    SCRIPT = ('REDISCLI_AUTH="$(cat "/run/secrets/${0}_redis_inspect_password")"; export REDISCLI_AUTH; '
              'exec redis-cli --no-auth-warning --user inspect "$@"')

    def __init__(self, dep: Deployment, short: str) -> None:
        super().__init__("", 0, "")
        self.dep, self.short = dep, short

    def _cli(self, *args: str, stdin: str | None = None) -> list[str]:
        container = self.dep.container(f"redis-{self.short}")
        out = run(["docker", "exec", "-i", container, "sh", "-ec", self.SCRIPT, self.short, *args], stdin=stdin,
                  timeout=60)
        return out.stdout.splitlines()

    def run(self, *commands: tuple[str, ...]) -> list[Any]:
        """Each command's reply (integers as int), on one connection: the commands on redis-cli's stdin."""
        for c in commands:
            assert not any(re.search(r"\s|\"|'", part) for part in c), c
        lines = self._cli(stdin="".join(" ".join(c) + "\n" for c in commands)) if commands else []
        assert len(lines) == len(commands), lines[-5:]
        return [int(v) if re.fullmatch(r"-?\d+", v) else v for v in lines]

    def scan(self, pattern: str) -> list[str]:
        return [k for k in self._cli("--scan", "--pattern", pattern) if k]


class ComposeTarget(CalleePhone):
    """The compose deployment as the fault suite's :class:`tests.faults.harness.Target`: bob's
    phone (a sipp UAS on the host's side of biloxi-phones, registered with the biloxi gateway,
    logging each call it establishes and each BYE) and alice's (sipp UACs on the host's side of
    atlanta-phones, through the atlanta gateway)."""

    def __init__(self, dep: Deployment, alice_pw: str, bob_pw: str) -> None:
        self.dep = dep
        self.phone_pw = {"alice": alice_pw, "bob": bob_pw}
        self.failed_runs: list[str] = []
        self.registered_at = 0.0  # bob's phone: not yet
        self.alice_host = dep.gateway_ip("atlanta-phones")
        self.bob_host = dep.gateway_ip("biloxi-phones")
        self.plain = {"atlanta.com": (dep.ip_of("gateway-atlanta", "atlanta-phones"), 5080),
                      "biloxi.com": (dep.ip_of("gateway-biloxi", "biloxi-phones"), 5080)}
        self.uas = Sipp(str(FAULT_SCENARIOS / "phone_uas.xml"), local_host=self.bob_host,
                        local_port=spare_port(self.bob_host, tcp=False, udp=True), calls=1_000_000,
                        timeout_s=3600, trace_msg=False, extra_args=["-trace_logs", "-log_file", "uas-log.txt"])

    def start_bob(self) -> None:
        self.uas.start()
        assert self.register_bob(), "bob's phone did not register"

    def register_bob(self) -> bool:
        reg = Sipp(str(SCENARIOS / "phone_register.xml"), remote=self.plain["biloxi.com"], local_host=self.bob_host,
                   local_port=spare_port(self.bob_host, tcp=False, udp=True), calls=1, timeout_s=15,
                   trace_msg=False,
                   extra_args=["-key", "user", "bob", "-key", "contact_port", str(self.uas.local_port),
                               "-au", "bob", "-ap", self.phone_pw["bob"]])
        reg.start()
        result = reg.wait()
        reg.cleanup(keep_failed=False)
        if result.returncode == 0:
            self.registered_at = time.monotonic()
        return result.returncode == 0

    def keep_registered(self) -> None:
        if time.monotonic() - self.registered_at > PHONE_REFRESH_S:
            assert self.register_bob(), "bob's phone did not register again"

    def calls(self, n: int, *, rate: float = 5, limit: int = 10, timeout_s: float = 120) -> tuple[int, int]:
        """alice calls bob ``n`` times; (successful, failed) as sipp counted them."""
        uac = Sipp(str(SCENARIOS / "phone_call_auth.xml"), remote=self.plain["atlanta.com"], local_host=self.alice_host,
                   local_port=spare_port(self.alice_host, tcp=False, udp=True), calls=n, rate=rate, limit=limit,
                   timeout_s=timeout_s, trace_msg=True,
                   extra_args=["-key", "user", "alice", "-key", "callee", "bob@biloxi.com",
                               "-au", "alice", "-ap", self.phone_pw["alice"], "-recv_timeout", "8000"])
        uac.start()
        result = uac.wait()
        if result.successful_calls != n:
            self.failed_runs.append(str(uac.workdir))  # kept for inspection
        uac.cleanup(keep_failed=True)
        ok = max(result.successful_calls, 0)
        return ok, n - ok

    def refresh(self) -> None:
        """The biloxi gateway's address again (after its container restarted)."""
        self.plain["biloxi.com"] = (self.dep.ip_of("gateway-biloxi", "biloxi-phones"), 5080)

    def inventory(self) -> Inventory:
        return self.dep.inventory()

    def debug_logs(self, out: Path, name: str) -> None:
        (out / f"{name}.compose.txt").write_text(self.dep.logs(400))

    def stop(self) -> None:
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
