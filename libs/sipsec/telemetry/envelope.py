"""Metrics of the secured-message envelope (sipsec.envelope): rejections by reason, seal/open outcomes."""

from __future__ import annotations

import functools
from typing import Any

from prometheus_client import Counter

__all__ = ["ENVELOPE_OPERATIONS", "ENVELOPE_REJECTIONS", "envelope_operation"]

#: Every received envelope rejected, by the fixed reason label of the error
#: (``sipsec.envelope.errors.REASONS``: ``bad-signature``, ``replay``, ``decrypt-failed``...).
ENVELOPE_REJECTIONS = Counter(
    "sipsec_envelope_rejections_total",
    "Secured SIP messages rejected by the envelope layer, by reason.",
    ["reason"],
)

#: Envelopes sealed and opened, by operation (``seal``/``open``) and recipient kind
#: (``kem`` for a dialog's first request, ``kek`` for dialog-key messages).
ENVELOPE_OPERATIONS = Counter(
    "sipsec_envelope_operations_total",
    "Secured SIP messages sealed or opened successfully, by operation and recipient kind.",
    ["operation", "kind"],
)


@functools.cache
def envelope_operation(operation: str, kind: str) -> Any:
    """The ``ENVELOPE_OPERATIONS`` child of ``(operation, kind)``, looked up once (a hot path)."""
    return ENVELOPE_OPERATIONS.labels(operation, kind)
