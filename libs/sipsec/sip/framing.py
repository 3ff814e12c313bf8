"""Message framing: one message per datagram, or Content-Length framing on a byte stream."""

from __future__ import annotations

from .errors import RemoteProtocolError
from .message import Request, Response
from .parser import (
    DEFAULT_LIMITS,
    Limits,
    _bad,
    _content_length,
    _guard,
    _parse_head,
    find_head_end,
    parse_message,
)

__all__ = ["StreamFramer", "is_keepalive", "parse_datagram"]


def is_keepalive(data: bytes) -> bool:
    """Whether ``data`` is only CRLFs: an RFC 5626 §3.5.1 keep-alive ping/pong, not a message."""
    return not data.strip(b"\r\n")


def parse_datagram(data: bytes, limits: Limits = DEFAULT_LIMITS) -> Request | Response:
    """Parse the one message a UDP datagram carries (RFC 3261 §18.3).

    Bytes after Content-Length are ignored and reported as the ``"trailing-bytes"`` defect
    (RFC 4475 §3.1.1.12 dblreq).  Only :class:`RemoteProtocolError` escapes.
    """
    return parse_message(data, limits)


class StreamFramer:
    """Splits a TCP/TLS byte stream into messages by Content-Length (RFC 3261 §18.3).

    ``feed()`` accepts any chunking — partial messages wait for more data, several messages
    in one read all come out — and ignores CRLFs before a start line (§7.5, RFC 5626
    keep-alives).  Content-Length is mandatory on streams.  After a
    :class:`RemoteProtocolError` the stream cannot be resynchronised: messages completed
    before the bad bytes are still returned, then ``feed()`` raises the error (now and on
    every later call), and the connection should be closed.
    """

    def __init__(self, limits: Limits = DEFAULT_LIMITS) -> None:
        self._limits = limits
        self._buf = bytearray()
        self._scan = 0  # where to resume looking for the end of the head
        self._pending: tuple[Request | Response, int, int, int, bytes] | None = None
        self._error: RemoteProtocolError | None = None

    @property
    def buffered(self) -> int:
        """Bytes received but not yet returned as a message."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[Request | Response]:
        """Add received bytes; return every message completed by them, in order."""
        if self._error is not None:
            raise self._error
        self._buf += _guard(data)
        out: list[Request | Response] = []
        try:
            self._drain(out)
        except RemoteProtocolError as exc:
            self._error = exc
        except Exception as exc:  # noqa: BLE001 - only RemoteProtocolError may escape
            self._error = _bad("unparseable", type(exc).__name__)
        if self._error is not None and not out:
            raise self._error
        # messages completed before the error are delivered; the next feed() raises
        return out

    @property
    def error(self) -> RemoteProtocolError | None:
        """The error that broke the stream, if any (the connection should be closed)."""
        return self._error

    def _drain(self, out: list[Request | Response]) -> None:
        buf = self._buf
        while True:
            pending = self._pending or self._read_head(buf)
            if pending is None:
                return
            msg, body_start, clen, raw_start, head = pending
            if len(buf) < body_start + clen:
                return
            msg.body = bytes(buf[body_start : body_start + clen])
            if raw_start >= 0 and len(msg.headers.get_all_raw("Content-Length")) == 1:
                msg._raw_head = head[raw_start:body_start]
                msg._raw_hdrs = msg.headers
                msg._raw_mod = msg.headers.mod_count
                msg._raw_clen = clen
            del buf[: body_start + clen]
            self._pending = None
            out.append(msg)

    def _read_head(self, buf: bytearray) -> tuple[Request | Response, int, int, int, bytes] | None:
        """The next message's header section parsed and kept as pending; None until it has
        arrived whole (RFC 3261 §18.3: CRLFs before a start line skipped, Content-Length required)."""
        limits = self._limits
        skip = 0
        n = len(buf)
        while skip < n and buf[skip] in b"\r\n":
            skip += 1
        if skip:
            del buf[:skip]
            self._scan = 0
        if not buf:
            return None
        head_end, body_start = find_head_end(buf, max(0, self._scan - 3))
        if head_end < 0:
            if len(buf) > limits.max_message_bytes:
                raise _bad("message-too-large", "header section too long", 513)
            if buf.find(b"\n") < 0 and len(buf) > limits.max_line:
                raise _bad("line-too-long", f"limit {limits.max_line}", 513)
            self._scan = len(buf)
            return None
        self._scan = 0
        head = bytes(buf[:body_start])
        msg, clen_values, raw_start = _parse_head(head, 0, head_end, body_start, limits)
        if not clen_values:
            raise _bad("missing-content-length", "required on stream transports")
        clen = _content_length(clen_values, msg)
        if clen is None:
            raise _bad("conflicting-content-length")
        if body_start + clen > limits.max_message_bytes:
            raise _bad("message-too-large", f"{body_start + clen} bytes", 513)
        self._pending = (msg, body_start, clen, raw_start, head)
        return self._pending
