"""Several proxy processes on one UDP port (SO_REUSEPORT), each keeping its transactions.

The kernel spreads datagrams over the sockets sharing the port by a hash of the 4-tuple, so
every request from one source (and its retransmissions, its CANCEL, the ACK of a non-2xx)
reaches the same worker. Responses from downstream must reach the worker that holds the
client transaction: each worker therefore also binds a private UDP port, forwards from it and
writes it in its Via (§18.2.2: responses go to the Via's sent-by). Record-Route names the
shared port, so in-dialog requests spread over the workers like new ones.

A worker never outlives the parent, even one killed with SIGKILL: each asks the kernel for
SIGTERM when its parent dies (``PR_SET_PDEATHSIG``, Linux), set between fork and exec.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
from dataclasses import fields
from typing import Any

from sipsec.config import split_hostport

from sipsec_proxy.config import ENV, ProxyConfig

__all__ = ["run_workers"]


def _free_udp_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _die_with_parent(parent_pid: int) -> None:
    """In the child, before exec: SIGTERM when the parent dies; exit at once if it already has."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, int(signal.SIGTERM), 0, 0, 0)  # PR_SET_PDEATHSIG
    if os.getppid() != parent_pid:
        os._exit(1)


def run_workers(config: ProxyConfig) -> int:
    """Starts ``config.workers`` copies of ``sipsec-proxy`` sharing the UDP port; relays SIGTERM."""
    if config.location == "memory":
        logging.getLogger("sipsec.proxy").warning(
            "%d workers with location=memory: each worker keeps its own bindings; "
            "use location=redis or a location service", config.workers)
    host, port = split_hostport(config.listen)
    if port == 0:
        port = _free_udp_port(host)
    env: dict[str, Any] = {**os.environ}
    for f in fields(ProxyConfig):
        env[ENV[f.name][0]] = str(getattr(config, f.name))
    env |= {"SIPSEC_PROXY_WORKERS": "1", "SIPSEC_PROXY_REUSE_PORT": "1",
                           "SIPSEC_PROXY_LISTEN": f"{host}:{port}",
                           "SIPSEC_PROXY_NONCE_SECRET": config.nonce_secret or secrets.token_hex(32)}
    if config.metrics_port > 0:
        env["SIPSEC_PROXY_METRICS_PORT"] = "0"  # one port each; scrape the workers separately
    die_with_us = functools.partial(_die_with_parent, os.getpid())
    children = [subprocess.Popen([sys.executable, "-m", "sipsec_proxy", "serve"], env=env,  # noqa: PLW1509
                                 stdout=subprocess.PIPE, text=True, preexec_fn=die_with_us)
                for _ in range(config.workers)]
    for child in children:
        assert child.stdout is not None
        child.stdout.readline()
    print(f"sipsec-proxy listening on udp:{host}:{port} ({config.workers} workers)", flush=True)

    def forward(signum: int, _frame: object) -> None:
        for child in children:
            if child.poll() is None:
                child.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    codes = [child.wait() for child in children]
    return max(codes, default=0)
