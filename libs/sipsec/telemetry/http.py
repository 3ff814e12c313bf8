"""The Prometheus ``/metrics`` endpoint every service serves on a port of its own."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, start_http_server

__all__ = ["close_metrics", "serve_metrics"]


def serve_metrics(port: int, host: str, registry: CollectorRegistry) -> tuple[Any | None, int | None]:
    """Serve ``registry`` on ``host:port`` from a thread (port 0: any free port; below 0: off).

    Returns the HTTP server (None when off) and the port it bound, for :func:`close_metrics`.
    """
    if port < 0:
        return None, None
    server, _thread = start_http_server(port, host, registry=registry)
    return server, int(server.server_port)


def close_metrics(server: Any | None) -> None:
    """Stop a server :func:`serve_metrics` started (nothing when it was off)."""
    if server is not None:
        server.shutdown()
        server.server_close()
