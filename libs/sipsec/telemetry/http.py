"""The Prometheus ``/metrics`` endpoint every service serves on a port of its own, with the
HTTP health endpoints beside it: ``/livez`` (the process answers) and ``/readyz`` (every
readiness check passed, :class:`sipsec.telemetry.health.Readiness`), each 200 or 503 with a
JSON body."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any
from wsgiref.simple_server import make_server

from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer, _SilentHandler

if TYPE_CHECKING:
    from sipsec.telemetry.health import Readiness

__all__ = ["close_metrics", "health_app", "serve_metrics"]

_Start = Callable[[str, list[tuple[str, str]]], Any]
_App = Callable[[dict[str, Any], _Start], Iterable[bytes]]


def _json(start: _Start, ok: bool, body: dict[str, object]) -> list[bytes]:
    data = json.dumps(body, sort_keys=True).encode()
    start("200 OK" if ok else "503 Service Unavailable",
          [("Content-Type", "application/json"), ("Content-Length", str(len(data))), ("Cache-Control", "no-store")])
    return [data]


def health_app(metrics: _App, readiness: Readiness | None) -> _App:
    """``metrics`` (the Prometheus WSGI app) with ``/livez`` and ``/readyz`` in front of it.

    Without a ``readiness``, ``/readyz`` answers like ``/livez``. The verdict is the one the
    service's event loop last published, and counts as not ready once it is older than a few
    check intervals (a stalled event loop does not stay green).
    """
    def app(environ: dict[str, Any], start: _Start) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/livez":
            return _json(start, True, {"live": True})
        if path == "/readyz":
            if readiness is None:
                return _json(start, True, {"ready": True, "checks": {}})
            report = readiness.report()
            return _json(start, bool(report["ready"]), report)
        return metrics(environ, start)

    return app


def serve_metrics(port: int, host: str, registry: CollectorRegistry | Any,
                  readiness: Readiness | None = None) -> tuple[Any | None, int | None]:
    """Serve ``registry`` (``/metrics``) and the health endpoints on ``host:port`` from a thread
    (port 0: any free port; below 0: off).

    Returns the HTTP server (None when off) and the port it bound, for :func:`close_metrics`.
    """
    if port < 0:
        return None, None
    app = health_app(make_wsgi_app(registry), readiness)

    class _Server(ThreadingWSGIServer):
        """A per-call class: the address family follows ``host``."""

    _Server.address_family = _family(host)
    httpd = make_server(host, port, app, _Server, handler_class=_SilentHandler)
    threading.Thread(target=httpd.serve_forever, name="sipsec-metrics-http", daemon=True).start()
    return httpd, int(httpd.server_port)


def _family(host: str) -> int:
    import socket

    return socket.AF_INET6 if ":" in host else socket.AF_INET


def close_metrics(server: Any | None) -> None:
    """Stop a server :func:`serve_metrics` started (nothing when it was off)."""
    if server is not None:
        server.shutdown()
        server.server_close()
