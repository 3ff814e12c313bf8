"""Where the gateway sends a request: the transport address of a SIP URI (RFC 3261 §8.1.2, §19.1.1).

The gateway sends out-of-dialog requests to its outbound proxy and in-dialog requests to the
next hop of the route set or remote target (§12.2.1.1); this module turns such a URI into a
:class:`~sipsec.aio.Peer` without RFC 3263 DNS (a numeric host, or a name the resolver of
the transport layer handles).
"""

from __future__ import annotations

from sipsec.aio import DEFAULT_PORTS, Peer
from sipsec.sip import SipError, SipURI
from sipsec.sip.uri import AbsoluteURI, TelURI

__all__ = ["peer_for_uri"]


def peer_for_uri(uri: SipURI | TelURI | AbsoluteURI, default_transport: str = "UDP") -> Peer:
    """The transport address to send a request to ``uri``.

    The ``transport`` URI parameter picks the transport; ``sips`` implies TLS (RFC 3261
    §19.1.1); the port defaults to 5060 (5061 for TLS). Raises :class:`SipError` for a
    non-SIP URI.
    """
    if not isinstance(uri, SipURI):
        raise SipError(f"cannot route to a {uri.__class__.__name__}")
    param = uri.params.get("transport")
    transport = param.upper() if param else ("TLS" if uri.scheme == "sips" else default_transport)
    port = uri.port or DEFAULT_PORTS.get(transport, 5060)
    return Peer(transport, uri.host.strip("[]"), port)
