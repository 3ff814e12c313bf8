"""Sans-IO SIP (RFC 3261): messages, URIs, headers and framing — no I/O, no clock."""

from .errors import LocalProtocolError, RemoteProtocolError, SipError
from .framing import StreamFramer, is_keepalive, parse_datagram
from .headers import (
    COMPACT_FORMS,
    CSeq,
    Headers,
    NameAddr,
    Via,
    canonical_name,
    parse_cseq,
    parse_name_addr,
    parse_name_addr_list,
    parse_via_list,
    split_list,
)
from .message import (
    REASON_PHRASES,
    Message,
    Request,
    Response,
    check_require,
    generate_branch,
    generate_call_id,
    generate_tag,
    make_response,
)
from .parser import DEFAULT_LIMITS, Limits, parse_message
from .uri import AbsoluteURI, SipURI, TelURI, parse_uri

__all__ = [
    "COMPACT_FORMS",
    "DEFAULT_LIMITS",
    "REASON_PHRASES",
    "AbsoluteURI",
    "CSeq",
    "Headers",
    "Limits",
    "LocalProtocolError",
    "Message",
    "NameAddr",
    "RemoteProtocolError",
    "Request",
    "Response",
    "SipError",
    "SipURI",
    "StreamFramer",
    "TelURI",
    "Via",
    "canonical_name",
    "check_require",
    "generate_branch",
    "generate_call_id",
    "generate_tag",
    "is_keepalive",
    "make_response",
    "parse_cseq",
    "parse_datagram",
    "parse_message",
    "parse_name_addr",
    "parse_name_addr_list",
    "parse_uri",
    "parse_via_list",
    "split_list",
]
