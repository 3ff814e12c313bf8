"""The session description the gateway offers or answers when it has none to relay (RFC 4566)."""

from __future__ import annotations

__all__ = ["static_sdp"]


def static_sdp(address: str, port: int = 49170, session_id: int = 2890844526) -> bytes:
    """A fixed one-stream audio SDP (RFC 4566; PCMU/8000, RFC 3551) used as offer and as answer.

    The gateway relays signalling only: this describes no media it sends, it lets a call
    placed from the control API (or auto-answered) complete the offer/answer of RFC 3264.
    """
    ip = "IP6" if ":" in address else "IP4"
    return (
        "v=0\r\n"
        f"o=sipsec {session_id} {session_id} IN {ip} {address}\r\n"
        "s=sipsec\r\n"
        f"c=IN {ip} {address}\r\n"
        "t=0 0\r\n"
        f"m=audio {port} RTP/AVP 0\r\n"
        "a=rtpmap:0 PCMU/8000\r\n"
    ).encode()
