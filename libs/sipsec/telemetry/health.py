"""Liveness and readiness of a service, and its build information.

Liveness says the process works (its event loop answers); readiness says it can serve: each
of its dependency checks (store reachable, key material loaded, ...) passed within a deadline
(:data:`CHECK_DEADLINE_S`). A :class:`Readiness` runs its checks every second on the service's
event loop and publishes the verdict three ways:

* the gRPC health service: the overall status (service name ``""``) and each served service
  name follow readiness; :data:`LIVENESS_SERVICE` stays ``SERVING`` while the process runs
  (Kubernetes: ``grpc: {port, service: sipsec.liveness}`` for the liveness probe, no service
  for readiness);
* HTTP on the metrics port (:func:`sipsec.telemetry.http.serve_metrics`): ``/livez`` and
  ``/readyz`` answer 200 or 503 with a small JSON body naming each check's state;
* metrics: ``sipsec_ready`` (1 or 0) and ``sipsec_readiness_check_ok{check}``.

A check is an ``async`` callable that returns when the dependency is fine and raises (or runs
past the deadline) when it is not; its error text is logged once per change, never exported.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from importlib import metadata
from typing import Final

from grpc_health.v1 import health, health_pb2
from prometheus_client import CollectorRegistry, Gauge

__all__ = ["CHECK_DEADLINE_S", "LIVENESS_SERVICE", "REVISION_ENV", "Check", "Readiness", "build_info",
           "build_revision", "build_version"]

log = logging.getLogger("sipsec.health")

#: The gRPC health service name that answers liveness (SERVING while the process runs).
LIVENESS_SERVICE: Final = "sipsec.liveness"
#: How long one readiness check may take before it counts as failed.
CHECK_DEADLINE_S: Final = 1.0
#: Environment variable naming the source revision a build came from (container images set it).
REVISION_ENV: Final = "SIPSEC_BUILD_REVISION"

#: A dependency check: returns when fine, raises when not.
Check = Callable[[], Awaitable[object]]

_SERVING = health_pb2.HealthCheckResponse.SERVING
_NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def build_version() -> str:
    """The installed ``sipsec`` distribution's version ("unknown" when not installed)."""
    try:
        return metadata.version("sipsec")
    except metadata.PackageNotFoundError:
        return "unknown"


def build_revision() -> str:
    """The source revision (``SIPSEC_BUILD_REVISION``, set at image build time), else "unknown"."""
    raw = os.environ.get(REVISION_ENV, "").strip()
    return raw[:40] if raw and all(c.isalnum() or c in "._-" for c in raw) else "unknown"


def build_info(registry: CollectorRegistry, service: str) -> Gauge:
    """Registers ``sipsec_build_info{version,revision,service} 1`` in ``registry``."""
    gauge = Gauge("sipsec_build_info", "Build of the running service (always 1).",
                  ["version", "revision", "service"], registry=registry)
    gauge.labels(build_version(), build_revision(), service).set(1)
    return gauge


class Readiness:
    """Runs named dependency checks; ``ready`` is True when every one passed its last run.

    ``services``: the gRPC service names whose health status follows readiness (with ``""``).
    Before the first run ``ready`` is False; after ``stop()`` it is False again.
    """

    def __init__(self, checks: Mapping[str, Check], *, registry: CollectorRegistry | None = None,
                 deadline_s: float = CHECK_DEADLINE_S, interval_s: float = 1.0) -> None:
        self.checks = dict(checks)
        self.deadline_s = deadline_s
        self.interval_s = interval_s
        self.ready = False
        self.last_run = 0.0
        self.states: dict[str, bool | None] = {name: None for name in self.checks}
        self._health: health.aio.HealthServicer | None = None
        self._services: tuple[str, ...] = ()
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._ready_gauge: Gauge | None = None
        self._check_gauge: Gauge | None = None
        if registry is not None:
            self._ready_gauge = Gauge("sipsec_ready", "1 when the service can serve (every readiness check passed).",
                                      registry=registry)
            self._check_gauge = Gauge("sipsec_readiness_check_ok",
                                      "1 when the readiness check passed its last run, by check.",
                                      ["check"], registry=registry)
            self._ready_gauge.set(0)
            for name in self.checks:
                self._check_gauge.labels(name).set(0)

    def attach(self, health_servicer: health.aio.HealthServicer, services: Iterable[str]) -> None:
        """Make ``health_servicer``'s statuses follow readiness (call before :meth:`start`)."""
        self._health = health_servicer
        self._services = ("", *services)

    async def _run_one(self, name: str, check: Check) -> bool:
        try:
            await asyncio.wait_for(check(), self.deadline_s)
        except asyncio.CancelledError:
            raise
        except TimeoutError:
            self._changed(name, False, f"no answer within {self.deadline_s:g} s")
            return False
        except Exception as exc:  # noqa: BLE001 - any failure of a dependency is "not ready"
            self._changed(name, False, type(exc).__name__)
            return False
        self._changed(name, True, "")
        return True

    def _changed(self, name: str, ok: bool, why: str) -> None:
        if self.states.get(name) != ok:
            if ok:
                log.info("readiness check %s passes", name)
            else:
                log.warning("readiness check %s fails: %s", name, why)
        self.states[name] = ok
        if self._check_gauge is not None:
            self._check_gauge.labels(name).set(1 if ok else 0)

    async def check_once(self) -> bool:
        """Run every check once (concurrently) and publish the verdict; returns it."""
        results = await asyncio.gather(*(self._run_one(n, c) for n, c in self.checks.items()))
        await self._publish(all(results))
        self.last_run = time.monotonic()
        return self.ready

    async def _publish(self, ready: bool) -> None:
        if ready != self.ready:
            log.log(logging.INFO if ready else logging.WARNING, "readiness: %s", "ready" if ready else "not ready")
        self.ready = ready
        if self._ready_gauge is not None:
            self._ready_gauge.set(1 if ready else 0)
        if self._health is not None and not self._stopping.is_set():
            for service in self._services:
                await self._health.set(service, _SERVING if ready else _NOT_SERVING)
            await self._health.set(LIVENESS_SERVICE, _SERVING)

    async def _loop(self) -> None:
        while not self._stopping.is_set():
            await self.check_once()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.interval_s)

    async def start(self) -> None:
        """First run of the checks (the verdict is published before this returns), then one a second."""
        await self.check_once()
        self._task = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        """Stop checking and report not ready (before a drain: no new work is routed here)."""
        self._stopping.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(self._task, self.deadline_s + 1.0)
            except (TimeoutError, asyncio.CancelledError):
                self._task.cancel()
            self._task = None
        self.ready = False
        if self._ready_gauge is not None:
            self._ready_gauge.set(0)
        if self._health is not None:
            for service in self._services:
                await self._health.set(service, _NOT_SERVING)

    def fresh(self) -> bool:
        """Whether the last verdict is recent (within three intervals and deadlines)."""
        return time.monotonic() - self.last_run <= 3 * (self.interval_s + self.deadline_s)

    def report(self) -> dict[str, object]:
        """The ``/readyz`` body: the verdict (not ready when stale) and each check's state (no
        error texts)."""
        states = {name: "unknown" if ok is None else "ok" if ok else "failing" for name, ok in self.states.items()}
        return {"ready": self.ready and self.fresh(), "checks": states}
