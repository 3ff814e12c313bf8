"""gRPC plumbing shared by every service: generated stubs (``_gen``) and small helpers.

``create_server(address, ...) -> (server, port, health)`` is separate from serving so that
tests bind port 0 (the grpc examples' habit); ``client_channel(...)`` builds a client channel,
TLS or plain. Every server runs the one interceptor of :mod:`sipsec.rpc.interceptor`
(decode errors, deadlines, internal errors, per-method metrics).
"""

from sipsec.rpc.interceptor import (
    HEALTH_SERVICE,
    REQUEST_ID_KEY,
    RpcReasons,
    RpcServerMetrics,
    SipsecServerInterceptor,
    split_method,
)
from sipsec.rpc.server import (
    ServerTLS,
    abort_with_details,
    client_channel,
    create_server,
    drain,
    mark_serving,
)

__all__ = [
    "HEALTH_SERVICE",
    "REQUEST_ID_KEY",
    "RpcReasons",
    "RpcServerMetrics",
    "ServerTLS",
    "SipsecServerInterceptor",
    "abort_with_details",
    "client_channel",
    "create_server",
    "drain",
    "mark_serving",
    "split_method",
]
