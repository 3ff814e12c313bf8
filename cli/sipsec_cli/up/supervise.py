"""``sipsec up``'s supervision: the state directory, the child processes' start (Redis, ``sipsec-pkg
init`` and ``user add``, every service), their restart when one dies, and their stop, whatever
happened.

Every child leads its own session and gets SIGTERM from the kernel when ``sipsec up`` dies
(``PR_SET_PDEATHSIG``), so nothing outlives it; stopping sends SIGTERM, waits the grace
period, then SIGKILLs what is left, including pool processes of a child's process group.

Once everything is up, a child that dies (a service or a domain's redis-server) is restarted
with the same command, ports and environment after a back-off (:class:`RestartPolicy`: 0.5 s,
doubling to 10 s, back to 0.5 s once the child has stayed up 30 s); what is left of its
process group is killed first, and one line names the child, its exit status or signal and
the restart count. The other children keep running. Redis runs with append-only persistence
(``appendfsync everysec``, files in ``<state>/<domain>/redis``): a restarted Redis loses at
most the last second of writes. Besides one ACL user per service, each Redis has a read-only
``inspect`` user (password in ``<state>/<domain>/redis/inspect.password``) that may only name
and count keys (SCAN, HLEN, PTTL, EXISTS, TYPE, DBSIZE), never read a value: what the fault
suite (``tests/faults``) and an operator use to check that a restart kept the data.
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import functools
import hashlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sipsec.stores.access import REDIS_USERS, acl_file, generate_password

from sipsec_cli.up.environment import (
    DOMAINS,
    SERVICES,
    SHARED,
    STEP_TIMEOUT_S,
    Instance,
    Topology,
    UpError,
    UpOptions,
    free_port,
    pkg_admin_env,
    plan_instances,
    redis_db_url,
    script_path,
    sealing_key_file,
    tls_dir,
    tls_parties,
)
from sipsec_cli.up.health import redis_ping, tail, wait_healthy
from sipsec_cli.up.tls import make_pki

__all__ = ["INSPECT_USER", "RestartPolicy", "Supervisor", "describe_exit", "terminate"]


def _set_pdeathsig() -> None:
    """In the child: get SIGTERM when ``sipsec up`` dies, so nothing outlives it (Linux)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


@dataclass(frozen=True)
class RestartPolicy:
    """Back-off between a child's death and its restart: ``first_s``, doubled after each death
    up to ``max_s``, back to ``first_s`` when the child had stayed up ``stable_s`` (sans-IO: the
    caller passes the times)."""

    first_s: float = 0.5
    max_s: float = 10.0
    stable_s: float = 30.0

    def delay(self, previous_s: float | None, uptime_s: float) -> float:
        """The wait before restarting a child that ran ``uptime_s`` and was last restarted
        after ``previous_s`` (None: never)."""
        if previous_s is None or uptime_s >= self.stable_s:
            return self.first_s
        return min(self.max_s, previous_s * 2)


def describe_exit(returncode: int) -> str:
    """``status 3`` or ``status -9 (SIGKILL)`` for a child's return code."""
    if returncode < 0:
        try:
            return f"status {returncode} ({signal.Signals(-returncode).name})"
        except ValueError:
            return f"status {returncode}"
    return f"status {returncode}"


@dataclass
class _Watch:
    """One supervised child: how to start it again, and its restart bookkeeping."""

    label: str
    proc: Callable[[], subprocess.Popen[bytes] | None]
    start: Callable[[], subprocess.Popen[bytes]]
    started_at: float
    restarts: int = 0
    delay_s: float | None = None
    restart_at: float | None = None


#: The ``default`` user while the append-only file is replayed (see :func:`_aof_replayable`).
AOF_DEFAULT_USER = "user default off resetpass resetkeys resetchannels ~sipsec:* -@all +@all -@admin -@dangerous"


def _aof_replayable(acl: str) -> str:
    """``acl`` with its ``default`` user still off (nobody can authenticate as it; new connections
    start unauthenticated) but allowed the services' writes on ``sipsec:*`` keys.

    Redis 7.0 (and other releases before the upstream fix) replays the MULTI/EXEC blocks of
    its append-only file (each Lua script's effects, each transaction) as the default user and
    re-checks the ACL at EXEC: with a default user of no permissions every one of them is
    refused, and what scripts wrote (registrations, PKG sessions) is silently lost on restart.
    """
    lines = acl.splitlines()
    if not lines or not lines[0].startswith("user default off"):
        raise ValueError("the ACL file does not start with the default user off")
    return "\n".join([AOF_DEFAULT_USER, *lines[1:]]) + "\n"


