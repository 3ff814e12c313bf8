"""Process lifecycle shared by the services: SIGTERM/SIGINT start a graceful drain."""

from __future__ import annotations

import asyncio
import signal

__all__ = ["stop_on_signals"]


def stop_on_signals(*signals: signal.Signals) -> asyncio.Event:
    """An event that SIGTERM and SIGINT (or ``signals``) set on the running loop.

    Install it before starting the server, so that a signal during start-up is not lost; then
    ``await event.wait()`` and drain.
    """
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in signals or (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return stop
