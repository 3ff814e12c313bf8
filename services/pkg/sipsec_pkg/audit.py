"""The extraction audit log: one JSON object per line (AOR, purpose, period, time, peer — never keys)."""

from __future__ import annotations

import collections
import json
import os
import sys
import threading
from datetime import UTC, datetime
from typing import IO, Any

__all__ = ["AuditLog"]


class AuditLog:
    """Appends JSON lines to a file (created 0600), to stdout (``-``), or to memory (no path).

    Callers pass only identifiers and outcomes; this class adds ``time`` (ISO 8601 UTC) and
    ``ts`` (unix seconds) from the timestamp they give.
    """

    def __init__(self, path: str | None, *, keep: int = 1000) -> None:
        self.path = path
        self.recent: collections.deque[dict[str, Any]] = collections.deque(maxlen=keep)
        self._lock = threading.Lock()
        self._fh: IO[str] | None = None
        if path == "-":
            self._fh = sys.stdout
        elif path:
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            self._fh = os.fdopen(fd, "a", encoding="utf-8")

    def record(self, event: str, ts: float, **fields: Any) -> None:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds"),
            "ts": round(ts, 3),
            "event": event,
            **fields,
        }
        self.recent.append(line)
        if self._fh is not None:
            text = json.dumps(line, sort_keys=True, separators=(",", ":")) + "\n"
            with self._lock:
                self._fh.write(text)
                self._fh.flush()

    def close(self) -> None:
        if self._fh is not None and self._fh is not sys.stdout:
            self._fh.close()
        self._fh = None
