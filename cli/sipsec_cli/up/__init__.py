"""``sipsec up``: the two-domain topology as separate local processes with a real Redis per domain.

The topology is the one description every two-domain wiring shares
(:data:`sipsec_cli.plan.PLAN`); this package runs it as processes, in four parts:

* :mod:`~sipsec_cli.up.environment` — the process plan: which instances, ports and
  environment variables (:data:`SERVICES`, one :class:`ServiceSpec` per service);
* :mod:`~sipsec_cli.up.supervise` — the child processes' start and stop;
* :mod:`~sipsec_cli.up.health` — readiness (gRPC health, HTTP, SIP OPTIONS, Redis PING);
* :mod:`~sipsec_cli.up.report` — ``--calls N`` through the gateways' control API, its
  statistics, and the tables.

Sequence: every service's console script is found (a missing one is an error, before anything
starts) → state directory → Redis per domain → ``sipsec-pkg init`` per domain (KEK generated
into a 0600 file) → users provisioned (``sipsec-pkg user add``) → every service started with
``serve``, federation peers pinned to the fingerprints ``init`` printed → health checked →
table → supervise until SIGINT/SIGTERM (or drive ``--calls N``) → children terminated, then
killed after the grace period → state directory removed.

While it serves, a child that dies — any service, or a domain's redis-server — is restarted
with back-off (0.5 s doubling to 10 s, reset once it has stayed up 30 s) and one line on stderr
names it, its exit status or signal and the restart count; the others keep running
(:meth:`~sipsec_cli.up.supervise.Supervisor.supervise`). Each Redis keeps an append-only file
(``appendfsync everysec``) in ``<state>/<domain>/redis``, so user accounts and registrations
survive its restart; at most the last second of writes is lost.

Started again on a kept ``--state-dir``, up reuses what the directory holds: each domain's PKG
material and KEK, its Redis data, the demo users' passwords (``credentials.json``) and each
gateway's sealing key. Each gateway keeps the users it has logged in under the replica name
``up`` (``SIPSEC_GATEWAY_REPLICA``: its ports are new at each start), so they are logged in
again by themselves, with their phone bindings.

Each ua-gateway also opens its legacy plain-SIP side for phones (UDP, port ``plain`` in the
table and in ``--json``'s ``services`` rows) on its domain's address, and its metrics on a port
of their own (``metrics``). Its control API needs a bearer token: each gateway generates one at
its first start into ``<state>/<domain>/gateway/api-token`` (0600); the table and ``--json``
(``api_tokens``) name those files. The PKGs trust 127.0.0.1 (where loopback connections come
from) to name the end user's address in logins.

SIP between each gateway and its proxy, and between the proxies, runs over TLS (RFC 3261
§26.2): a per-run CA and one certificate per proxy and gateway, for its loopback address, are
made in ``<state>/tls`` (:mod:`~sipsec_cli.up.tls`; keys 0600), and each side verifies the
other's certificate against that CA (port ``tls`` of each proxy). Gateways and proxies get
their PKG's pinned fingerprint, which they require.
"""

from __future__ import annotations

import contextlib
import json
import signal
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any, TextIO

from sipsec_cli.up.environment import (
    DOMAINS,
    SERVICES,
    Domain,
    Health,
    ServiceSpec,
    Topology,
    UpError,
    UpOptions,
    free_port,
    gateway_token_file,
    missing_scripts,
    redis_db_url,
    script_path,
)
from sipsec_cli.up.report import drive_calls, print_calls, print_services, summarize_calls
from sipsec_cli.up.supervise import Supervisor

__all__ = [
    "DOMAINS",
    "READY_LINE",
    "SERVICES",
    "Domain",
    "Health",
    "ServiceSpec",
    "Supervisor",
    "Topology",
    "UpError",
    "UpOptions",
    "free_port",
    "redis_db_url",
    "run_up",
    "script_path",
    "summarize_calls",
]

READY_LINE = "sipsec up: ready"


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


def _serve_until_stopped(sup: Supervisor, stop: threading.Event, json_output: bool, out: TextIO,
                         err: TextIO) -> None:
    if json_output:
        tokens = {d.name: str(gateway_token_file(sup.topo, d)) for d in sup.topo.plan.domains
                  if sup.topo.get(d, "gateway") is not None}  # the control APIs' bearer tokens
        print(json.dumps({"state_dir": str(sup.topo.state_dir), "services": sup.rows(), "api_tokens": tokens}),
              file=out, flush=True)
        print(f"{READY_LINE} (Ctrl-C to stop)", file=err, flush=True)
    else:
        print(f"{READY_LINE} (Ctrl-C to stop)", file=out, flush=True)
    sup.watch()
    while not stop.wait(0.2):
        for line in sup.supervise(time.monotonic()):
            print(f"sipsec up: {line}", file=err, flush=True)


def run_up(options: UpOptions, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Bring the topology up, serve until SIGINT/SIGTERM (or run ``--calls``), tear it down.

    Exit status: 0 when stopped by a signal (or every ``--calls`` call succeeded), 1 when
    something could not start or a call failed, 2 for an unknown ``--only`` service."""
    out = out or sys.stdout
    err = err or sys.stderr
    unknown = set(options.only) - {s.name for s in SERVICES}
    if unknown:
        print(f"sipsec up: unknown service(s) {', '.join(sorted(unknown))}; "
              f"known: {', '.join(s.name for s in SERVICES)}", file=err)
        return 2
    wanted = [s for s in SERVICES if not options.only or s.name in options.only]
    missing = missing_scripts(wanted)
    if missing:
        print(f"sipsec up: service command(s) not installed: {', '.join(missing)} (looked next to "
              f"{sys.executable} and on PATH); install the project first (make install)", file=err, flush=True)
        return 1
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
            print_services(sup, options.json_output, out)
            if options.calls > 0:
                summary = drive_calls(sup.topo, options.calls, options.call_timeout_s)
                code = 0 if summary["failed"] == 0 else 1
            else:
                _serve_until_stopped(sup, stop, options.json_output, out, err)
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
            print_calls(summary, sup.topo, out)
    return code
