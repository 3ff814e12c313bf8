"""asyncio networking for sipsec: SIP transports (UDP/TCP/TLS) and the endpoint shell.

The only asyncio networking code of the library. The protocol logic lives in the
sans-IO :mod:`sipsec.sip`; this package moves bytes, arms one timer and hands events up.
"""

from .endpoint import EventHandler, SingleTimer, SipEndpoint, TimerSource
from .transport import (
    DEFAULT_PORTS,
    ConnectionLimits,
    Inbound,
    InboundQueue,
    Outgoing,
    Peer,
    SendErrorHandler,
    StreamTransport,
    Transport,
    UdpTransport,
    build_error_response,
    response_destination,
    stamp_received,
    via_destination,
)

__all__ = [
    "DEFAULT_PORTS",
    "ConnectionLimits",
    "EventHandler",
    "Inbound",
    "InboundQueue",
    "Outgoing",
    "Peer",
    "SendErrorHandler",
    "SingleTimer",
    "SipEndpoint",
    "StreamTransport",
    "TimerSource",
    "Transport",
    "UdpTransport",
    "build_error_response",
    "response_destination",
    "stamp_received",
    "via_destination",
]
