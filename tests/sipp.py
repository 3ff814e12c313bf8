"""A reusable harness that runs real ``sipp`` processes on loopback for the e2e tests.

Usage (blocking)::

    from tests.sipp import Sipp

    with Sipp("uas", calls=1, timeout_s=20) as uas:       # binds a free UDP port on 127.0.0.1
        ...                                              # uas.address == ("127.0.0.1", port)
        result = uas.wait()                              # SippResult
    result.assert_ok(calls=1)                            # raises with sipp's logs on failure

    uac = Sipp("uac", remote=("127.0.0.1", 5060), calls=20, rate=10).start()
    uac.wait().assert_ok(calls=20)

From asyncio code (the UA under test shares the loop), use ``await sipp.wait_async()``, which
waits in a worker thread and never blocks the loop.

API
---
``Sipp(scenario, *, remote=None, local_host="127.0.0.1", local_port=None, transport="u1",
calls=1, rate=None, rate_period_ms=1000, limit=None, timeout_s=30.0, service=None,
trace_msg=True, extra_args=(), workdir=None)``

- ``scenario``: a built-in scenario name (``"uac"``, ``"uas"``, ``"regexp"``, …; passed as
  ``-sn``) or the path of a scenario XML file (passed as ``-sf``; see tests/e2e/sipp/scenarios/).
- ``remote``: ``(host, port)`` sipp sends to (the positional remote address); None for a UAS.
- ``local_host``: any 127.x.y.z address (Linux routes all of 127/8 to loopback);
  ``local_port``: None picks a free port of the right kind (UDP for ``u1``/``un``, TCP for
  ``t1``/``tn``, TLS for ``l1``/``ln``).
- ``calls`` → ``-m`` (sipp exits after that many calls); ``rate``/``rate_period_ms`` → ``-r``/``-rp``;
  ``limit`` → ``-l`` (max simultaneous calls).
- ``timeout_s`` → ``-timeout <n>s -timeout_error``: sipp always exits, with code 255 when the
  global timeout is hit. :meth:`Sipp.wait` kills the process if it overstays by 10 s.
- ``trace_msg``: also write every sent/received message to ``messages.log`` (debugging).
- ``service`` → ``-s`` (the user part of the Request-URI a UAC sends).
- ``extra_args``: appended verbatim (e.g. ``["-max_retrans", "1"]``, ``["-d", "500"]`` for the
  call length, or ``["-tls_cert", c, "-tls_key", k]`` with ``transport="l1"``).

Helpers: ``free_port_on(host="127.0.0.1", kind=socket.SOCK_DGRAM)`` (a free port on any 127.x
address), ``sipp_available()``, ``SIPP`` (the binary's path). Note: sipp also binds a UDP
control socket on 0.0.0.0:8888+ and two media ports (6000+) on ``local_host``; it walks up
from those ports when they are busy, so concurrent runs do not collide.

Every file sipp writes lands in ``workdir`` (a fresh temporary directory by default, removed by
:meth:`Sipp.cleanup` / the context manager when the run succeeded, kept for inspection
otherwise): ``stdout.log``, ``stats.csv`` (``-trace_stat``), ``errors.log`` (``-trace_err``),
``messages.log`` (``-trace_msg``).

- :attr:`Sipp.command` — the full argv (list of str), built eagerly and inspectable before start.
- :meth:`Sipp.start` — spawns sipp with stdin closed (``-nostdin``) and, for a UAS, returns only
  once sipp's signalling socket is bound (checked through /proc, event-driven with a timeout);
  raises :class:`SippError` if sipp dies or does not bind in time.
- :meth:`Sipp.wait` / :meth:`Sipp.wait_async` — wait for exit and return a :class:`SippResult`.
- :meth:`Sipp.stop` — terminate (SIGTERM, then SIGKILL) a running sipp.
- :meth:`Sipp.cleanup` ``(keep_failed=True)`` — stop, then remove the workdir (kept after a
  failed run unless ``keep_failed=False``); the context manager calls it.

``SippResult``: ``returncode`` (sipp's codes: 0 all calls succeeded, 1 at least one failed,
97 exit on internal command, 99 normal exit without calls processed, 255/-1 fatal error,
254/-2 fatal error binding a socket), ``stats`` (the final row of ``-trace_stat`` as a dict of
column name → str, e.g. ``stats["SuccessfulCall(C)"]``), the convenience ints
``successful_calls``, ``failed_calls``, ``retransmissions``, ``unexpected_messages``, and
:meth:`SippResult.assert_ok` which raises ``AssertionError`` with the tails of sipp's logs.
"""

from __future__ import annotations

import asyncio
import csv
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from sipsec.aio.ports import spare_port

__all__ = ["SIPP", "Sipp", "SippError", "SippResult", "free_port_on", "sipp_available"]

SIPP: str = shutil.which("sipp") or "/usr/bin/sipp"

_STREAM_TRANSPORTS = frozenset({"t1", "tn", "l1", "ln"})
_PROC_NET = {"udp": "/proc/net/udp", "tcp": "/proc/net/tcp"}


