"""Ports to hand to a process that will bind them later.

A port found with ``bind(port 0)`` comes from the kernel's ephemeral range, the same range
the kernel draws from for every outgoing connection: between the moment a supervisor picks
the port and the moment its child binds it, a client socket anywhere on the machine (one of
the children already started, connecting to Redis) may take it, and the child exits with
``EADDRINUSE``. ``spare_port`` picks from below the ephemeral range instead, where only
explicit binds land, and checks that the number is free now for every protocol asked.

"Free now" is not "taken": a plan that asks for several ports before any is bound (``sipsec
up`` plans every service's ports first) could be handed the same number twice on one address,
and its second process then exits with ``EADDRINUSE`` (seen once in CI: a proxy of ``sipsec up``
exiting while starting). So this process remembers the last :data:`_REMEMBERED` ports it handed
out, per address, and does not hand one of them out again.
"""

from __future__ import annotations

import collections
import random
import socket
import threading
from pathlib import Path

__all__ = ["ephemeral_range", "spare_port"]

_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")
_LOWEST = 10000
_TRIES = 200
#: How many recently handed-out (address, port) pairs are never handed out again.
_REMEMBERED = 4096
_handed: collections.OrderedDict[tuple[str, int], None] = collections.OrderedDict()
_handed_lock = threading.Lock()


def _claim(host: str, port: int) -> bool:
    """Record ``port`` on ``host`` as handed out; False when it was handed out lately."""
    with _handed_lock:
        if (host, port) in _handed:
            return False
        _handed[(host, port)] = None
        while len(_handed) > _REMEMBERED:
            _handed.popitem(last=False)
        return True


def ephemeral_range() -> tuple[int, int]:
    """The kernel's ephemeral port range (Linux default ``32768-60999`` when unreadable)."""
    try:
        low, high = (int(x) for x in _RANGE_FILE.read_text().split())
    except (OSError, ValueError):
        return 32768, 60999
    return low, high


def _free(host: str, port: int, kind: int) -> bool:
    with socket.socket(socket.AF_INET, kind) as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def spare_port(host: str = "127.0.0.1", *, tcp: bool = True, udp: bool = False,
               rng: random.Random | None = None) -> int:
    """A port outside the ephemeral range that is free on ``host`` for TCP (``tcp``) and
    UDP (``udp``) now, and not handed out by this process lately. Falls back to a
    kernel-chosen port when the range below the ephemeral one is too small or full. Raises
    ``OSError`` when no port is free at all."""
    kinds = [k for k, on in ((socket.SOCK_STREAM, tcp), (socket.SOCK_DGRAM, udp)) if on]
    if not kinds:
        raise ValueError("spare_port: ask for tcp, udp or both")
    low, _ = ephemeral_range()
    pick = rng or random.SystemRandom()
    if low - 1 > _LOWEST:
        for _ in range(_TRIES):
            port = pick.randint(_LOWEST, low - 1)
            if all(_free(host, port, k) for k in kinds) and _claim(host, port):
                return port
    for _ in range(_TRIES):
        with socket.socket(socket.AF_INET, kinds[0]) as s:
            s.bind((host, 0))
            port = int(s.getsockname()[1])
        if all(_free(host, port, k) for k in kinds[1:]) and _claim(host, port):
            return port
    raise OSError(f"no free port on {host}")
