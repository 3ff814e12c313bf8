"""Prometheus metrics of the UA gateway (one registry per gateway, so two fit in one process).

They are served on a port of their own (:meth:`GatewayMetrics.serve`, ``SIPSEC_GATEWAY_METRICS_PORT``),
never on the control API's: monitoring may reach the one without reaching the other.
"""

from __future__ import annotations

from typing import Any, Final
from wsgiref.simple_server import WSGIServer

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    start_http_server,
)
from prometheus_client.registry import Collector
from sipsec.pkgclient.metrics import PkgClientMetrics
from sipsec.telemetry.health import build_info

__all__ = ["API_AUTH_FAILURES", "CRYPTO_OPS", "SETUP_OUTCOMES", "GatewayMetrics", "setup_outcome"]

#: ``outcome`` of ``sipsec_gateway_call_setups_total``.
SETUP_OUTCOMES: Final = frozenset({"answered", "failed", "timeout", "cancelled", "policy", "challenged"})


def setup_outcome(status: int) -> str:
    """The ``outcome`` of a call setup that ended with the final answer ``status`` (not 2xx).
    A Digest challenge (401 / 407: a phone's first INVITE, sent again with credentials as a new
    setup) is ``challenged``, not ``failed``: the setup-success SLO counts ``failed`` and
    ``timeout``, and every call from a phone starts with one challenge."""
    if status == 408:
        return "timeout"
    if status == 487:
        return "cancelled"
    if status in (401, 407):
        return "challenged"
    return "failed"
#: ``op`` of ``sipsec_gateway_crypto_seconds`` (envelope operations: KEM = first message of a
#: dialog, KEK = under the dialog key; ``sign_register`` = the signed REGISTER).
CRYPTO_OPS: Final = ("seal_kem", "seal_kek", "open_kem", "open_kek", "sign_register")

#: ``reason`` of ``sipsec_gateway_api_auth_failures_total``: no bearer token, an unknown one, a
#: known one without the scope the operation needs.
API_AUTH_FAILURES: Final = ("missing", "invalid", "scope")

_LATENCY = (0.002, 0.005, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_CRYPTO = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1, 0.25)


class _Both(Collector):
    """The gateway's registry plus the process-wide one (envelope and SIP transport metrics)."""

    def __init__(self, own: CollectorRegistry) -> None:
        self.own = own

    def collect(self):  # type: ignore[no-untyped-def]
        yield from self.own.collect()
        yield from REGISTRY.collect()


