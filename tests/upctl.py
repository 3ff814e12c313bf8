"""``sipsec up`` as a real process for the end-to-end tests: started, waited for, stopped.

One helper for every test that runs the whole deployment (``tests/e2e/up``, the Prometheus
scrape test): the process with its output read by threads, so a test can wait for a line
and still see everything the command printed when it fails.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

__all__ = ["SIPSEC", "UpProcess"]

#: The ``sipsec`` command of this interpreter's environment.
SIPSEC = str(Path(sys.executable).parent / "sipsec")


class UpProcess:
    """A running ``sipsec up *args``: its process and the lines it printed (``out``, ``err``).

    ``SIPSEC_REDIS_URL`` is left out of its environment: ``up`` starts its own Redis.
    """

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen([SIPSEC, "up", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, env={k: v for k, v in os.environ.items() if k != "SIPSEC_REDIS_URL"})
        self.out: list[str] = []
        self.err: list[str] = []
        self._threads = [threading.Thread(target=self._pump, args=(s, b), daemon=True)
                         for s, b in ((self.proc.stdout, self.out), (self.proc.stderr, self.err))]
        for t in self._threads:
            t.start()

    @staticmethod
    def _pump(stream: Any, sink: list[str]) -> None:
        for line in stream:
            sink.append(line)

    def wait_for(self, text: str, timeout: float = 90.0) -> None:
        """Wait until a printed line contains ``text``; fails the test (process killed, its
        output shown) when the process ends first or ``timeout`` seconds pass."""
        deadline = time.monotonic() + timeout
        while not any(text in line for line in self.err + self.out):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop(signal.SIGKILL)
                pytest.fail(f"no {text!r} (exit {self.proc.returncode}):\n{''.join(self.out)}{''.join(self.err)}")
            time.sleep(0.05)

    def ready(self, timeout: float = 90.0) -> dict[str, Any]:
        """Wait for ``sipsec up: ready``; the JSON document ``--json`` printed first."""
        self.wait_for("sipsec up: ready", timeout)
        return dict(json.loads(self.out[0]))

    def stop(self, sig: int = signal.SIGINT) -> int:
        """Send ``sig`` (unless it has ended) and return the exit status; the readers are joined."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            code = self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        for t in self._threads:
            t.join(5)
        return code
