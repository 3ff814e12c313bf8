"""Gateway configuration from environment variables: defaults, parsing, clear errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from sipsec.envelope import SecurityPolicy, SigningPolicy
from sipsec_gateway.config import ENV, ConfigError, GatewayConfig


def test_defaults_and_every_variable_parses() -> None:
    config = GatewayConfig.from_env({})
    assert config == GatewayConfig()
    assert config.security_policy is SecurityPolicy.SECURE_ONLY
    assert config.signing_policy is SigningPolicy.EVERY_MESSAGE
    env = {
        "SIPSEC_GATEWAY_DOMAIN": "biloxi.com", "SIPSEC_GATEWAY_PKG": "a:1, b:2,c:3",
        "SIPSEC_GATEWAY_PKG_PLAINTEXT": "true", "SIPSEC_GATEWAY_WORKERS": "w1:9,w2:9",
        "SIPSEC_GATEWAY_PEER_DOMAINS": "Atlanta.COM, chicago.com", "SIPSEC_GATEWAY_TRANSPORT": "tcp",
        "SIPSEC_GATEWAY_PHONE_DIGEST": "md5", "SIPSEC_GATEWAY_CALL_TIMEOUT_S": "7.5",
        "SIPSEC_GATEWAY_SIGNING": "dialog-establishing", "SIPSEC_GATEWAY_DEFAULT_POLICY": "prefer-secure",
    }
    config = GatewayConfig.from_env(env)
    assert config.pkg_targets == ["a:1", "b:2", "c:3"] and config.pkg_plaintext
    assert config.worker_targets == ["w1:9", "w2:9"]
    assert config.peer_domain_list == ["atlanta.com", "chicago.com"]
    assert config.phone_digest_algorithms == ("MD5",) and config.call_timeout_s == 7.5
    assert config.security_policy is SecurityPolicy.PREFER_SECURE
    assert set(ENV) == set(GatewayConfig.__dataclass_fields__)


@pytest.mark.parametrize("var, value", [
    ("SIPSEC_GATEWAY_STORE", "etcd"), ("SIPSEC_GATEWAY_REGISTER_EXPIRES", "ten"),
    ("SIPSEC_GATEWAY_REGISTER_EXPIRES", "5"), ("SIPSEC_GATEWAY_SIGNING", "sometimes"),
    ("SIPSEC_GATEWAY_DEFAULT_POLICY", "never"), ("SIPSEC_GATEWAY_TRANSPORT", "sctp"),
    ("SIPSEC_GATEWAY_CONTACT_SECRET", "not hex"), ("SIPSEC_GATEWAY_PROXY", "host:port"),
    ("SIPSEC_GATEWAY_DOMAIN", "user@host"), ("SIPSEC_GATEWAY_PHONE_DIGEST", "SHA-1"),
    ("SIPSEC_GATEWAY_KEEP_CALLS", "0"), ("SIPSEC_GATEWAY_TABLE_MIB", "-1"),
])
def test_bad_values_are_refused_with_a_clear_error(var: str, value: str) -> None:
    with pytest.raises(ConfigError):
        GatewayConfig.from_env({var: value})


def test_console_script_reports_configuration_errors() -> None:
    script = Path(sys.executable).parent / "sipsec-gateway"
    bad = subprocess.run([str(script), "config"], env={"SIPSEC_GATEWAY_STORE": "etcd"},
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 1 and "store must be memory or redis" in bad.stderr
    good = subprocess.run([str(script), "config"], env={"SIPSEC_GATEWAY_DOMAIN": "atlanta.com"},
                          capture_output=True, text=True, timeout=60)
    assert good.returncode == 0 and "SIPSEC_GATEWAY_DOMAIN=atlanta.com" in good.stdout


def test_the_gateway_sizes_its_tables_from_table_mib() -> None:
    """``build_gateway`` hands ``SIPSEC_GATEWAY_TABLE_MIB`` to the process's fixed-base tables
    (the in-process engine's, and the fallback's beside a worker pool); 0 turns them off."""
    from sipsec import ibc
    from sipsec_gateway.__main__ import build_gateway

    try:
        build_gateway(GatewayConfig.from_env({"SIPSEC_GATEWAY_TABLE_MIB": "8"}))
        stats = ibc.table_stats()
        assert {k: stats[k]["capacity"] for k in ("g1", "signers", "gt")} == ibc.configure_tables(8)
        assert stats["signers"]["capacity"] < ibc.configure_tables(64)["signers"]
        build_gateway(GatewayConfig.from_env({"SIPSEC_GATEWAY_TABLE_MIB": "0"}))
        assert {stats["policy"] for stats in ibc.table_stats().values()} == {"off"}
    finally:
        ibc.configure_tables()
