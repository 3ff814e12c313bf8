"""sipsec.config: one way for every service to read environment variables and flags."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from sipsec.config import ConfigError, load_env, parse_bool, parse_flags, split_hostport

ENV = {
    "listen": ("X_LISTEN", "127.0.0.1:5060", "listen address"),
    "workers": ("X_WORKERS", "2", "worker count"),
    "grace": ("X_GRACE", "1.5", "seconds"),
    "plaintext": ("X_PLAINTEXT", "false", "no TLS"),
}


@dataclass(frozen=True)
class Settings:
    listen: str = "127.0.0.1:5060"
    workers: int = 2
    grace: float = 1.5
    plaintext: bool = False

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise ConfigError("workers must be positive")


def test_defaults_then_environment() -> None:
    assert load_env(Settings, ENV, {}) == Settings()
    got = load_env(Settings, ENV, {"X_WORKERS": "8", "X_GRACE": "0.25", "X_PLAINTEXT": "YES"})
    assert (got.workers, got.grace, got.plaintext) == (8, 0.25, True)


@pytest.mark.parametrize(("env", "named"), [
    ({"X_WORKERS": "many"}, "X_WORKERS='many'"),
    ({"X_PLAINTEXT": "maybe"}, "X_PLAINTEXT='maybe'"),
    ({"X_GRACE": "1s"}, "X_GRACE='1s'"),
])
def test_a_bad_variable_is_named_in_the_error(env: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        load_env(Settings, ENV, env)


def test_flags_override_environment() -> None:
    got = parse_flags(Settings, ENV, ["--workers", "4", "--no-plaintext"], {"X_WORKERS": "8", "X_PLAINTEXT": "1"},
                      prog="x", description="x")
    assert (got.workers, got.plaintext) == (4, False)


def test_invalid_combination_exits_with_usage(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        parse_flags(Settings, ENV, ["--workers", "0"], {}, prog="x", description="x")
    assert exc.value.code == 2
    assert "workers must be positive" in capsys.readouterr().err


def test_parse_bool_is_strict() -> None:
    assert parse_bool(" On ") is True and parse_bool("") is False
    with pytest.raises(ConfigError):
        parse_bool("2")


@pytest.mark.parametrize(("text", "want"), [
    ("10.0.0.1:5080", ("10.0.0.1", 5080)),
    ("proxy.example", ("proxy.example", 5060)),
    ("[::1]:5070", ("::1", 5070)),
    ("[2001:db8::1]", ("2001:db8::1", 5060)),
])
def test_split_hostport(text: str, want: tuple[str, int]) -> None:
    assert split_hostport(text) == want


def test_split_hostport_bad_port() -> None:
    with pytest.raises(ConfigError, match="bad port"):
        split_hostport("host:http")


def test_help_works_even_when_the_environment_alone_is_not_a_valid_setup(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        parse_flags(Settings, ENV, ["--help"], {"X_WORKERS": "0"}, prog="x", description="x")
    assert exc.value.code == 0 and "--workers" in capsys.readouterr().out
