"""Parse one SIP message from bytes (RFC 3261 §7): start line, headers, body.

Only :class:`RemoteProtocolError` leaves :func:`parse_message` for any ``bytes`` input.
What the transaction layer needs is parsed eagerly: the Request-URI, the top Via line,
CSeq (and its match with the method), Call-ID, the From/To structure and tags,
Max-Forwards and Content-Length; so are the checks RFC 4475 §3.1.2 asks for at once
(Date syntax, headers in an unbracketed Contact URI, raw control characters).  Everything
else — the other Via lines, the From/To/Contact URIs, Route... — is parsed on first access,
where a malformed value raises :class:`RemoteProtocolError` from the property.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from . import _abnf
from .errors import LocalProtocolError, RemoteProtocolError
from .headers import (
    _KEYS,
    Headers,
    cseq_view,
    header_key,
    name_addr_params,
    name_addr_params_view,
    parse_cseq,
    parse_name_addr_list,
    via_list_view,
)
from .message import Message, Request, Response
from .uri import SipURI, parse_uri

__all__ = ["DEFAULT_LIMITS", "Limits", "find_head_end", "parse_message"]


@dataclass(frozen=True)
class Limits:
    """Resource limits applied to every message (each breach is its own named error).

    ``max_message_bytes``: start line + headers + body (513 ``message-too-large``);
    ``max_headers``: header lines (513 ``too-many-headers``);
    ``max_line``: one physical line (513 ``line-too-long``).
    """

    max_message_bytes: int = 65535
    max_headers: int = 256
    max_line: int = 8192


DEFAULT_LIMITS = Limits()

# exact spellings seen on the wire -> key (saves a lower() and a token check per header)
_NAME_KEYS: dict[str, str] = {}
for _low, _key in _KEYS.items():
    for _spelling in {_low, _low.upper(), _low.title(), _low.capitalize()}:
        _NAME_KEYS[_spelling] = _key
_NAME_KEYS.update({"Call-ID": "call-id", "CSeq": "cseq", "WWW-Authenticate": "www-authenticate",
                   "MIME-Version": "mime-version", "RSeq": "rseq", "RAck": "rack",
                   "Min-SE": "min-se", "Call-Id": "call-id"})

_EAGER = frozenset(
    ["via", "cseq", "call-id", "from", "to", "max-forwards", "content-length", "contact", "date"]
)
_WS = " \t"
_CTL_RE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_CTL_BYTES = bytes([*range(0x00, 0x09), 0x0B, 0x0C, *range(0x0E, 0x20), 0x7F])


def _bad(reason: str, detail: str = "", status: int = 400) -> RemoteProtocolError:
    return RemoteProtocolError(reason, status, detail[:80])


def find_head_end(buf: bytes | bytearray, start: int) -> tuple[int, int]:
    """Locate the empty line ending the header section.

    Returns ``(head_end, body_start)`` (offsets into ``buf``), or ``(-1, -1)`` when absent.
    CRLF is the rule; bare-LF messages are tolerated (RFC 3261 §7.5 robustness).
    """
    crlf = buf.find(b"\r\n\r\n", start)
    lf = buf.find(b"\n\n", start, crlf if crlf >= 0 else len(buf))
    if lf >= 0 and (crlf < 0 or lf < crlf):
        # "\r\n\n" or "\n\n": the head ends at the first LF
        return lf, lf + 2
    if crlf >= 0:
        return crlf, crlf + 4
    return -1, -1


def _split_lines(text: str) -> tuple[list[str], bool]:
    """Split the head into lines; the flag says the head used clean CRLF line ends."""
    lines = text.split("\r\n")
    n = len(lines) - 1
    if text.count("\n") == n and text.count("\r") == n:
        return lines, True
    lines = re.split(r"\r?\n", text)
    for line in lines:
        if "\r" in line:
            raise _bad("bare-cr", "CR not followed by LF")
    return lines, False


def _init_blank(msg: Message) -> None:
    msg.body = b""
    msg.defects = []
    msg._cache = {}
    msg._raw_head = None
    msg._raw_hdrs = None
    msg._raw_mod = -1
    msg._raw_clen = -1


def _parse_start_line(line: str) -> Request | Response:
    if line[:4].upper() == "SIP/":
        m = _abnf.STATUS_LINE_RE.fullmatch(line)
        if m is None:
            raise _bad("bad-status-line", line)
        major, minor, code, reason = m.groups()
        if len(major) > 3 or len(minor) > 3 or int(major) != 2 or int(minor) != 0:
            raise _bad("unsupported-version", line, 505)
        status = int(code)
        if not 100 <= status <= 699:  # RFC 3261 §21: classes 1xx..6xx only
            raise _bad("bad-status-code", code)
        resp = Response.__new__(Response)
        _init_blank(resp)
        resp.status = status
        resp.reason = reason or ""
        resp.version = "SIP/2.0"
        return resp
    m = _abnf.REQUEST_LINE_RE.fullmatch(line)
    if m is None:
        raise _bad("bad-request-line", line)
    method, uri_text, _sip, major, minor = m.groups()
    if len(major) > 3 or len(minor) > 3 or int(major) != 2 or int(minor) != 0:
        raise _bad("unsupported-version", line, 505)
    uri = parse_uri(uri_text)
    if isinstance(uri, SipURI) and uri.headers:
        # RFC 4475 §3.1.2.11: header fields are not allowed in a Request-URI
        raise _bad("headers-in-request-uri", uri_text)
    req = Request.__new__(Request)
    _init_blank(req)
    req.method = method
    req.uri = uri
    req.version = "SIP/2.0"
    return req


def _parse_head(
    data: bytes, start: int, head_end: int, body_start: int, limits: Limits
) -> tuple[Request | Response, list[str], int]:
    """Parse start line and headers of ``data[start:head_end]``.

    Returns the message (no body yet), the raw Content-Length values, and the offset where
    the header lines start (for raw-byte reuse), or -1 when the head is not clean CRLF.
    """
    head = data[start:head_end]
    if len(head) > limits.max_line and (
        max(len(x) for x in head.split(b"\n")) > limits.max_line
    ):
        raise _bad("line-too-long", f"limit {limits.max_line}", 513)
    text = head.decode("utf-8", "surrogateescape")
    ctl = _CTL_RE.search(text) if len(head.translate(None, _CTL_BYTES)) != len(head) else None
    while ctl is not None:
        # RFC 3261 §25.1: a CTL other than HT may only appear escaped, as a quoted-pair
        i = ctl.start()
        if i == 0 or text[i - 1] != "\\":
            raise _bad("control-character", f"0x{ord(text[i]):02x}")
        ctl = _CTL_RE.search(text, i + 1)
    lines, clean = _split_lines(text)
    if len(lines) - 1 > limits.max_headers:
        raise _bad("too-many-headers", f"limit {limits.max_headers}", 513)
    msg = _parse_start_line(lines[0])

    entries: list[tuple[str, str, str]] = []
    eager: dict[str, list[str]] = {}
    name_keys = _NAME_KEYS
    key: str
    eager_keys = _EAGER
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        key = name_keys.get(name)  # type: ignore[assignment]
        if key is None:
            c0 = line[:1]
            if c0 == " " or c0 == "\t":
                # RFC 3261 §7.3.1 folding: a continuation line, equivalent to one SP
                if not entries:
                    raise _bad("continuation-without-header", line)
                key, name, value = entries[-1]
                cont = line.strip(_WS)
                if cont:
                    value = f"{value} {cont}" if value else cont
                entries[-1] = (key, name, value)
                if key in eager:
                    eager[key][-1] = value
                continue
            if not sep:
                raise _bad("header-without-colon", line)
            name = name.rstrip(_WS)
            if _abnf.TOKEN_RE.fullmatch(name) is None:
                raise _bad("bad-header-name", name)
            key = header_key(name)
        value = value.strip(_WS)
        entries.append((key, name, value))
        if key in eager_keys:
            if key in eager:
                eager[key].append(value)
            else:
                eager[key] = [value]

    headers = Headers._from_entries(entries)
    msg.headers = headers
    msg._cache_hdrs = headers
    msg._cache_mod = 0
    _eager_views(msg, eager)
    raw_start = -1
    if clean:
        first_end = data.find(b"\r\n", start)
        raw_start = first_end + 2 if first_end + 2 <= body_start else -1
    return msg, eager.get("content-length", []), raw_start


def _eager_views(msg: Request | Response, eager: dict[str, list[str]]) -> None:
    """Parse what transactions need now; check what RFC 4475 §3.1.2 needs checked now."""
    cache: dict[str, Any] = msg._cache
    defects = msg.defects
    get = eager.get

    values = get("via")
    if values:
        # the top Via line fully; the others are parsed when msg.via is read
        via0 = via_list_view(values[0])
        cache["via0"] = via0
        cache["top_via"] = via0[0]
    else:
        cache["top_via"] = None
        defects.append("missing-via")

    values = get("cseq")
    if values:
        cseq = cseq_view(values[0])
        cache["cseq"] = cseq
        if len(values) > 1:
            for v in values[1:]:
                parse_cseq(v)
            defects.append("duplicate-cseq")
        if cseq.method != getattr(msg, "method", cseq.method):
            # RFC 3261 §8.1.1.5 / RFC 4475 §3.1.2.16-17
            raise _bad("cseq-method-mismatch", f"{cseq.method} != {msg.method}")  # type: ignore[union-attr]
    else:
        defects.append("missing-cseq")

    values = get("call-id")
    if values:
        for v in values:
            if _abnf.CALLID_RE.fullmatch(v) is None:
                raise _bad("bad-call-id", v)
        cache["call_id"] = values[0]
        if len(values) > 1:
            defects.append("duplicate-call-id")
    else:
        defects.append("missing-call-id")

    for key, cache_key in (("from", "from_tag"), ("to", "to_tag")):
        values = get(key)
        if values:
            tag = name_addr_params_view(values[0]).get("tag")
            cache[cache_key] = tag
            if len(values) > 1:
                for v in values[1:]:
                    name_addr_params(v)
                defects.append(f"duplicate-{key}")
        else:
            defects.append(f"missing-{key}")

    values = get("max-forwards")
    if values:
        for v in values:
            if _abnf.DIGITS_RE.fullmatch(v) is None or len(v) > 5:
                raise _bad("bad-max-forwards", v)
            if int(v) > 255:
                raise _bad("max-forwards-out-of-range", v)
        cache["max_forwards"] = int(values[0])
        if len(values) > 1:
            defects.append("duplicate-max-forwards")
    else:
        cache["max_forwards"] = None
        if isinstance(msg, Request):
            defects.append("missing-max-forwards")

    for v in get("contact", ()):
        # Contact is parsed on access; only the check RFC 4475 §3.1.2.14 asks for is done
        # now (an unbracketed URI must not carry headers).
        if "?" in v:
            parse_name_addr_list(v)

    for v in get("date", ()):
        if _abnf.DATE_RE.fullmatch(v) is None:
            # RFC 3261 §20.17: rfc1123-date, GMT only (RFC 4475 §3.1.2.12)
            raise _bad("bad-date", v)


def _content_length(values: list[str], msg: Message) -> int | None:
    """The declared body length, None when absent or when copies disagree."""
    if not values:
        return None
    for value in values:
        if _abnf.DIGITS_RE.fullmatch(value) is None or len(value) > 10:
            raise _bad("bad-content-length", value)
    if len(values) > 1 and any(v.lstrip("0") != values[0].lstrip("0") for v in values[1:]):
        msg.defects.append("conflicting-content-length")
        return None
    return int(values[0])


def _parse_datagram(data: bytes, limits: Limits) -> Request | Response:
    if len(data) > limits.max_message_bytes:
        raise _bad("message-too-large", f"{len(data)} > {limits.max_message_bytes}", 513)
    start = 0
    n = len(data)
    while start < n and data[start] in b"\r\n":
        start += 1
    if start >= n:
        raise _bad("empty-message")
    head_end, body_start = find_head_end(data, start)
    if head_end < 0:
        raise _bad("no-end-of-headers")
    msg, clen_values, raw_start = _parse_head(data, start, head_end, body_start, limits)
    clen = _content_length(clen_values, msg)
    available = n - body_start
    if clen is None:
        # RFC 3261 §18.3: over UDP the body ends with the datagram
        body = data[body_start:]
        if "conflicting-content-length" not in msg.defects:
            msg.defects.append("missing-content-length")
    else:
        if clen > available:
            # RFC 3261 §18.3 / RFC 4475 §3.1.2.2: larger than the datagram -> 400
            raise _bad("content-length-exceeds-datagram", f"{clen} > {available}")
        body = data[body_start : body_start + clen]
        if clen < available:
            msg.defects.append("trailing-bytes")
    msg.body = body
    if raw_start >= 0 and len(clen_values) == 1 and clen == len(body):
        msg._raw_head = data[raw_start:body_start]
        msg._raw_hdrs = msg.headers
        msg._raw_mod = msg.headers.mod_count
        msg._raw_clen = len(body)
    return msg


def _guard(data: Any) -> bytes:
    if isinstance(data, bytes):
        return data
    if isinstance(data, bytearray | memoryview):
        return bytes(data)
    raise LocalProtocolError("parse_message expects bytes")


def parse_message(data: bytes, limits: Limits = DEFAULT_LIMITS) -> Request | Response:
    """Parse one complete SIP message (datagram rules: RFC 3261 §18.3).

    A body longer than Content-Length is cut and ``"trailing-bytes"`` is added to
    ``defects``; a missing Content-Length means "the rest of the data".  Raises
    :class:`RemoteProtocolError` — and nothing else — for malformed input.
    """
    data = _guard(data)
    try:
        return _parse_datagram(data, limits)
    except RemoteProtocolError:
        raise
    except RecursionError as exc:  # pragma: no cover - defensive: no recursion in the parser
        raise _bad("parser-recursion", type(exc).__name__) from None
    except Exception as exc:  # noqa: BLE001 - the contract: only RemoteProtocolError escapes
        raise _bad("unparseable", type(exc).__name__) from None
