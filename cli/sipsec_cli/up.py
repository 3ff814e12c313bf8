"""``sipsec up``: the two-domain topology as separate local processes with a real Redis per domain.

Every service runs from its own console script (found next to ``sys.executable``) with its
configuration in environment variables, exactly as in docker-compose and Kubernetes. The
topology is data: :data:`DOMAINS` names the provider domains and their loopback addresses,
:data:`SERVICES` names the services — adding a service is one :class:`ServiceSpec` entry.

Sequence: state directory → Redis per domain → ``sipsec-pkg init`` per domain (KEK generated
into a 0600 file) → users provisioned (``sipsec-pkg user add``) → every service started with
federation peers pinned to the fingerprints ``init`` printed → health checked (gRPC health,
HTTP, SIP OPTIONS) → table → wait for SIGINT/SIGTERM (or drive ``--calls N`` through the
ua-gateways' control API) → children terminated, then killed after the grace period → state
directory removed.

Each ua-gateway also opens its legacy plain-SIP side for phones (UDP, port ``plain`` in the
table and in ``--json``'s ``services`` rows) on its domain's address.
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import importlib.util
import json
import os
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

__all__ = [
    "DOMAINS",
    "SERVICES",
    "Domain",
    "Health",
    "ServiceSpec",
    "Topology",
    "UpError",
    "UpOptions",
    "redis_db_url",
    "run_up",
    "script_path",
]

READY_LINE = "sipsec up: ready"
#: Limit for one preparation step (Redis start, ``sipsec-pkg init``, ``user add``).
STEP_TIMEOUT_S = 120.0
SHARED = "shared"


class UpError(Exception):
    """The topology could not be brought up (the message says which part and why)."""


@dataclass(frozen=True)
class Domain:
    """A provider domain of the local topology: its name, loopback address and users."""

    name: str
    host: str
    users: tuple[str, ...]


#: The two domains of RFC 3665 and the thesis, each on its own loopback address.
DOMAINS: tuple[Domain, ...] = (
    Domain("atlanta.com", "127.0.0.2", ("alice",)),
    Domain("biloxi.com", "127.0.0.3", ("bob",)),
)
SHARED_HOST = "127.0.0.1"


@dataclass(frozen=True)
class Health:
    """How to ask a service whether it is ready: ``kind`` is grpc, http or sip; ``port`` names
    one of the service's ports; ``path`` is the HTTP path."""

    kind: str
    port: str
    path: str = ""


@dataclass
class Instance:
    """One service of one domain (or the shared one): ports, process, log file."""

    spec: ServiceSpec
    domain: Domain | None
    host: str
    ports: dict[str, int]
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    status: str = "pending"
    started_at: float = 0.0
    ready_s: float | None = None

    @property
    def label(self) -> str:
        return f"{self.domain.name if self.domain else SHARED}/{self.spec.name}"

    def addr(self, port: str) -> str:
        return f"{self.host}:{self.ports[port]}"


@dataclass
class Topology:
    """Everything an env builder may read: domains, instances, Redis URLs, PKG material."""

    state_dir: Path
    instances: dict[tuple[str, str], Instance] = field(default_factory=dict)
    redis_urls: dict[str, str] = field(default_factory=dict)
    pkg_dirs: dict[str, Path] = field(default_factory=dict)
    kek_files: dict[str, Path] = field(default_factory=dict)
    fingerprints: dict[str, str] = field(default_factory=dict)
    passwords: dict[str, str] = field(default_factory=dict)
    worker_processes: int = 1

    def get(self, domain: Domain | None, service: str) -> Instance | None:
        return self.instances.get((domain.name if domain else SHARED, service))

    def peers(self, domain: Domain) -> list[Domain]:
        return [d for d in DOMAINS if d.name != domain.name]


EnvBuilder = Callable[[Topology, Instance], dict[str, str]]


@dataclass(frozen=True)
class ServiceSpec:
    """One service of the topology.

    ``script`` + ``args`` is the command (``sipsec-pkg serve``); ``module`` must be importable
    for the service to exist yet; ``per_domain`` False means one shared instance on
    127.0.0.1; ``ports`` are allocated before anything starts, so every env builder can name
    every other service's address; ``udp_ports`` must also be free for UDP; ``after`` names
    services that must be healthy first (the proxy fetches its PKG's parameters at start).
    """

    name: str
    script: str
    args: tuple[str, ...]
    module: str
    per_domain: bool
    ports: tuple[str, ...]
    health: Health
    env: EnvBuilder
    udp_ports: tuple[str, ...] = ()
    after: tuple[str, ...] = ()  # services that must be healthy before this one starts


