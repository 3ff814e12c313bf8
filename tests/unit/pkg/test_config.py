"""Configuration from the environment: defaults, peers, validation."""

from __future__ import annotations

import pytest
from sipsec_pkg.config import ENV, ConfigError, PkgConfig, parse_peers

FP = "sha256:" + "ab" * 32


def test_defaults_match_the_documented_table():
    c = PkgConfig.from_env({})
    assert c.listen == ENV["listen"][1] == "0.0.0.0:50051" and ENV["listen"][0] == "SIPSEC_PKG_LISTEN"
    assert c.store == "memory" and c.idle_timeout_s == 900 and not c.plaintext
    assert c.scrypt.n == 2**15 and c.metrics_port == 9464
    assert c.audit_path == "/var/lib/sipsec-pkg/audit.jsonl"
    assert c == PkgConfig()  # dataclass defaults and env defaults agree


def test_env_overrides_and_flags_override_env():
    env = {"SIPSEC_PKG_STORE": "redis", "SIPSEC_PKG_IDLE_TIMEOUT_S": "60", "SIPSEC_PKG_PLAINTEXT": "true",
           "SIPSEC_PKG_METRICS_PORT": "-1", "SIPSEC_PKG_SCRYPT_N": "1024", "SIPSEC_PKG_DOMAIN": "Atlanta.COM"}
    c = PkgConfig.from_env(env)
    assert c.store == "redis" and c.idle_timeout_s == 60 and c.plaintext and c.metrics_port is None
    assert c.scrypt.n == 1024 and c.domain == "atlanta.com"
    assert c.with_overrides(idle_timeout_s=5.0, store=None).idle_timeout_s == 5.0


@pytest.mark.parametrize("env", [
    {"SIPSEC_PKG_STORE": "etcd"},
    {"SIPSEC_PKG_PLAINTEXT": "maybe"},
    {"SIPSEC_PKG_IDLE_TIMEOUT_S": "soon"},
    {"SIPSEC_PKG_IDLE_TIMEOUT_S": "0"},
    {"SIPSEC_PKG_SCRYPT_N": "1000"},
    {"SIPSEC_PKG_TLS_CERT": "/x.pem"},
    {"SIPSEC_PKG_PEERS": "biloxi.com,127.0.0.1:1"},
    {"SIPSEC_PKG_PEERS": "biloxi.com,127.0.0.1:1,sha256:1234"},
])
def test_bad_values_are_config_errors(env):
    with pytest.raises(ConfigError):
        PkgConfig.from_env(env)


def test_peer_formats():
    compact = parse_peers(f"Biloxi.com,pkg.biloxi.com:50051,{FP}; chicago.com,10.0.0.2:50051,{'AB' * 32}")
    assert compact["biloxi.com"].endpoint == "pkg.biloxi.com:50051"
    assert compact["chicago.com"].fingerprint == FP
    js = parse_peers(f'[{{"domain": "biloxi.com", "endpoint": "h:1", "fingerprint": "{FP}"}}]')
    assert js["biloxi.com"].fingerprint == FP
    assert parse_peers("  ") == {}
