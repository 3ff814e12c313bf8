"""Wiring of the crypto-worker: process pool, gRPC server with health, metrics HTTP endpoint."""

from __future__ import annotations

import logging
from typing import Any

from sipsec.engine.wire import REASON_DEADLINE
from sipsec.rpc import RpcReasons, ServerTLS, create_server, drain
from sipsec.rpc._gen.sipsec.crypto.v1 import crypto_pb2, crypto_pb2_grpc
from sipsec.telemetry.health import Readiness
from sipsec.telemetry.http import close_metrics, serve_metrics

from sipsec_worker.config import WorkerConfig
from sipsec_worker.metrics import WorkerMetrics
from sipsec_worker.pool import CryptoPool
from sipsec_worker.service import CryptoWorkerServicer

__all__ = ["SERVICE_NAME", "WorkerServer", "create_worker_server"]

SERVICE_NAME = crypto_pb2.DESCRIPTOR.services_by_name["CryptoWorkerService"].full_name
log = logging.getLogger("sipsec.worker")


class WorkerServer:
    """One crypto-worker: ``await start()`` (warms the pool, then serves), ``await stop()``."""

    def __init__(self, config: WorkerConfig) -> None:
        self.config = config
        self.metrics = WorkerMetrics()
        self.pool = CryptoPool(config.pool_processes, config.queue, params_cache=config.params_cache,
                               key_cache=config.key_cache, table_mib=config.table_mib)
        self.metrics.processes.set(self.pool.processes)
        self.metrics.capacity.set(self.pool.capacity)
        self.metrics.queue_depth.set_function(lambda: self.pool.waiting)
        self.metrics.in_flight.set_function(lambda: self.pool.in_flight)
        servicer = self.servicer = CryptoWorkerServicer(self.pool, self.metrics, max_batch=config.max_batch)
        self.grpc, self.port, self.health = create_server(
            config.listen,
            [lambda s: crypto_pb2_grpc.add_CryptoWorkerServiceServicer_to_server(servicer, s)],  # type: ignore[no-untyped-call]
            service_names=[SERVICE_NAME], tls=ServerTLS.from_files(config.tls_cert, config.tls_key, config.tls_client_ca),
            metrics=self.metrics.rpc,
            reasons=RpcReasons(malformed="malformed-request", deadline=REASON_DEADLINE),
            on_expired=lambda _service, _method: self.metrics.rejections.labels("deadline_exceeded").inc(),
            options=[("grpc.max_receive_message_length", 16 * 1024 * 1024),
                     ("grpc.max_send_message_length", 16 * 1024 * 1024)],
        )
        self.metrics_port: int | None = None
        self._http: Any = None
        self.readiness = Readiness({"pool": self._check_pool}, registry=self.metrics.registry)

    async def _check_pool(self) -> None:
        """The process pool takes work (not closed)."""
        if getattr(self.pool, "_closed", False):  # pool.py keeps the flag private
            raise RuntimeError("the crypto pool is closed")

    async def start(self) -> None:
        await self.pool.warm_up()
        self.readiness.attach(self.health, [SERVICE_NAME])
        await self.readiness.start()  # publishes SERVING (or NOT_SERVING) for "" and the service
        await self.grpc.start()
        self._http, self.metrics_port = serve_metrics(self.config.metrics_port, self.config.metrics_host,
                                                      self.metrics.registry, self.readiness)
        log.info("crypto-worker on port %d (%d processes, queue %d, metrics port %s, %s)",
                 self.port, self.pool.processes, self.pool.queue, self.metrics_port,
                 "plaintext" if self.config.plaintext else "TLS")

    async def stop(self, grace: float | None = None) -> None:
        """Drains: NOT_SERVING, refuse new RPCs, finish in-flight ones for up to ``grace`` s,
        then stop the pool."""
        await self.readiness.stop()
        self.servicer.begin_drain()  # open streams refuse new batches and end once answered
        await drain(self.grpc, self.health, [SERVICE_NAME], self.config.drain_seconds if grace is None else grace)
        await self.pool.close()
        close_metrics(self._http)
        self._http = None

    async def wait_for_termination(self) -> None:
        await self.grpc.wait_for_termination()


def create_worker_server(config: WorkerConfig) -> tuple[WorkerServer, int]:
    """Builds (not starts) a worker bound to ``config.listen``; returns it and its gRPC port."""
    server = WorkerServer(config)
    return server, server.port
