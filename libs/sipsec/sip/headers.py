"""Header fields: the ordered multimap of raw values and the typed views of RFC 3261 §20."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TypeVar

from . import _abnf
from .errors import LocalProtocolError, RemoteProtocolError
from .uri import AbsoluteURI, SipURI, TelURI, parse_uri

__all__ = [
    "COMPACT_FORMS",
    "CSeq",
    "Headers",
    "LIST_HEADERS",
    "NameAddr",
    "Via",
    "canonical_name",
    "header_key",
    "parse_cseq",
    "name_addr_params",
    "parse_name_addr",
    "parse_name_addr_list",
    "parse_via_list",
    "quote",
    "split_list",
]

# RFC 3261 §7.3.3 and the IANA registry: compact form -> full name.
COMPACT_FORMS: dict[str, str] = {
    "a": "Accept-Contact",
    "b": "Referred-By",
    "c": "Content-Type",
    "d": "Request-Disposition",
    "e": "Content-Encoding",
    "f": "From",
    "i": "Call-ID",
    "j": "Reject-Contact",
    "k": "Supported",
    "l": "Content-Length",
    "m": "Contact",
    "n": "Identity-Info",
    "o": "Event",
    "r": "Refer-To",
    "s": "Subject",
    "t": "To",
    "u": "Allow-Events",
    "v": "Via",
    "x": "Session-Expires",
    "y": "Identity",
}

_WELL_KNOWN = [
    "Accept", "Accept-Encoding", "Accept-Language", "Alert-Info", "Allow", "Authentication-Info",
    "Authorization", "Call-ID", "Call-Info", "Contact", "Content-Disposition", "Content-Encoding",
    "Content-Language", "Content-Length", "Content-Type", "CSeq", "Date", "Error-Info", "Expires",
    "From", "In-Reply-To", "Max-Forwards", "MIME-Version", "Min-Expires", "Organization", "Priority",
    "Proxy-Authenticate", "Proxy-Authorization", "Proxy-Require", "Record-Route", "Reply-To",
    "Require", "Retry-After", "Route", "Server", "Subject", "Supported", "Timestamp", "To",
    "Unsupported", "User-Agent", "Via", "Warning", "WWW-Authenticate", "RSeq", "RAck", "Event",
    "Allow-Events", "Path", "Service-Route", "Refer-To", "Referred-By", "Session-Expires",
    "Min-SE", "P-Asserted-Identity", "P-Preferred-Identity", "Privacy", "Identity",
    "Identity-Info", "Accept-Contact", "Reject-Contact", "Request-Disposition",
]

# Headers whose value is a comma-separated list (RFC 3261 §7.3.1); get_all() splits them.
LIST_HEADERS: frozenset[str] = frozenset(
    n.lower()
    for n in [
        "Accept", "Accept-Encoding", "Accept-Language", "Alert-Info", "Allow", "Call-Info",
        "Contact", "Content-Encoding", "Content-Language", "Error-Info", "In-Reply-To",
        "Proxy-Require", "Record-Route", "Require", "Route", "Supported", "Unsupported", "Via",
        "Warning", "Allow-Events", "Path", "Service-Route", "P-Asserted-Identity",
        "P-Preferred-Identity", "Privacy", "Accept-Contact", "Reject-Contact",
    ]
)

# lower-cased spelling (full or compact) -> canonical lower-case key
_KEYS: dict[str, str] = {n.lower(): n.lower() for n in _WELL_KNOWN}
_KEYS.update({k: v.lower() for k, v in COMPACT_FORMS.items()})
# canonical key -> canonical spelling
_SPELLING: dict[str, str] = {n.lower(): n for n in _WELL_KNOWN}
_SPELLING.update({v.lower(): v for v in COMPACT_FORMS.values()})


def header_key(name: str) -> str:
    """Case-insensitive lookup key of a header name, compact forms expanded."""
    low = name.lower()
    return _KEYS.get(low, low)


def canonical_name(name: str) -> str:
    """The usual spelling of a header name (``v`` -> ``Via``, ``call-id`` -> ``Call-ID``)."""
    return _SPELLING.get(header_key(name), name)


_SPLIT_RE = re.compile(r'"(?:[^"\\]|\\.)*"?|<[^>]*>?|[^,"<]+|,', re.DOTALL)


def split_list(value: str) -> list[str]:
    """Split a header value on top-level commas (not inside quotes or ``<>``); drop empties."""
    if '"' not in value and "<" not in value:
        return [p for p in (s.strip(" \t") for s in value.split(",")) if p]
    out: list[str] = []
    cur: list[str] = []
    for piece in _SPLIT_RE.findall(value):
        if piece == ",":
            item = "".join(cur).strip(" \t")
            if item:
                out.append(item)
            cur = []
        else:
            cur.append(piece)
    item = "".join(cur).strip(" \t")
    if item:
        out.append(item)
    return out


def _check_value(value: str) -> str:
    if not isinstance(value, str):
        raise LocalProtocolError("header value must be str")
    if "\r" in value or "\n" in value:
        raise LocalProtocolError("header value must not contain CR or LF")
    return value


def _check_name(name: str) -> str:
    if not isinstance(name, str) or _abnf.TOKEN_RE.fullmatch(name) is None:
        raise LocalProtocolError(f"invalid header name {name!r}")
    return name


class Headers:
    """Ordered multimap of ``(name, raw value)`` in original order.

    Names compare case-insensitively with compact forms expanded (``v`` is ``Via``); the
    name is kept as written so that unknown headers round-trip unchanged.  Values are the raw
    text with line folding replaced by one SP.  Every mutation bumps ``mod_count`` so that
    cached typed views can be invalidated.
    """

    __slots__ = ("_items", "_log", "mod_count")

    def __init__(self, items: Iterable[tuple[str, str]] | None = None) -> None:
        # each entry: (key, name, value)
        self._items: list[tuple[str, str, str]] = []
        self.mod_count = 0
        # the key each mutation touched, in order (``_log[i]``: mutation ``i + 1``); lets a
        # message keep the typed views of the headers a mutation did not touch.  A mutation
        # that bumps ``mod_count`` without logging makes the log incomplete (its length
        # differs from ``mod_count``), and readers then drop every view.
        self._log: list[str] = []
        if items is not None:
            for name, value in items:
                self._items.append((header_key(_check_name(name)), name, _check_value(value)))

    @classmethod
    def _from_entries(cls, entries: list[tuple[str, str, str]]) -> Headers:
        h = cls.__new__(cls)
        h._items = entries
        h.mod_count = 0
        h._log = []
        return h

    def _touched(self, key: str) -> None:
        """Record one mutation of the ``key`` lines."""
        self._log.append(key)
        self.mod_count += 1

    def get(self, name: str, default: str | None = None) -> str | None:
        """The first value of ``name``, or ``default``."""
        key = header_key(name)
        for k, _n, v in self._items:
            if k == key:
                return v
        return default

    def get_all(self, name: str) -> list[str]:
        """All values of ``name`` in order; comma lists are split for list headers."""
        key = header_key(name)
        values = [v for k, _n, v in self._items if k == key]
        if key in LIST_HEADERS:
            out: list[str] = []
            for v in values:
                out.extend(split_list(v))
            return out
        return values

    def get_all_raw(self, name: str) -> list[str]:
        """All values of ``name`` in order, one per header line, never split."""
        key = header_key(name)
        return [v for k, _n, v in self._items if k == key]

    def count(self, name: str) -> int:
        """How many header lines carry ``name``."""
        key = header_key(name)
        return sum(1 for k, _n, _v in self._items if k == key)

    def set(self, name: str, value: str) -> None:
        """Replace every ``name`` header by one with ``value`` (at the first one's place)."""
        key = header_key(_check_name(name))
        entry = (key, name, _check_value(value))
        out: list[tuple[str, str, str]] = []
        placed = False
        for item in self._items:
            if item[0] == key:
                if not placed:
                    out.append(entry)
                    placed = True
            else:
                out.append(item)
        if not placed:
            out.append(entry)
        self._items = out
        self._touched(key)

    def add(self, name: str, value: str) -> None:
        """Append a header line."""
        key = header_key(_check_name(name))
        self._items.append((key, name, _check_value(value)))
        self._touched(key)

    def prepend(self, name: str, value: str) -> None:
        """Insert a header line before the first one of the same name (or at the top)."""
        key = header_key(_check_name(name))
        entry = (key, name, _check_value(value))
        for i, item in enumerate(self._items):
            if item[0] == key:
                self._items.insert(i, entry)
                break
        else:
            self._items.insert(0, entry)
        self._touched(key)

    def remove(self, name: str) -> None:
        """Remove every ``name`` header (no error when absent)."""
        key = header_key(name)
        self._items = [item for item in self._items if item[0] != key]
        self._touched(key)

    def remove_first(self, name: str) -> str | None:
        """Remove the first ``name`` header line and return its value (e.g. the top Via)."""
        key = header_key(name)
        for i, item in enumerate(self._items):
            if item[0] == key:
                del self._items[i]
                self._touched(key)
                return item[2]
        return None

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        key = header_key(name)
        return any(k == key for k, _n, _v in self._items)

    def items(self) -> list[tuple[str, str]]:
        """``(name as written, raw value)`` pairs in order."""
        return [(n, v) for _k, n, v in self._items]

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self.items())

    def __len__(self) -> int:
        return len(self._items)

    def copy(self) -> Headers:
        """An independent copy."""
        return Headers._from_entries(list(self._items))

    def semantic_items(self) -> list[tuple[str, str]]:
        """``(canonical key, value)`` pairs: what two equal header sets share."""
        return [(k, v) for k, _n, v in self._items]

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Headers):
            return NotImplemented
        return self.semantic_items() == other.semantic_items()

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Headers({self.items()!r})"


