"""Canonical AORs, identities and key periods."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sipsec import ibc
from sipsec.ibc.hazmat.suite import SUITE_ID


@pytest.mark.parametrize(
    ("uri", "aor"),
    [
        ("sip:Alice@Atlanta.COM:5060;transport=udp", "sip:Alice@atlanta.com"),
        ('"A" <sip:a@b>', "sip:a@b"),
        ('"Alice Liddell" <SIP:alice@ATLANTA.com>;tag=1928301774', "sip:alice@atlanta.com"),
        ("Bob <sips:bob@Biloxi.com;maddr=1.2.3.4?subject=x>", "sips:bob@biloxi.com"),
        ("<sip:bob@biloxi.com>", "sip:bob@biloxi.com"),
        ('"a <b> \\" c" <sip:bob@Biloxi.com>', "sip:bob@biloxi.com"),
        ("sip:alice:secretword@atlanta.com", "sip:alice@atlanta.com"),
        ("sip:%61lice@atlanta.com", "sip:alice@atlanta.com"),
        ("sip:a%2fb@atlanta.com", "sip:a%2Fb@atlanta.com"),
        (
            "sip:+1-212-555-1212;isub=1@gateway.com;user=phone",
            "sip:+1-212-555-1212;isub=1@gateway.com",
        ),
        ("sip:alice@192.0.2.4:5060", "sip:alice@192.0.2.4"),
        ("sip:alice@[2001:DB8::0:1]:5060", "sip:alice@[2001:db8::1]"),
        ("sip:alice@atlanta.com.", "sip:alice@atlanta.com"),
        ("  sip:alice@atlanta.com  ", "sip:alice@atlanta.com"),
    ],
)
def test_canonical_aor(uri: str, aor: str) -> None:
    assert ibc.canonical_aor(uri) == aor
    assert ibc.canonical_aor(aor) == aor  # idempotent


@pytest.mark.parametrize(
    "uri",
    [
        "tel:+15551234567",
        "sip:atlanta.com",
        "mailto:alice@atlanta.com",
        "http://alice@atlanta.com",
        "sip:al ice@atlanta.com",
        "sip:alice@",
        "sip:@atlanta.com",
        "sip:alice@atlanta.com:99999",
        "sip:alice@atlanta.com:port",
        "<sip:alice@atlanta.com",
        "sip:alice@atlanta.com>",
        "sip:alice@-bad-.com",
        "sip:alice@exa_mple.com",
        "sip:alice@[::zz]",
        "sip:a%zzb@atlanta.com",
        '"unterminated <sip:alice@atlanta.com>',
        "<sip:alice@atlanta.com> junk",
        '"Alice" sip:alice@atlanta.com',
        '"Alice" x <sip:alice@atlanta.com>',
        'Al"ice <sip:alice@atlanta.com>',
        "",
        "sip:" + "a" * 300 + "@atlanta.com",
    ],
)
def test_canonical_aor_rejects(uri: str) -> None:
    with pytest.raises(ibc.InvalidIdentity):
        ibc.canonical_aor(uri)


@given(st.text(max_size=60))
def test_canonical_aor_never_crashes(text: str) -> None:
    try:
        aor = ibc.canonical_aor(text)
    except ibc.InvalidIdentity:
        return
    assert aor.startswith(("sip:", "sips:")) and ibc.canonical_aor(aor) == aor


def test_identity_bytes_layout() -> None:
    ident = ibc.Identity.for_aor(
        "sip:Alice@Atlanta.com", ibc.Purpose.SIG, 7, ibc.PeriodPolicy(86400)
    )
    expected = b"".join(
        len(f).to_bytes(2, "big") + f
        for f in (
            SUITE_ID,
            b"sig",
            b"sip:Alice@atlanta.com",
            b"atlanta.com",
            (86400).to_bytes(8, "big"),
            (7).to_bytes(8, "big"),
        )
    )
    assert ident.to_bytes() == expected
    assert ident.domain == "atlanta.com"


def test_identity_bytes_differ_per_field() -> None:
    base = ibc.Identity.for_aor("sip:alice@atlanta.com", ibc.Purpose.ENC, 5, ibc.PeriodPolicy())
    variants = [
        ibc.Identity.for_aor("sip:alice@atlanta.com", ibc.Purpose.SIG, 5, ibc.PeriodPolicy()),
        ibc.Identity.for_aor("sip:alice@atlanta.com", ibc.Purpose.ENC, 6, ibc.PeriodPolicy()),
        ibc.Identity.for_aor("sip:alice@atlanta.com", ibc.Purpose.ENC, 5, ibc.PeriodPolicy(86400)),
        ibc.Identity.for_aor("sips:alice@atlanta.com", ibc.Purpose.ENC, 5, ibc.PeriodPolicy()),
        ibc.Identity.for_aor("sip:Alice@atlanta.com", ibc.Purpose.ENC, 5, ibc.PeriodPolicy()),
    ]
    encodings = {v.to_bytes() for v in variants} | {base.to_bytes()}
    assert len(encodings) == len(variants) + 1


def test_identity_validates() -> None:
    with pytest.raises(ibc.InvalidIdentity):
        ibc.Identity(ibc.Aor("sip:Alice@ATLANTA.com"), ibc.Purpose.ENC, 1, 86400)
    with pytest.raises(ibc.InvalidIdentity):
        ibc.Identity(ibc.Aor("sip:alice@atlanta.com"), "enc", 1, 86400)  # type: ignore[arg-type]
    with pytest.raises(ibc.InvalidIdentity):
        ibc.Identity(ibc.Aor("sip:alice@atlanta.com"), ibc.Purpose.ENC, -1, 86400)
    with pytest.raises(ibc.InvalidIdentity):
        ibc.Identity(ibc.Aor("sip:alice@atlanta.com"), ibc.Purpose.ENC, 1, 0)


def test_period_policy() -> None:
    policy = ibc.PeriodPolicy()
    assert policy.length_s == 30 * 86400 and policy.max_ahead == 1
    now = 1_773_000_000.0
    cur = policy.current(now)
    assert cur == int(now // policy.length_s)
    assert policy.next(now) == cur + 1
    start, end = policy.bounds(cur)
    assert start <= now < end and end - start == policy.length_s
    assert policy.period_at(end) == cur + 1 and policy.period_at(end - 0.001) == cur
    policy.check_issuable(cur, now)
    policy.check_issuable(cur + 1, now)
    with pytest.raises(ibc.PeriodNotAllowed):
        policy.check_issuable(cur + 2, now)
    with pytest.raises(ibc.PeriodNotAllowed):
        policy.check_issuable(cur - 1, now)
    wide = ibc.PeriodPolicy(length_s=3600, max_ahead=3)
    wide.check_issuable(wide.current(now) + 3, now)
    with pytest.raises(ibc.PeriodNotAllowed):
        wide.check_issuable(wide.current(now) + 4, now)
    with pytest.raises(ValueError):
        ibc.PeriodPolicy(length_s=0)
    with pytest.raises(ValueError):
        policy.period_at(float("nan"))


def test_domain_params_identity_helper() -> None:
    _, params = ibc.setup("atlanta.com", ibc.PeriodPolicy(length_s=86400))
    ident = params.identity('"Alice" <sip:alice@Atlanta.com>', ibc.Purpose.ENC, 3)
    assert ident == ibc.Identity(ibc.Aor("sip:alice@atlanta.com"), ibc.Purpose.ENC, 3, 86400)