class GatewayMetrics:
    """Every metric of one gateway, in ``registry`` (a private one when None)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = CollectorRegistry(auto_describe=True) if registry is None else registry
        r = self.registry
        self.build_info = build_info(r, "gateway")
        self.call_setups = Counter(
            "sipsec_gateway_call_setups_total",
            "Call setups (either direction) by outcome and whether the call was secured.",
            ["outcome", "secure"], registry=r,
        )
        self.setup_latency = Histogram(
            "sipsec_gateway_call_setup_duration_seconds",
            "Time from sending the INVITE to the 2xx (calls placed by this gateway).",
            ["secure"], buckets=_LATENCY, registry=r,
        )
        self.crypto_seconds = Histogram(
            "sipsec_gateway_crypto_seconds",
            "Time of one envelope operation (seal/open, KEM or dialog key) or REGISTER signature.",
            ["op"], buckets=_CRYPTO, registry=r,
        )
        self.rejections = Counter(
            "sipsec_gateway_envelope_rejections_total",
            "Received secured messages this gateway rejected, by envelope reason (or policy).",
            ["reason"], registry=r,
        )
        self.users = Gauge("sipsec_gateway_users_logged_in", "Users logged in on this gateway.", registry=r)
        self.dialogs = Gauge("sipsec_gateway_dialogs", "Calls (dialogs) in progress on this gateway.",
                             ["secure"], registry=r)
        self.fallbacks = Counter(
            "sipsec_gateway_plain_fallbacks_total",
            "Secured INVITEs retried in plain because the callee could not open them (prefer-secure).",
            registry=r,
        )
        self.registrations = Counter(
            "sipsec_gateway_registrations_total",
            "REGISTER transactions with the proxy (signed) and from plain phones, by side and outcome.",
            ["side", "outcome"], registry=r,
        )
        self.key_fetches = Counter(
            "sipsec_gateway_key_fetches_total",
            "Private-key and parameter fetches from the PKG, by kind and outcome.",
            ["kind", "outcome"], registry=r,
        )
        self.wire_bytes = Counter(
            "sipsec_gateway_wire_bytes_total",
            "SIP bytes this gateway sent and received on the secured side, by direction.",
            ["direction"], registry=r,
        )
        self.plain_dropped = Counter(
            "sipsec_gateway_plain_requests_refused_total",
            "Unsecured requests refused because the user's policy is secure-only.",
            registry=r,
        )
        self.phone_auth = Counter(
            "sipsec_gateway_phone_auth_total",
            "Digest answers of plain phones: checked (ok, wrong) or refused unchecked while backed off (throttled).",
            ["outcome"], registry=r,
        )
        self.phone_dropped = Counter(
            "sipsec_gateway_phone_requests_limited_total",
            "Out-of-dialog phone-side requests answered 503 because their source exceeded its rate.",
            registry=r,
        )
        self.dropped = Counter(
            "sipsec_gateway_messages_dropped_total",
            "Received SIP messages not acted on, by kind (request, response, ack) and reason.",
            ["kind", "reason"], registry=r,
        )
        self.bye_retries = Counter(
            "sipsec_gateway_bye_retries_total",
            "BYEs sent again after a retryable failure (408, 500, 503, transport error, 403 Clock Skew), "
            "by outcome: answered (a final answer not worth retrying), failed (retryable again), "
            "gave-up (once per BYE whose retry window passed).",
            ["outcome"], registry=r,
        )
        self.session_expiries = Counter(
            "sipsec_gateway_session_timer_expiries_total",
            "Calls ended with BYE because the far end's session refresh did not come in time (RFC 4028).",
            registry=r,
        )
        self.failures = Counter(
            "sipsec_gateway_request_failures_total",
            "Requests answered with an error because handling them failed: dependency (503 + Retry-After) or internal (500).",
            ["kind"], registry=r,
        )
        self.api_auth_failures = Counter(
            "sipsec_gateway_api_auth_failures_total",
            "Control API requests refused: no bearer token (missing), an unknown one (invalid), a missing scope (scope).",
            ["reason"], registry=r,
        )
        for outcome in ("ok", "wrong", "throttled"):
            self.phone_auth.labels(outcome)
        for reason in API_AUTH_FAILURES:
            self.api_auth_failures.labels(reason)
        for outcome in SETUP_OUTCOMES:
            for secure in ("true", "false"):
                self.call_setups.labels(outcome, secure)
        for op in CRYPTO_OPS:
            self.crypto_seconds.labels(op)
        for secure in ("true", "false"):
            self.dialogs.labels(secure)
        #: threshold PKG nodes: per-node answer time and invalid partials (sipsec.pkgclient)
        self.pkgclient = PkgClientMetrics(r)

        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}

    def child(self, metric: Any, *values: str) -> Any:
        """``metric.labels(*values)``, looked up once per label set (the hot per-message metrics).

        Lazily, like ``labels``: a series appears in the exposition when first used, as before.
        """
        key = (id(metric), values)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*values)
        return child

    def exposition(self) -> bytes:
        """The text exposition of this gateway's and the process-wide metrics."""
        return generate_latest(_Both(self.registry))

    def serve(self, port: int, host: str = "127.0.0.1") -> WSGIServer:
        """Serve :meth:`exposition` at ``http://host:port/metrics`` (port 0 = any free one) in a
        thread; ``server.server_port`` is the port bound, ``server.shutdown()`` stops it."""
        server, _ = start_http_server(port, host, registry=_Both(self.registry))
        return server

    def sample(self, name: str, **labels: str) -> float:
        value = self.registry.get_sample_value(name, labels)
        return 0.0 if value is None else value
