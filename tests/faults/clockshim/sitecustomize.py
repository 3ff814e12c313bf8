"""The fault suite's clock-skew injection (tests only; nothing in the product reads it).

``sipsec up`` passes its environment on to every child, so a child started with this directory
on ``PYTHONPATH`` imports this module first. It skews ``time.time`` and ``time.time_ns`` (the
wall clock that signing times, sessions and key periods read; monotonic clocks and timers are
left alone) by the number of seconds in ``FAULTSUITE_SKEW_FILE``, re-read at most twice a
second, in the one process whose ``SIPSEC_GATEWAY_DOMAIN`` is ``FAULTSUITE_SKEW_DOMAIN``:
the gateway of one domain, whose clock then runs ahead of everyone else's.
"""

from __future__ import annotations

import os
import time

_FILE = os.environ.get("FAULTSUITE_SKEW_FILE", "")
_DOMAIN = os.environ.get("FAULTSUITE_SKEW_DOMAIN", "")


def _install(path: str) -> None:
    real_time, real_time_ns, monotonic = time.time, time.time_ns, time.monotonic
    state = {"offset": 0.0, "checked": -1.0}

    def offset() -> float:
        now = monotonic()
        if now - state["checked"] >= 0.5:
            state["checked"] = now
            try:
                with open(path) as fh:
                    state["offset"] = float(fh.read().strip() or 0)
            except (OSError, ValueError):
                state["offset"] = 0.0
        return state["offset"]

    def skewed_time() -> float:
        return real_time() + offset()

    def skewed_time_ns() -> int:
        return real_time_ns() + int(offset() * 1e9)

    time.time = skewed_time
    time.time_ns = skewed_time_ns


if _FILE and _DOMAIN and os.environ.get("SIPSEC_GATEWAY_DOMAIN") == _DOMAIN:
    _install(_FILE)
