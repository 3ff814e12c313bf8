"""``sipsec up``'s readiness checks: gRPC health (grpc.health.v1), HTTP ``/healthz``, SIP OPTIONS
(RFC 3261 §11) and Redis ``PING``, and waiting until a set of instances is ready."""

from __future__ import annotations

import secrets
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterable
from pathlib import Path

from sipsec_cli.up.environment import SHARED_HOST, Instance, UpError

__all__ = ["check_health", "redis_ping", "tail", "wait_healthy"]


def tail(path: Path, lines: int = 20) -> str:
    """The last ``lines`` lines of a log file (for error messages)."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:]) or "(empty log)"


def _grpc_serving(target: str, timeout: float) -> bool:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(target) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=timeout)
        except grpc.RpcError:
            return False
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


def _http_ok(url: str, timeout: float) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 (loopback http only)
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError, ValueError):
        return False


def _sip_options_ok(host: str, port: int, domain: str, timeout: float) -> bool:
    """Send SIP OPTIONS to the proxy's own domain over UDP; ready when it answers 200."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((SHARED_HOST, 0))
        s.settimeout(timeout)
        lport = s.getsockname()[1]
        branch = "z9hG4bK" + secrets.token_hex(8)
        msg = (
            f"OPTIONS sip:{domain} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {SHARED_HOST}:{lport};branch={branch};rport\r\n"
            f"Max-Forwards: 70\r\nTo: <sip:{domain}>\r\n"
            f"From: <sip:health@{domain}>;tag={secrets.token_hex(4)}\r\n"
            f"Call-ID: {secrets.token_hex(8)}@sipsec-up\r\nCSeq: 1 OPTIONS\r\n"
            f"Content-Length: 0\r\n\r\n"
        ).encode()
        try:
            s.sendto(msg, (host, port))
            data = s.recv(65535)
        except OSError:
            return False
    return data.startswith(b"SIP/2.0 200")


def check_health(inst: Instance, timeout: float = 1.0) -> bool:
    """One health probe of ``inst`` as its spec says."""
    h = inst.spec.health
    port = inst.ports[h.port]
    if h.kind == "grpc":
        return _grpc_serving(f"{inst.host}:{port}", timeout)
    if h.kind == "http":
        return _http_ok(f"http://{inst.host}:{port}{h.path}", timeout)
    if h.kind == "sip":
        return _sip_options_ok(inst.host, port, inst.domain.name if inst.domain else "localhost", timeout)
    raise UpError(f"unknown health check kind {h.kind!r}")


def redis_ping(host: str, port: int, auth: tuple[str, str] | None = None) -> bool:
    """Whether a Redis server answers ``PING`` on ``host:port`` (first ``AUTH user password``
    when given: the servers ``sipsec up`` starts refuse anonymous clients)."""
    hello = b"" if auth is None else _resp(b"AUTH", auth[0].encode(), auth[1].encode())
    want = 2 if auth else 1
    try:
        with socket.create_connection((host, port), timeout=0.2) as c:
            c.sendall(hello + b"PING\r\n")
            data = b""
            while data.count(b"\r\n") < want:
                chunk = c.recv(256)
                if not chunk:
                    break
                data += chunk
            return data.endswith(b"+PONG\r\n")
    except OSError:
        return False


def _resp(*parts: bytes) -> bytes:
    """One command in the Redis protocol (RESP arrays of bulk strings)."""
    return b"*%d\r\n" % len(parts) + b"".join(b"$%d\r\n%s\r\n" % (len(p), p) for p in parts)


def wait_healthy(instances: Iterable[Instance], timeout_s: float, stop: threading.Event) -> None:
    """Probe the started ``instances`` until every one is healthy (marking each ``healthy`` with
    its time to ready); raises :class:`UpError` when one exits, ``timeout_s`` passes or ``stop`` is set."""
    waiting = [i for i in instances if i.status != "healthy"]
    deadline = time.monotonic() + timeout_s
    while waiting:
        if stop.is_set():
            raise UpError("interrupted while starting")
        for inst in list(waiting):
            assert inst.proc is not None
            if inst.proc.poll() is not None:
                inst.status = f"exited {inst.proc.returncode}"
                raise UpError(f"{inst.label} ({inst.spec.script}) exited with status "
                              f"{inst.proc.returncode} while starting; log tail:\n{tail(inst.log_path)}")
            if check_health(inst, timeout=0.5):
                inst.status = "healthy"
                inst.ready_s = time.monotonic() - inst.started_at
                waiting.remove(inst)
        if waiting and time.monotonic() > deadline:
            inst = waiting[0]
            raise UpError(f"{inst.label} ({inst.spec.script}) not healthy after "
                          f"{timeout_s:.0f} s; log tail:\n{tail(inst.log_path)}")
        if waiting:
            time.sleep(0.1)
