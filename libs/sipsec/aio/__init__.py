"""asyncio networking for sipsec: SIP transports (UDP/TCP/TLS), the endpoint shell and a minimal UA.

The only asyncio networking code of the library (DESIGN §7). The protocol logic lives in the
sans-IO :mod:`sipsec.sip`; this package moves bytes, arms one timer and hands events up.
"""

from .endpoint import EventHandler, SingleTimer, SipEndpoint, TimerSource
from .transport import (
    DEFAULT_PORTS,
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
from .ua import Call, CallFailed, CallState, UserAgent, peer_for_uri, static_sdp

__all__ = [
    "DEFAULT_PORTS",
    "Call",
    "CallFailed",
    "CallState",
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
    "UserAgent",
    "build_error_response",
    "peer_for_uri",
    "response_destination",
    "stamp_received",
    "static_sdp",
    "via_destination",
]