class SippError(RuntimeError):
    """sipp could not be started or did not become ready."""


def sipp_available() -> bool:
    """True when the sipp binary exists and is executable."""
    return os.access(SIPP, os.X_OK)


def free_port_on(host: str = "127.0.0.1", kind: int = socket.SOCK_DGRAM) -> int:
    """A port that was free a moment ago on ``host`` (UDP by default)."""
    return spare_port(host, tcp=kind == socket.SOCK_STREAM, udp=kind == socket.SOCK_DGRAM)


def _tail(path: Path, limit: int = 4000) -> str:
    try:
        data = path.read_text(errors="replace")
    except OSError:
        return "(absent)"
    return data[-limit:]


@dataclass
class SippResult:
    """What one sipp run produced: its exit code and its final statistics row."""

    returncode: int
    stats: dict[str, str]
    workdir: Path
    elapsed_s: float
    command: list[str] = field(default_factory=list)

    def _int(self, column: str) -> int:
        value = self.stats.get(column, "")
        try:
            return int(value)
        except ValueError:
            return -1

    @property
    def successful_calls(self) -> int:
        """Cumulative successful calls (``SuccessfulCall(C)``); -1 if no stats were written."""
        return self._int("SuccessfulCall(C)")

    @property
    def failed_calls(self) -> int:
        """Cumulative failed calls (``FailedCall(C)``)."""
        return self._int("FailedCall(C)")

    @property
    def retransmissions(self) -> int:
        """Cumulative retransmissions sipp made (``Retransmissions(C)``)."""
        return self._int("Retransmissions(C)")

    @property
    def unexpected_messages(self) -> int:
        """Calls failed on an unexpected message (``FailedUnexpectedMessage(C)``)."""
        return self._int("FailedUnexpectedMessage(C)")

    def log(self, name: str) -> str:
        """The tail of one of the files sipp wrote (``stdout.log``, ``errors.log``, ``messages.log``)."""
        return _tail(self.workdir / name)

    def diagnostics(self) -> str:
        """A human-readable dump for assertion messages."""
        return (
            f"sipp {' '.join(self.command)}\nworkdir={self.workdir}\nreturncode={self.returncode} "
            f"successful={self.successful_calls} failed={self.failed_calls}\n"
            f"--- errors.log ---\n{self.log('errors.log')}\n"
            f"--- messages.log ---\n{self.log('messages.log')}\n"
            f"--- stdout.log ---\n{self.log('stdout.log')[-1500:]}"
        )

    def assert_ok(self, calls: int) -> None:
        """Assert that sipp exited 0 with exactly ``calls`` successful and no failed calls."""
        if self.returncode != 0 or self.successful_calls != calls or self.failed_calls != 0:
            raise AssertionError(self.diagnostics())


def _read_final_stats(path: Path) -> dict[str, str]:
    try:
        with path.open(newline="", errors="replace") as fh:
            rows = [row for row in csv.reader(fh, delimiter=";") if row]
    except OSError:
        return {}
    if len(rows) < 2:
        return {}
    header, last = rows[0], rows[-1]
    return {name: value for name, value in zip(header, last, strict=False) if name}


def _socket_inodes(pid: int) -> set[str]:
    inodes: set[str] = set()
    fd_dir = Path(f"/proc/{pid}/fd")
    try:
        entries = list(fd_dir.iterdir())
    except OSError:
        return inodes
    for entry in entries:
        try:
            target = os.readlink(entry)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    return inodes


def _bound_inodes(proto: str, host: str, port: int) -> set[str]:
    """Inodes of sockets bound to host:port in /proc/net/{udp,tcp} (IPv4, little-endian hex)."""
    want_ip = socket.inet_aton(host)[::-1].hex().upper()
    want_any = "00000000"
    want_port = f"{port:04X}"
    found: set[str] = set()
    try:
        lines = Path(_PROC_NET[proto]).read_text().splitlines()[1:]
    except OSError:
        return found
    for line in lines:
        cols = line.split()
        if len(cols) < 10:
            continue
        ip, _, p = cols[1].partition(":")
        if p == want_port and ip in (want_ip, want_any):
            found.add(cols[9])
    return found


