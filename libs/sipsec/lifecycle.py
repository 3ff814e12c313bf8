"""Process lifecycle shared by the services: the event loop they run on, and SIGTERM/SIGINT
starting a graceful drain."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

__all__ = ["EVENT_LOOPS", "event_loop_factory", "run", "stop_on_signals"]

T = TypeVar("T")

#: Values of ``SIPSEC_EVENT_LOOP``: ``auto`` (the default) runs on uvloop where it is
#: installed, else on asyncio's own loop; ``uvloop`` requires it; ``asyncio`` never uses it.
EVENT_LOOPS = ("auto", "uvloop", "asyncio")


def event_loop_factory(choice: str | None = None) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The loop factory for ``choice`` (default: ``SIPSEC_EVENT_LOOP``, else ``auto``); None = asyncio's.

    uvloop (libuv) runs the same asyncio code with less CPU per event: on the two-domain
    benchmark a secured call costs ~8 % less CPU in each process (``bench/call_setup.py``
    with ``SIPSEC_EVENT_LOOP=asyncio`` against the default). Raises ValueError for an
    unknown choice, and RuntimeError if ``uvloop`` is asked for and not installed.
    """
    choice = (choice if choice is not None else os.environ.get("SIPSEC_EVENT_LOOP", "auto")).strip().lower()
    if choice not in EVENT_LOOPS:
        raise ValueError(f"SIPSEC_EVENT_LOOP must be one of {', '.join(EVENT_LOOPS)}, not {choice!r}")
    if choice == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        if choice == "uvloop":
            raise RuntimeError("SIPSEC_EVENT_LOOP=uvloop, but uvloop is not installed") from None
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def run(main: Coroutine[Any, Any, T], *, loop: str | None = None) -> T:
    """``asyncio.run(main)`` on the loop :func:`event_loop_factory` picks (every service's entry point)."""
    try:
        factory = event_loop_factory(loop)
    except (ValueError, RuntimeError):
        main.close()  # never started: no "coroutine was never awaited" warning
        raise
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)


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
