"""Events handled in arrival order per Call-ID, concurrently across calls.

Opening and sealing are async (dialog store, replay cache, crypto engine), so an agent
handles each endpoint event in a task. :class:`PerCallId` chains the tasks of one Call-ID
(the messages of one dialog never overtake each other, RFC 3261 §12.2 CSeq order) while
tasks of different Call-IDs run concurrently; it also keeps the agent's other tasks
(``spawn``) so that ``close`` can end them all.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from sipsec.sip import Request, Response, SipError
from sipsec.sip.events import CancelReceived, Event, RequestReceived, ResponseReceived

__all__ = ["PerCallId", "call_id_of", "event_call_id"]

log = logging.getLogger("sipsec.gateway.ordering")


def call_id_of(message: Request | Response) -> str | None:
    """The message's Call-ID, or None when it has none that parses."""
    try:
        return str(message.call_id)
    except SipError:
        return None


def event_call_id(event: Event) -> str:
    """The Call-ID an event belongs to ("" when none: such events share one chain)."""
    message: Request | Response | None = None
    if isinstance(event, RequestReceived):
        message = event.request
    elif isinstance(event, ResponseReceived):
        message = event.response
    elif isinstance(event, CancelReceived):
        message = event.invite.request
    else:
        txn = getattr(event, "transaction", None)
        message = getattr(txn, "request", None)
    return (call_id_of(message) if message is not None else None) or ""


class PerCallId:
    """Run ``handle(event)`` for each event submitted, in order per Call-ID (see the module docstring).

    ``on_error(event)`` is called (after logging) when ``handle`` raised; it must not raise.
    ``error_of(event)`` is that exception while ``on_error`` runs (what failed decides the answer:
    503 for a dependency, 500 for a fault of our own).
    """

    def __init__(self, name: str, handle: Callable[[Event], Awaitable[None]],
                 on_error: Callable[[Event], None]) -> None:
        self.name = name
        self._handle = handle
        self._on_error = on_error
        self._tails: dict[str, asyncio.Task[None]] = {}  # the last event task per Call-ID
        self._tasks: set[asyncio.Task[Any]] = set()
        self._errors: dict[int, BaseException] = {}
        self.running = False

    def error_of(self, event: Event) -> BaseException | None:
        return self._errors.get(id(event))

    def submit(self, event: Event) -> None:
        """Queue ``event`` behind the previous event of its Call-ID (dropped unless running)."""
        if not self.running:
            return
        key = event_call_id(event)
        previous = self._tails.get(key)
        task = asyncio.get_running_loop().create_task(self._run(previous, event))
        self._tails[key] = task

        def done(t: asyncio.Task[None]) -> None:
            if self._tails.get(key) is t:
                del self._tails[key]

        task.add_done_callback(done)

    async def _run(self, previous: asyncio.Task[None] | None, event: Event) -> None:
        if previous is not None and not previous.done():
            await asyncio.wait({previous})
        try:
            await self._handle(event)
        except Exception as exc:  # noqa: BLE001 - one bad event must not stop the side
            log.exception("%s side failed on %s", self.name, type(event).__name__)
            self._errors[id(event)] = exc
            try:
                self._on_error(event)
            except Exception:  # noqa: BLE001 - the fault path itself failed; the side goes on
                log.exception("%s side could not end the call after a fault", self.name)
            finally:
                self._errors.pop(id(event), None)

    def spawn(self, coro: Awaitable[Any]) -> asyncio.Task[Any]:
        """Run ``coro`` as a task that :meth:`close` ends."""
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def close(self) -> None:
        """Stop taking events; cancel and await every task still running."""
        self.running = False
        pending = [*self._tasks, *self._tails.values()]
        for task in pending:
            task.cancel()
        for task in pending:
            try:
                await task
            except asyncio.CancelledError:
                pass
            except Exception:  # noqa: BLE001 - shutting down: report, do not raise
                log.warning("a %s-side task failed while closing", self.name, exc_info=True)
        self._tails.clear()