# ---------------------------------------------------------------------------------------------
# Typed views


def _unquote(text: str) -> str:
    inner = text[1:-1]
    if "\\" not in inner:
        return inner
    return re.sub(r"\\(.)", r"\1", inner, flags=re.DOTALL)


_TOKEN_SEQ_RE = re.compile(rf"{_abnf.TOKEN}(?: {_abnf.TOKEN})*")
_NEEDS_ESCAPE_RE = re.compile(r'["\\\x00-\x08\x0b\x0c\x0e-\x1f\x7f]')


def quote(text: str) -> str:
    """Make a quoted-string of ``text`` (RFC 3261 §25.1 quoted-pair for ``"``, ``\\``, CTLs)."""
    if "\r" in text or "\n" in text:
        raise LocalProtocolError("CR/LF cannot be quoted in a quoted-string")
    return '"' + _NEEDS_ESCAPE_RE.sub(lambda m: "\\" + m.group(0), text) + '"'


def _format_params(params: dict[str, str | None]) -> str:
    return "".join(f";{k}" if v is None else f";{k}={v}" for k, v in params.items())


def _parse_gen_params(
    text: str,
    pos: int,
    run: re.Pattern[str] = _abnf.GEN_PARAMS_RUN_RE,
    one: re.Pattern[str] = _abnf.GEN_PARAM_RE,
) -> tuple[dict[str, str | None], int]:
    """Parse ``*( SEMI param )`` from ``pos``; return the params and the end offset."""
    end = run.match(text, pos).end()  # type: ignore[union-attr]  # (...)* always matches
    if end == pos:
        return {}, pos
    return {k.lower(): (v or None) for k, v in one.findall(text, pos, end)}, end


