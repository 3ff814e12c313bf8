"""Out-of-dialog requests whose final response a coroutine awaits (REGISTER, OPTIONS, ...).

One client transaction per request (RFC 3261 §17.1.2): :meth:`PendingRequests.send` sends
it through the endpoint and waits for its final response; the user agent's event handler
hands every response to :meth:`PendingRequests.resolve` and every transaction timeout or
transport error to :meth:`PendingRequests.fail`, which say whether the transaction was one
of these. Provisional responses are absorbed; the first final response ends the wait.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from sipsec.sip.message import Request, Response
from sipsec.sip.transaction import Transaction

from .endpoint import SipEndpoint
from .transport import Peer

__all__ = ["PendingRequests"]


class PendingRequests:
    """The waiting out-of-dialog client transactions of one user agent.

    ``error(status, reason)`` makes the exception :meth:`send` raises when no final response
    comes (408, its own wait timed out) or the transaction failed (the status given to
    :meth:`fail`: 408 for Timer F, 503 for a transport error, RFC 3261 §8.1.3.1).
    """

    def __init__(self, endpoint: SipEndpoint, error: Callable[[int, str], Exception]) -> None:
        self.endpoint = endpoint
        self._error = error
        self._waiting: dict[Transaction, asyncio.Future[Response]] = {}

    def __len__(self) -> int:
        return len(self._waiting)

    async def send(self, request: Request, dest: Peer, timeout: float) -> Response:
        """Send ``request`` to ``dest`` and return its final response (any status)."""
        fut: asyncio.Future[Response] = asyncio.get_running_loop().create_future()
        txn = self.endpoint.send_request(request, dest)
        if txn is None:
            raise self._error(503, f"{request.method} cannot be sent in a transaction")
        self._waiting[txn] = fut
        try:
            return await asyncio.wait_for(asyncio.shield(fut), timeout)
        except TimeoutError:
            raise self._error(408, f"no final response to {request.method}") from None
        finally:
            self._waiting.pop(txn, None)

    def resolve(self, txn: Transaction, response: Response) -> bool:
        """A response arrived in ``txn``: True when it is one of these (a final one ends the wait)."""
        pending = self._waiting.get(txn)
        if pending is None:
            return False
        if response.status >= 200 and not pending.done():
            pending.set_result(response)
        return True

    def fail(self, txn: Transaction, status: int) -> bool:
        """``txn`` failed with ``status``: True when it is one of these (its wait raises)."""
        pending = self._waiting.get(txn)
        if pending is None:
            return False
        if not pending.done():
            pending.set_exception(self._error(status, "request failed"))
        return True
