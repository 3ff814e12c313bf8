"""Server wiring: create_pkg_server from a data directory, health service, graceful stop."""

from __future__ import annotations

import base64

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sipsec.pkgclient import PkgClient
from sipsec_pkg.config import PkgConfig
from sipsec_pkg.grpc_api import SERVICE_NAME
from sipsec_pkg.material import generate_kek, write_domain
from sipsec_pkg.node import create_pkg_server


async def test_create_pkg_server_from_data_dir(atlanta, tmp_path):
    kek = generate_kek()
    write_domain(atlanta, tmp_path, base64.b64decode(kek))
    config = PkgConfig(data_dir=str(tmp_path), kek=kek, listen="127.0.0.1:0", plaintext=True,
                       metrics_port=None, audit_log="-")
    server, port = create_pkg_server(config)
    await server.start()
    client = PkgClient(f"127.0.0.1:{port}", plaintext=True)
    try:
        got = await client.get_system_params(pinned_fingerprint=atlanta.signed.fingerprint)
        assert got.params.to_bytes() == atlanta.params.to_bytes() and got.node_index == 0
    finally:
        await client.close()
        await server.stop(0)


async def test_health_serving_then_not_serving_on_stop(atlanta, make_node):
    node = await make_node(atlanta.material())
    async with grpc.aio.insecure_channel(f"127.0.0.1:{node.port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for name in ("", SERVICE_NAME):
            resp = await stub.Check(health_pb2.HealthCheckRequest(service=name))
            assert resp.status == health_pb2.HealthCheckResponse.SERVING
        await node.health.enter_graceful_shutdown()
        resp = await stub.Check(health_pb2.HealthCheckRequest(service=SERVICE_NAME))
        assert resp.status == health_pb2.HealthCheckResponse.NOT_SERVING
