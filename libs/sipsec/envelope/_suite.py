"""The suite-id prefix of sipsec.ibc ciphertexts and signatures, elided on the wire where an OID already names the suite.

``sipsec.ibc`` prefixes every KEM ciphertext and signature with ``len || SUITE_ID`` (27
bytes for suite v1). Inside the envelope the KEM algorithm OID and the signature
algorithm OID each name exactly one suite (:mod:`sipsec.envelope.oids`), so the prefix
would say the same thing twice: it is removed when sealing and put back, from the OID's
suite, before the bytes reach ``sipsec.ibc`` — which still checks it.
"""

from __future__ import annotations

from sipsec import ibc
from sipsec.envelope.errors import EnvelopeUsageError

__all__ = ["SUITE_PREFIX", "compact", "expand"]

#: The prefix of suite v1, the one suite the v1 OIDs name.
SUITE_PREFIX = bytes([len(ibc.SUITE_ID)]) + ibc.SUITE_ID


def compact(blob: bytes) -> bytes:
    """``blob`` without its suite-v1 prefix (a blob of another suite is a programming error)."""
    if not blob.startswith(SUITE_PREFIX):
        raise EnvelopeUsageError("sipsec.ibc produced a blob of an unexpected suite")
    return blob[len(SUITE_PREFIX):]


def expand(blob: bytes) -> bytes:
    """The blob as ``sipsec.ibc`` reads it: the suite-v1 prefix restored."""
    return SUITE_PREFIX + blob
