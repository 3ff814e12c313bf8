"""Sans-IO SIP (RFC 3261): messages, URIs, headers, framing, transactions, dialogs and digest.

No I/O and no clock: time is passed in (``get_timer()`` / ``handle_timer(now)``).
"""

# Transactions (§17), dialogs (§12) and digest (RFC 2617/7616/8760) build on the above.
from . import transport_rules
from .core import SipCore
from .dialog import Dialog, DialogId, DialogState, DialogTable, make_dialog_response, next_hop
from .digest import (
    AuthenticationFailed,
    DigestChallenge,
    DigestClient,
    DigestCredentials,
    DigestError,
    DigestServer,
    NonceReplay,
    StaleNonce,
    select_challenge,
)
from .errors import LocalProtocolError, RemoteProtocolError, SipError
from .events import (
    CancelReceived,
    Event,
    MessageDropped,
    RequestReceived,
    ResponseReceived,
    TransactionTerminated,
    TransactionTimeout,
    TransportError,
)
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
from .timers import DEFAULT_TIMERS, Timer, TimerSettings
from .transaction import (
    MAGIC_COOKIE,
    ClientTransaction,
    ServerTransaction,
    Transaction,
    TransactionState,
    build_ack_for_error,
    build_cancel,
    client_transaction_key,
    server_transaction_key,
)
from .transport_rules import *  # noqa: F403  (its __all__, re-exported below)
from .uri import (
    AbsoluteURI,
    SipURI,
    TelURI,
    canonical_aor,
    canonical_host,
    canonical_user,
    is_ip_literal,
    parse_uri,
)

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
    "canonical_aor",
    "canonical_host",
    "canonical_name",
    "canonical_user",
    "check_require",
    "generate_branch",
    "generate_call_id",
    "generate_tag",
    "is_ip_literal",
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
    "DEFAULT_TIMERS",
    "Timer",
    "TimerSettings",
    "Event",
    "ResponseReceived",
    "RequestReceived",
    "CancelReceived",
    "TransactionTimeout",
    "TransportError",
    "TransactionTerminated",
    "MessageDropped",
    "MAGIC_COOKIE",
    "Transaction",
    "ClientTransaction",
    "ServerTransaction",
    "TransactionState",
    "build_ack_for_error",
    "build_cancel",
    "client_transaction_key",
    "server_transaction_key",
    "SipCore",
    "Dialog",
    "DialogId",
    "DialogState",
    "DialogTable",
    "make_dialog_response",
    "next_hop",
    "DigestChallenge",
    "DigestCredentials",
    "DigestClient",
    "DigestServer",
    "DigestError",
    "AuthenticationFailed",
    "StaleNonce",
    "NonceReplay",
    "select_challenge",
]
# RFC 3261 §18: receiving, validating and answering at the transport layer, all of it public here.
__all__ += transport_rules.__all__
