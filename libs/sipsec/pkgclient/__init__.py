"""Client library of the PKG service: login, parameters (own and federated), keys, threshold combine.

The UA gateway uses it; so do the PKG's own federation code (``signed``) and its tests.
"""

from sipsec.pkgclient.client import (
    KeyResponse,
    PkgClient,
    Session,
    SystemParams,
    ThresholdKey,
    ThresholdPkgClient,
    purpose_from_proto,
    purpose_to_proto,
    signed_from_proto,
)
from sipsec.pkgclient.errors import BadNode, PkgClientError, PkgRpcError, ThresholdKeyError
from sipsec.pkgclient.metrics import PkgClientMetrics
from sipsec.pkgclient.signed import (
    ParamsVerificationError,
    PinMismatch,
    SignedParams,
    fingerprint,
    normalize_fingerprint,
    sign_params,
    verify_signed_params,
)

__all__ = [
    "BadNode",
    "KeyResponse",
    "ParamsVerificationError",
    "PinMismatch",
    "PkgClient",
    "PkgClientError",
    "PkgClientMetrics",
    "PkgRpcError",
    "Session",
    "SignedParams",
    "SystemParams",
    "ThresholdKey",
    "ThresholdKeyError",
    "ThresholdPkgClient",
    "fingerprint",
    "normalize_fingerprint",
    "purpose_from_proto",
    "purpose_to_proto",
    "sign_params",
    "signed_from_proto",
    "verify_signed_params",
]
