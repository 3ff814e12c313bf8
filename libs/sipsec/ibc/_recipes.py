"""The safe recipes of suite v1: setup, extract, encapsulate/decapsulate, sign/verify, threshold."""

from __future__ import annotations

import secrets
from collections.abc import Sequence

from sipsec.ibc._errors import (
    BadShare,
    IbcError,
    InsufficientShares,
    InvalidEncoding,
    InvalidIdentity,
)
from sipsec.ibc._identity import Identity, PeriodPolicy, Purpose, canonical_domain
from sipsec.ibc._keys import DomainParams, MasterSecret, MasterShare, PartialKey, PrivateKey
from sipsec.ibc.hazmat import backend as bk
from sipsec.ibc.hazmat import threshold as th
from sipsec.ibc.hazmat.bf import bf_decapsulate, bf_encapsulate
from sipsec.ibc.hazmat.cc import cc_sign, cc_verify, cc_verify_batch
from sipsec.ibc.hazmat.suite import DST_ID_ENC, DST_ID_SIG, SUITE_ID

__all__ = [
    "combine",
    "decapsulate",
    "encapsulate",
    "extract",
    "identity_point",
    "partial_extract",
    "setup",
    "setup_threshold",
    "sign",
    "split_master",
    "verify",
    "verify_batch",
    "verify_partial",
]

_DST = {Purpose.ENC: DST_ID_ENC, Purpose.SIG: DST_ID_SIG}


def identity_point(identity: Identity) -> bk.G1Point:
    """Q_ID = H1(identity.to_bytes()) in G1, with the purpose's DST (cached)."""
    return bk.hash_to_g1(identity.to_bytes(), _DST[identity.purpose])


def _require_purpose(identity: Identity, purpose: Purpose) -> None:
    if not isinstance(identity, Identity):
        raise InvalidIdentity("identity must be an Identity")
    if identity.purpose is not purpose:
        raise InvalidIdentity(f"this operation needs a {purpose.value!r} identity")


def setup(
    domain: str,
    policy: PeriodPolicy = PeriodPolicy(),  # noqa: B008 - immutable
    *,
    version: int = 1,
    rng: bk.Rng = secrets.token_bytes,
) -> tuple[MasterSecret, DomainParams]:
    """A fresh master secret s and the public parameters (P_pub = s * P2) of ``domain``.

    ``domain`` is canonicalised (lower case); raises InvalidIdentity if it is not a host.
    """
    domain = canonical_domain(domain)
    s = bk.random_scalar(rng)
    p_pub = bk.g2_to_bytes(bk.g2_generator_mul(s))
    try:
        params = DomainParams(domain, SUITE_ID, p_pub, policy, version)
    except InvalidEncoding as exc:
        raise InvalidIdentity("not a valid domain") from exc
    return MasterSecret(s), params


def extract(master: MasterSecret, params: DomainParams, identity: Identity) -> PrivateKey:
    """d_ID = s * Q_ID for an identity of ``params.domain``.

    The PKG decides which periods it issues (``params.policy.check_issuable``).
    """
    params.check_identity(identity)
    s = master._value()
    if bk.g2_generator_mul(s) != params.p_pub_point():
        raise IbcError("master secret does not match the domain parameters")
    return PrivateKey(identity, bk.g1_mul(identity_point(identity), s))


def encapsulate(
    params: DomainParams, identity: Identity, *, rng: bk.Rng = secrets.token_bytes
) -> tuple[bytes, bytes]:
    """A fresh 256-bit key and its FullIdent ciphertext to ``identity`` (an ENC identity)."""
    _require_purpose(identity, Purpose.ENC)
    params.check_identity(identity)
    return bf_encapsulate(identity_point(identity), params.p_pub_point(), identity.to_bytes(), rng)


def decapsulate(key: PrivateKey, ciphertext: bytes) -> bytes:
    """The 256-bit key inside ``ciphertext``; raises InvalidCiphertext on any tampering."""
    _require_purpose(key.identity, Purpose.ENC)
    return bf_decapsulate(key._point(), key.identity.to_bytes(), bytes(ciphertext))


def sign(key: PrivateKey, message: bytes, *, rng: bk.Rng = secrets.token_bytes) -> bytes:
    """A Cha–Cheon signature on ``message`` with a SIG key."""
    _require_purpose(key.identity, Purpose.SIG)
    q_id = identity_point(key.identity)
    return cc_sign(key._point(), q_id, bytes(message), rng, key._signer_tables(q_id))


def verify(params: DomainParams, identity: Identity, message: bytes, signature: bytes) -> None:
    """Return None if ``signature`` is ``identity``'s on ``message``; raise InvalidSignature."""
    _require_purpose(identity, Purpose.SIG)
    params.check_identity(identity)
    cc_verify(identity_point(identity), params.p_pub_point(), bytes(message), bytes(signature))


