"""Client-side metrics of the crypto engines: remote calls by outcome, retries, fallbacks."""

from __future__ import annotations

from typing import Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["CALL_OUTCOMES", "FALLBACK_REASONS", "EngineMetrics"]

#: ``outcome`` label values of ``sipsec_engine_remote_calls_total``.
CALL_OUTCOMES: Final = frozenset(
    {
        "ok",  # the worker answered with a result
        "rejected",  # the worker answered INVALID_ARGUMENT (bad ciphertext, signature, key...)
        "unavailable",  # UNAVAILABLE: connection refused, worker draining or restarting its pool
        "resource_exhausted",  # the worker's queue was full
        "deadline_exceeded",  # no answer within the call timeout
        "error",  # any other status (a bug or a misconfiguration: TLS, wrong service)
    }
)
#: ``reason`` label values of ``sipsec_engine_fallbacks_total``.
FALLBACK_REASONS: Final = frozenset(
    {
        "no_worker",  # every worker is ejected after recent failures (or none is configured)
        "failed",  # the worker(s) tried failed with a retryable status
        "error",  # a worker failed with a non-retryable, non-crypto status
        "fallback_full",  # not run at all: max_fallback operations already ran in-process (EngineUnavailable)
    }
)


class EngineMetrics:
    """The engine's metrics, in ``registry`` (a private one when None).

    Labels: ``op`` is one of encapsulate/decapsulate/sign/verify; ``outcome`` and
    ``reason`` come from :data:`CALL_OUTCOMES` and :data:`FALLBACK_REASONS`.
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = CollectorRegistry(auto_describe=True) if registry is None else registry
        self.remote_calls = Counter(
            "sipsec_engine_remote_calls_total",
            "Calls from this engine to crypto-workers, by operation and outcome.",
            ["op", "outcome"], registry=self.registry,
        )
        self.retries = Counter(
            "sipsec_engine_retries_total",
            "Calls retried on another crypto-worker after a retryable failure.",
            ["op"], registry=self.registry,
        )
        self.local_ops = Counter(
            "sipsec_engine_local_ops_total",
            "Operations a remote engine runs in-process by design (signing with local_sign), not as a fallback.",
            ["op"], registry=self.registry,
        )
        self.fallbacks = Counter(
            "sipsec_engine_fallbacks_total",
            "Operations run in-process because no crypto-worker could do them.",
            ["op", "reason"], registry=self.registry,
        )
        self.remote_latency = Histogram(
            "sipsec_engine_remote_call_duration_seconds",
            "Time of one call to a crypto-worker, any outcome.",
            ["op"], registry=self.registry,
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
        )
        self.queue_depth = Gauge(
            "sipsec_engine_worker_queue_depth",
            "Pool tasks waiting on the least loaded crypto-worker, as its last answer reported.",
            registry=self.registry,
        )
