"""Sans-IO parts of the PKG's session and login hardening: session MACs and the back-off policy."""

from __future__ import annotations

import dataclasses

import pytest
from sipsec.stores.pkg import SessionRecord, UserRecord
from sipsec_pkg.config import ConfigError, PkgConfig
from sipsec_pkg.errors import InvalidArgument
from sipsec_pkg.grpc_api import client_source
from sipsec_pkg.material import MaterialError, derive_session_key
from sipsec_pkg.sessions import SessionCheck, SessionSealer, check_session
from sipsec_pkg.throttle import BackoffPolicy

KEY = bytes(range(32))
USER = UserRecord("sip:a@atlanta.com", "scrypt$x", 0.0, "epoch-1")


def _check(sealer, tid, record, user=USER, now=1000.0):
    return check_session(sealer, tid, record, user, now, idle_timeout_s=100, max_lifetime_s=500)


def test_session_mac_binds_every_field_the_token_id_and_the_domain():
    sealer = SessionSealer(KEY, "atlanta.com")
    record = sealer.seal("tid", SessionRecord("sip:a@atlanta.com", 900.0, 950.0, "epoch-1"))
    assert _check(sealer, "tid", record) is SessionCheck.VALID
    assert _check(sealer, "other-tid", record) is SessionCheck.FORGED
    for change in ({"aor": "sip:b@atlanta.com"}, {"created_at": 901.0}, {"last_seen": 999.0},
                   {"epoch": "epoch-2"}, {"mac": b""}, {"mac": bytes(32)}):
        assert _check(sealer, "tid", dataclasses.replace(record, **change)) is SessionCheck.FORGED
    assert _check(SessionSealer(KEY, "biloxi.com"), "tid", record) is SessionCheck.FORGED
    assert _check(SessionSealer(bytes(32), "atlanta.com"), "tid", record) is SessionCheck.FORGED
    assert "mac" not in repr(record) and repr(KEY) not in repr(sealer)


def test_session_lifetimes_and_revocation():
    sealer = SessionSealer(KEY, "atlanta.com")
    record = sealer.seal("t", SessionRecord("sip:a@atlanta.com", 900.0, 950.0, "epoch-1"))
    assert _check(sealer, "t", record, now=1051.0) is SessionCheck.IDLE
    old = sealer.seal("t", SessionRecord("sip:a@atlanta.com", 400.0, 990.0, "epoch-1"))
    assert _check(sealer, "t", old) is SessionCheck.LIFETIME
    assert _check(sealer, "t", record, user=None) is SessionCheck.REVOKED
    assert _check(sealer, "t", record, user=dataclasses.replace(USER, epoch="epoch-2")) is SessionCheck.REVOKED


def test_session_key_derivation():
    kek = bytes(range(32, 64))
    a = derive_session_key(kek, "atlanta.com")
    assert len(a) == 32 and a == derive_session_key(kek, "atlanta.com")
    assert a != derive_session_key(kek, "biloxi.com") and a != kek
    with pytest.raises(MaterialError):
        derive_session_key(b"short", "atlanta.com")
    with pytest.raises(ValueError):
        SessionSealer(b"short", "atlanta.com")


def test_session_record_json_round_trip():
    record = SessionRecord("sip:a@atlanta.com", 1.25, 2.5, "e", b"\x01\x02")
    assert SessionRecord.from_json(record.to_json()) == record
    legacy = SessionRecord.from_json('{"aor": "sip:a@atlanta.com", "created_at": 1, "last_seen": 2}')
    assert legacy.mac == b"" and legacy.epoch == ""


def test_backoff_policy():
    p = BackoffPolicy(free_failures=3, base_s=1.0, max_s=900.0, address_budget=20, address_max_s=60.0)
    assert [p.pair_delay(n) for n in range(0, 8)] == [0, 0, 0, 0, 1, 2, 4, 8]
    assert p.pair_delay(50) == 900.0 and p.pair_delay(10**6) == 900.0
    assert p.address_delay(20) == 0 and p.address_delay(21) == 1 and p.address_delay(10**6) == 60.0
    with pytest.raises(ValueError):
        BackoffPolicy(base_s=0)
    with pytest.raises(ValueError):
        BackoffPolicy(free_failures=-1)


def test_config_settings():
    c = PkgConfig.from_env({"SIPSEC_PKG_TRUSTED_FORWARDERS": "127.0.0.1, ::1",
                            "SIPSEC_PKG_SESSION_MAX_LIFETIME_S": "3600", "SIPSEC_PKG_BACKOFF_FREE_FAILURES": "5"})
    assert c.trusted_forwarders == ("127.0.0.1", "::1")
    assert c.session_max_lifetime_s == 3600 and c.backoff.free_failures == 5
    assert PkgConfig().session_max_lifetime_s == 43200 and PkgConfig().trusted_forwarders == ()
    for env in ({"SIPSEC_PKG_TRUSTED_FORWARDERS": "gateway.local"}, {"SIPSEC_PKG_BACKOFF_BASE_S": "0"},
                {"SIPSEC_PKG_SESSION_MAX_LIFETIME_S": "0"}):
        with pytest.raises(ConfigError):
            PkgConfig.from_env(env)


def test_client_source():
    trusted = {"10.0.0.5"}
    assert client_source("10.0.0.9", "192.0.2.1", trusted) == "10.0.0.9"  # untrusted peer: ignored
    assert client_source("10.0.0.5", "", trusted) == "10.0.0.5"
    assert client_source("10.0.0.5", "2001:db8::0:1", trusted) == "2001:db8::1"
    with pytest.raises(InvalidArgument):
        client_source("10.0.0.5", "x" * 100, trusted)