#: A read-only Redis user that counts keys without reading any value (the fault suite's and an
#: operator's view of what a restart kept): ``<state>/<domain>/redis/inspect.password``.
INSPECT_USER = "inspect"


def _inspect_rules(password: str) -> str:
    """``inspect``'s ACL rules: its password's digest, ``sipsec:*`` keys, and only commands that
    name or count keys (SCAN, HLEN, PTTL, EXISTS, TYPE, DBSIZE): no value is readable."""
    digest = hashlib.sha256(password.encode()).hexdigest()
    return (f"on #{digest} resetkeys ~sipsec:* resetchannels -@all +auth +hello +ping +select "
            "+scan +hlen +pttl +exists +type +dbsize")


def _instance_proc(inst: Instance) -> subprocess.Popen[bytes] | None:
    return inst.proc


def _child_env(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIPSEC_")}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def terminate(procs: list[tuple[str, subprocess.Popen[bytes]]], grace_s: float) -> list[str]:
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



def _write_private(path: Path, data: bytes) -> None:
    """Write a secret: the file (re)created with mode 0600 before any byte is written."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)

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
        self._redis_argv: dict[str, list[str]] = {}
        self.policy = RestartPolicy()
        self._watches: list[_Watch] = []

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
        """Each domain's redis-server, as a deployment runs it: ``--aclfile`` with one user per
        service (random passwords, 0600 files in the state directory), the ``default`` user off,
        protected mode on; and each domain's gateway sealing key (an earlier run's, in a kept
        state directory). A Redis given with ``--redis`` is used as given (one database per domain)."""
        for d in DOMAINS:
            key_file = sealing_key_file(self.topo, d)
            if not key_file.exists():  # a kept --state-dir keeps its key: what Redis holds stays readable
                # 64 hex digits: raw bytes ending in a newline would lose it to the secret-file reader
                _write_private(key_file, os.urandom(32).hex().encode() + b"\n")
        # the run's CA and a certificate per proxy and gateway: SIP over TLS between them
        make_pki(tls_dir(self.topo), tls_parties(self.topo))
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
            rdir.mkdir(parents=True, exist_ok=True, mode=0o700)
            passwords = {user: generate_password() for user in REDIS_USERS}
            files: dict[str, Path] = {}
            for user, password in passwords.items():
                files[user] = rdir / f"{user}.password"
                _write_private(files[user], password.encode() + b"\n")
            inspect_password = generate_password()
            _write_private(rdir / f"{INSPECT_USER}.password", inspect_password.encode() + b"\n")
            acl_path = rdir / "users.acl"
            acl = acl_file(passwords, extra={INSPECT_USER: _inspect_rules(inspect_password)})
            _write_private(acl_path, _aof_replayable(acl).encode())
            self.topo.redis_password_files[d.name] = files
            log_path = self.topo.state_dir / "logs" / f"{d.name}-redis.log"
            # append-only file, fsync'd every second: a restart loses at most ~1 s of writes
            argv = [exe, "--bind", d.host, "--port", str(port), "--save", "",
                    "--appendonly", "yes", "--appendfsync", "everysec", "--dir", str(rdir),
                    "--daemonize", "no", "--protected-mode", "yes", "--aclfile", str(acl_path)]
            self._redis_argv[d.name] = argv
            proc = self._popen(argv, {}, log_path)
            self.redis[d.name] = (proc, log_path, port)
            self.topo.redis_urls[d.name] = f"redis://{d.host}:{port}/0"
        deadline = time.monotonic() + STEP_TIMEOUT_S
        for d in DOMAINS:
            proc, log_path, port = self.redis[d.name]
            probe = ("pkg", self.topo.redis_password_files[d.name]["pkg"].read_text().strip())
            while not redis_ping(d.host, port, probe):
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise UpError(f"{d.name}/redis did not start (exit {proc.poll()}); log tail:\n"
                                  + tail(log_path))
                time.sleep(0.05)

    def init_pkg(self) -> None:
        pkg = script_path("sipsec-pkg")
        kept = self._kept_credentials()
        for d in DOMAINS:
            ddir = self.topo.state_dir / d.name
            pkg_dir = ddir / "pkg"
            pkg_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            kek_file = ddir / "kek"
            self.topo.pkg_dirs[d.name] = pkg_dir
            self.topo.kek_files[d.name] = kek_file
            env = pkg_admin_env(self.topo, d)
            reused = (pkg_dir / "params.json").exists() and kek_file.exists()
            if reused:
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
            for aor in d.aors:
                # a kept --state-dir keeps the demo users' passwords (set again: the PKG's users
                # live in Redis): the users its gateways had logged in are logged in again
                password = (kept.get(aor) if reused else None) or secrets.token_urlsafe(18)
                self.topo.passwords[aor] = password
                self._run([str(pkg), "user", "add", aor, "--password-stdin"], env,
                          f"sipsec-pkg user add {aor}", stdin=(password + "\n").encode())
        creds = dict(self.topo.passwords)
        fd = os.open(self.topo.state_dir / "credentials.json", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(creds, fh, indent=1)

    def _kept_credentials(self) -> dict[str, str]:
        """The demo users' passwords an earlier run wrote to ``credentials.json`` (none when absent
        or unreadable: new passwords then)."""
        try:
            doc = json.loads((self.topo.state_dir / "credentials.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        if not isinstance(doc, dict):
            return {}
        return {k: v for k, v in doc.items() if isinstance(k, str) and isinstance(v, str) and v}

    def plan(self) -> None:
        """Allocate every port first, so that each service's env can name the others."""
        plan_instances(self.topo, SERVICES, self.options.only)

    def start_services(self) -> None:
        """Start every instance in table order; before one whose spec has ``after``, wait
        until the instances it depends on are healthy."""
        for inst in self.topo.instances.values():
            if inst.spec.after:
                self.wait_healthy([i for i in self.topo.instances.values()
                                   if i.spec.name in inst.spec.after and i.proc is not None])
            self._start_instance(inst)

    def _start_instance(self, inst: Instance) -> subprocess.Popen[bytes]:
        argv = [str(script_path(inst.spec.script)), *inst.spec.args]
        inst.proc = self._popen(argv, inst.spec.env(self.topo, inst), inst.log_path)
        inst.started_at = time.monotonic()
        inst.status = "starting"
        return inst.proc

    def _restart_redis(self, domain: str) -> subprocess.Popen[bytes]:
        _, log_path, port = self.redis[domain]
        proc = self._popen(self._redis_argv[domain], {}, log_path)
        self.redis[domain] = (proc, log_path, port)
        return proc

    def watch(self) -> None:
        """Start supervising every child started so far (after the topology is healthy)."""
        now = time.monotonic()
        self._watches = []
        for name in self._redis_argv:
            self._watches.append(_Watch(f"{name}/redis", functools.partial(self._redis_proc, name),
                                        functools.partial(self._restart_redis, name), now))
        for inst in self.topo.instances.values():
            if inst.proc is not None:
                self._watches.append(_Watch(inst.label, functools.partial(_instance_proc, inst),
                                            functools.partial(self._start_instance, inst), inst.started_at))

    def _redis_proc(self, domain: str) -> subprocess.Popen[bytes] | None:
        return self.redis[domain][0]

    def supervise(self, now: float) -> list[str]:
        """One supervision step at monotonic time ``now``: each child found dead has what is
        left of its process group killed and its restart scheduled after the back-off; each
        child whose back-off has passed is started again. Returns the lines to log."""
        lines: list[str] = []
        for w in self._watches:
            proc = w.proc()
            if w.restart_at is None:
                if proc is None or proc.poll() is None:
                    continue
                # pool processes the child left behind (its own session: group id = its pid)
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGKILL)
                w.delay_s = self.policy.delay(w.delay_s, now - w.started_at)
                w.restarts += 1
                w.restart_at = now + w.delay_s
                lines.append(f"{w.label} exited with {describe_exit(int(proc.returncode))}; "
                             f"restart {w.restarts} in {w.delay_s:.1f} s")
            elif now >= w.restart_at:
                try:
                    new = w.start()
                except OSError as exc:
                    w.delay_s = self.policy.delay(w.delay_s, 0.0)
                    w.restart_at = now + w.delay_s
                    lines.append(f"{w.label} could not be restarted ({exc}); next try in {w.delay_s:.1f} s")
                    continue
                w.restart_at = None
                w.started_at = now
                lines.append(f"{w.label} restarted (pid {new.pid}, restart {w.restarts})")
        return lines

    def wait_healthy(self, instances: list[Instance] | None = None) -> None:
        wait_healthy(self.topo.instances.values() if instances is None else instances,
                     self.options.start_timeout_s, self.stop_requested)

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
        killed = terminate(procs, self.options.grace_s)
        killed += terminate([(f"{d}/redis", p) for d, (p, _, _) in self.redis.items()], self.options.grace_s)
        if self.own_state:
            shutil.rmtree(self.topo.state_dir, ignore_errors=True)
        return killed

    # -- reports
    def rows(self) -> list[dict[str, Any]]:
        """One row per process: Redis servers, then the service instances."""
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
        return rows
