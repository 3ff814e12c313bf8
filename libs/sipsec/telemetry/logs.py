"""Every service's log lines: one JSON object per line (default) or the human text format.

The JSON schema (:data:`FIELDS`), one object per line on stderr:

``time``     ISO 8601, UTC, milliseconds (``2026-12-06T03:59:01.123Z``)
``level``    ``DEBUG`` … ``CRITICAL``
``service``  ``pkg``, ``location``, ``proxy``, ``gateway``, ``worker``
``domain``   the SIP domain the service serves ("" for a worker pool shared by domains)
``logger``   the Python logger (``sipsec.pkg``, ``sipsec.health``…)
``event``    the message, formatted
``call_id`` / ``transaction_id`` / ``request_id``  when known: from ``extra={...}`` or
             :func:`log_context`; only ids a service already keeps for the hop it handles
``exc_type`` / ``stack``  when an exception is logged

Never in it: passwords, tokens, keys, decrypted content. The callers never pass them, and as a
second line of defence :func:`redact` masks ``Bearer …`` values and ``password=``/``token=``/
``secret=`` pairs in the event text and stack.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import re
import sys
import time
from collections.abc import Iterator
from typing import Final, TextIO

__all__ = ["CONTEXT_IDS", "FIELDS", "FORMATS", "TEXT_FORMAT", "JsonFormatter", "configure", "log_context", "redact"]

#: The fields every JSON line has.
FIELDS: Final = ("time", "level", "service", "domain", "logger", "event")
#: Optional id fields, from ``extra`` or :func:`log_context`.
CONTEXT_IDS: Final = ("call_id", "transaction_id", "request_id")
#: ``SIPSEC_LOG_FORMAT`` values.
FORMATS: Final = ("json", "text")
#: The text format (``SIPSEC_LOG_FORMAT=text``).
TEXT_FORMAT: Final = "%(asctime)s %(levelname)s %(name)s: %(message)s"

_context: contextvars.ContextVar[dict[str, str] | None] = contextvars.ContextVar("sipsec_log_context", default=None)

_REDACTIONS: Final = (
    (re.compile(r"(?i)\b(bearer\s+)[A-Za-z0-9._~+/=-]+"), r"\1[redacted]"),
    (re.compile(r"(?i)\b(password|passwd|token|secret|authorization)(['\"]?\s*[=:]\s*)"
                r"(\"[^\"]*\"|'[^']*'|[^\s,;&]+)"),
     r"\1\2[redacted]"),
)


def redact(text: str) -> str:
    """``text`` with bearer tokens and ``password=…``-shaped values masked."""
    for pattern, replacement in _REDACTIONS:
        text = pattern.sub(replacement, text)
    return text


@contextlib.contextmanager
def log_context(**ids: str) -> Iterator[None]:
    """Adds ``ids`` (of :data:`CONTEXT_IDS`) to every JSON line logged inside the block (and
    in tasks started inside it)."""
    unknown = set(ids) - set(CONTEXT_IDS)
    if unknown:
        raise ValueError(f"unknown log context ids: {sorted(unknown)}")
    token = _context.set({**(_context.get() or {}), **ids})
    try:
        yield
    finally:
        _context.reset(token)


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON object of :data:`FIELDS` (plus ids and exception)."""

    def __init__(self, service: str, domain: str = "") -> None:
        super().__init__()
        self.service = service
        self.domain = domain

    def format(self, record: logging.LogRecord) -> str:
        seconds = time.gmtime(record.created)
        line: dict[str, str] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", seconds) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "service": self.service,
            "domain": str(getattr(record, "domain", "") or self.domain),
            "logger": record.name,
            "event": redact(record.getMessage()),
        }
        ids = _context.get() or {}
        for key in CONTEXT_IDS:
            value = getattr(record, key, None) or ids.get(key)
            if value:
                line[key] = str(value)
        if record.exc_info and record.exc_info[0] is not None:
            line["exc_type"] = record.exc_info[0].__name__
            line["stack"] = redact(self.formatException(record.exc_info))
        return json.dumps(line, ensure_ascii=False, separators=(",", ":"))


class _Handler(logging.StreamHandler):  # type: ignore[type-arg]
    """The handler :func:`configure` installs (so that a second call replaces it)."""


def configure(level: str, fmt: str = "json", *, service: str = "", domain: str = "",
              stream: TextIO | None = None) -> None:
    """One root handler on ``stream`` (default stderr) in ``fmt``, replacing the one an earlier
    call installed (handlers others added, e.g. a test's capture, stay)."""
    if fmt not in FORMATS:
        raise ValueError(f"log format {fmt!r}: use json or text")
    handler = _Handler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter(service, domain) if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _Handler)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
