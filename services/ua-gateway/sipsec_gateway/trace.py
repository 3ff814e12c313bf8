"""The wire view of a call: outer messages as the network (and the proxies) see them, inner as opened.

``wire_view(call, taps)`` turns the trace a gateway keeps per call into a JSON-able document for
the demo and the control API; :class:`WireTap` records what any :class:`InboundQueue`
(e.g. a proxy's) receives, to show the messages as the proxies themselves saw them.

The control API serves the view redacted (``wire_view(..., redact=True)``): :func:`redact`
removes message bodies (SDP, RFC 4566) and identities — display names and the user parts of
SIP/SIPS/tel URIs (RFC 3261 §19.1) in the Request-URI and address headers (§20.10 Contact,
§20.20 From, §20.39 To and their relatives), Call-IDs (§20.8) and every header not known to be
harmless — while keeping what the protocol's flow needs to be read: methods, status codes,
Via, CSeq, tags, host parts, sizes.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from sipsec.aio import Inbound, InboundQueue
from sipsec.sip import SipError

from sipsec_gateway.calls import Call

__all__ = ["REDACTED", "WireTap", "redact", "redact_aor", "render", "wire_view"]

#: What replaces a redacted value.
REDACTED: Final = "[redacted]"

#: Headers whose values carry nothing that identifies a user or a call (kept as they are).
_HARMLESS: Final = frozenset({
    "via", "v", "max-forwards", "cseq", "content-length", "l", "content-type", "c", "content-encoding", "e",
    "expires", "min-expires", "allow", "supported", "k", "require", "proxy-require", "unsupported", "accept",
    "accept-encoding", "accept-language", "retry-after", "timestamp", "event", "o", "allow-events", "u",
    "session-expires", "x", "min-se", "rseq", "rack", "mime-version", "warning",
})
#: Headers of name-addr values (RFC 3261 §20): display names and URI user parts are redacted.
_ADDRESS: Final = frozenset({
    "from", "f", "to", "t", "contact", "m", "reply-to", "refer-to", "r", "referred-by", "b",
    "p-asserted-identity", "p-preferred-identity", "remote-party-id", "diversion", "history-info",
    "p-called-party-id", "route", "record-route", "path", "service-route",
})
#: Header and URI parameters kept in an address (the rest: ``name=[redacted]``).
_KEPT_PARAMS: Final = frozenset({"tag", "expires", "q", "lr", "transport", "branch", "maddr", "method"})
_URI: Final = re.compile(r"(?i)\b(sips?|tel):([^\s<>,;\"]+)")


def _redact_params(params: str) -> str:
    """``;a=b;c`` with each value not in :data:`_KEPT_PARAMS` redacted (names are kept)."""
    out = []
    for part in params.split(";"):
        if not part.strip():
            continue
        name, eq, _ = part.partition("=")
        keep = name.strip().lower() in _KEPT_PARAMS or not eq
        out.append(part.strip() if keep else f"{name.strip()}={REDACTED}")
    return "".join(";" + p for p in out)


def _redact_uri_match(m: re.Match[str]) -> str:
    scheme, rest = m.group(1), m.group(2)
    if scheme.lower() == "tel":
        return f"{scheme}:{REDACTED}"
    user, at, host = rest.rpartition("@")
    return f"{scheme}:{REDACTED}@{host}" if at and user else f"{scheme}:{rest}"


def _redact_uri(uri: str) -> str:
    """A URI with its user part (the identity, RFC 3261 §19.1.1) and its unknown parameters redacted."""
    head, sep, headers = uri.partition("?")
    base, _, params = head.partition(";")
    base = _URI.sub(_redact_uri_match, base.strip())
    return base + (_redact_params(params) if params else "") + (f"?{REDACTED}" if sep else "")


def _split_commas(value: str) -> list[str]:
    """A header value split at the commas that separate values (not inside quotes or <...>)."""
    parts: list[str] = []
    depth, quoted, escaped, start = 0, False, False, 0
    for i, ch in enumerate(value):
        if escaped:
            escaped = False
        elif ch == "\\" and quoted:
            escaped = True
        elif ch == '"':
            quoted = not quoted
        elif not quoted and ch == "<":
            depth += 1
        elif not quoted and ch == ">":
            depth = max(0, depth - 1)
        elif not quoted and depth == 0 and ch == ",":
            parts.append(value[start:i])
            start = i + 1
    parts.append(value[start:])
    return parts


def _quoted_end(text: str) -> int:
    """The index after the quoted string ``text`` starts with (its length when unterminated)."""
    escaped = False
    for i, ch in enumerate(text[1:], 1):
        if escaped:
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == '"':
            return i + 1
    return len(text)


def _redact_address(value: str) -> str:
    """name-addr / addr-spec values (RFC 3261 §20.10): display name dropped, URI and params redacted."""
    out = []
    for part in _split_commas(value):
        part = part.strip()
        if part == "*":
            out.append(part)
            continue
        skip = _quoted_end(part) if part.startswith('"') else 0
        lt = part.find("<", skip)
        gt = part.find(">", lt) if lt >= 0 else -1  # a URI holds no ">" (RFC 3261 §25.1)
        if 0 <= lt < gt:
            display = part[:lt].strip()
            named = f'"{REDACTED}" ' if display else ""
            out.append(f"{named}<{_redact_uri(part[lt + 1:gt])}>{_redact_params(part[gt + 1:])}")
        else:  # addr-spec: its parameters are the header's (RFC 3261 §20)
            uri, _, params = part.partition(";")
            out.append(_redact_uri(uri) + (_redact_params(params) if params else ""))
    return ", ".join(out)


def _redact_header(name: str, value: str) -> str:
    key = name.strip().lower()
    if key in _HARMLESS:
        return value
    if key in _ADDRESS:
        return " " + _redact_address(value)
    return " " + REDACTED


def redact(data: bytes) -> bytes:
    """A SIP message with identities and its body (SDP) redacted, for showing to an operator.

    The start line keeps method, status and the Request-URI's host; headers keep only what
    :data:`_HARMLESS` lists, address headers lose display names and user parts; a binary body
    (CMS, RFC 5652) stays binary, so :func:`render` summarises it; any other body is replaced by
    a line naming its size.
    """
    head, sep, body = data.partition(b"\r\n\r\n")
    lines = head.decode("utf-8", "replace").split("\r\n")
    unfolded: list[str] = []
    for line in lines[1:]:  # RFC 3261 §7.3.1: continuation lines belong to the header before
        if line[:1] in (" ", "\t") and unfolded:
            unfolded[-1] += " " + line.strip()
        else:
            unfolded.append(line)
    start = lines[0]
    if not start.startswith("SIP/"):  # a request: METHOD Request-URI SIP/2.0
        method, _, rest = start.partition(" ")
        uri, _, version = rest.rpartition(" ")
        start = f"{method} {_redact_uri(uri)} {version}" if uri else REDACTED
    out = [start]
    for line in unfolded:
        name, colon, value = line.partition(":")
        out.append(f"{name}:{_redact_header(name, value)}" if colon else REDACTED)
    redacted_body = b""
    if sep and body:
        if _printable(body):
            redacted_body = f"[body redacted: {len(body)} bytes]".encode()
        else:
            redacted_body = body
    return "\r\n".join(out).encode() + (b"\r\n\r\n" + redacted_body if sep else b"")


def redact_aor(aor: str | None) -> str | None:
    """An address of record with its user part redacted (the domain stays)."""
    return None if aor is None else _URI.sub(_redact_uri_match, aor)


def _printable(body: bytes) -> bool:
    try:
        decoded = body.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return all(ch.isprintable() or ch in "\r\n\t" for ch in decoded)


def render(data: bytes) -> str:
    """A SIP message for reading: the head as text, a binary (CMS) body as a one-line summary."""
    head, sep, body = data.partition(b"\r\n\r\n")
    text = head.decode("utf-8", "replace")
    if not sep or not body:
        return text + "\r\n\r\n"
    if _printable(body):
        return f"{text}\r\n\r\n{body.decode('utf-8')}"
    return f"{text}\r\n\r\n[{len(body)} bytes of binary CMS (DER)]"


def wire_view(call: Call, taps: Sequence[WireTap] = (), *, redact_messages: bool = False) -> dict[str, Any]:
    """The call's summary and its messages: outer (as sent/received) and inner (opened, with signer).

    With ``taps`` (one per proxy), ``proxies`` lists, per tap, the outer messages of this call
    exactly as that proxy received them (selected by the call's outer Call-ID). With
    ``redact_messages`` every message (outer and inner) passes through :func:`redact`, signers
    lose their user part and the raw outer bytes are left out.
    """
    show = (lambda data: render(redact(data))) if redact_messages else render
    messages = []
    for entry in call.trace or []:
        item: dict[str, Any] = {
            "direction": entry.direction,
            "at": entry.at,
            "secured": entry.secured,
            "outer": show(entry.outer),
            "outer_bytes": len(entry.outer),
            "inner": show(entry.inner) if entry.inner is not None else None,
            "signer": redact_aor(entry.signer) if redact_messages else entry.signer,
        }
        if not redact_messages:
            item["outer_b64"] = base64.b64encode(entry.outer).decode("ascii")
        messages.append(item)
    proxies = [
        {"proxy": i, "messages": [show(data) for cid, data in tap.records if cid == call.outer_call_id]}
        for i, tap in enumerate(taps)
    ]
    return {"call": call.summary(), "traced": call.trace is not None, "redacted": redact_messages,
            "messages": messages, "proxies": proxies}


@dataclass
class WireTap:
    """Records every message an :class:`InboundQueue` accepts (wraps its ``offer``); ``detach()`` undoes it."""

    queue: InboundQueue
    seen: list[bytes] = field(default_factory=list)
    records: list[tuple[str | None, bytes]] = field(default_factory=list)  # (outer Call-ID, bytes)

    def __post_init__(self) -> None:
        self._offer = self.queue.offer

        def offer(item: Inbound) -> bool:
            data = item.message.to_bytes()
            try:
                call_id: str | None = str(item.message.call_id)
            except SipError:
                call_id = None
            self.seen.append(data)
            self.records.append((call_id, data))
            return bool(self._offer(item))

        self.queue.offer = offer  # type: ignore[method-assign]  # a tap wraps the bound method

    def detach(self) -> None:
        self.queue.offer = self._offer  # type: ignore[method-assign]

    def clear(self) -> None:
        self.seen.clear()
        self.records.clear()

    def text(self) -> bytes:
        return b"\n".join(self.seen)