@dataclass
class NameAddr:
    """``[display] <uri>;params`` of From, To, Contact, Route... (RFC 3261 §20.10, §25.1).

    ``display`` is the unquoted display name (None when absent); ``params`` are the header
    parameters (names lower-cased, values as written).
    """

    uri: SipURI | TelURI | AbsoluteURI
    display: str | None = None
    params: dict[str, str | None] = field(default_factory=dict)

    @property
    def tag(self) -> str | None:
        """The ``tag`` parameter (RFC 3261 §19.3)."""
        return self.params.get("tag")

    @tag.setter
    def tag(self, value: str | None) -> None:
        if value is None:
            self.params.pop("tag", None)
        else:
            self.params["tag"] = value

    def __str__(self) -> str:
        if self.display is None:
            head = f"<{self.uri}>"
        elif _TOKEN_SEQ_RE.fullmatch(self.display):
            head = f"{self.display} <{self.uri}>"
        else:
            head = f"{quote(self.display)} <{self.uri}>"
        return head + _format_params(self.params)


def _scan_name_addr(
    text: str, pos: int, in_list: bool
) -> tuple[str | None, str, dict[str, str | None], int]:
    """Check the structure of one name-addr / addr-spec with its params, URI left unparsed.

    Returns ``(display, uri_text, params, end)``.
    """
    m = _abnf.NAME_ADDR_RE.match(text, pos)
    display: str | None
    if m is not None:
        quoted, tokens, uri_text = m.groups()
        display = _unquote(quoted) if quoted is not None else tokens
        end = m.end()
    else:
        m2 = _abnf.ADDR_SPEC_RE.match(text, pos)
        if m2 is None:
            raise RemoteProtocolError("bad-name-addr", 400, text[pos : pos + 64])
        uri_text = m2.group(1)
        if "?" in uri_text:
            # RFC 3261 §20: a URI with "?" must be enclosed in <> (RFC 4475 §3.1.2.14)
            raise RemoteProtocolError("unbracketed-uri-headers", 400, uri_text[:64])
        display = None
        end = m2.end()
    params, end = _parse_gen_params(text, end)
    n = len(text)
    while end < n and text[end] in " \t":
        end += 1
    if end < n and not (in_list and text[end] == ","):
        raise RemoteProtocolError("bad-name-addr", 400, text[:64])
    return display, uri_text, params, end