def _domain_of(inst: Instance) -> Domain:
    assert inst.domain is not None, f"{inst.spec.name} is a per-domain service"
    return inst.domain


def _worker_env(topo: Topology, inst: Instance) -> dict[str, str]:
    return {
        "SIPSEC_WORKER_LISTEN": inst.addr("grpc"),
        "SIPSEC_WORKER_PROCESSES": str(topo.worker_processes),
        "SIPSEC_WORKER_PLAINTEXT": "true",
        "SIPSEC_WORKER_METRICS_HOST": inst.host,
        "SIPSEC_WORKER_METRICS_PORT": str(inst.ports["metrics"]),
        "SIPSEC_WORKER_DRAIN_SECONDS": "1",
    }


def _pkg_env(topo: Topology, inst: Instance) -> dict[str, str]:
    domain = _domain_of(inst)
    peers = []
    for peer in topo.peers(domain):
        peer_pkg = topo.get(peer, "pkg")
        if peer_pkg is not None:
            peers.append(f"{peer.name},{peer_pkg.addr('grpc')},{topo.fingerprints[peer.name]}")
    return {
        **_pkg_admin_env(topo, domain),
        "SIPSEC_PKG_LISTEN": inst.addr("grpc"),
        "SIPSEC_PKG_PLAINTEXT": "1",
        "SIPSEC_PKG_PEERS": ";".join(peers),
        "SIPSEC_PKG_PEER_PLAINTEXT": "1",
        "SIPSEC_PKG_METRICS_HOST": inst.host,
        "SIPSEC_PKG_METRICS_PORT": str(inst.ports["metrics"]),
        "SIPSEC_PKG_SHUTDOWN_GRACE_S": "1",
    }


def _pkg_admin_env(topo: Topology, domain: Domain) -> dict[str, str]:
    """What ``sipsec-pkg init`` and ``user add`` need as well as ``serve``."""
    return {
        "SIPSEC_PKG_DOMAIN": domain.name,
        "SIPSEC_PKG_DATA_DIR": str(topo.pkg_dirs[domain.name]),
        "SIPSEC_PKG_KEK_FILE": str(topo.kek_files[domain.name]),
        "SIPSEC_PKG_STORE": "redis",
        "SIPSEC_REDIS_URL": topo.redis_urls[domain.name],
    }


def _location_env(topo: Topology, inst: Instance) -> dict[str, str]:
    domain = _domain_of(inst)
    return {
        "SIPSEC_LOCATION_LISTEN": inst.addr("grpc"),
        "SIPSEC_LOCATION_STORE": "redis",
        "SIPSEC_REDIS_URL": topo.redis_urls[domain.name],
        "SIPSEC_LOCATION_METRICS_HOST": inst.host,
        "SIPSEC_LOCATION_METRICS_PORT": str(inst.ports["metrics"]),
        "SIPSEC_LOCATION_DRAIN_SECONDS": "1",
    }


def _proxy_env(topo: Topology, inst: Instance) -> dict[str, str]:
    domain = _domain_of(inst)
    location, pkg = topo.get(domain, "location"), topo.get(domain, "pkg")
    routes = []
    for peer in topo.peers(domain):
        peer_proxy = topo.get(peer, "proxy")
        if peer_proxy is not None:
            routes.append(f"{peer.name}={peer_proxy.addr('sip')};transport=tcp")
    return {
        "SIPSEC_PROXY_DOMAINS": domain.name,
        "SIPSEC_PROXY_LISTEN": inst.addr("sip"),
        "SIPSEC_PROXY_TCP_LISTEN": inst.addr("sip"),
        "SIPSEC_PROXY_ADVERTISE": inst.host,
        "SIPSEC_PROXY_LOCATION": location.addr("grpc") if location else "redis",
        "SIPSEC_REDIS_URL": topo.redis_urls[domain.name],
        "SIPSEC_PROXY_ROUTES": ",".join(routes),
        # signed REGISTERs (the ua-gateways', DESIGN §5) are verified with the domain's
        # parameters fetched from its PKG and pinned; anything unsigned meets digest
        "SIPSEC_PROXY_AUTH": "digest",
        "SIPSEC_PROXY_PKG_TARGET": pkg.addr("grpc") if pkg else "",
        "SIPSEC_PROXY_PKG_PLAINTEXT": "1",
        "SIPSEC_PROXY_PKG_FINGERPRINT": topo.fingerprints[domain.name],
        "SIPSEC_PROXY_METRICS_HOST": inst.host,
        "SIPSEC_PROXY_METRICS_PORT": str(inst.ports["metrics"]),
        "SIPSEC_PROXY_DRAIN_SECONDS": "1",
    }


