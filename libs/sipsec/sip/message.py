"""SIP requests and responses (RFC 3261 §7) with typed, cached views of their headers."""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from typing import Any

from . import _abnf
from .errors import LocalProtocolError, RemoteProtocolError
from .headers import (
    CSeq,
    Headers,
    NameAddr,
    Via,
    cseq_view,
    name_addr_list_view,
    name_addr_params_view,
    name_addr_view,
    parse_via_list,
    via_list_view,
)
from .uri import AbsoluteURI, SipURI, TelURI, parse_uri

__all__ = [
    "REASON_PHRASES",
    "Message",
    "Request",
    "Response",
    "generate_branch",
    "generate_call_id",
    "generate_tag",
    "check_require",
    "make_response",
]

SIP_VERSION = "SIP/2.0"

# RFC 3261 §21 and common extensions.
REASON_PHRASES: dict[int, str] = {
    100: "Trying", 180: "Ringing", 181: "Call Is Being Forwarded", 182: "Queued",
    183: "Session Progress", 199: "Early Dialog Terminated", 200: "OK", 202: "Accepted",
    204: "No Notification", 300: "Multiple Choices", 301: "Moved Permanently",
    302: "Moved Temporarily", 305: "Use Proxy", 380: "Alternative Service", 400: "Bad Request",
    401: "Unauthorized", 402: "Payment Required", 403: "Forbidden", 404: "Not Found",
    405: "Method Not Allowed", 406: "Not Acceptable", 407: "Proxy Authentication Required",
    408: "Request Timeout", 410: "Gone", 412: "Conditional Request Failed",
    413: "Request Entity Too Large", 414: "Request-URI Too Long", 415: "Unsupported Media Type",
    416: "Unsupported URI Scheme", 420: "Bad Extension", 421: "Extension Required",
    422: "Session Interval Too Small", 423: "Interval Too Brief", 429: "Too Many Requests",
    480: "Temporarily Unavailable", 481: "Call/Transaction Does Not Exist", 482: "Loop Detected",
    483: "Too Many Hops", 484: "Address Incomplete", 485: "Ambiguous", 486: "Busy Here",
    487: "Request Terminated", 488: "Not Acceptable Here", 489: "Bad Event",
    491: "Request Pending", 493: "Undecipherable", 494: "Security Agreement Required",
    500: "Server Internal Error", 501: "Not Implemented", 502: "Bad Gateway",
    503: "Service Unavailable", 504: "Server Time-out", 505: "Version Not Supported",
    513: "Message Too Large", 580: "Precondition Failure", 600: "Busy Everywhere",
    603: "Decline", 604: "Does Not Exist Anywhere", 606: "Not Acceptable",
}


def generate_branch() -> str:
    """A fresh RFC 3261 §8.1.1.7 branch: the magic cookie ``z9hG4bK`` plus 96 random bits."""
    return "z9hG4bK" + secrets.token_hex(12)


def generate_tag() -> str:
    """A fresh From/To tag (RFC 3261 §19.3: at least 32 random bits; we use 64)."""
    return secrets.token_hex(8)


def generate_call_id() -> str:
    """A fresh, globally unique Call-ID (RFC 3261 §8.1.1.4; 128 random bits)."""
    return secrets.token_hex(16)


_MISSING = object()
#: header key -> the cached views parsed from its lines (what a change of it invalidates)
_VIEWS_OF: dict[str, tuple[str, ...]] = {
    "via": ("via", "via0", "top_via"),
    "call-id": ("call_id",),
    "cseq": ("cseq",),
    "from": ("from", "from_tag"),
    "to": ("to", "to_tag"),
    "max-forwards": ("max_forwards",),
    "contact": ("contact",),
    "route": ("route",),
    "record-route": ("record_route",),
}
_FATAL_DEFECTS = frozenset(
    [f"missing-{h}" for h in ("via", "cseq", "call-id", "from", "to")]
    + [f"duplicate-{h}" for h in ("cseq", "call-id", "from", "to")]
    + ["conflicting-content-length"]
)


