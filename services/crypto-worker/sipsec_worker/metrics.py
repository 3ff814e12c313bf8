"""Prometheus metrics of the crypto-worker, in a registry of its own per server instance."""

from __future__ import annotations

from typing import Final

from prometheus_client import CollectorRegistry, Counter, Gauge
from sipsec.engine.wire import (
    REASON_DEADLINE,
    REASON_INVALID_CIPHERTEXT,
    REASON_INVALID_SIGNATURE,
    REASON_MALFORMED_CIPHERTEXT,
    REASON_MALFORMED_SIGNATURE,
)
from sipsec.rpc import RpcServerMetrics
from sipsec.telemetry.health import build_info

__all__ = ["OUTCOMES", "REJECTION_REASONS", "WorkerMetrics", "outcome_of"]

#: ``outcome`` labels of sipsec_worker_operations_total (one count per operation, batch items included).
OUTCOMES: Final = frozenset(
    {"ok", "invalid_ciphertext", "invalid_signature", "invalid_argument", "deadline_exceeded"}
)
#: ``reason`` labels of sipsec_worker_rejections_total (whole requests refused without work).
REJECTION_REASONS: Final = frozenset(
    {"queue_full", "deadline_exceeded", "cancelled", "draining", "pool_broken", "batch_too_large", "malformed"}
)


def outcome_of(reason: str) -> str:
    """The operations-counter outcome of a wire reason ("" is ok)."""
    if not reason:
        return "ok"
    if reason in (REASON_INVALID_CIPHERTEXT, REASON_MALFORMED_CIPHERTEXT):
        return "invalid_ciphertext"
    if reason in (REASON_INVALID_SIGNATURE, REASON_MALFORMED_SIGNATURE):
        return "invalid_signature"
    if reason == REASON_DEADLINE:
        return "deadline_exceeded"
    return "invalid_argument"


class WorkerMetrics:
    """Operations by kind and outcome, RPC latency and outcomes (``sipsec_rpc_server_*``),
    queue depth, rejections."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.operations = Counter(
            "sipsec_worker_operations_total",
            "Crypto operations (batch items counted one by one) by kind and outcome.",
            ["kind", "outcome"], registry=self.registry,
        )
        self.rpc = RpcServerMetrics(self.registry)
        self.build_info = build_info(self.registry, "worker")
        self.rejections = Counter(
            "sipsec_worker_rejections_total",
            "Requests refused without doing the work, by reason.",
            ["reason"], registry=self.registry,
        )
        self.queue_depth = Gauge(
            "sipsec_worker_queue_depth", "Admitted pool tasks waiting for a process.",
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "sipsec_worker_tasks_in_flight", "Admitted pool tasks, running or waiting.",
            registry=self.registry,
        )
        self.capacity = Gauge(
            "sipsec_worker_task_capacity", "Most pool tasks admitted at once (processes + queue).",
            registry=self.registry,
        )
        self.processes = Gauge(
            "sipsec_worker_processes", "Processes in the crypto pool.", registry=self.registry,
        )
