"""Wiring of the location service: store, gRPC server with health, metrics HTTP endpoint."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from sipsec.rpc import RpcReasons, ServerTLS, create_server, drain
from sipsec.rpc._gen.sipsec.location.v1 import location_pb2, location_pb2_grpc
from sipsec.stores.epoch import store_epoch
from sipsec.stores.location import (
    LocationError,
    LocationStore,
    MemoryLocationStore,
    RedisLocationStore,
)
from sipsec.telemetry.health import Readiness
from sipsec.telemetry.http import close_metrics, serve_metrics

from sipsec_location.config import LocationConfig
from sipsec_location.metrics import LocationMetrics
from sipsec_location.service import LocationService, LocationServicer

__all__ = ["SERVICE_NAME", "LocationServer", "create_location_server"]

SERVICE_NAME = location_pb2.DESCRIPTOR.services_by_name["LocationService"].full_name
log = logging.getLogger("sipsec.location")


class LocationServer:
    """One running location service: ``await start()``, ``await stop()``."""

    def __init__(self, config: LocationConfig, store: LocationStore | None = None) -> None:
        self.config = config
        if store is None:
            store = (RedisLocationStore(config.redis_url, password_file=config.redis_password_file,
                                        ca_file=config.redis_ca,
                                        what="SIPSEC_LOCATION_REDIS_PASSWORD_FILE / SIPSEC_REDIS_URL")
                     if config.store == "redis" else MemoryLocationStore())
        self.store = store
        self.metrics = LocationMetrics()
        self.service = LocationService(store, max_expires=config.max_expires,
                                       max_contacts=config.max_contacts)
        servicer = LocationServicer(self.service)
        self.grpc, self.port, self.health = create_server(
            config.listen,
            [lambda s: location_pb2_grpc.add_LocationServiceServicer_to_server(servicer, s)],  # type: ignore[no-untyped-call,unused-ignore]
            service_names=[SERVICE_NAME], tls=ServerTLS.from_files(config.tls_cert, config.tls_key, config.tls_client_ca), metrics=self.metrics.rpc,
            reasons=RpcReasons(malformed="malformed-request", deadline="deadline-exceeded"),
        )
        self.metrics_port: int | None = None
        self._http: Any = None
        self._gauge_task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        # registrations live in the store: an emptied store is found and reported (stores.epoch)
        self.epoch = store_epoch(store, "location", "registrations (until each registrant registers again)",
                                 registry=self.metrics.registry)
        epoch_check = {"store_epoch": self.epoch.check} if self.epoch is not None else {}
        self.readiness = Readiness({} if isinstance(store, MemoryLocationStore) else {"store": self._check_store,
                                                                                      **epoch_check},
                                   registry=self.metrics.registry)

    async def _check_store(self) -> None:
        """The store answers (a PING where it has one, else a count of bindings)."""
        ping = getattr(self.store, "ping", None)
        await (ping() if ping is not None else self.store.count())

    async def refresh_gauges(self) -> None:
        """Sets ``sipsec_location_bindings`` from the store (also done every second)."""
        with contextlib.suppress(LocationError):
            self.metrics.bindings.set(await self.store.count())

    async def _gauge_loop(self) -> None:
        # A stop flag rather than cancellation alone: a cancel landing inside a Redis call can
        # be absorbed by the client library, and the loop must end anyway.
        while not self._stopping.is_set():
            await self.refresh_gauges()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), 1.0)

    async def start(self) -> None:
        self.readiness.attach(self.health, [SERVICE_NAME])
        await self.readiness.start()  # publishes SERVING (or NOT_SERVING) for "" and the service
        await self.grpc.start()
        self._http, self.metrics_port = serve_metrics(self.config.metrics_port, self.config.metrics_host,
                                                      self.metrics.registry, self.readiness)
        self._gauge_task = asyncio.create_task(self._gauge_loop())
        log.info("location service on port %d (store=%s, metrics port %s)",
                 self.port, self.config.store, self.metrics_port)

    async def stop(self, grace: float | None = None) -> None:
        """Drains: NOT_SERVING first, then waits up to ``grace`` seconds for in-flight RPCs."""
        await self.readiness.stop()
        await drain(self.grpc, self.health, [SERVICE_NAME], self.config.drain_seconds if grace is None else grace)
        self._stopping.set()
        if self._gauge_task is not None:
            try:
                await asyncio.wait_for(self._gauge_task, 5.0)
            except (TimeoutError, asyncio.CancelledError):
                self._gauge_task.cancel()
        close_metrics(self._http)
        await self.store.close()

    async def wait_for_termination(self) -> None:
        await self.grpc.wait_for_termination()


def create_location_server(
    config: LocationConfig, store: LocationStore | None = None
) -> tuple[LocationServer, int]:
    """Builds (not starts) the service bound to ``config.listen``; returns it and its gRPC port."""
    server = LocationServer(config, store)
    return server, server.port