class Sipp:
    """One sipp process (see the module docstring for the full API)."""

    def __init__(
        self,
        scenario: str,
        *,
        remote: tuple[str, int] | None = None,
        local_host: str = "127.0.0.1",
        local_port: int | None = None,
        transport: str = "u1",
        calls: int = 1,
        rate: float | None = None,
        rate_period_ms: int = 1000,
        limit: int | None = None,
        timeout_s: float = 30.0,
        service: str | None = None,
        trace_msg: bool = True,
        extra_args: Sequence[str] = (),
        workdir: Path | str | None = None,
    ) -> None:
        self.scenario = scenario
        self.remote = remote
        self.transport = transport
        self.timeout_s = timeout_s
        kind = socket.SOCK_STREAM if transport in _STREAM_TRANSPORTS else socket.SOCK_DGRAM
        self.local_host = local_host
        self.local_port = local_port if local_port is not None else free_port_on(local_host, kind)
        self._own_workdir = workdir is None
        self.workdir = Path(workdir) if workdir is not None else Path(
            tempfile.mkdtemp(prefix="sipsec-sipp-")
        )
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.proc: subprocess.Popen[bytes] | None = None
        self._stdout: object | None = None
        self._started_at = 0.0
        self.result: SippResult | None = None

        is_file = scenario.endswith(".xml") or os.path.sep in scenario
        cmd: list[str] = [SIPP]
        cmd += ["-sf", str(Path(scenario).resolve())] if is_file else ["-sn", scenario]
        if remote is not None:
            cmd.append(f"{remote[0]}:{remote[1]}")
        cmd += ["-i", local_host, "-p", str(self.local_port), "-t", transport]
        cmd += ["-m", str(calls)]
        if rate is not None:
            cmd += ["-r", f"{rate:g}", "-rp", str(rate_period_ms)]
        if limit is not None:
            cmd += ["-l", str(limit)]
        if service is not None:
            cmd += ["-s", service]
        cmd += ["-nostdin", "-timeout", f"{int(timeout_s)}s", "-timeout_error"]
        cmd += ["-trace_stat", "-stf", str(self.workdir / "stats.csv"), "-fd", "1"]
        cmd += ["-trace_err", "-error_file", str(self.workdir / "errors.log")]
        if trace_msg:
            cmd += ["-trace_msg", "-message_file", str(self.workdir / "messages.log")]
        cmd += list(extra_args)
        self.command: list[str] = cmd

    @property
    def address(self) -> tuple[str, int]:
        """The (host, port) sipp's signalling socket is bound to."""
        return (self.local_host, self.local_port)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, ready_timeout_s: float = 10.0) -> Sipp:
        """Spawn sipp; for a UAS (no ``remote``), return once its socket is bound."""
        if not sipp_available():
            raise SippError(f"sipp is not installed at {SIPP} (run `make install`)")
        if self.proc is not None:
            raise SippError("this Sipp was already started")
        out = (self.workdir / "stdout.log").open("wb")
        self._stdout = out
        self._started_at = time.monotonic()
        self.proc = subprocess.Popen(
            self.command, cwd=self.workdir, stdin=subprocess.DEVNULL, stdout=out,
            stderr=subprocess.STDOUT, start_new_session=True,
        )
        if self.remote is None:
            self.wait_bound(ready_timeout_s)
        return self

    def wait_bound(self, timeout_s: float = 10.0) -> None:
        """Block until sipp's own signalling socket is bound (read from /proc); raise on timeout."""
        assert self.proc is not None
        proto = "tcp" if self.transport in _STREAM_TRANSPORTS else "udp"
        deadline = time.monotonic() + timeout_s
        delay = 0.005
        while True:
            if self.proc.poll() is not None:
                raise SippError(
                    f"sipp exited early with {self.proc.returncode}:\n{_tail(self.workdir / 'stdout.log')}"
                )
            if _bound_inodes(proto, self.local_host, self.local_port) & _socket_inodes(self.proc.pid):
                return
            if time.monotonic() >= deadline:
                self.stop()
                raise SippError(f"sipp did not bind {self.local_host}:{self.local_port} in {timeout_s}s")
            time.sleep(delay)
            delay = min(delay * 2, 0.05)

    def wait(self, timeout_s: float | None = None) -> SippResult:
        """Wait for sipp to exit (default: its own timeout plus 10 s, then it is killed)."""
        assert self.proc is not None, "start() first"
        limit = self.timeout_s + 10.0 if timeout_s is None else timeout_s
        try:
            code = self.proc.wait(limit)
        except subprocess.TimeoutExpired:
            self.stop()
            code = self.proc.wait()
        return self._finish(code)

    async def wait_async(self, timeout_s: float | None = None) -> SippResult:
        """:meth:`wait` in a worker thread, so an asyncio loop keeps running meanwhile."""
        return await asyncio.to_thread(self.wait, timeout_s)

    def _finish(self, code: int) -> SippResult:
        if self._stdout is not None:
            self._stdout.close()  # type: ignore[attr-defined]
            self._stdout = None
        self.result = SippResult(
            returncode=code,
            stats=_read_final_stats(self.workdir / "stats.csv"),
            workdir=self.workdir,
            elapsed_s=time.monotonic() - self._started_at,
            command=list(self.command),
        )
        return self.result

    def stop(self) -> None:
        """Terminate sipp if it is still running (SIGTERM, then SIGKILL after 5 s)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def cleanup(self, keep_failed: bool = True) -> None:
        """Stop sipp; remove the temporary workdir unless the run failed and ``keep_failed``
        (then it is kept for debugging and its path is in the assertion message)."""
        self.stop()
        if self.proc is not None and self.result is None:
            self._finish(self.proc.wait())
        failed = self.result is None or self.result.returncode != 0
        if self._own_workdir and not (failed and keep_failed):
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> Sipp:
        if self.proc is None:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.cleanup()
