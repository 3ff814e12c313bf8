"""What ``sipsec load`` drives: the embedded topology, ``sipsec up``, or gateways given by address.

A :class:`Target` names, per domain, the gateway's phone side (plain SIP, UDP) and how users
get there: provisioned in the domain's PKG (``provision``) and logged in on its gateway
(``login``: in process for the embedded topology, else the control API's bulk endpoint
``POST /v1/users/bulk`` with a bearer token). It also names the processes whose CPU and RSS
the report plots.

* :func:`embedded` — :class:`~sipsec_cli.topology.TwoDomainTopology` in this process, the
  gateways' phone sides on 127.0.0.1;
* :func:`from_up` — a running ``sipsec up`` given by the JSON object its ``--json`` printed
  (a file), users provisioned with ``sipsec-pkg user import`` against its Redis; or started
  here (:func:`start_up`) and stopped at the end;
* :func:`from_addresses` — any deployment: ``DOMAIN=PHONE_HOST:PORT,API_URL,TOKEN_FILE[,SOURCE]``
  per gateway; its users must exist in its PKGs already (``--users-file``). ``SOURCE`` (addresses
  joined with ``+``) is where that domain's phones bind: an address the gateway can reach them
  at (e.g. the host's side of a compose phones network), where the loopback addresses the
  phones use by default are not.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["DomainTarget", "LoadError", "Target", "embedded", "from_addresses", "from_up", "start_up"]

_CHUNK = 500


class LoadError(Exception):
    """The target could not be reached, provisioned or started (the message says what)."""


Users = Sequence[tuple[str, str, str]]  # (aor, PKG password, phone password)


@dataclass
class DomainTarget:
    name: str
    phone: tuple[str, int]
    api: str = ""  # control API base URL ("" when logged in in process)
    token: str = field(default="", repr=False)
    #: addresses the domain's phones bind (empty: 127.<100+domain>.<generator>.<k>, one per few phones)
    sources: tuple[str, ...] = ()


@dataclass
class Target:
    kind: str
    domains: dict[str, DomainTarget]
    #: label -> pid of the deployment's processes (CPU and RSS sampled for the report)
    processes: dict[str, int] = field(default_factory=dict)
    provision: Callable[[str, Users], Awaitable[None]] | None = None
    login_in_process: Callable[[str, Users], Awaitable[list[tuple[str, str]]]] | None = None
    close: Callable[[], Awaitable[None]] | None = None

    async def login(self, domain: str, users: Users, concurrency: int = 4, attempts: int = 3) -> None:
        """Log ``users`` in on ``domain``'s gateway with their phone passwords; the ones refused with
        503 (a PKG busy hashing passwords) are tried again, up to ``attempts`` times in all
        (raises LoadError naming the first failure)."""
        todo = list(users)
        errors: list[tuple[str, str]] = []
        for _ in range(attempts):
            if self.login_in_process is not None:
                errors = await self.login_in_process(domain, todo)
            else:
                errors = await asyncio.to_thread(_bulk_login, self.domains[domain], todo, concurrency)
            retry = {aor for aor, why in errors if why.startswith("503")}
            if not retry or len(retry) < len(errors):
                break
            todo = [u for u in todo if u[0] in retry]
            await asyncio.sleep(1.0)
        if errors:
            raise LoadError(f"{len(errors)} of {len(users)} logins on {domain} failed, e.g. "
                            f"{errors[0][0]}: {errors[0][1]}")


def _bulk_login(dom: DomainTarget, users: Users, concurrency: int) -> list[tuple[str, str]]:
    errors: list[tuple[str, str]] = []
    for i in range(0, len(users), _CHUNK):
        body = {"concurrency": concurrency,
                "users": [{"aor": a, "password": pw, "phone_password": ph} for a, pw, ph in users[i:i + _CHUNK]]}
        req = urllib.request.Request(f"{dom.api}/v1/users/bulk", data=json.dumps(body).encode(),  # noqa: S310
                                     method="POST",
                                     headers={"Content-Type": "application/json",
                                              "Authorization": f"Bearer {dom.token}"})
        try:
            with urllib.request.urlopen(req, timeout=600) as resp:  # noqa: S310 - the operator's URL
                doc = json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            raise LoadError(f"POST {dom.api}/v1/users/bulk: HTTP {exc.code} "
                            f"{exc.read().decode(errors='replace')[:300]}") from None
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise LoadError(f"POST {dom.api}/v1/users/bulk: {exc}") from None
        errors += [(str(r["aor"]), f"{r['status']} {r.get('message', '')}") for r in doc.get("results", [])
                   if r.get("status") != 201]
    return errors


# -- the embedded topology ---------------------------------------------------------------------

async def embedded(workers: int = 0) -> Target:
    """Start the two-domain topology in this process with phone sides open (and a crypto-worker
    pool of ``workers`` processes when > 0)."""
    from sipsec_cli.topology import TwoDomainTopology

    # both gateways' phone sides on 127.0.0.1 (ports picked at start); phone limits as shipped
    topo = TwoDomainTopology(users=[], trace_calls=0, tap=False, workers=workers,
                             gateway_overrides={"plain_listen": "127.0.0.1:0"})
    await topo.start()
    domains: dict[str, DomainTarget] = {}
    for name, gateway in topo.gateways.items():
        address = gateway.plain_address
        if address is None:
            raise LoadError(f"{name}: the gateway opened no phone side")
        domains[name] = DomainTarget(name, (str(address[0]), int(address[1])))

    async def provision(domain: str, users: Users) -> None:
        for aor, password, _ in users:
            await topo.provision(aor, password)

    async def login(domain: str, users: Users) -> list[tuple[str, str]]:
        from sipsec_gateway.gateway import GatewayError

        gate = asyncio.Semaphore(4)
        gateway = topo.gateways[domain]

        async def one(aor: str, password: str, phone: str) -> tuple[str, str] | None:
            async with gate:
                try:
                    await gateway.login(aor, password, phone_password=phone)
                except GatewayError as exc:
                    return aor, f"{exc.status} {exc.message}"
                return None

        return [e for e in await asyncio.gather(*(one(*u) for u in users)) if e is not None]

    return Target("embedded", domains, {"sipsec load (topology)": os.getpid()}, provision, login, topo.stop)


# -- sipsec up -----------------------------------------------------------------------------------

def _pkg_env(state: Path, domain: str, redis_address: str) -> dict[str, str]:
    """What ``sipsec-pkg user import`` needs to reach ``sipsec up``'s PKG store of ``domain``
    (the same files ``sipsec up`` gave ``sipsec-pkg user add``)."""
    ddir = state / domain
    password_file = ddir / "redis" / "pkg.password"
    env = {"SIPSEC_PKG_DOMAIN": domain, "SIPSEC_PKG_DATA_DIR": str(ddir / "pkg"),
           "SIPSEC_PKG_KEK_FILE": str(ddir / "kek"), "SIPSEC_PKG_STORE": "redis"}
    if password_file.exists():
        env.update(SIPSEC_REDIS_URL=f"redis://pkg@{redis_address}/0", SIPSEC_PKG_REDIS_PASSWORD_FILE=str(password_file))
    else:
        env["SIPSEC_REDIS_URL"] = os.environ.get("SIPSEC_REDIS_URL", f"redis://{redis_address}/0")
    return env


def pkg_import(env: dict[str, str], users: Users) -> None:
    """``sipsec-pkg user import`` of ``users`` (aor:password on stdin) with ``env``."""
    script = Path(sys.executable).parent / "sipsec-pkg"
    lines = "".join(f"{aor}:{password}\n" for aor, password, _ in users)
    proc = subprocess.run([str(script), "user", "import", "-"], input=lines.encode(), capture_output=True,  # noqa: S603
                          env={**os.environ, **env}, timeout=3600, check=False)
    if proc.returncode != 0:
        raise LoadError(f"sipsec-pkg user import ({env.get('SIPSEC_PKG_DOMAIN')}): "
                        f"{proc.stderr.decode(errors='replace').strip()[-300:]}")


def from_up(ready: dict[str, Any]) -> Target:
    """The ``sipsec up`` whose ``--json`` ready object is ``ready`` (state_dir, services, api_tokens)."""
    try:
        state = Path(ready["state_dir"])
        rows = list(ready["services"])
        tokens = {d: Path(p).read_text().strip() for d, p in ready["api_tokens"].items()}
    except (KeyError, TypeError, OSError) as exc:
        raise LoadError(f"not a `sipsec up --json` ready object: {exc}") from None
    domains: dict[str, DomainTarget] = {}
    redis: dict[str, str] = {}
    processes: dict[str, int] = {}
    for row in rows:
        if row.get("pid"):
            processes[f"{row['domain']}/{row['service']}"] = int(row["pid"])
        if row["service"] == "redis":
            redis[row["domain"]] = row["address"]
        if row["service"] == "gateway" and "plain" in row["ports"]:
            host = row["address"]
            domains[row["domain"]] = DomainTarget(row["domain"], (host, int(row["ports"]["plain"])),
                                                  f"http://{host}:{row['ports']['http']}",
                                                  tokens.get(row["domain"], ""))
    if len(domains) < 2:
        raise LoadError("the sipsec up object names fewer than two gateways with a phone side")

    async def provision(domain: str, users: Users) -> None:
        if domain not in redis and "SIPSEC_REDIS_URL" not in os.environ:
            raise LoadError(f"{domain}: no Redis in the sipsec up object (give SIPSEC_REDIS_URL)")
        await asyncio.to_thread(pkg_import, _pkg_env(state, domain, redis.get(domain, "")), users)

    return Target("up", domains, processes, provision)


@dataclass
class UpRun:
    """A ``sipsec up --json`` started by ``sipsec load`` (stopped at the end)."""

    proc: subprocess.Popen[str]
    ready: dict[str, Any]


def start_up(args: Sequence[str] = (), timeout_s: float = 120.0) -> UpRun:
    """Start ``sipsec up --json *args`` and wait for its ready object (raises LoadError)."""
    import select
    import time

    script = Path(sys.executable).parent / "sipsec"
    proc = subprocess.Popen([str(script), "up", "--json", *args], stdout=subprocess.PIPE,  # noqa: S603
                            stderr=subprocess.DEVNULL, text=True)
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], 0.5)
        if ready:
            line = proc.stdout.readline()
            if line.startswith("{"):
                return UpRun(proc, json.loads(line))
            if not line and proc.poll() is not None:
                break
    proc.kill()
    raise LoadError(f"sipsec up did not become ready in {timeout_s:.0f} s (exit {proc.poll()})")


def stop_up(run: UpRun) -> None:
    import signal

    if run.proc.poll() is None:
        run.proc.send_signal(signal.SIGINT)
    try:
        run.proc.wait(60)
    except subprocess.TimeoutExpired:
        run.proc.kill()
        run.proc.wait()


# -- any deployment ------------------------------------------------------------------------------

def from_addresses(specs: Sequence[str]) -> Target:
    """Gateways given as ``DOMAIN=PHONE_HOST:PORT,API_URL,TOKEN_FILE[,SOURCE[+SOURCE...]]`` (its users
    must exist in its PKG; ``SOURCE``: the addresses that domain's phones bind)."""
    import ipaddress

    domains: dict[str, DomainTarget] = {}
    for spec in specs:
        try:
            name, rest = spec.split("=", 1)
            phone, api, token_file, *source = rest.split(",", 3)
            host, port = phone.rsplit(":", 1)
            sources = tuple(a for a in source[0].split("+") if a) if source else ()
            for address in sources:
                ipaddress.ip_address(address)  # ValueError: not an address
            token = Path(token_file).read_text().strip()
            if not api.startswith(("http://", "https://")):
                raise ValueError("the API URL must be http:// or https://")
            domains[name.lower()] = DomainTarget(name.lower(), (host, int(port)), api.rstrip("/"), token, sources)
        except (ValueError, OSError) as exc:
            raise LoadError(f"--gateway {spec!r}: expected DOMAIN=PHONE_HOST:PORT,API_URL,TOKEN_FILE[,SOURCE] "
                            f"({exc})") from None
    if len(domains) < 2:
        raise LoadError("give --gateway for at least two domains")
    return Target("addresses", domains)
