"""``sipsec up``'s process plan: which service instances run, on which ports, with which environment.

The domains, their addresses, users, PKG federation peers and proxy routes come from the one
topology description (:data:`sipsec_cli.plan.PLAN`); this module adds what running them as
processes needs: :data:`SERVICES` names each service's console script, ports, health check
and environment (adding a service is one :class:`ServiceSpec` entry), and :class:`Topology`
holds the instances planned and what the preparation steps produced (Redis URLs, PKG
material, fingerprints, passwords). Every service takes its configuration from environment
variables, exactly as in docker-compose and Kubernetes.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import urllib.parse
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from sipsec.aio.ports import spare_port

from sipsec_cli.plan import PLAN, DomainPlan, Endpoints, TopologyPlan

__all__ = [
    "DOMAINS",
    "SERVICES",
    "SHARED",
    "SHARED_HOST",
    "Domain",
    "Health",
    "Instance",
    "ServiceSpec",
    "Topology",
    "UpError",
    "UpOptions",
    "free_port",
    "gateway_state_dir",
    "gateway_token",
    "gateway_token_file",
    "missing_scripts",
    "redis_db_url",
    "redis_env",
    "script_path",
    "sealing_key_file",
    "tls_dir",
    "tls_parties",
]

#: Limit for one preparation step (Redis start, ``sipsec-pkg init``, ``user add``).
STEP_TIMEOUT_S = 120.0
#: The "domain" of the services every domain shares (the crypto-worker).
SHARED = "shared"
SHARED_HOST = PLAN.shared_host

#: A provider domain of the local topology (name, loopback address, users).
Domain = DomainPlan
#: The domains of RFC 3665 and the thesis, each on its own loopback address.
DOMAINS: tuple[Domain, ...] = PLAN.domains


class UpError(Exception):
    """The topology could not be brought up (the message says which part and why)."""


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
    """Everything an env builder may read: the plan, instances, Redis URLs, PKG material."""

    state_dir: Path
    instances: dict[tuple[str, str], Instance] = field(default_factory=dict)
    redis_urls: dict[str, str] = field(default_factory=dict)
    pkg_dirs: dict[str, Path] = field(default_factory=dict)
    kek_files: dict[str, Path] = field(default_factory=dict)
    fingerprints: dict[str, str] = field(default_factory=dict)
    passwords: dict[str, str] = field(default_factory=dict)
    #: domain -> Redis ACL user -> its password file (0600); empty for a Redis given with --redis
    redis_password_files: dict[str, dict[str, Path]] = field(default_factory=dict)
    worker_processes: int = 1
    plan: TopologyPlan = PLAN

    def get(self, domain: Domain | None, service: str) -> Instance | None:
        return self.instances.get((domain.name if domain else SHARED, service))

    def peers(self, domain: Domain) -> tuple[Domain, ...]:
        return self.plan.peers(domain.name)

    def endpoints(self, service: str) -> dict[str, Endpoints]:
        """The plan's :class:`~sipsec_cli.plan.Endpoints` of every domain that runs ``service``
        (``pkg`` or ``proxy``): its PKG's gRPC address, its proxy's SIP address, its fingerprint."""
        found: dict[str, Endpoints] = {}
        for d in self.plan.domains:
            pkg, proxy = self.get(d, "pkg"), self.get(d, "proxy")
            if self.get(d, service) is None:
                continue
            found[d.name] = Endpoints(pkg.addr("grpc") if pkg else "", proxy.addr("sip") if proxy else "",
                                      self.fingerprints.get(d.name, ""))
        return found


EnvBuilder = Callable[[Topology, Instance], dict[str, str]]


@dataclass(frozen=True)
class ServiceSpec:
    """One service of the topology.

    ``script`` + ``args`` is the command (``sipsec-pkg serve``); ``per_domain`` False means
    one shared instance on 127.0.0.1; ``ports`` are allocated before anything starts, so every
    env builder can name every other service's address; ``udp_ports`` must also be free for
    UDP; ``after`` names services that must be healthy first (the proxy fetches its PKG's
    parameters at start; a gateway starts once the proxies have bound every port of theirs, so
    that its connections' source ports cannot take one of those planned ports meanwhile).
    """

    name: str
    script: str
    args: tuple[str, ...]
    per_domain: bool
    ports: tuple[str, ...]
    health: Health
    env: EnvBuilder
    udp_ports: tuple[str, ...] = ()
    after: tuple[str, ...] = ()  # services that must be healthy before this one starts


def _domain_of(inst: Instance) -> Domain:
    assert inst.domain is not None, f"{inst.spec.name} is a per-domain service"
    return inst.domain


def sealing_key_file(topo: Topology, domain: Domain) -> Path:
    """Where ``sipsec up`` keeps a domain's gateway sealing key (32 random bytes as 64 hex digits, mode 0600)."""
    return topo.state_dir / domain.name / "gateway" / "sealing.key"


def redis_env(topo: Topology, domain: Domain, service: str) -> dict[str, str]:
    """``SIPSEC_REDIS_URL`` naming the service's own ACL user, and its password file.

    With the domain's own redis-server (ACL file in the state directory) the URL becomes
    ``redis://<user>@host:port/0`` and ``SIPSEC_<SERVICE>_REDIS_PASSWORD_FILE`` points at the
    user's password; a Redis given with ``--redis`` is used as given.
    """
    url = topo.redis_urls[domain.name]
    files = topo.redis_password_files.get(domain.name, {})
    if service not in files:
        return {"SIPSEC_REDIS_URL": url}
    parts = urllib.parse.urlsplit(url)
    netloc = f"{urllib.parse.quote(service)}@{parts.netloc.rsplit('@', 1)[-1]}"
    return {"SIPSEC_REDIS_URL": urllib.parse.urlunsplit(parts._replace(netloc=netloc)),
            f"SIPSEC_{service.upper()}_REDIS_PASSWORD_FILE": str(files[service])}


def _metrics_and_drain(service: str, inst: Instance) -> dict[str, str]:
    """A service's Prometheus endpoint on its own address and port, and a short drain (a local topology)."""
    return {
        f"SIPSEC_{service}_METRICS_HOST": inst.host,
        f"SIPSEC_{service}_METRICS_PORT": str(inst.ports["metrics"]),
        f"SIPSEC_{service}_DRAIN_SECONDS": "1",
    }


def _worker_env(topo: Topology, inst: Instance) -> dict[str, str]:
    return {
        "SIPSEC_WORKER_LISTEN": inst.addr("grpc"),
        "SIPSEC_WORKER_PROCESSES": str(topo.worker_processes),
        "SIPSEC_WORKER_PLAINTEXT": "true",
        **_metrics_and_drain("WORKER", inst),
    }


def pkg_admin_env(topo: Topology, domain: Domain) -> dict[str, str]:
    """What ``sipsec-pkg init`` and ``user add`` need as well as ``serve``."""
    return {
        "SIPSEC_PKG_DOMAIN": domain.name,
        "SIPSEC_PKG_DATA_DIR": str(topo.pkg_dirs[domain.name]),
        "SIPSEC_PKG_KEK_FILE": str(topo.kek_files[domain.name]),
        "SIPSEC_PKG_STORE": "redis",
        **redis_env(topo, domain, "pkg"),
    }


def _pkg_env(topo: Topology, inst: Instance) -> dict[str, str]:
    domain = _domain_of(inst)
    peers = topo.plan.pkg_peers(domain.name, topo.endpoints("pkg"))
    return {
        **pkg_admin_env(topo, domain),
        "SIPSEC_PKG_LISTEN": inst.addr("grpc"),
        "SIPSEC_PKG_PLAINTEXT": "1",
        "SIPSEC_PKG_PEERS": ";".join(f"{p.domain},{p.endpoint},{p.fingerprint}" for p in peers),
        "SIPSEC_PKG_PEER_PLAINTEXT": "1",
        # the gateway names each end user's address in Login (per-user back-off, not per
        # gateway); on loopback its connections come from 127.0.0.1 whatever host it listens on
        "SIPSEC_PKG_TRUSTED_FORWARDERS": "127.0.0.1",
        **_metrics_and_drain("PKG", inst),
    }


def _location_env(topo: Topology, inst: Instance) -> dict[str, str]:
    domain = _domain_of(inst)
    return {
        "SIPSEC_LOCATION_LISTEN": inst.addr("grpc"),
        "SIPSEC_LOCATION_STORE": "redis",
        **redis_env(topo, domain, "location"),
        **_metrics_and_drain("LOCATION", inst),
    }


def tls_dir(topo: Topology) -> Path:
    """The run's CA and the proxies' and gateways' certificates (:func:`sipsec_cli.up.tls.make_pki`)."""
    return topo.state_dir / "tls"


def tls_parties(topo: Topology) -> dict[str, list[str]]:
    """Certificate name -> the addresses it carries: one per domain's proxy and gateway."""
    return {f"{role}-{d.name}": [d.host] for d in topo.plan.domains for role in ("proxy", "gateway")}


def _tls_env(topo: Topology, service: str, domain: Domain) -> dict[str, str]:
    prefix, party = f"SIPSEC_{service.upper()}_", tls_dir(topo) / f"{service}-{domain.name}"
    return {prefix + "TLS_CERT": f"{party}.pem", prefix + "TLS_KEY": f"{party}.key",
            prefix + "TLS_CA": str(tls_dir(topo) / "ca.pem")}


def _proxy_env(topo: Topology, inst: Instance) -> dict[str, str]:
    domain = _domain_of(inst)
    location, pkg = topo.get(domain, "location"), topo.get(domain, "pkg")
    # proxy-to-proxy over TLS (RFC 3261 §26.2): each peer proxy's TLS listener, its certificate
    # verified against the run's CA and the peer's address
    tls_endpoints: dict[str, Endpoints] = {}
    for name, ends in topo.endpoints("proxy").items():
        peer = topo.instances[(name, "proxy")]
        tls_endpoints[name] = Endpoints(ends.pkg, peer.addr("tls"), ends.fingerprint)
    return {
        "SIPSEC_PROXY_DOMAINS": domain.name,
        "SIPSEC_PROXY_LISTEN": inst.addr("sip"),
        "SIPSEC_PROXY_TCP_LISTEN": inst.addr("sip"),
        "SIPSEC_PROXY_TLS_LISTEN": inst.addr("tls"),
        **_tls_env(topo, "proxy", domain),
        "SIPSEC_PROXY_ADVERTISE": inst.host,
        "SIPSEC_PROXY_LOCATION": location.addr("grpc") if location else "redis",
        **redis_env(topo, domain, "proxy"),
        "SIPSEC_PROXY_ROUTES": topo.plan.routes(domain.name, tls_endpoints, transport="tls"),
        # signed REGISTERs (the ua-gateways') are verified with the domain's parameters
        # fetched from its PKG and pinned; anything unsigned meets digest (RFC 3261 §22)
        "SIPSEC_PROXY_AUTH": "digest",
        "SIPSEC_PROXY_PKG_TARGET": pkg.addr("grpc") if pkg else "",
        "SIPSEC_PROXY_PKG_PLAINTEXT": "1",
        "SIPSEC_PROXY_PKG_FINGERPRINT": topo.fingerprints[domain.name],
        **_metrics_and_drain("PROXY", inst),
        **{f"SIPSEC_PROXY_{name.upper()}": str(value) for name, value in topo.plan.proxy_settings},
    }


def gateway_state_dir(topo: Topology, domain: Domain) -> Path:
    """Where a domain's gateway keeps its generated control-API token files."""
    return topo.state_dir / domain.name / "gateway"


def gateway_token_file(topo: Topology, domain: Domain) -> Path:
    """The file holding the control-API token the domain's gateway generated (scopes calls, users, read)."""
    return gateway_state_dir(topo, domain) / "api-token"


def gateway_token(topo: Topology, domain: Domain) -> str:
    """The control-API token of the domain's gateway (UpError when it has not made one)."""
    path = gateway_token_file(topo, domain)
    try:
        return path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise UpError(f"no control API token of the {domain.name} gateway in {path}: {exc}") from None


def _gateway_env(topo: Topology, inst: Instance) -> dict[str, str]:
    domain = _domain_of(inst)
    pkg, proxy, worker = topo.get(domain, "pkg"), topo.get(domain, "proxy"), topo.get(None, "worker")
    env = {
        "SIPSEC_GATEWAY_DOMAIN": domain.name,
        "SIPSEC_GATEWAY_HTTP_LISTEN": inst.addr("http"),
        "SIPSEC_GATEWAY_SIP_LISTEN": inst.addr("sip"),
        # the legacy side: plain phones (UDP) use the gateway as their outbound proxy
        "SIPSEC_GATEWAY_PLAIN_LISTEN": inst.addr("plain"),
        # MD5 challenged first: sipp (and many legacy phones) answer only the first, MD5, challenge
        "SIPSEC_GATEWAY_PHONE_DIGEST": "MD5,SHA-256",
        "SIPSEC_GATEWAY_ADVERTISE": inst.host,
        # secured messages exceed the 1300-byte UDP guideline (RFC 3261 §18.1.1), and the leg to
        # the proxy carries routing headers and Contacts: TLS (§26.2), the proxy's certificate
        # verified against the run's CA
        "SIPSEC_GATEWAY_TRANSPORT": "tls",
        **_tls_env(topo, "gateway", domain),
        "SIPSEC_GATEWAY_PEER_DOMAINS": topo.plan.peer_domains(domain.name),
        "SIPSEC_GATEWAY_STORE": "redis",
        **redis_env(topo, domain, "gateway"),
        # the name it keeps its logged-in users under in Redis: its ports are new at every start
        # of up, so the default (domain and address) would leave them behind on a restart
        "SIPSEC_GATEWAY_REPLICA": "up",
        # dialog keys and call records sealed in Redis (AES-256-GCM), as every replica would share
        "SIPSEC_GATEWAY_SEALING_KEY_FILE": str(sealing_key_file(topo, domain)),
        "SIPSEC_GATEWAY_DRAIN_SECONDS": "1",
        # after SIGTERM calls in progress go on this long, then BYE/CANCEL (a local topology stops
        # fast: the drain ends as soon as the last call does). Longer than a short call plus its
        # set-up: a call answered as the drain began still ends by itself (with 2 s, a 2 s call
        # answered then was hung up by the gateway, the fault suite's SIGTERM row)
        "SIPSEC_GATEWAY_CALL_GRACE_S": "5",
        # the control API's token is generated there at first start (api-token, 0600)
        "SIPSEC_GATEWAY_STATE_DIR": str(gateway_state_dir(topo, domain)),
        "SIPSEC_GATEWAY_METRICS_HOST": inst.host,
        "SIPSEC_GATEWAY_METRICS_PORT": str(inst.ports["metrics"]),
    }
    if pkg is not None:
        env["SIPSEC_GATEWAY_PKG"] = pkg.addr("grpc")
        env["SIPSEC_GATEWAY_PKG_PLAINTEXT"] = "1"
        env["SIPSEC_GATEWAY_PKG_FINGERPRINT"] = topo.fingerprints[domain.name]
    if proxy is not None:
        env["SIPSEC_GATEWAY_PROXY"] = proxy.addr("tls")
    if worker is not None:
        env["SIPSEC_GATEWAY_WORKERS"] = worker.addr("grpc")
        env["SIPSEC_GATEWAY_WORKERS_PLAINTEXT"] = "1"
    return env


#: The services in start order, one entry per service (the shared crypto-worker, then each
#: domain's services, :data:`sipsec_cli.plan.DOMAIN_SERVICES`).
SERVICES: tuple[ServiceSpec, ...] = (
    ServiceSpec("worker", "sipsec-worker", ("serve",), False,
                ("grpc", "metrics"), Health("grpc", "grpc"), _worker_env),
    ServiceSpec("pkg", "sipsec-pkg", ("serve",), True,
                ("grpc", "metrics"), Health("grpc", "grpc"), _pkg_env),
    ServiceSpec("location", "sipsec-location", ("serve",), True,
                ("grpc", "metrics"), Health("grpc", "grpc"), _location_env),
    ServiceSpec("proxy", "sipsec-proxy", ("serve",), True,
                ("sip", "tls", "metrics"), Health("sip", "sip"), _proxy_env, udp_ports=("sip",), after=("pkg",)),
    ServiceSpec("gateway", "sipsec-gateway", ("serve",), True,
                ("http", "sip", "plain", "metrics"), Health("http", "http", "/healthz"), _gateway_env,
                udp_ports=("sip", "plain"), after=("proxy",)),
)


def _find_script(name: str) -> Path | None:
    path = Path(sys.executable).parent / name
    if path.exists():
        return path
    found = shutil.which(name)
    return Path(found) if found else None


def script_path(name: str) -> Path:
    """A console script installed next to the running interpreter (``.venv/bin/<name>``), else on PATH."""
    path = _find_script(name)
    if path is None:
        raise UpError(f"console script {name} is not installed (neither next to {sys.executable} "
                      "nor on PATH); install the project first (make install)")
    return path


def missing_scripts(specs: Sequence[ServiceSpec]) -> list[str]:
    """The console scripts of ``specs`` that are not installed."""
    return [s.script for s in specs if _find_script(s.script) is None]


def free_port(host: str, udp: bool = False) -> int:
    """A TCP port free on ``host`` (and the same number free for UDP when ``udp``), chosen
    outside the ephemeral range so that the children's own outgoing connections cannot take
    it before the child it is planned for binds it."""
    try:
        return spare_port(host, udp=udp)
    except OSError as exc:
        raise UpError(str(exc)) from None


def plan_instances(topo: Topology, specs: Sequence[ServiceSpec], only: Sequence[str] = ()) -> None:
    """Allocate every instance's ports first, so that each service's env can name the others."""
    for spec in specs:
        if only and spec.name not in only:
            continue
        owners: list[Domain | None] = list(topo.plan.domains) if spec.per_domain else [None]
        for d in owners:
            host = d.host if d else topo.plan.shared_host
            ports = {p: free_port(host, udp=p in spec.udp_ports) for p in spec.ports}
            key = (d.name if d else SHARED, spec.name)
            topo.instances[key] = Instance(
                spec, d, host, ports, topo.state_dir / "logs" / f"{key[0]}-{spec.name}.log")


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
