"""The five services' settings: one declaration style, one name scheme, README tables in sync."""

from __future__ import annotations

import dataclasses
import importlib
import subprocess
import sys
from pathlib import Path

import pytest
import sipsec.config
from sipsec.config import ConfigError, settings, update_readme

ROOT = Path(__file__).resolve().parents[3]

#: service folder -> (config class, the SERVICE word of its variables)
SERVICES = {
    "pkg": ("sipsec_pkg.config:PkgConfig", "PKG"),
    "location": ("sipsec_location.config:LocationConfig", "LOCATION"),
    "proxy": ("sipsec_proxy.config:ProxyConfig", "PROXY"),
    "crypto-worker": ("sipsec_worker.config:WorkerConfig", "WORKER"),
    "ua-gateway": ("sipsec_gateway.config:GatewayConfig", "GATEWAY"),
}
SHARED = {"SIPSEC_LOG_LEVEL", "SIPSEC_LOG_FORMAT", "SIPSEC_REDIS_URL", "SIPSEC_INSECURE_DEV"}
#: the minimum a service needs to start from an otherwise empty environment
REQUIRED = {"crypto-worker": {"SIPSEC_WORKER_PLAINTEXT": "1"}}


def _cls(folder: str) -> type:
    module, _, name = SERVICES[folder][0].partition(":")
    cls: type = getattr(importlib.import_module(module), name)
    return cls


@pytest.mark.parametrize("folder", SERVICES)
def test_every_field_is_a_setting_named_by_the_one_scheme(folder: str) -> None:
    cls = _cls(folder)
    declared = settings(cls)
    assert [s.name for s in declared] == [f.name for f in dataclasses.fields(cls)]
    prefix = f"SIPSEC_{SERVICES[folder][1]}_"
    for s in declared:
        assert s.env.startswith(prefix) or s.env in SHARED, s.env
        assert s.help and s.flag in (None, "--" + s.name.replace("_", "-"))
    assert {s.env for s in declared if s.name == "log_level"} == {"SIPSEC_LOG_LEVEL"}
    assert len({s.env for s in declared}) == len(declared)


@pytest.mark.parametrize("folder", SERVICES)
def test_the_environment_defaults_are_the_dataclass_defaults(folder: str) -> None:
    cls = _cls(folder)
    env = REQUIRED.get(folder, {})
    assert cls.from_env(env) == sipsec.config.load(cls, env)  # type: ignore[attr-defined]
    if not env:
        assert cls.from_env({}) == cls()  # type: ignore[attr-defined]


def test_shared_variables_mean_the_same_everywhere() -> None:
    seen: dict[str, tuple[object, ...]] = {}
    for folder in SERVICES:
        for s in settings(_cls(folder)):
            if s.env in SHARED:
                assert seen.setdefault(s.env, (s.default, s.kind)) == (s.default, s.kind), (folder, s.env)
    assert set(seen) == SHARED


def test_one_configuration_error_for_every_service() -> None:
    for module in ("sipsec_pkg.config", "sipsec_gateway.config"):
        assert importlib.import_module(module).ConfigError is ConfigError
    for folder in SERVICES:
        bad = {s.env: "not-a-number" for s in settings(_cls(folder)) if s.kind is int}
        var, value = next(iter(bad.items()))
        with pytest.raises(ConfigError, match=var):
            _cls(folder).from_env({**REQUIRED.get(folder, {}), var: value})  # type: ignore[attr-defined]


def test_renamed_pkg_variables_still_work() -> None:
    pkg = _cls("pkg")
    old = pkg.from_env({"SIPSEC_PKG_SHUTDOWN_GRACE_S": "1.5", "SIPSEC_PKG_LOG_LEVEL": "debug"})  # type: ignore[attr-defined]
    assert (old.drain_seconds, old.log_level) == (1.5, "DEBUG")
    new = pkg.from_env({"SIPSEC_PKG_DRAIN_SECONDS": "2", "SIPSEC_PKG_SHUTDOWN_GRACE_S": "1.5",  # type: ignore[attr-defined]
                        "SIPSEC_LOG_LEVEL": "warning", "SIPSEC_PKG_LOG_LEVEL": "debug"})
    assert (new.drain_seconds, new.log_level) == (2.0, "WARNING")


@pytest.mark.parametrize("folder", SERVICES)
def test_the_readme_table_is_the_generated_one(folder: str) -> None:
    text = (ROOT / "services" / folder / "README.md").read_text(encoding="utf-8")
    begin = f"<!-- config-table:begin {SERVICES[folder][0]} -->"
    assert text.count(begin) == 1 and text.count("<!-- config-table:end -->") == 1
    assert update_readme(text) == text, f"stale table: run python -m sipsec.config --readme ({folder})"
    for s in settings(_cls(folder)):
        assert f"| `{s.env}` |" in text


def test_the_regeneration_command_finds_nothing_stale() -> None:
    got = subprocess.run([sys.executable, "-m", "sipsec.config", "--readme", "--check"], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert got.returncode == 0, got.stderr
