"""Crypto engines: the pairing operations in-process (embedded default) or on crypto-workers.

``create_engine()`` picks: no worker targets -> :class:`InProcessEngine`; otherwise a
:class:`RemoteEngine` over those targets, falling back to in-process when none answers.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sipsec.engine.inprocess import DEFAULT_BATCH_WINDOW_S, DEFAULT_BUSY_CPU, InProcessEngine
from sipsec.engine.metrics import CALL_OUTCOMES, FALLBACK_REASONS, EngineMetrics
from sipsec.engine.protocol import CryptoEngine
from sipsec.engine.remote import RETRYABLE, Balance, EngineUnavailable, RemoteEngine

__all__ = [
    "DEFAULT_BATCH_WINDOW_S",
    "DEFAULT_BUSY_CPU",
    "CALL_OUTCOMES",
    "FALLBACK_REASONS",
    "RETRYABLE",
    "Balance",
    "CryptoEngine",
    "EngineMetrics",
    "EngineUnavailable",
    "InProcessEngine",
    "RemoteEngine",
    "create_engine",
]


def create_engine(targets: str | Sequence[str] | None = None, **remote: Any) -> CryptoEngine:
    """An engine for ``targets`` (a sequence, or one comma-separated string such as the
    value of a ``*_WORKERS`` variable): in-process when empty, else remote with ``remote``
    keyword arguments (see :class:`RemoteEngine`; ``threaded``, ``batch_window_s`` and
    ``busy_cpu`` are the in-process engine's)."""
    if isinstance(targets, str):
        targets = targets.split(",")
    names = [t.strip() for t in targets or () if t.strip()]
    threaded = bool(remote.pop("threaded", False))
    window = float(remote.pop("batch_window_s", DEFAULT_BATCH_WINDOW_S))
    busy_cpu = float(remote.pop("busy_cpu", DEFAULT_BUSY_CPU))
    if not names:
        return InProcessEngine(threaded=threaded, batch_window_s=window, busy_cpu=busy_cpu)
    return RemoteEngine(names, **remote)