class Message:
    """Common part of :class:`Request` and :class:`Response`.

    ``headers`` holds the raw header lines and is the only source of truth; the typed
    properties (``via``, ``cseq``, ``from_``...) are parsed views, cached until the headers
    change.  Each read returns a fresh copy (a snapshot): mutating it does not change the
    message — assign it back (``to = msg.to; to.tag = t; msg.to = to``) or use ``headers``.
    ``defects`` names the non-fatal oddities found while parsing (``"missing-to"``,
    ``"duplicate-call-id"``, ``"trailing-bytes"``...) for the application layer to judge.
    """

    __slots__ = (
        "headers",
        "body",
        "defects",
        "_cache",
        "_cache_hdrs",
        "_cache_mod",
        "_raw_head",
        "_raw_hdrs",
        "_raw_mod",
        "_raw_clen",
    )

    def __init__(
        self,
        headers: Headers | Iterable[tuple[str, str]] | None = None,
        body: bytes = b"",
    ) -> None:
        if headers is None:
            headers = Headers()
        elif not isinstance(headers, Headers):
            headers = Headers(headers)
        if not isinstance(body, bytes | bytearray | memoryview):
            raise LocalProtocolError("body must be bytes")
        self.headers: Headers = headers
        self.body: bytes = bytes(body)
        self.defects: list[str] = []
        self._cache: dict[str, Any] = {}
        self._cache_hdrs: Headers | None = headers
        self._cache_mod = headers.mod_count
        self._raw_head: bytes | None = None
        self._raw_hdrs: Headers | None = None
        self._raw_mod = -1
        self._raw_clen = -1

    # -- cache -----------------------------------------------------------------------------
    def _cached(self, key: str) -> Any:
        h = self.headers
        if h is not self._cache_hdrs or h.mod_count != self._cache_mod:
            self._revalidate()
        return self._cache.get(key, _MISSING)

    def _revalidate(self) -> None:
        """Drop the views of the header lines changed since they were cached (all of them
        when the headers object was replaced or the change log is incomplete)."""
        h = self.headers
        cache = self._cache
        mod = h.mod_count
        if cache:
            start = self._cache_mod
            log = h._log
            if h is self._cache_hdrs and len(log) == mod and 0 <= start <= mod:
                for key in set(log[start:]):
                    for view in _VIEWS_OF.get(key, ()):
                        cache.pop(view, None)
            else:
                self._cache = {}
        self._cache_hdrs = h
        self._cache_mod = mod

    def _store(self, key: str, value: Any) -> Any:
        self._cache[key] = value
        return value

    def _single(self, name: str) -> str:
        value = self.headers.get(name)
        if value is None:
            raise RemoteProtocolError(f"missing-{name.lower()}", 400, name)
        return value

    def validate(self) -> None:
        """Raise RemoteProtocolError(400) when a parse defect makes the message unusable.

        Fatal: a missing or repeated Via/CSeq/Call-ID/From/To (RFC 3261 §8.1.1, §20; RFC
        4475 §3.3.1 insuf, §3.3.8 multi01) and disagreeing Content-Length values (§3.3.9
        mcl01).  Tolerated: a missing Max-Forwards (RFC 2543 peers), missing Content-Length
        on a datagram and bytes after the body (§18.3).
        """
        for defect in self.defects:
            if defect in _FATAL_DEFECTS:
                raise RemoteProtocolError(defect, 400)

    # -- typed views -------------------------------------------------------------------------
    def via_view(self) -> list[Via]:
        """All Via entries, parsed once and shared: read-only (``via`` hands out copies)."""
        v = self._cached("via")
        if v is _MISSING:
            values = self.headers.get_all_raw("via")
            first = self._cache.get("via0") if values else None
            out: list[Via] = list(first) if first is not None else []
            for value in values[1:] if first is not None else values:
                out.extend(via_list_view(value))
            v = self._store("via", out)
        return v  # type: ignore[no-any-return]

    @property
    def via(self) -> list[Via]:
        """All Via entries, topmost first (RFC 3261 §20.42)."""
        return [_copy_via(x) for x in self.via_view()]

    @via.setter
    def via(self, vias: list[Via]) -> None:
        """Replace all Via headers by one line per entry."""
        self.headers.remove("Via")
        for v in reversed(vias):
            self.headers.prepend("Via", str(v))

    @property
    def top_via(self) -> Via | None:
        """The topmost Via entry (parsed eagerly), or None when there is no Via."""
        v = self.top_via_view()
        return None if v is None else _copy_via(v)

    def top_via_view(self) -> Via | None:
        """The topmost Via entry, shared: read-only (``top_via`` hands out a copy)."""
        v = self._cached("top_via")
        if v is _MISSING:
            first = self.headers.get("Via")
            if first is None:
                v = None
            else:
                via0 = self._store("via0", via_list_view(first))
                v = via0[0]
            self._store("top_via", v)
        return v  # type: ignore[no-any-return]

    def push_via(self, via: Via) -> None:
        """Add ``via`` as the new topmost Via (a proxy forwarding a request, RFC 3261 §16.6)."""
        self.headers.prepend("Via", str(via))

    def replace_top_via(self, via: Via) -> None:
        """Replace the topmost via-parm only (e.g. to add ``received``/``rport``, §18.2.1),
        keeping the rest of its header line and every other Via line.

        The parsed views of the entries left alone are carried over (only the new first
        line is parsed again), so layers above do not parse every Via line once more.
        Without a Via, ``via`` becomes the only one.
        """
        old_first = self._cached("via0")
        old_all = self._cache.get("via")
        headers = self.headers
        first_line = headers.remove_first("Via")
        entries: list[Via]
        if first_line is None:
            entries = []
        elif old_first is not _MISSING:
            entries = list(old_first)
        else:
            entries = parse_via_list(first_line)
        n_first = len(entries)
        entries[:1] = [via]
        value = ", ".join(str(v) for v in entries)
        headers.prepend("Via", value)
        if old_first is _MISSING or first_line is None:
            return
        try:
            new_first = via_list_view(value)
        except RemoteProtocolError:
            return  # left to the lazy views, which raise where this value is read
        self._cached("via0")  # drops the Via views made stale by the edit
        cache = self._cache
        cache["via0"] = new_first
        cache["top_via"] = new_first[0]
        if old_all is not None:
            cache["via"] = new_first + old_all[n_first:]

    def pop_top_via(self) -> Via | None:
        """Remove and return the topmost Via entry (a proxy forwarding a response, §16.7)."""
        items = self.headers._items
        for i, (key, name, value) in enumerate(items):
            if key == "via":
                entries = parse_via_list(value)
                rest = ", ".join(str(v) for v in entries[1:])
                if rest:
                    items[i] = (key, name, rest)
                else:
                    del items[i]
                self.headers._touched("via")
                return entries[0]
        return None

    @property
    def call_id(self) -> str:
        """Call-ID (RFC 3261 §20.8); RemoteProtocolError(400) when absent or malformed."""
        v = self._cached("call_id")
        if v is _MISSING:
            value = self._single("Call-ID")
            if _abnf.CALLID_RE.fullmatch(value) is None:
                raise RemoteProtocolError("bad-call-id", 400, value[:64])
            v = self._store("call_id", value)
        return str(v)

    @call_id.setter
    def call_id(self, value: str) -> None:
        self.headers.set("Call-ID", value)

    @property
    def cseq(self) -> CSeq:
        """CSeq (RFC 3261 §20.16)."""
        v = self._cached("cseq")
        if v is _MISSING:
            v = self._store("cseq", cseq_view(self._single("CSeq")))
        return v  # type: ignore[no-any-return]

    @cseq.setter
    def cseq(self, value: CSeq) -> None:
        self.headers.set("CSeq", str(value))

    def from_view(self) -> NameAddr:
        """From, parsed once and shared: read-only (``from_`` hands out copies)."""
        v = self._cached("from")
        if v is _MISSING:
            v = self._store("from", name_addr_view(self._single("From")))
        return v  # type: ignore[no-any-return]

    @property
    def from_(self) -> NameAddr:
        """From (RFC 3261 §20.20)."""
        return _copy_name_addr(self.from_view())

    @from_.setter
    def from_(self, value: NameAddr) -> None:
        self.headers.set("From", str(value))

    @property
    def from_tag(self) -> str | None:
        """The From tag (parsed eagerly; the From URI itself is parsed on first access)."""
        v = self._cached("from_tag")
        if v is _MISSING:
            v = self._store("from_tag", name_addr_params_view(self._single("From")).get("tag"))
        return v  # type: ignore[no-any-return]

    def to_view(self) -> NameAddr:
        """To, parsed once and shared: read-only (``to`` hands out copies)."""
        v = self._cached("to")
        if v is _MISSING:
            v = self._store("to", name_addr_view(self._single("To")))
        return v  # type: ignore[no-any-return]

    @property
    def to(self) -> NameAddr:
        """To (RFC 3261 §20.39)."""
        return _copy_name_addr(self.to_view())

    @to.setter
    def to(self, value: NameAddr) -> None:
        self.headers.set("To", str(value))

    @property
    def to_tag(self) -> str | None:
        """The To tag (parsed eagerly)."""
        v = self._cached("to_tag")
        if v is _MISSING:
            v = self._store("to_tag", name_addr_params_view(self._single("To")).get("tag"))
        return v  # type: ignore[no-any-return]

    @property
    def max_forwards(self) -> int | None:
        """Max-Forwards (RFC 3261 §20.22), 0..255, or None when absent."""
        v = self._cached("max_forwards")
        if v is _MISSING:
            value = self.headers.get("Max-Forwards")
            if value is None:
                v = None
            else:
                if _abnf.DIGITS_RE.fullmatch(value) is None or len(value) > 5:
                    raise RemoteProtocolError("bad-max-forwards", 400, value[:16])
                v = int(value)
                if v > 255:
                    raise RemoteProtocolError("max-forwards-out-of-range", 400, value)
            self._store("max_forwards", v)
        return v  # type: ignore[no-any-return]

    @max_forwards.setter
    def max_forwards(self, value: int | None) -> None:
        if value is None:
            self.headers.remove("Max-Forwards")
        else:
            if not 0 <= value <= 255:
                raise LocalProtocolError("Max-Forwards must be 0..255")
            self.headers.set("Max-Forwards", str(value))

    def _name_addr_view(self, key: str, name: str) -> list[NameAddr]:
        """A name-addr list header, parsed once and shared: read-only."""
        v = self._cached(key)
        if v is _MISSING:
            out: list[NameAddr] = []
            for value in self.headers.get_all_raw(name):
                if key == "contact" and value.strip(" \t") == "*":
                    continue
                out.extend(name_addr_list_view(value))
            v = self._store(key, out)
        return v  # type: ignore[no-any-return]

    def _name_addr_list(self, key: str, name: str) -> list[NameAddr]:
        return [_copy_name_addr(x) for x in self._name_addr_view(key, name)]

    @property
    def contact(self) -> list[NameAddr]:
        """Contact entries (RFC 3261 §20.10); ``Contact: *`` gives [] and ``contact_star``."""
        return self._name_addr_list("contact", "Contact")

    @contact.setter
    def contact(self, value: list[NameAddr]) -> None:
        if value:
            self.headers.set("Contact", ", ".join(str(c) for c in value))
        else:
            self.headers.remove("Contact")

    @property
    def contact_star(self) -> bool:
        """Whether a ``Contact: *`` (REGISTER removal, RFC 3261 §10.2.2) is present."""
        return any(v.strip(" \t") == "*" for v in self.headers.get_all_raw("Contact"))

    @property
    def route(self) -> list[NameAddr]:
        """Route entries (RFC 3261 §20.34), in order."""
        return self._name_addr_list("route", "Route")

    @property
    def record_route(self) -> list[NameAddr]:
        """Record-Route entries (RFC 3261 §20.30), in order."""
        return self._name_addr_list("record_route", "Record-Route")

    @property
    def content_type(self) -> str | None:
        """Content-Type value as written (RFC 3261 §20.15), or None."""
        return self.headers.get("Content-Type")

    @property
    def content_length(self) -> int | None:
        """The Content-Length header as received (to_bytes() always recomputes it)."""
        value = self.headers.get("Content-Length")
        if value is None:
            return None
        if _abnf.DIGITS_RE.fullmatch(value) is None or len(value) > 10:
            raise RemoteProtocolError("bad-content-length", 400, value[:16])
        return int(value)

    # -- serialisation ------------------------------------------------------------------------
    def _start_line(self) -> str:
        raise LocalProtocolError("Message is abstract: build a Request or a Response")

    def to_bytes(self) -> bytes:
        """Serialise; Content-Length is always recomputed from ``body``."""
        body = self.body
        if not isinstance(body, bytes):
            raise LocalProtocolError("body must be bytes")
        start = self._start_line()
        if (
            self._raw_head is not None
            and self.headers is self._raw_hdrs
            and self.headers.mod_count == self._raw_mod
            and self._raw_clen == len(body)
        ):
            return start.encode("utf-8", "surrogateescape") + self._raw_head + body
        parts = [start]
        clen_written = False
        n_lines = 1
        for key, name, value in self.headers._items:
            if key == "content-length":
                if clen_written:
                    continue
                value = str(len(body))
                clen_written = True
            parts.append(f"{name}: {value}\r\n")
            n_lines += 1
        if not clen_written:
            parts.append(f"Content-Length: {len(body)}\r\n")
            n_lines += 1
        parts.append("\r\n")
        head = "".join(parts)
        if head.count("\n") != n_lines + 1 or head.count("\r") != n_lines + 1:
            raise LocalProtocolError("CR or LF inside a start line or header value")
        try:
            return head.encode("utf-8", "surrogateescape") + body
        except UnicodeEncodeError:
            raise LocalProtocolError("header text cannot be encoded") from None

    def __bytes__(self) -> bytes:
        return self.to_bytes()

    def _copy_into(self, other: Message) -> None:
        other.headers = self.headers.copy()
        other.body = self.body
        other.defects = list(self.defects)
        # the typed views are never handed out (only copies of them are): share them
        h = self.headers
        if h is not self._cache_hdrs or h.mod_count != self._cache_mod:
            self._revalidate()
        other._cache = dict(self._cache)
        other._cache_hdrs = other.headers
        other._cache_mod = other.headers.mod_count
        if self._raw_head is not None and self.headers is self._raw_hdrs and (
            self.headers.mod_count == self._raw_mod
        ):
            other._raw_head = self._raw_head
            other._raw_hdrs = other.headers
            other._raw_mod = other.headers.mod_count
            other._raw_clen = self._raw_clen
        else:
            other._raw_head = None
            other._raw_hdrs = None
            other._raw_mod = -1
            other._raw_clen = -1

    def _semantic_headers(self) -> list[tuple[str, str]]:
        return [(k, v) for k, v in self.headers.semantic_items() if k != "content-length"]