def _parse_one_name_addr(text: str, pos: int, in_list: bool) -> tuple[NameAddr, int]:
    display, uri_text, params, end = _scan_name_addr(text, pos, in_list)
    return NameAddr(parse_uri(uri_text), display, params), end


def name_addr_params(text: str) -> dict[str, str | None]:
    """Check a From/To value's structure and return its header params (URI not parsed)."""
    return _scan_name_addr(text, 0, False)[2]


def parse_name_addr(text: str) -> NameAddr:
    """Parse one ``(name-addr / addr-spec) *(SEMI param)`` value (From, To, Reply-To...)."""
    na, _end = _parse_one_name_addr(text, 0, False)
    return na


def parse_name_addr_list(text: str) -> list[NameAddr]:
    """Parse a comma list of name-addr values (Contact, Route, Record-Route, Path...)."""
    out: list[NameAddr] = []
    pos = 0
    n = len(text)
    while True:
        na, pos = _parse_one_name_addr(text, pos, True)
        out.append(na)
        if pos >= n:
            return out
        m = _abnf.COMMA_RE.match(text, pos)
        if m is None:  # pragma: no cover - _parse_one_name_addr guarantees a comma
            raise RemoteProtocolError("bad-name-addr", 400, text[:64])
        pos = m.end()
        if pos >= n:
            raise RemoteProtocolError("bad-name-addr", 400, "trailing comma")


@dataclass
class Via:
    """One via-parm (RFC 3261 §20.42): ``SIP/2.0/<transport> host[:port];params``.

    ``host`` is kept as written (an IPv6 reference keeps its brackets).
    """

    transport: str
    host: str
    port: int | None = None
    params: dict[str, str | None] = field(default_factory=dict)
    protocol: str = "SIP/2.0"

    @property
    def branch(self) -> str | None:
        """The ``branch`` parameter (``z9hG4bK...`` for RFC 3261 elements)."""
        return self.params.get("branch")

    @property
    def received(self) -> str | None:
        """The ``received`` parameter (RFC 3261 §18.2.1)."""
        return self.params.get("received")

    @property
    def rport(self) -> int | bool | None:
        """RFC 3581 ``rport``: None when absent, True when present without value, else the int."""
        if "rport" not in self.params:
            return None
        value = self.params["rport"]
        return True if value is None else int(value)

    @property
    def sent_by(self) -> str:
        """``host[:port]`` as it appears in the header."""
        return self.host if self.port is None else f"{self.host}:{self.port}"

    def __str__(self) -> str:
        return f"{self.protocol}/{self.transport} {self.sent_by}{_format_params(self.params)}"


def _check_via_params(params: dict[str, str | None]) -> None:
    received = params.get("received")
    if received is not None:
        if _abnf.IPV4_RE.fullmatch(received) is None:
            addr = received[1:-1] if received.startswith("[") else received
            try:
                ipaddress.IPv6Address(addr)
            except ValueError:
                raise RemoteProtocolError("bad-via-received", 400, received[:64]) from None
    if "rport" in params:
        rport = params["rport"]
        if rport is not None and (
            _abnf.DIGITS_RE.fullmatch(rport) is None or len(rport) > 5 or int(rport) > 65535
        ):
            raise RemoteProtocolError("bad-via-rport", 400, rport[:16])
    if "branch" in params and params["branch"] is None:
        raise RemoteProtocolError("bad-via-branch", 400, "empty branch")


