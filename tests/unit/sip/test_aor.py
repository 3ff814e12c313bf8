"""The one address normaliser (sipsec.sip.canonical_aor): RFC 3261 §19.1.4 examples and properties.

The identity layer (``sipsec.ibc.canonical_aor``) and the location store
(``sipsec.stores.location.canonical_aor``) wrap it; they must agree with it wherever they accept.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sipsec import ibc
from sipsec.sip import RemoteProtocolError, canonical_aor, parse_uri
from sipsec.stores import location

# RFC 3261 §19.1.4: "The URIs within each of the following sets are equivalent".
EQUIVALENT = [
    ("sip:%61lice@atlanta.com;transport=TCP", "sip:alice@AtLanTa.CoM;Transport=tcp"),
    ("sip:carol@chicago.com", "sip:carol@chicago.com;newparam=5"),
    ("sip:carol@chicago.com", "sip:carol@chicago.com;security=on"),
    ("sip:carol@chicago.com;newparam=5", "sip:carol@chicago.com;security=on"),
    ("sip:biloxi.com;transport=tcp;method=REGISTER?to=sip:bob%40biloxi.com",
     "sip:biloxi.com;method=REGISTER;transport=tcp?to=sip:bob%40biloxi.com"),
    ("sip:alice@atlanta.com?subject=project%20x&priority=urgent",
     "sip:alice@atlanta.com?priority=urgent&subject=project%20x"),
]

# RFC 3261 §19.1.4: "The URIs within each of the following sets are not equivalent", with what
# the AOR makes of them. Differences in the user part or the host make different AORs; a port,
# transport or header selects how to reach an address, not whose it is, so the AOR (which drops
# them, as a registrar's index does, RFC 3261 §10.3 step 5) is the same although the URIs are
# not interchangeable as request targets.
NOT_EQUIVALENT = [
    ("SIP:ALICE@AtLanTa.CoM;Transport=udp", "sip:alice@AtLanTa.CoM;Transport=UDP", False),  # user case
    ("sip:bob@phone21.boxesbybob.com", "sip:bob@192.0.2.4", False),  # names are not resolved
    ("sip:bob@biloxi.com", "sip:bob@biloxi.com:5060", True),  # port
    ("sip:bob@biloxi.com", "sip:bob@biloxi.com;transport=udp", True),  # transport
    ("sip:bob@biloxi.com", "sip:bob@biloxi.com:6000;transport=tcp", True),  # port and transport
    ("sip:carol@chicago.com", "sip:carol@chicago.com?Subject=next%20meeting", True),  # header
]

CANONICAL = [
    ("sip:%61lice@atlanta.com", "sip:alice@atlanta.com"),
    ("SIP:ALICE@AtLanTa.CoM;Transport=udp", "sip:ALICE@atlanta.com"),
    ("sip:a%2fb@atlanta.com", "sip:a%2Fb@atlanta.com"),  # reserved "/" stays escaped, hex upper-cased
    ("sip:a%2Fb@atlanta.com", "sip:a%2Fb@atlanta.com"),
    ("sip:alice:secret@atlanta.com:5070;transport=tcp?x=y", "sip:alice@atlanta.com"),
    ("sip:alice@[2001:DB8::0:1]:5060", "sip:alice@[2001:db8::1]"),
    ("sip:alice@atlanta.com.", "sip:alice@atlanta.com"),
    ("sips:bob@Biloxi.COM", "sips:bob@biloxi.com"),
    ("sip:+1-212-555-1212;isub=1@gateway.com;user=phone", "sip:+1-212-555-1212;isub=1@gateway.com"),
    ("sip:biloxi.com;transport=tcp", "sip:biloxi.com"),
    ("  sip:alice@atlanta.com ", "sip:alice@atlanta.com"),
    ("tel:+1-201-555-0123;phone-context=x", "tel:+1-201-555-0123"),
]

UNRESERVED = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.!~*'()"
USER_RESERVED = "&=+$,;?/"  # reserved characters RFC 3261 §25.1 lets a user part carry unescaped
HOSTS = st.sampled_from(["atlanta.com", "biloxi.example.com", "h", "192.0.2.4", "[2001:db8::1]"])


@pytest.mark.parametrize(("a", "b"), EQUIVALENT)
def test_rfc3261_equivalent_uris_have_one_aor(a: str, b: str) -> None:
    assert canonical_aor(a) == canonical_aor(b)


@pytest.mark.parametrize(("a", "b", "same_aor"), NOT_EQUIVALENT)
def test_rfc3261_non_equivalent_uris(a: str, b: str, same_aor: bool) -> None:
    assert (canonical_aor(a) == canonical_aor(b)) is same_aor


@pytest.mark.parametrize(("uri", "aor"), CANONICAL)
def test_canonical_forms(uri: str, aor: str) -> None:
    assert canonical_aor(uri) == aor
    assert canonical_aor(aor) == aor  # idempotent
    assert canonical_aor(parse_uri(uri.strip())) == aor  # parsed or text, the same
    assert parse_uri(uri.strip()).aor == aor  # SipURI.aor is this function


def test_sip_and_sips_are_different_aors() -> None:
    assert canonical_aor("sip:alice@atlanta.com") != canonical_aor("sips:alice@atlanta.com")


@pytest.mark.parametrize("bad", ["", "alice@atlanta.com", "sip:al ice@atlanta.com", "sip:a%zzb@atlanta.com",
                                 "sip:alice@atlanta.com:99999", "sip:alice@[::zz]", "sip:alice@"])
def test_invalid_uris_are_400(bad: str) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        canonical_aor(bad)
    assert info.value.status_hint == 400


@st.composite
def escaped_users(draw: st.DrawFn) -> tuple[str, str]:
    """A user part of unreserved characters, and the same with some of them %-escaped (either hex case)."""
    plain = draw(st.text(alphabet=UNRESERVED, min_size=1, max_size=24))
    escaped = []
    for ch in plain:
        if draw(st.booleans()):
            code = f"{ord(ch):02X}"
            escaped.append("%" + (code.lower() if draw(st.booleans()) else code))
        else:
            escaped.append(ch)
    return plain, "".join(escaped)


@given(escaped_users(), HOSTS, st.sampled_from(["sip", "sips"]))
def test_escaped_unreserved_characters_are_the_characters(users: tuple[str, str], host: str, scheme: str) -> None:
    plain, escaped = users
    aor = canonical_aor(f"{scheme}:{escaped}@{host}")
    assert aor == canonical_aor(f"{scheme}:{plain}@{host}") == f"{scheme}:{plain}@{host}"
    # every layer that keys by AOR agrees
    assert ibc.canonical_aor(f"{scheme}:{escaped}@{host}") == aor
    assert location.canonical_aor(f"{scheme}:{escaped}@{host}") == aor


@given(st.text(alphabet=UNRESERVED, max_size=8), st.sampled_from(USER_RESERVED),
       st.text(alphabet=UNRESERVED, min_size=1, max_size=8), st.booleans(), HOSTS)
def test_escaped_reserved_characters_stay_distinct(head: str, ch: str, tail: str, lower: bool, host: str) -> None:
    code = f"{ord(ch):02X}"
    escaped = f"sip:{head}%{code.lower() if lower else code}{tail}@{host}"
    unescaped = f"sip:{head}{ch}{tail}@{host}"
    assert canonical_aor(escaped) != canonical_aor(unescaped)
    assert canonical_aor(escaped) == f"sip:{head}%{code}{tail}@{host}"  # hex digits compare case-insensitively
    assert ibc.canonical_aor(escaped) == canonical_aor(escaped)
    assert ibc.canonical_aor(unescaped) == canonical_aor(unescaped)


def _swapcase_some(text: str, flips: list[bool]) -> str:
    return "".join(c.swapcase() if f else c for c, f in zip(text, flips + [False] * len(text), strict=False))


@given(st.text(alphabet="abcdefghijklmnopqrstuvwxyz", min_size=1, max_size=12),
       st.lists(st.booleans(), max_size=30), st.lists(st.booleans(), max_size=3))
def test_scheme_and_host_ignore_case_user_does_not(user: str, host_flips: list[bool], scheme_flips: list[bool]) -> None:
    base = canonical_aor(f"sip:{user}@atlanta.example.com")
    host = _swapcase_some("atlanta.example.com", host_flips)
    assert canonical_aor(f"{_swapcase_some('sip', scheme_flips)}:{user}@{host}") == base
    assert canonical_aor(f"sip:{user.upper()}@atlanta.example.com") != base


@given(st.text(max_size=60))
def test_never_crashes_and_is_idempotent(text: str) -> None:
    try:
        aor = canonical_aor(text)
    except RemoteProtocolError:
        return
    assert canonical_aor(aor) == aor
