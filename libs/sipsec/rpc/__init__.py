"""gRPC plumbing shared by every service: generated stubs (``_gen``) and small helpers.

``create_server(address, ...) -> (server, port)`` is separate from serving so that tests bind
port 0 (the grpc examples' habit); ``channel(...)`` builds a client channel, TLS or plain.
"""

from sipsec.rpc.server import (
    ServerTLS,
    abort_with_details,
    client_channel,
    create_server,
    mark_serving,
)

__all__ = ["ServerTLS", "abort_with_details", "client_channel", "create_server", "mark_serving"]