def _via_sent_by(host: str, port: str | None) -> int | None:
    """Check a via-parm's sent-by (an IPv6 reference must be an address, §25.1 ``IPv6reference``;
    a port at most 65535) and return its port as a number."""
    if host[0] == "[":
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            raise RemoteProtocolError("bad-ipv6-reference", 400, host[:64]) from None
    if port is None:
        return None
    port_i = int(port)
    if port_i > 65535:
        raise RemoteProtocolError("bad-port", 400, port)
    return port_i


def parse_via_list(text: str) -> list[Via]:
    """Parse one Via header value (a comma list of via-parm)."""
    out: list[Via] = []
    pos = 0
    n = len(text)
    while True:
        m = _abnf.VIA_PARM_RE.match(text, pos)
        if m is None:
            raise RemoteProtocolError("bad-via", 400, text[pos : pos + 64])
        name, version, transport, host, port = m.groups()
        port_i = _via_sent_by(host, port)
        params, pos = _parse_gen_params(
            text, m.end(), _abnf.VIA_PARAMS_RUN_RE, _abnf.VIA_PARAM_RE
        )
        _check_via_params(params)
        protocol = f"{name}/{version}"
        if protocol.upper() != "SIP/2.0":
            raise RemoteProtocolError("bad-via-version", 400, protocol[:32])
        out.append(Via(transport.upper(), host, port_i, params, "SIP/2.0"))
        while pos < n and text[pos] in " \t":
            pos += 1
        if pos >= n:
            return out
        if text[pos] != ",":
            raise RemoteProtocolError("bad-via", 400, text[pos : pos + 64])
        pos += 1


@dataclass(frozen=True)
class CSeq:
    """``CSeq: <seq> <method>`` (RFC 3261 §20.16); ``seq`` is below 2**31 (§8.1.1.5)."""

    seq: int
    method: str

    def __str__(self) -> str:
        return f"{self.seq} {self.method}"


def parse_cseq(text: str) -> CSeq:
    """Parse a CSeq value; 400 when malformed or the number is not below 2**31."""
    m = _abnf.CSEQ_RE.fullmatch(text)
    if m is None:
        raise RemoteProtocolError("bad-cseq", 400, text[:64])
    digits = m.group(1)
    if len(digits) > 10 or int(digits) >= 2**31:
        raise RemoteProtocolError("cseq-out-of-range", 400, digits[:16])
    return CSeq(int(digits), m.group(2))


# ---------------------------------------------------------------------------------------------
# Memoised parsing for the message views.
#
# The same header values cross a node many times (From/To/CSeq in every message of a call,
# a Via in a request and all its responses, at every hop a process serves), so the views a
# message caches are parsed once per distinct value.  What these return is shared between
# messages and must never be mutated: the messages only hand out copies (``msg.via``,
# ``msg.from_``...).  Only successful parses are kept; an error is raised again each time.

_T = TypeVar("_T")
MEMO_SIZE = 2048


def _memo(fn: Callable[[str], _T], size: int = MEMO_SIZE) -> Callable[[str], _T]:
    """``fn`` with its results kept for the last ``size`` distinct values (FIFO eviction)."""
    table: dict[str, _T] = {}

    def cached(text: str) -> _T:
        value = table.get(text)
        if value is None:
            value = fn(text)
            if len(table) >= size:
                del table[next(iter(table))]
            table[text] = value
        return value

    cached.cache = table  # type: ignore[attr-defined]  # for tests
    return cached


#: ``parse_via_list``, shared results (read-only)
via_list_view = _memo(parse_via_list)
#: ``parse_cseq`` (CSeq is frozen)
cseq_view = _memo(parse_cseq)
#: the header params of a From/To value (``name_addr_params``), shared (read-only)
name_addr_params_view = _memo(name_addr_params)
#: ``parse_name_addr``, shared (read-only)
name_addr_view = _memo(parse_name_addr)
#: ``parse_name_addr_list``, shared (read-only)
name_addr_list_view = _memo(parse_name_addr_list)