def _gateway_env(topo: Topology, inst: Instance) -> dict[str, str]:
    domain = _domain_of(inst)
    pkg, proxy, worker = topo.get(domain, "pkg"), topo.get(domain, "proxy"), topo.get(None, "worker")
    env = {
        "SIPSEC_GATEWAY_DOMAIN": domain.name,
        "SIPSEC_GATEWAY_HTTP_LISTEN": inst.addr("http"),
        "SIPSEC_GATEWAY_SIP_LISTEN": inst.addr("sip"),
        # the legacy side: plain phones (UDP) use the gateway as their outbound proxy
        "SIPSEC_GATEWAY_PLAIN_LISTEN": inst.addr("plain"),
        "SIPSEC_GATEWAY_ADVERTISE": inst.host,
        # secured messages exceed the 1300-byte UDP guideline (RFC 3261 §18.1.1): TCP
        "SIPSEC_GATEWAY_TRANSPORT": "tcp",
        "SIPSEC_GATEWAY_PEER_DOMAINS": ",".join(p.name for p in topo.peers(domain)),
        "SIPSEC_GATEWAY_STORE": "redis",
        "SIPSEC_REDIS_URL": topo.redis_urls[domain.name],
        "SIPSEC_GATEWAY_DRAIN_SECONDS": "1",
    }
    if pkg is not None:
        env["SIPSEC_GATEWAY_PKG"] = pkg.addr("grpc")
        env["SIPSEC_GATEWAY_PKG_PLAINTEXT"] = "1"
        env["SIPSEC_GATEWAY_PKG_FINGERPRINT"] = topo.fingerprints[domain.name]
    if proxy is not None:
        env["SIPSEC_GATEWAY_PROXY"] = proxy.addr("sip")
    if worker is not None:
        env["SIPSEC_GATEWAY_WORKERS"] = worker.addr("grpc")
        env["SIPSEC_GATEWAY_WORKERS_PLAINTEXT"] = "1"
    return env


#: The services in start order. One entry per service; ``module`` gates services still being written.
SERVICES: tuple[ServiceSpec, ...] = (
    ServiceSpec("worker", "sipsec-worker", (), "sipsec_worker.__main__", False,
                ("grpc", "metrics"), Health("grpc", "grpc"), _worker_env),
    ServiceSpec("pkg", "sipsec-pkg", ("serve",), "sipsec_pkg.__main__", True,
                ("grpc", "metrics"), Health("grpc", "grpc"), _pkg_env),
    ServiceSpec("location", "sipsec-location", (), "sipsec_location.__main__", True,
                ("grpc", "metrics"), Health("grpc", "grpc"), _location_env),
    ServiceSpec("proxy", "sipsec-proxy", (), "sipsec_proxy.__main__", True,
                ("sip", "metrics"), Health("sip", "sip"), _proxy_env, udp_ports=("sip",), after=("pkg",)),
    ServiceSpec("gateway", "sipsec-gateway", ("serve",), "sipsec_gateway.__main__", True,
                ("http", "sip", "plain"), Health("http", "http", "/healthz"), _gateway_env,
                udp_ports=("sip", "plain")),
)


@dataclass(frozen=True)
class UpOptions:
    """Command-line options of ``sipsec up``."""

    calls: int = 0
    json_output: bool = False
    redis_url: str | None = None
    state_dir: str | None = None
    worker_processes: int = 1
    start_timeout_s: float = 60.0
    grace_s: float = 10.0
    call_timeout_s: float = 30.0
    only: tuple[str, ...] = ()


def script_path(name: str) -> Path:
    """A console script installed next to the running interpreter (``.venv/bin/<name>``)."""
    path = Path(sys.executable).parent / name
    if not path.exists():
        found = shutil.which(name)
        if found is None:
            raise UpError(f"console script {name} is not installed next to {sys.executable}")
        path = Path(found)
    return path


def service_available(spec: ServiceSpec) -> bool:
    """Whether the service's code exists in this installation yet."""
    try:
        return importlib.util.find_spec(spec.module) is not None
    except ModuleNotFoundError:
        return False


def free_port(host: str, udp: bool = False) -> int:
    """A TCP port free on ``host`` (and the same number free for UDP when ``udp``)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((host, 0))
            port = int(s.getsockname()[1])
            if not udp:
                return port
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
                try:
                    u.bind((host, port))
                except OSError:
                    continue
                return port
    raise UpError(f"no free port on {host}")


def _set_pdeathsig() -> None:
    """In the child: get SIGTERM when ``sipsec up`` dies, so nothing outlives it (Linux)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _tail(path: Path, lines: int = 20) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:]) or "(empty log)"