def verify_batch(
    items: Sequence[tuple[DomainParams, Identity, bytes, bytes]],
) -> list[IbcError | None]:
    """Verify ``(params, identity, message, signature)`` items together, one entry per item.

    An entry is None when that signature is valid, else the error ``verify`` would raise
    for it (same class and message); a bad item never makes this raise. Valid signatures
    cost one multi-pairing for the whole batch (one pair per distinct P_pub) instead of one
    each; if any fails, the batch is halved (log2(n) more multi-pairings for one bad
    item) so exactly the bad ones are flagged (``sipsec.ibc.hazmat.cc``: a false accept
    has probability at most 2^-64 per batch).
    The batch size is the caller's to bound.
    """
    results: list[IbcError | None] = [None] * len(items)
    ready: list[int] = []
    points: list[tuple[bk.G1Point, bk.G2Point, bytes, bytes]] = []
    for index, (params, identity, message, signature) in enumerate(items):
        try:
            _require_purpose(identity, Purpose.SIG)
            params.check_identity(identity)
        except IbcError as exc:
            results[index] = exc
            continue
        ready.append(index)
        points.append(
            (identity_point(identity), params.p_pub_point(), bytes(message), bytes(signature))
        )
    for index, error in zip(ready, cc_verify_batch(points), strict=True):
        results[index] = error
    return results


# --- threshold (t-of-n) ---


def split_master(
    master: MasterSecret,
    params: DomainParams,
    t: int,
    n: int,
    *,
    rng: bk.Rng = secrets.token_bytes,
) -> tuple[list[MasterShare], DomainParams]:
    """Shamir-share ``master``; returns the shares and params with threshold t and P_pub,i."""
    if not 1 <= t <= n <= 0xFFFF:
        raise ValueError("need 1 <= t <= n <= 65535")
    s = master._value()
    if bk.g2_generator_mul(s) != params.p_pub_point():
        raise IbcError("master secret does not match the domain parameters")
    values = th.shamir_split(s, t, n, rng)
    if any(v == 0 for v in values):  # probability ~ n / R; resample rather than emit a zero share
        return split_master(master, params, t, n, rng=rng)
    shares = [MasterShare(i + 1, v) for i, v in enumerate(values)]
    public = tuple(bk.g2_to_bytes(bk.g2_generator_mul(v)) for v in values)
    new_params = DomainParams(
        params.domain, params.suite_id, params.p_pub, params.policy, params.version, t, public
    )
    return shares, new_params


def setup_threshold(
    domain: str,
    t: int,
    n: int,
    policy: PeriodPolicy = PeriodPolicy(),  # noqa: B008 - immutable
    *,
    version: int = 1,
    rng: bk.Rng = secrets.token_bytes,
) -> tuple[list[MasterShare], DomainParams]:
    """A t-of-n domain: the dealer's master secret is shared and then forgotten."""
    master, params = setup(domain, policy, version=version, rng=rng)
    return split_master(master, params, t, n, rng=rng)


def partial_extract(share: MasterShare, identity: Identity) -> PartialKey:
    """Node ``share.index``'s partial key s_i * Q_ID."""
    if not isinstance(identity, Identity):
        raise InvalidIdentity("identity must be an Identity")
    point = bk.g1_mul(identity_point(identity), share._value())
    return PartialKey(share.index, bk.g1_to_bytes(point))


def _partial_point(params: DomainParams, identity: Identity, partial: PartialKey) -> bk.G1Point:
    if not isinstance(partial, PartialKey) or not isinstance(partial.index, int):
        raise TypeError("partial must be a PartialKey")
    if not 1 <= partial.index <= params.n:
        raise BadShare(partial.index, f"node {partial.index} is not part of this domain")
    try:
        point = bk.g1_from_bytes(bytes(partial.value))
    except InvalidEncoding as exc:
        raise BadShare(
            partial.index, f"partial key from node {partial.index} is malformed"
        ) from exc
    if not th.partial_ok(identity_point(identity), point, params.public_share_point(partial.index)):
        raise BadShare(partial.index)
    return point


def verify_partial(params: DomainParams, identity: Identity, partial: PartialKey) -> None:
    """Check e(d_i, P2) = e(Q_ID, P_pub,i); raise BadShare(node) otherwise."""
    params.check_identity(identity)
    _partial_point(params, identity, partial)


def combine(params: DomainParams, identity: Identity, partials: Sequence[PartialKey]) -> PrivateKey:
    """Verify the partials and combine ``params.threshold`` valid ones (Lagrange) into d_ID.

    Bad partials are skipped while enough valid ones remain; otherwise the first bad node is
    named by BadShare. Too few partials and no bad one raise InsufficientShares.
    """
    params.check_identity(identity)
    if params.n == 0:
        raise IbcError("these parameters are not threshold parameters")
    valid: dict[int, bk.G1Point] = {}
    first_bad: BadShare | None = None
    for partial in partials:
        if isinstance(partial, PartialKey) and partial.index in valid:
            continue
        try:
            valid[partial.index] = _partial_point(params, identity, partial)
        except BadShare as exc:
            first_bad = first_bad or exc
        if len(valid) >= params.threshold:
            break
    if len(valid) < params.threshold:
        if first_bad is not None:
            raise first_bad
        raise InsufficientShares(
            f"need {params.threshold} partial keys, got {len(valid)} distinct valid ones"
        )
    indices = sorted(valid)
    return PrivateKey(identity, th.combine_g1(indices, [valid[i] for i in indices]))
