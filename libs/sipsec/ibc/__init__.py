"""Identity-based cryptography for sipsec, suite v1 (docs/architecture.md#identities-and-key-periods): the safe recipes.

Boneh–Franklin FullIdent (as a KEM) and Cha–Cheon signatures over BLS12-381, identities
bound to a canonical SIP AOR, a purpose and a key period; optional t-of-n threshold PKG.
Every failure raises (an ``IbcError``); no key material appears in any repr or error text.
Internals live in ``sipsec.ibc.hazmat``.
"""

from __future__ import annotations

from sipsec.ibc._errors import (
    BadShare,
    IbcError,
    InsufficientShares,
    InvalidCiphertext,
    InvalidEncoding,
    InvalidIdentity,
    InvalidSignature,
    MalformedCiphertext,
    MalformedSignature,
    PeriodNotAllowed,
)
from sipsec.ibc._identity import (
    Aor,
    Identity,
    PeriodPolicy,
    Purpose,
    canonical_aor,
    canonical_domain,
)
from sipsec.ibc._keys import DomainParams, MasterSecret, MasterShare, PartialKey, PrivateKey
from sipsec.ibc._recipes import (
    combine,
    decapsulate,
    encapsulate,
    extract,
    identity_point,
    partial_extract,
    setup,
    setup_threshold,
    sign,
    split_master,
    verify,
    verify_batch,
    verify_partial,
)
from sipsec.ibc._tables import configure_tables, table_stats
from sipsec.ibc.hazmat.suite import (
    CC_SIGNATURE_LEN,
    KEM_CIPHERTEXT_LEN,
    KEM_KEY_LEN,
    SUITE_ID,
)

__all__ = [
    "CC_SIGNATURE_LEN",
    "KEM_CIPHERTEXT_LEN",
    "KEM_KEY_LEN",
    "SUITE_ID",
    "Aor",
    "BadShare",
    "DomainParams",
    "IbcError",
    "Identity",
    "InsufficientShares",
    "InvalidCiphertext",
    "InvalidEncoding",
    "InvalidIdentity",
    "InvalidSignature",
    "MalformedCiphertext",
    "MalformedSignature",
    "MasterSecret",
    "MasterShare",
    "PartialKey",
    "PeriodNotAllowed",
    "PeriodPolicy",
    "PrivateKey",
    "Purpose",
    "canonical_aor",
    "canonical_domain",
    "combine",
    "configure_tables",
    "decapsulate",
    "encapsulate",
    "extract",
    "identity_point",
    "partial_extract",
    "setup",
    "setup_threshold",
    "sign",
    "split_master",
    "table_stats",
    "verify",
    "verify_batch",
    "verify_partial",
]