def _child_env(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIPSEC_")}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


# --------------------------------------------------------------------------- health checks


def _grpc_serving(target: str, timeout: float) -> bool:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(target) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=timeout)
        except grpc.RpcError:
            return False
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


def _http_ok(url: str, timeout: float) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 (loopback http only)
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError, ValueError):
        return False


def _sip_options_ok(host: str, port: int, domain: str, timeout: float) -> bool:
    """Send SIP OPTIONS to the proxy's own domain over UDP; ready when it answers 200."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((SHARED_HOST, 0))
        s.settimeout(timeout)
        lport = s.getsockname()[1]
        branch = "z9hG4bK" + secrets.token_hex(8)
        msg = (
            f"OPTIONS sip:{domain} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {SHARED_HOST}:{lport};branch={branch};rport\r\n"
            f"Max-Forwards: 70\r\nTo: <sip:{domain}>\r\n"
            f"From: <sip:health@{domain}>;tag={secrets.token_hex(4)}\r\n"
            f"Call-ID: {secrets.token_hex(8)}@sipsec-up\r\nCSeq: 1 OPTIONS\r\n"
            f"Content-Length: 0\r\n\r\n"
        ).encode()
        try:
            s.sendto(msg, (host, port))
            data = s.recv(65535)
        except OSError:
            return False
    return data.startswith(b"SIP/2.0 200")


def check_health(inst: Instance, timeout: float = 1.0) -> bool:
    """One health probe of ``inst`` as its spec says."""
    h = inst.spec.health
    port = inst.ports[h.port]
    if h.kind == "grpc":
        return _grpc_serving(f"{inst.host}:{port}", timeout)
    if h.kind == "http":
        return _http_ok(f"http://{inst.host}:{port}{h.path}", timeout)
    if h.kind == "sip":
        return _sip_options_ok(inst.host, port, inst.domain.name if inst.domain else "localhost", timeout)
    raise UpError(f"unknown health check kind {h.kind!r}")


# --------------------------------------------------------------------------- the supervisor


class Supervisor:
    """Starts the topology's processes and stops every one of them, whatever happened."""

    def __init__(self, options: UpOptions, stop: threading.Event | None = None) -> None:
        self.options = options
        self.stop_requested = stop or threading.Event()
        self.own_state = options.state_dir is None
        base = Path(options.state_dir) if options.state_dir else Path(tempfile.mkdtemp(prefix="sipsec-up-"))
        base.mkdir(parents=True, exist_ok=True)
        os.chmod(base, 0o700)
        (base / "logs").mkdir(exist_ok=True)
        self.topo = Topology(state_dir=base, worker_processes=options.worker_processes)
        self.redis: dict[str, tuple[subprocess.Popen[bytes], Path, int]] = {}
        self.skipped: list[str] = []

    # -- helpers
    def _popen(self, argv: list[str], env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
        with open(log_path, "ab") as log:
            return subprocess.Popen(
                argv, env=_child_env(env), stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=_set_pdeathsig,
                cwd=self.topo.state_dir,
            )

    def _run(self, argv: list[str], env: dict[str, str], what: str, stdin: bytes = b"") -> str:
        try:
            res = subprocess.run(argv, env=_child_env(env), input=stdin, capture_output=True,
                                 timeout=STEP_TIMEOUT_S, cwd=self.topo.state_dir, check=False)
        except subprocess.TimeoutExpired:
            raise UpError(f"{what} did not finish in {STEP_TIMEOUT_S:.0f} s") from None
        if res.returncode != 0:
            raise UpError(f"{what} failed (exit {res.returncode}):\n"
                          + res.stderr.decode(errors="replace")[-2000:])
        return res.stdout.decode()

    # -- phases
    def start_redis(self) -> None:
        if self.options.redis_url:
            for i, d in enumerate(DOMAINS):
                self.topo.redis_urls[d.name] = redis_db_url(self.options.redis_url, i)
            return
        exe = shutil.which("redis-server")
        if exe is None:
            raise UpError("redis-server is not installed; install it or pass --redis URL")
        for d in DOMAINS:
            port = free_port(d.host)
            rdir = self.topo.state_dir / d.name / "redis"
            rdir.mkdir(parents=True, exist_ok=True)
            log_path = self.topo.state_dir / "logs" / f"{d.name}-redis.log"
            proc = self._popen([exe, "--bind", d.host, "--port", str(port), "--save", "",
                                "--appendonly", "no", "--dir", str(rdir), "--daemonize", "no",
                                "--protected-mode", "no"], {}, log_path)
            self.redis[d.name] = (proc, log_path, port)
            self.topo.redis_urls[d.name] = f"redis://{d.host}:{port}/0"
        deadline = time.monotonic() + STEP_TIMEOUT_S
        for d in DOMAINS:
            proc, log_path, port = self.redis[d.name]
            while not _redis_ping(d.host, port):
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise UpError(f"{d.name}/redis did not start (exit {proc.poll()}); log tail:\n"
                                  + _tail(log_path))
                time.sleep(0.05)

    def init_pkg(self) -> None:
        pkg = script_path("sipsec-pkg")
        for d in DOMAINS:
            ddir = self.topo.state_dir / d.name
            pkg_dir = ddir / "pkg"
            pkg_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            kek_file = ddir / "kek"
            self.topo.pkg_dirs[d.name] = pkg_dir
            self.topo.kek_files[d.name] = kek_file
            env = _pkg_admin_env(self.topo, d)
            if (pkg_dir / "params.json").exists() and kek_file.exists():
                # a kept --state-dir: reuse the domain's material and its KEK
                fp = self._run([str(pkg), "fingerprint"], env, f"sipsec-pkg fingerprint ({d.name})").strip()
                out = json.dumps({"fingerprint": fp})
            else:
                fd = os.open(kek_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                with os.fdopen(fd, "w") as fh:
                    fh.write(base64.b64encode(secrets.token_bytes(32)).decode())
                out = self._run([str(pkg), "init", "--domain", d.name], env, f"sipsec-pkg init ({d.name})")
            try:
                self.topo.fingerprints[d.name] = str(json.loads(out.strip().splitlines()[-1])["fingerprint"])
            except (ValueError, KeyError, IndexError):
                raise UpError(f"sipsec-pkg init ({d.name}) printed no fingerprint: {out!r}") from None
            for user in d.users:
                aor = f"sip:{user}@{d.name}"
                password = secrets.token_urlsafe(18)
                self.topo.passwords[aor] = password
                self._run([str(pkg), "user", "add", aor, "--password-stdin"], env,
                          f"sipsec-pkg user add {aor}", stdin=(password + "\n").encode())
        creds = {aor: pw for aor, pw in self.topo.passwords.items()}
        fd = os.open(self.topo.state_dir / "credentials.json", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(creds, fh, indent=1)

    def plan(self) -> None:
        """Allocate every port first, so that each service's env can name the others."""
        for spec in SERVICES:
            if self.options.only and spec.name not in self.options.only:
                continue
            if not service_available(spec):
                self.skipped.append(spec.name)
                continue
            owners: list[Domain | None] = list(DOMAINS) if spec.per_domain else [None]
            for d in owners:
                host = d.host if d else SHARED_HOST
                ports = {p: free_port(host, udp=p in spec.udp_ports) for p in spec.ports}
                key = (d.name if d else SHARED, spec.name)
                self.topo.instances[key] = Instance(
                    spec, d, host, ports, self.topo.state_dir / "logs" / f"{key[0]}-{spec.name}.log")

    def start_services(self) -> None:
        """Start every instance in table order; before one whose spec has ``after``, wait
        until the instances it depends on are healthy."""
        for inst in self.topo.instances.values():
            if inst.spec.after:
                self.wait_healthy([i for i in self.topo.instances.values()
                                   if i.spec.name in inst.spec.after and i.proc is not None])
            argv = [str(script_path(inst.spec.script)), *inst.spec.args]
            inst.proc = self._popen(argv, inst.spec.env(self.topo, inst), inst.log_path)
            inst.started_at = time.monotonic()
            inst.status = "starting"

    def wait_healthy(self, instances: list[Instance] | None = None) -> None:
        waiting = [i for i in (self.topo.instances.values() if instances is None else instances)
                   if i.status != "healthy"]
        deadline = time.monotonic() + self.options.start_timeout_s
        while waiting:
            if self.stop_requested.is_set():
                raise UpError("interrupted while starting")
            for inst in list(waiting):
                assert inst.proc is not None
                if inst.proc.poll() is not None:
                    inst.status = f"exited {inst.proc.returncode}"
                    raise UpError(f"{inst.label} ({inst.spec.script}) exited with status "
                                  f"{inst.proc.returncode} while starting; log tail:\n{_tail(inst.log_path)}")
                if check_health(inst, timeout=0.5):
                    inst.status = "healthy"
                    inst.ready_s = time.monotonic() - inst.started_at
                    waiting.remove(inst)
            if waiting and time.monotonic() > deadline:
                inst = waiting[0]
                raise UpError(f"{inst.label} ({inst.spec.script}) not healthy after "
                              f"{self.options.start_timeout_s:.0f} s; log tail:\n{_tail(inst.log_path)}")
            if waiting:
                time.sleep(0.1)

    def dead_child(self) -> Instance | None:
        for inst in self.topo.instances.values():
            if inst.proc is not None and inst.proc.poll() is not None:
                return inst
        return None

    def stop(self) -> list[str]:
        """SIGTERM every child (services first, Redis last), SIGKILL what is left after the
        grace period, remove the state directory we made. Returns the labels that had to be killed."""
        procs: list[tuple[str, subprocess.Popen[bytes]]] = [
            (inst.label, inst.proc) for inst in reversed(list(self.topo.instances.values())) if inst.proc]
        killed = _terminate(procs, self.options.grace_s)
        killed += _terminate([(f"{d}/redis", p) for d, (p, _, _) in self.redis.items()], self.options.grace_s)
        if self.own_state:
            shutil.rmtree(self.topo.state_dir, ignore_errors=True)
        return killed

    # -- reports
    def rows(self) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        for d in DOMAINS:
            if d.name in self.redis:
                proc, _, port = self.redis[d.name]
                rows.append({"domain": d.name, "service": "redis", "pid": proc.pid,
                             "address": f"{d.host}:{port}", "ports": {"redis": port},
                             "health": "healthy", "ready_s": None})
        for inst in self.topo.instances.values():
            rows.append({"domain": inst.domain.name if inst.domain else SHARED,
                         "service": inst.spec.name, "pid": inst.proc.pid if inst.proc else None,
                         "address": inst.host, "ports": dict(inst.ports),
                         "health": inst.status, "ready_s": inst.ready_s})
        for name in self.skipped:
            rows.append({"domain": "-", "service": name, "pid": None, "address": "-", "ports": {},
                         "health": "not installed yet", "ready_s": None})
        return rows


def redis_db_url(url: str, offset: int) -> str:
    """``url`` with its database number moved by ``offset``: each domain of a shared Redis
    gets its own database, as it would have its own server (dialog keys are per domain)."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("redis", "rediss", "unix"):
        raise UpError(f"--redis {url!r} is not a redis:// URL")
    path = parts.path.strip("/")
    try:
        base = int(path) if path else 0
    except ValueError:
        raise UpError(f"--redis {url!r}: the path must be a database number") from None
    return urllib.parse.urlunsplit(parts._replace(path=f"/{base + offset}"))


def _redis_ping(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2) as c:
            c.sendall(b"PING\r\n")
            return c.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def _terminate(procs: list[tuple[str, subprocess.Popen[bytes]]], grace_s: float) -> list[str]:
    """SIGTERM each process, wait up to ``grace_s`` in all, SIGKILL the rest; then SIGKILL what
    is left of each one's process group (pool processes a service leaves behind when it dies
    before its own shutdown code runs). Returns the labels that had to be killed."""
    for _, proc in procs:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
    deadline = time.monotonic() + grace_s
    killed: list[str] = []
    for label, proc in procs:
        try:
            proc.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            proc.wait()
            killed.append(label)
        # every child leads its own session (start_new_session), so its group id is its pid
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
    return killed


# --------------------------------------------------------------------------- calls


def _http_json(method: str, url: str, body: dict[str, Any] | None, timeout: float) -> dict[str, Any]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method,  # noqa: S310 (loopback http only)
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310
            payload = json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode(errors="replace")[:500]
        raise UpError(f"{method} {url}: HTTP {exc.code} {detail}") from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise UpError(f"{method} {url}: {exc}") from None
    if not isinstance(payload, dict):
        raise UpError(f"{method} {url}: expected a JSON object")
    return payload


_SETTLED = {"established", "ended", "failed"}


def drive_calls(topo: Topology, n: int, timeout_s: float) -> dict[str, Any]:
    """Place ``n`` secured calls alice@atlanta → bob@biloxi through the gateways' control API:
    log both in (bob answers automatically), then for each call POST /v1/calls, poll
    GET /v1/calls/{id} until it is established or failed, and hang up (DELETE)."""
    caller_dom, callee_dom = DOMAINS[0], DOMAINS[1]
    gw_a, gw_b = topo.get(caller_dom, "gateway"), topo.get(callee_dom, "gateway")
    if gw_a is None or gw_b is None:
        raise UpError("--calls needs the ua-gateway (sipsec_gateway), which is not installed")
    caller = f"sip:{caller_dom.users[0]}@{caller_dom.name}"
    callee = f"sip:{callee_dom.users[0]}@{callee_dom.name}"
    base_a, base_b = f"http://{gw_a.addr('http')}", f"http://{gw_b.addr('http')}"
    _http_json("POST", f"{base_b}/v1/users",
               {"aor": callee, "password": topo.passwords[callee], "auto_answer": True}, timeout_s)
    _http_json("POST", f"{base_a}/v1/users", {"aor": caller, "password": topo.passwords[caller]}, timeout_s)
    before = {d.name: _crypto_totals(url, timeout_s) for d, url in ((caller_dom, base_a), (callee_dom, base_b))}
    results: list[dict[str, Any]] = []
    for _ in range(n):
        t0 = time.monotonic()
        call = _http_json("POST", f"{base_a}/v1/calls",
                          {"from": caller, "to": callee, "secure": True, "wait": False}, timeout_s)
        call_id = str(call.get("id", ""))
        if not call_id:
            raise UpError(f"POST /v1/calls returned no call id: {call}")
        while str(call.get("state")) not in _SETTLED:
            if time.monotonic() - t0 > timeout_s:
                call = {**call, "state": "failed", "reason": f"not settled after {timeout_s:.0f} s"}
                break
            time.sleep(0.01)
            call = _http_json("GET", f"{base_a}/v1/calls/{call_id}", None, timeout_s)
        call["wall_ms"] = (time.monotonic() - t0) * 1000.0
        if call.get("state") == "established":
            _http_json("DELETE", f"{base_a}/v1/calls/{call_id}", None, timeout_s)
        results.append(call)
    summary = summarize_calls(results)
    by_side: dict[str, dict[str, float]] = {}
    for d, url in ((caller_dom, base_a), (callee_dom, base_b)):
        after = _crypto_totals(url, timeout_s)
        side: dict[str, float] = {}
        for op, (total, count) in sorted(after.items()):
            t0, c0 = before[d.name].get(op, (0.0, 0.0))
            if count > c0:
                side[op] = round((total - t0) / (count - c0) * 1000.0, 3)
        by_side[d.name] = side
    summary["crypto_ms_mean_by_domain"] = by_side
    return summary


def _crypto_totals(base_url: str, timeout_s: float) -> dict[str, tuple[float, float]]:
    """(seconds, operations) per envelope operation so far, from a gateway's
    ``sipsec_gateway_crypto_seconds`` histogram (both sides of a call, every message)."""
    from prometheus_client.parser import text_string_to_metric_families

    try:
        with urllib.request.urlopen(f"{base_url}/metrics", timeout=timeout_s) as resp:  # noqa: S310
            text = resp.read().decode()
    except (urllib.error.URLError, OSError) as exc:
        raise UpError(f"GET {base_url}/metrics: {exc}") from None
    sums: dict[str, float] = {}
    counts: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        if family.name != "sipsec_gateway_crypto_seconds":
            continue
        for sample in family.samples:
            op = sample.labels.get("op", "")
            if sample.name.endswith("_sum"):
                sums[op] = sample.value
            elif sample.name.endswith("_count"):
                counts[op] = sample.value
    return {op: (sums.get(op, 0.0), counts[op]) for op in counts}


def _pct(values: list[float], q: int) -> float | None:
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def summarize_calls(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Setup-time percentiles, signalling bytes and crypto time per operation (caller side),
    from the gateway's call documents (``setup_ms``, ``wire.bytes_total``, ``crypto``)."""
    ok = [r for r in results if r.get("state") in ("established", "ended")]
    setup = [float(r["setup_ms"]) for r in ok if r.get("setup_ms") is not None]
    wire = [int(r["wire"]["bytes_total"]) for r in ok if isinstance(r.get("wire"), dict)]
    crypto: dict[str, list[float]] = {}
    counts: dict[str, int] = {}
    for r in ok:
        for op, cost in (r.get("crypto") or {}).items():
            crypto.setdefault(op, []).append(float(cost["mean_ms"]))
            counts[op] = counts.get(op, 0) + int(cost["count"])
    return {
        "calls": len(results),
        "succeeded": len(ok),
        "failed": len(results) - len(ok),
        "setup_ms_p50": _round(_pct(setup, 50)),
        "setup_ms_p95": _round(_pct(setup, 95)),
        "bytes_per_call_mean": _round(statistics.fmean(wire) if wire else None),
        "crypto_ms_per_op_median": {op: _round(statistics.median(v)) for op, v in sorted(crypto.items())},
        "crypto_ops": dict(sorted(counts.items())),
        "failures": [{"state": r.get("state"), "sip_status": r.get("sip_status"), "reason": r.get("reason")}
                     for r in results if r not in ok],
    }


# --------------------------------------------------------------------------- output


def _print_services(sup: Supervisor, json_output: bool, out: TextIO) -> None:
    if json_output:
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title="sipsec up — two-domain topology")
    for col in ("domain", "service", "pid", "address", "ports", "health", "ready"):
        table.add_column(col)
    for r in sup.rows():
        ports = " ".join(f"{k}={v}" for k, v in r["ports"].items())
        ready = f"{r['ready_s']:.2f} s" if r["ready_s"] is not None else ""
        table.add_row(r["domain"], r["service"], str(r["pid"] or ""), r["address"], ports, r["health"], ready)
    console = Console(file=out, width=120)
    console.print(table)
    console.print(f"state: {sup.topo.state_dir} (logs/, credentials.json)")


def _print_calls(summary: dict[str, Any], out: TextIO) -> None:
    from rich.console import Console
    from rich.table import Table

    def fmt(v: Any) -> str:
        return "-" if v is None else (f"{v:.2f}" if isinstance(v, float) else str(v))

    table = Table(title="secured calls alice@atlanta.com → bob@biloxi.com")
    table.add_column("measure")
    table.add_column("value", justify="right")
    for key in ("calls", "succeeded", "failed", "setup_ms_p50", "setup_ms_p95", "bytes_per_call_mean"):
        table.add_row(key, fmt(summary[key]))
    for op, ms in summary["crypto_ms_per_op_median"].items():
        table.add_row(f"caller crypto {op} (ms, median of calls; {summary['crypto_ops'][op]} ops)", fmt(ms))
    for domain, ops in summary.get("crypto_ms_mean_by_domain", {}).items():
        for op, ms in ops.items():
            table.add_row(f"{domain} gateway {op} (ms, mean)", fmt(ms))
    Console(file=out, width=120).print(table)


@contextlib.contextmanager
def _signals(stop: threading.Event) -> Iterator[None]:
    def handler(signum: int, frame: object) -> None:
        stop.set()

    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def run_up(options: UpOptions, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Bring the topology up, serve until SIGINT/SIGTERM (or run ``--calls``), tear it down."""
    out = out or sys.stdout
    err = err or sys.stderr
    unknown = set(options.only) - {s.name for s in SERVICES}
    if unknown:
        print(f"sipsec up: unknown service(s) {', '.join(sorted(unknown))}; "
              f"known: {', '.join(s.name for s in SERVICES)}", file=err)
        return 2
    stop = threading.Event()
    sup = Supervisor(options, stop)
    code = 0
    summary: dict[str, Any] | None = None
    with _signals(stop):
        try:
            sup.start_redis()
            sup.init_pkg()
            sup.plan()
            sup.start_services()
            sup.wait_healthy()
            _print_services(sup, options.json_output, out)
            if options.calls > 0:
                summary = drive_calls(sup.topo, options.calls, options.call_timeout_s)
                code = 0 if summary["failed"] == 0 else 1
            else:
                if options.json_output:
                    print(json.dumps({"state_dir": str(sup.topo.state_dir), "services": sup.rows()}),
                          file=out, flush=True)
                    print(f"{READY_LINE} (Ctrl-C to stop)", file=err, flush=True)
                else:
                    print(f"{READY_LINE} (Ctrl-C to stop)", file=out, flush=True)
                while not stop.wait(0.5):
                    dead = sup.dead_child()
                    if dead is not None:
                        assert dead.proc is not None
                        raise UpError(f"{dead.label} exited with status {dead.proc.returncode}; "
                                      f"log tail:\n{_tail(dead.log_path)}")
        except UpError as exc:
            print(f"sipsec up: {exc}", file=err, flush=True)
            code = 1
        finally:
            killed = sup.stop()
            if killed:
                print(f"sipsec up: killed after {options.grace_s:.0f} s grace: {', '.join(killed)}",
                      file=err, flush=True)
            else:
                print("sipsec up: stopped", file=err, flush=True)
    if summary is not None:
        if options.json_output:
            print(json.dumps({"state_dir": str(sup.topo.state_dir), "services": sup.rows(), "calls": summary}),
                  file=out, flush=True)
        else:
            _print_calls(summary, out)
    return code