def _to_uri(uri: SipURI | TelURI | AbsoluteURI | str) -> SipURI | TelURI | AbsoluteURI:
    if isinstance(uri, str):
        return parse_uri(uri)
    if not isinstance(uri, SipURI | TelURI | AbsoluteURI):
        raise LocalProtocolError("uri must be a SipURI, TelURI, AbsoluteURI or str")
    return uri


class Request(Message):
    """A SIP request: ``method``, Request-URI ``uri``, headers and body."""

    __slots__ = ("method", "uri", "version")

    def __init__(
        self,
        method: str,
        uri: SipURI | TelURI | AbsoluteURI | str,
        headers: Headers | Iterable[tuple[str, str]] | None = None,
        body: bytes = b"",
    ) -> None:
        super().__init__(headers, body)
        if not isinstance(method, str) or _abnf.TOKEN_RE.fullmatch(method) is None:
            raise LocalProtocolError(f"invalid method {method!r}")
        self.method: str = method
        self.uri: SipURI | TelURI | AbsoluteURI = _to_uri(uri)
        self.version: str = SIP_VERSION

    def _start_line(self) -> str:
        return f"{self.method} {self.uri} {SIP_VERSION}\r\n"

    def copy(self) -> Request:
        """A deep copy (headers, URI and body are independent of the original)."""
        other = Request.__new__(Request)
        self._copy_into(other)
        other.method = self.method
        other.uri = _copy_uri(self.uri)
        other.version = self.version
        return other

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Request):
            return NotImplemented
        return (
            self.method == other.method
            and str(self.uri) == str(other.uri)
            and self.body == other.body
            and self._semantic_headers() == other._semantic_headers()
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"<Request {self.method} {self.uri} ({len(self.headers)} headers, {len(self.body)} B)>"


class Response(Message):
    """A SIP response: ``status`` code and ``reason`` phrase, headers and body."""

    __slots__ = ("status", "reason", "version")

    def __init__(
        self,
        status: int,
        reason: str | None = None,
        headers: Headers | Iterable[tuple[str, str]] | None = None,
        body: bytes = b"",
    ) -> None:
        super().__init__(headers, body)
        if not isinstance(status, int) or not 100 <= status <= 699:
            raise LocalProtocolError(f"invalid status {status!r}")
        if reason is None:
            reason = REASON_PHRASES.get(status, "")
        self.status: int = status
        self.reason: str = reason
        self.version: str = SIP_VERSION

    def _start_line(self) -> str:
        return f"{SIP_VERSION} {self.status} {self.reason}\r\n"

    def copy(self) -> Response:
        """A deep copy."""
        other = Response.__new__(Response)
        self._copy_into(other)
        other.status = self.status
        other.reason = self.reason
        other.version = self.version
        return other

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Response):
            return NotImplemented
        return (
            self.status == other.status
            and self.reason == other.reason
            and self.body == other.body
            and self._semantic_headers() == other._semantic_headers()
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"<Response {self.status} {self.reason} ({len(self.headers)} headers, {len(self.body)} B)>"


def _copy_via(v: Via) -> Via:
    return Via(v.transport, v.host, v.port, dict(v.params), v.protocol)


def _copy_name_addr(na: NameAddr) -> NameAddr:
    return NameAddr(_copy_uri(na.uri), na.display, dict(na.params))


def _copy_uri(uri: SipURI | TelURI | AbsoluteURI) -> SipURI | TelURI | AbsoluteURI:
    if isinstance(uri, SipURI):
        return SipURI(uri.scheme, uri.user, uri.password, uri.host, uri.port, dict(uri.params),
                      dict(uri.headers))
    if isinstance(uri, TelURI):
        return TelURI(uri.number, dict(uri.params), uri.scheme)
    return AbsoluteURI(uri.scheme, uri.rest)


def make_response(
    request: Request, status: int, reason: str | None = None, to_tag: str | None = None
) -> Response:
    """Build a response to ``request`` per RFC 3261 §8.2.6.2.

    Via (all, in order), From, To, Call-ID and CSeq are copied; ``to_tag`` is added to To
    when To has no tag yet (it is ignored for 100 Trying, §8.2.6.2).
    """
    headers = Headers()
    items = headers._items
    for key, name, value in request.headers._items:
        if key in ("via", "from", "call-id", "cseq"):
            items.append((key, name, value))
        elif key == "to":
            if to_tag is not None and status != 100 and request.to_tag is None:
                value = f"{value};tag={to_tag}"
            items.append((key, name, value))
    resp = Response(status, reason, headers)
    return resp


def check_require(request: Request, supported: Iterable[str], proxy: bool = False) -> None:
    """Raise 420 Bad Extension when ``request`` requires an option not in ``supported``.

    Checks ``Require`` (a UAS, RFC 3261 §8.2.2.3) or ``Proxy-Require`` (a proxy, §16.3 item 4);
    the exception's ``unsupported`` attribute lists the option-tags for the ``Unsupported``
    header of the 420 response.  Option-tags compare case-insensitively.
    """
    known = {s.lower() for s in supported}
    header = "Proxy-Require" if proxy else "Require"
    missing = [tag for tag in request.headers.get_all(header) if tag.lower() not in known]
    if missing:
        exc = RemoteProtocolError("bad-extension", 420, ", ".join(missing))
        exc.unsupported = missing
        raise exc
