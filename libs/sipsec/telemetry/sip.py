"""Prometheus metrics of the asyncio SIP transports (sipsec.aio): traffic, drops by reason, connections."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

__all__ = [
    "DROP_REASONS",
    "SIP_BAD_REQUESTS_ANSWERED",
    "SIP_BYTES_RECEIVED",
    "SIP_BYTES_SENT",
    "SIP_CONNECTIONS_CLOSED",
    "SIP_CONNECTIONS_OPEN",
    "SIP_CONNECTIONS_REJECTED",
    "SIP_MESSAGES_DROPPED",
    "SIP_MESSAGES_RECEIVED",
    "SIP_MESSAGES_SENT",
]

# Labels are from small fixed sets: transport in {UDP, TCP, TLS}; kind in {request, response};
# reason is one of DROP_REASONS or the parser's fixed RemoteProtocolError.reason names;
# status is a SIP status code the transport itself answered with (400, 413, 505, 513...).

DROP_REASONS: frozenset[str] = frozenset(
    {
        "queue_full",  # the bounded inbound queue was full (back-pressure: drop, do not block)
        "too_large",  # datagram / framed message over the size limit
        "malformed",  # unparseable and no Via to answer to (a parser reason is used when known)
        "malformed_response",  # a response that did not parse: never answered (RFC 3261 §18.1.2)
        "not_utf8",  # reserved for a parser that rejects bad encodings
        "send_failed",  # the socket refused the bytes or the connection broke
        "connect_failed",  # a TCP/TLS connection to the destination could not be opened
        "no_route",  # a response whose Via gives no usable destination
        "closed",  # the transport was closed while the message was queued
        "handler_error",  # the message handler raised (bug in the layer above; counted, not fatal)
    }
)

SIP_MESSAGES_RECEIVED = Counter(
    "sipsec_sip_messages_received_total",
    "SIP messages received and accepted into the inbound queue.",
    ["transport", "kind"],
)
SIP_MESSAGES_SENT = Counter(
    "sipsec_sip_messages_sent_total",
    "SIP messages handed to the network.",
    ["transport", "kind"],
)
SIP_MESSAGES_DROPPED = Counter(
    "sipsec_sip_messages_dropped_total",
    "SIP messages (or undecodable input) dropped by the transport, by reason.",
    ["transport", "reason"],
)
SIP_BAD_REQUESTS_ANSWERED = Counter(
    "sipsec_sip_bad_requests_answered_total",
    "Malformed requests the transport answered itself with an error status.",
    ["transport", "status"],
)
SIP_BYTES_RECEIVED = Counter(
    "sipsec_sip_received_bytes_total",
    "Bytes of SIP input read from sockets.",
    ["transport"],
)
SIP_BYTES_SENT = Counter(
    "sipsec_sip_sent_bytes_total",
    "Bytes of SIP output written to sockets.",
    ["transport"],
)
SIP_CONNECTIONS_OPEN = Gauge(
    "sipsec_sip_connections_open",
    "Open SIP stream connections (TCP, TLS).",
    ["transport"],
)
SIP_CONNECTIONS_REJECTED = Counter(
    "sipsec_sip_connections_rejected_total",
    "Incoming SIP stream connections refused at accept, by reason "
    "(per_source_limit, global_limit).",
    ["transport", "reason"],
)
SIP_CONNECTIONS_CLOSED = Counter(
    "sipsec_sip_connections_closed_total",
    "SIP stream connections closed, by reason (idle_timeout, header_timeout, framing_error, "
    "tls_handshake_failed, remote, shutdown).",
    ["transport", "reason"],
)
