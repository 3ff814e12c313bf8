"""Creating gRPC servers and channels the same way in every service."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from sipsec.rpc.interceptor import RpcReasons, RpcServerMetrics, SipsecServerInterceptor
from sipsec.telemetry import tracing

__all__ = ["RECONNECT_OPTIONS", "ServerTLS", "abort_with_details", "client_channel", "create_server", "drain", "mark_serving"]

_DEFAULT_REASONS = RpcReasons()


@dataclass(frozen=True)
class ServerTLS:
    """PEM material for a TLS server; ``client_ca`` set means client certificates are required."""

    cert_chain: bytes
    private_key: bytes
    client_ca: bytes | None = None

    def __repr__(self) -> str:  # never print key material
        return f"ServerTLS(client_auth={self.client_ca is not None})"

    @classmethod
    def from_files(cls, cert: str, key: str, client_ca: str = "") -> ServerTLS | None:
        """The PEM files a service's settings name, read; None without a certificate (plaintext).
        An unreadable file raises OSError."""
        if not cert:
            return None
        ca = Path(client_ca).read_bytes() if client_ca else None
        return cls(Path(cert).read_bytes(), Path(key).read_bytes(), ca)

    def credentials(self) -> grpc.ServerCredentials:
        return grpc.ssl_server_credentials(
            [(self.private_key, self.cert_chain)],
            root_certificates=self.client_ca,
            require_client_auth=self.client_ca is not None,
        )


def create_server(
    address: str,
    register: Iterable[Callable[[grpc.aio.Server], None]],
    *,
    service_names: Sequence[str] = (),
    tls: ServerTLS | None = None,
    metrics: RpcServerMetrics | None = None,
    reasons: RpcReasons = _DEFAULT_REASONS,
    on_expired: Callable[[str, str], None] | None = None,
    interceptors: Sequence[grpc.aio.ServerInterceptor] = (),
    options: Sequence[tuple[str, Any]] = (),
) -> tuple[grpc.aio.Server, int, health.aio.HealthServicer]:
    """Builds an asyncio gRPC server bound to ``address`` (``host:0`` picks a free port).

    ``register`` are callables such as ``lambda s: add_FooServicer_to_server(impl, s)``.
    The standard health service is always added; every name in ``service_names`` (and the
    overall server, "") starts as SERVING. Every server runs :class:`SipsecServerInterceptor`
    first (malformed requests, passed deadlines, unexpected errors; per-method metrics into
    ``metrics`` when given; ``reasons`` and ``on_expired`` as documented there), then any
    further ``interceptors``. Returns ``(server, port, health_servicer)``; the caller starts
    and stops the server.
    """
    chain = [SipsecServerInterceptor(metrics, reasons=reasons, on_expired=on_expired), *interceptors]
    server = grpc.aio.server(interceptors=chain, options=list(options))
    for add in register:
        add(server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    if tls is None:
        port = server.add_insecure_port(address)
    else:
        port = server.add_secure_port(address, tls.credentials())
    if port == 0:
        raise OSError(f"cannot bind gRPC server to {address}")
    return server, port, health_servicer


async def mark_serving(health_servicer: health.aio.HealthServicer, names: Iterable[str]) -> None:
    """Sets the overall server and every named service to SERVING."""
    for name in ("", *names):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)


async def drain(server: grpc.aio.Server, health_servicer: health.aio.HealthServicer, names: Iterable[str],
                grace: float) -> None:
    """Stops ``server`` gracefully: the overall server and every named service NOT_SERVING
    first (load balancers stop sending), then new RPCs refused and in-flight ones given up
    to ``grace`` seconds."""
    for name in ("", *names):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
    await server.stop(grace)


#: a restarted peer is reached again within about a second (gRPC's own default grows to 120 s).
#: ``grpc.min_reconnect_backoff_ms`` is left alone: gRPC core also uses it as the minimum
#: time a connection attempt may take (20 s), and a short one fails slow TLS handshakes.
RECONNECT_OPTIONS: list[tuple[str, int | str]] = [
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
]


def client_channel(
    target: str,
    *,
    root_certificates: bytes | None = None,
    client_cert: tuple[bytes, bytes] | None = None,
    plaintext: bool = False,
    server_name: str | None = None,
    propagate_trace: bool = True,
) -> grpc.aio.Channel:
    """An asyncio client channel: TLS unless ``plaintext`` is set explicitly.

    Reconnection back-off is bounded (:data:`RECONNECT_OPTIONS`): gRPC's default grows to
    two minutes, so a peer restarted after a crash would be unreachable from this channel
    long after it serves again; here the channel tries again at least once a second.

    While tracing is on (:mod:`sipsec.telemetry.tracing`) every unary RPC on the channel is a
    client span whose ``traceparent`` goes in the gRPC metadata (not with ``propagate_trace=False``:
    a channel to another domain); off, no interceptor is added."""
    interceptors = tracing.client_interceptors(propagate=propagate_trace) or None
    if plaintext:
        return grpc.aio.insecure_channel(target, options=RECONNECT_OPTIONS, interceptors=interceptors)
    key, chain = client_cert if client_cert else (None, None)
    creds = grpc.ssl_channel_credentials(
        root_certificates=root_certificates, private_key=key, certificate_chain=chain
    )
    options = [*RECONNECT_OPTIONS, *([("grpc.ssl_target_name_override", server_name)] if server_name else [])]
    return grpc.aio.secure_channel(target, creds, options=options, interceptors=interceptors)


async def abort_with_details(
    context: grpc.aio.ServicerContext, code: grpc.StatusCode, message: str, **details: str
) -> NoReturn:
    """Aborts the RPC with ``code``; ``details`` travel as trailing metadata ``sipsec-<key>``.

    The message is shown to the caller, so it must never contain secrets.
    """
    trailing = tuple((f"sipsec-{k.replace('_', '-')}", str(v)) for k, v in details.items())
    if trailing:
        context.set_trailing_metadata(trailing)
    await context.abort(code, message)
    raise AssertionError("unreachable")  # context.abort always raises
