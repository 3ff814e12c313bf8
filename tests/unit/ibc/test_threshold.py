"""t-of-n threshold extraction (t = 3, n = 5)."""

from __future__ import annotations

import itertools

import pytest
from sipsec import ibc
from sipsec.ibc.hazmat import backend as bk
from sipsec.ibc.hazmat import threshold as th

from ._helpers import PERIOD, domain


@pytest.fixture(scope="module")
def setting() -> tuple[
    ibc.DomainParams, list[ibc.MasterShare], ibc.Identity, ibc.PrivateKey, list[ibc.PartialKey]
]:
    master, params = domain("atlanta.com")
    shares, tparams = ibc.split_master(master, params, 3, 5)
    ident = params.identity("sip:alice@atlanta.com", ibc.Purpose.ENC, PERIOD)
    full = ibc.extract(master, params, ident)
    partials = [ibc.partial_extract(s, ident) for s in shares]
    return tparams, shares, ident, full, partials


def test_params_carry_public_shares(setting) -> None:  # type: ignore[no-untyped-def]
    tparams, shares, *_ = setting
    assert tparams.threshold == 3 and tparams.n == 5 and len(tparams.public_shares) == 5
    assert ibc.DomainParams.from_bytes(tparams.to_bytes()) == tparams
    assert [s.index for s in shares] == [1, 2, 3, 4, 5]
    assert ibc.MasterShare.from_bytes(shares[0].to_bytes()) == shares[0]
    assert "hidden" in repr(shares[0])


def test_every_t_subset_gives_the_masters_key(setting) -> None:  # type: ignore[no-untyped-def]
    tparams, _, ident, full, partials = setting
    for subset in itertools.combinations(partials, 3):
        assert ibc.combine(tparams, ident, list(subset)) == full


def test_t_minus_one_do_not(setting) -> None:  # type: ignore[no-untyped-def]
    tparams, _, ident, full, partials = setting
    for subset in itertools.combinations(partials, 2):
        with pytest.raises(ibc.InsufficientShares):
            ibc.combine(tparams, ident, list(subset))
        # and interpolating them anyway gives a wrong key
        idx = [p.index for p in subset]
        pts = [bk.g1_from_bytes(p.value) for p in subset]
        assert bk.g1_to_bytes(th.combine_g1(idx, pts)) != full.to_bytes()
    with pytest.raises(ibc.InsufficientShares):  # duplicates do not count twice
        ibc.combine(tparams, ident, [partials[0], partials[0], partials[1]])


def test_lying_node_is_named(setting) -> None:  # type: ignore[no-untyped-def]
    tparams, _, ident, full, partials = setting
    lie = ibc.PartialKey(4, bk.g1_to_bytes(bk.g1_from_bytes(partials[3].value) + bk.g1_generator()))
    with pytest.raises(ibc.BadShare) as info:
        ibc.verify_partial(tparams, ident, lie)
    assert info.value.node == 4
    with pytest.raises(ibc.BadShare) as info:
        ibc.combine(tparams, ident, [partials[0], lie, partials[4]])
    assert info.value.node == 4
    # with enough honest nodes the liar is skipped
    assert ibc.combine(tparams, ident, [partials[0], lie, partials[2], partials[4]]) == full
    for p in partials:
        ibc.verify_partial(tparams, ident, p)


def test_malformed_or_foreign_partials(setting) -> None:  # type: ignore[no-untyped-def]
    tparams, shares, ident, _, partials = setting
    with pytest.raises(ibc.BadShare) as info:
        ibc.verify_partial(tparams, ident, ibc.PartialKey(2, b"\x00" * 48))
    assert info.value.node == 2
    with pytest.raises(ibc.BadShare) as info:
        ibc.verify_partial(tparams, ident, ibc.PartialKey(9, partials[0].value))
    assert info.value.node == 9
    other = tparams.identity("sip:bob@atlanta.com", ibc.Purpose.ENC, PERIOD)
    with pytest.raises(ibc.BadShare):  # node 1's partial for another identity
        ibc.verify_partial(tparams, ident, ibc.partial_extract(shares[0], other))
    assert "value" not in repr(partials[0])


def test_setup_threshold_and_decapsulate() -> None:
    shares, params = ibc.setup_threshold("biloxi.com", 2, 3)
    ident = params.identity("sip:bob@biloxi.com", ibc.Purpose.ENC, PERIOD)
    k, ct = ibc.encapsulate(params, ident)
    sk = ibc.combine(params, ident, [ibc.partial_extract(s, ident) for s in shares[1:]])
    assert ibc.decapsulate(sk, ct) == k


def test_inconsistent_public_shares_are_refused(setting) -> None:  # type: ignore[no-untyped-def]
    tparams, *_ = setting
    swapped = (tparams.public_shares[1], tparams.public_shares[0], *tparams.public_shares[2:])
    with pytest.raises(ibc.InvalidEncoding):
        ibc.DomainParams(
            tparams.domain,
            tparams.suite_id,
            tparams.p_pub,
            tparams.policy,
            tparams.version,
            3,
            swapped,
        )
