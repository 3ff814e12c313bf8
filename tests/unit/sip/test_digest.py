"""Digest authentication (RFC 2617, RFC 7616, RFC 8760): vectors, client/server, failures."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sipsec.sip.digest import (
    ALGORITHMS,
    AuthenticationFailed,
    DigestChallenge,
    DigestClient,
    DigestCredentials,
    DigestServer,
    NonceReplay,
    StaleNonce,
    compute_ha1,
    compute_response,
    parse_auth_params,
    select_challenge,
)
from sipsec.sip.errors import RemoteProtocolError

VECTORS = json.loads(
    (Path(__file__).parents[2] / "vectors" / "sip-digest" / "digest_vectors.json").read_text()
)
SECRET = b"0123456789abcdef-server-secret"
URI = "sip:biloxi.example.com"


@pytest.mark.parametrize("v", VECTORS, ids=[v["id"] for v in VECTORS])
def test_known_answers(v: dict[str, Any]) -> None:
    ha1 = compute_ha1(v["algorithm"], v["username"], v["realm"], v["password"])
    got = compute_response(
        v["algorithm"], ha1, v["method"], v["uri"], v["nonce"],
        qop=v["qop"], nc=v["nc"], cnonce=v["cnonce"],
    )  # fmt: skip
    assert (got == v["response"]) is v["expect_match"]


def test_rfc2617_example_header_parses_and_client_reproduces_it() -> None:
    # RFC 2617 §3.5: the challenge and the Authorization header of the example
    challenge = DigestChallenge.parse(
        'Digest realm="testrealm@host.com", qop="auth,auth-int", '
        'nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", opaque="5ccc069c403ebaf9f0171e9517f40e41"'
    )
    assert challenge.qop == ("auth", "auth-int") and challenge.algorithm == "MD5"
    creds = DigestClient("Mufasa", "Circle Of Life").authorize(
        challenge, "GET", "/dir/index.html", cnonce="0a4f113b"
    )
    assert creds.response == "6629fae49393a05397450978507c4ef1"
    assert creds.nc == "00000001" and creds.qop == "auth"
    assert creds.opaque == "5ccc069c403ebaf9f0171e9517f40e41"
    parsed = DigestCredentials.parse(creds.to_header())
    assert parsed == creds


def test_rfc7616_sha256_example_through_the_client() -> None:
    challenge = DigestChallenge.parse(
        'Digest realm="http-auth@example.org", qop="auth, auth-int", algorithm=SHA-256, '
        'nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v", '
        'opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"'
    )
    creds = DigestClient("Mufasa", "Circle of Life").authorize(
        challenge, "GET", "/dir/index.html", cnonce="f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ"
    )
    assert creds.response == "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"
    assert "algorithm=SHA-256" in creds.to_header()


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_round_trip_every_algorithm(algorithm: str) -> None:
    server = DigestServer("biloxi.example.com", SECRET, algorithms=[algorithm])
    (challenge,) = server.challenges(now=1000.0)
    header = challenge.to_header()
    client = DigestClient("bob", "zanzibar")
    creds = client.authorize(DigestChallenge.parse(header), "REGISTER", URI)
    received = DigestCredentials.parse(creds.to_header())
    server.verify(received, "REGISTER", 1001.0, password="zanzibar", expected_uri=URI)
    # the same with a stored HA1 instead of the password
    creds2 = client.authorize(challenge, "REGISTER", URI)
    ha1 = compute_ha1(algorithm.removesuffix("-sess"), "bob", "biloxi.example.com", "zanzibar")
    server.verify(creds2, "REGISTER", 1002.0, ha1=ha1)


def test_auth_int_covers_the_body() -> None:
    server = DigestServer("r", SECRET, qop=("auth-int",))
    (ch, _) = server.challenges(0.0)
    creds = DigestClient("u", "p").authorize(ch, "MESSAGE", URI, body=b"hello")
    assert creds.qop == "auth-int"
    server.verify(creds, "MESSAGE", 1.0, password="p", body=b"hello")
    creds2 = DigestClient("u", "p").authorize(ch, "MESSAGE", URI, body=b"hello")
    with pytest.raises(AuthenticationFailed):
        server.verify(creds2, "MESSAGE", 1.0, password="p", body=b"tampered")


def test_challenges_list_sha256_first_and_client_picks_the_first_supported() -> None:
    server = DigestServer("biloxi.example.com", SECRET)
    headers = [c.to_header() for c in server.challenges(0.0)]
    assert "algorithm=SHA-256" in headers[0] and "algorithm=MD5" in headers[1]
    picked = select_challenge(['Digest realm="x", nonce="n", algorithm=SHA-999'] + headers)
    assert picked.algorithm == "SHA-256"
    with pytest.raises(AuthenticationFailed):
        select_challenge(['Basic realm="x"', "garbage"])


def test_wrong_password_fails_without_leaking() -> None:
    server = DigestServer("r", SECRET)
    ch = server.challenges(0.0)[0]
    creds = DigestClient("u", "wrong-password").authorize(ch, "INVITE", URI)
    with pytest.raises(AuthenticationFailed) as info:
        server.verify(creds, "INVITE", 1.0, password="right-password")
    assert info.value.reason == "bad-response"
    text = str(info.value) + repr(info.value) + repr(creds) + repr(server)
    for secret in ("wrong-password", "right-password", creds.response, ch.nonce, "0123456789"):
        assert secret not in text


def test_stale_nonce_gives_stale_error_only_for_right_credentials() -> None:
    server = DigestServer("r", SECRET, nonce_lifetime=300.0)
    ch = server.challenges(0.0)[0]
    client = DigestClient("u", "p")
    with pytest.raises(StaleNonce):
        server.verify(client.authorize(ch, "INVITE", URI), "INVITE", 301.0, password="p")
    with pytest.raises(AuthenticationFailed) as info:  # wrong password: not "stale"
        server.verify(DigestClient("u", "x").authorize(ch, "INVITE", URI), "INVITE", 301.0,
                      password="p")  # fmt: skip
    assert not isinstance(info.value, StaleNonce)
    fresh = server.challenges(301.0, stale=True)[0]
    assert fresh.stale and "stale=true" in fresh.to_header()
    assert DigestChallenge.parse(fresh.to_header()).stale
    server.verify(client.authorize(fresh, "INVITE", URI), "INVITE", 302.0, password="p")


def test_nonce_count_replay_is_rejected() -> None:
    server = DigestServer("r", SECRET)
    ch = server.challenges(0.0)[0]
    client = DigestClient("u", "p")
    first = client.authorize(ch, "REGISTER", URI)
    server.verify(first, "REGISTER", 1.0, password="p")
    with pytest.raises(NonceReplay) as info:
        server.verify(first, "REGISTER", 2.0, password="p")  # replayed as captured
    assert info.value.reason == "nonce-replay"
    second = client.authorize(ch, "REGISTER", URI)  # nc=00000002
    assert second.nc == "00000002"
    server.verify(second, "REGISTER", 3.0, password="p")
    with pytest.raises(NonceReplay):
        server.verify(first, "REGISTER", 4.0, password="p")  # an older nc is a replay too


def test_evicted_nonces_cannot_be_replayed() -> None:
    server = DigestServer("r", SECRET, max_tracked_nonces=1)
    client = DigestClient("u", "p")
    old = server.challenges(0.0)[0]
    creds_old = client.authorize(old, "REGISTER", URI)
    server.verify(creds_old, "REGISTER", 0.5, password="p")
    new = server.challenges(1.0)[0]
    server.verify(client.authorize(new, "REGISTER", URI), "REGISTER", 1.5, password="p")
    with pytest.raises(StaleNonce):  # evicted: forced to a fresh nonce, never replayable
        server.verify(creds_old, "REGISTER", 2.0, password="p")


def test_forged_and_foreign_nonces_are_rejected() -> None:
    server = DigestServer("r", SECRET)
    other_secret = DigestServer("r", b"another-secret-of-16-bytes")
    other_realm = DigestServer("other", SECRET)
    client = DigestClient("u", "p")
    for issuer in (other_secret, other_realm):
        ch = issuer.challenges(0.0)[0]
        forged = DigestChallenge("r", ch.nonce, algorithm=ch.algorithm)
        with pytest.raises(AuthenticationFailed) as info:
            server.verify(client.authorize(forged, "INVITE", URI), "INVITE", 1.0, password="p")
        assert info.value.reason == "bad-nonce"
    # a timestamp moved forward (to dodge expiry) breaks the MAC
    ch = server.challenges(0.0)[0]
    raw = bytearray(base64.urlsafe_b64decode(ch.nonce + "=" * (-len(ch.nonce) % 4)))
    raw[6] ^= 0x01
    moved = base64.urlsafe_b64encode(bytes(raw)).decode().rstrip("=")
    with pytest.raises(AuthenticationFailed) as info:
        server.verify(client.authorize(DigestChallenge("r", moved, algorithm="SHA-256"),
                                       "INVITE", URI), "INVITE", 1.0, password="p")  # fmt: skip
    assert info.value.reason == "bad-nonce"
    for junk in ("", "!!!", "a" * 200):
        with pytest.raises(AuthenticationFailed):
            server.verify(client.authorize(DigestChallenge("r", junk, algorithm="SHA-256"),
                                           "INVITE", URI), "INVITE", 1.0, password="p")  # fmt: skip


def test_policy_failures_have_reasons() -> None:
    server = DigestServer("r", SECRET, algorithms=["SHA-256"])
    ch = server.challenges(0.0)[0]
    good = DigestClient("u", "p").authorize(ch, "INVITE", URI)
    cases = {
        "realm-mismatch": DigestCredentials(**{**_fields(good), "realm": "x"}),
        "unsupported-algorithm": DigestCredentials(**{**_fields(good), "algorithm": "MD5"}),
        "qop-required": DigestCredentials(**{**_fields(good), "qop": None}),
        "bad-nc": DigestCredentials(**{**_fields(good), "nc": "zz"}),
    }
    for reason, creds in cases.items():
        with pytest.raises(AuthenticationFailed) as info:
            server.verify(creds, "INVITE", 1.0, password="p")
        assert info.value.reason == reason
    with pytest.raises(AuthenticationFailed) as info:
        server.verify(good, "INVITE", 1.0, password="p", expected_uri="sip:elsewhere")
    assert info.value.reason == "uri-mismatch"
    with pytest.raises(AuthenticationFailed):
        server.verify(good, "BYE", 1.0, password="p")  # method is covered by the response
    with pytest.raises(ValueError):
        server.verify(good, "INVITE", 1.0)
    with pytest.raises(ValueError):
        DigestServer("r", b"short")


def _fields(c: DigestCredentials) -> dict[str, Any]:
    return {name: getattr(c, name) for name in DigestCredentials.__slots__}


def test_auth_param_syntax() -> None:
    scheme, p = parse_auth_params(
        'Digest  realm="a \\"quoted\\", realm", nonce=abc ,qop="auth,auth-int",stale=TRUE'
    )
    assert scheme == "Digest"
    assert p == {"realm": 'a "quoted", realm', "nonce": "abc", "qop": "auth,auth-int",
                 "stale": "TRUE"}  # fmt: skip
    ch = DigestChallenge('a "quoted", realm', "n0", algorithm="SHA-256", opaque="o")
    assert DigestChallenge.parse(ch.to_header()) == ch
    for bad in (
        'Digest realm="unterminated',
        "Digest realm",
        "Digest a=1, a=2",
        "",
        "Digest =x",
        'Digest realm="x" nonce="y"',
    ):
        with pytest.raises(RemoteProtocolError):
            parse_auth_params(bad)
    with pytest.raises(RemoteProtocolError):
        DigestChallenge.parse('Basic realm="x"')
    with pytest.raises(RemoteProtocolError):
        DigestCredentials.parse('Digest username="u", realm="r"')
    with pytest.raises(ValueError):
        DigestChallenge("r", "n", algorithm="bad value").to_header()


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_parsers_raise_only_remote_protocol_error(text: str) -> None:
    for parse in (parse_auth_params, DigestChallenge.parse, DigestCredentials.parse):
        try:
            parse(text)  # type: ignore[operator]
        except RemoteProtocolError:
            pass


@settings(max_examples=100, deadline=None)
@given(st.text(alphabet=st.characters(blacklist_characters="\r\n"), max_size=40))
def test_quoted_values_round_trip(value: str) -> None:
    ch = DigestChallenge(value, "nonce", opaque=value)
    assert DigestChallenge.parse(ch.to_header()) == ch
