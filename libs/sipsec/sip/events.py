"""Events that the sans-IO transaction layer and endpoint core hand to the transaction user."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .message import Request, Response
    from .transaction import ClientTransaction, ServerTransaction, Transaction

__all__ = [
    "CancelReceived",
    "Event",
    "MessageDropped",
    "RequestReceived",
    "ResponseReceived",
    "TransactionTerminated",
    "TransactionTimeout",
    "TransportError",
]


@dataclass(frozen=True, slots=True)
class Event:
    """Base class of every transaction-layer event."""


@dataclass(frozen=True, slots=True)
class ResponseReceived(Event):
    """A response for the TU (§17.1: 1xx, 2xx and the first of each 3xx–6xx).

    ``transaction`` is None for a response no client transaction matched (a stray
    2xx retransmission after Timer M, RFC 6026 §8.4): a proxy forwards it statelessly.
    """

    response: Response
    transaction: ClientTransaction | None
    addr: Any = None


@dataclass(frozen=True, slots=True)
class RequestReceived(Event):
    """A request for the TU: a new server transaction's request (§17.2), or an ACK.

    An ACK for a 2xx has its own branch (§17.1.1.3), so no transaction matches it by
    §17.2.3; a UA core reports it with the INVITE server transaction whose 2xx it
    acknowledges (matched by Call-ID, tags and CSeq), else with ``transaction=None``
    (a proxy forwards it statelessly). An ACK that does match (RFC 6026 Accepted) comes
    with its transaction.
    """

    request: Request
    transaction: ServerTransaction | None
    addr: Any = None


@dataclass(frozen=True, slots=True)
class CancelReceived(Event):
    """A CANCEL matched the INVITE server transaction ``invite`` (§9.2).

    The core has already answered the CANCEL with 200; in UA mode it has also answered
    the INVITE with 487 if no final response had been sent (``answered_487``).
    """

    cancel: Request
    invite: ServerTransaction
    answered_487: bool


@dataclass(frozen=True, slots=True)
class TransactionTimeout(Event):
    """A transaction timer ran out: ``timer`` names it.

    B/F (client): no final response, treat as 408 (§8.1.3.1); the transaction is over.
    C (INVITE client in Proceeding, §16.6 step 11): a provisional came, then nothing for
    Timer C; the TU should CANCEL (§9.1) and treat the branch as 408 (§16.8); the
    transaction ends 64*T1 later unless a final response arrives. H (server): no ACK.
    L: a UA core's 2xx was never ACKed (§13.3.1.4).
    """

    transaction: Transaction
    timer: str

    def as_response(self) -> Response:
        """The 408 (Request Timeout) the TU should act on for a client timeout (§8.1.3.1,
        §16.7 step 2 for proxies)."""
        from .message import make_response

        return make_response(self.transaction.request, 408)


@dataclass(frozen=True, slots=True)
class TransportError(Event):
    """The shell reported that sending failed (§17.1.4, §17.2.4)."""

    transaction: Transaction


@dataclass(frozen=True, slots=True)
class TransactionTerminated(Event):
    """The transaction reached the Terminated state; it can be forgotten."""

    transaction: Transaction


@dataclass(frozen=True, slots=True)
class MessageDropped(Event):
    """The core dropped an incoming message; ``reason`` is a fixed, countable label."""

    reason: str
    addr: Any = None
