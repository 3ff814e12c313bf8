"""sipsec.config: each setting declared once; read from the environment, flags on top; clear errors."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import pytest
from sipsec.config import (
    ConfigError,
    add_flags,
    describe,
    env_table,
    from_args,
    load,
    markdown_table,
    parse_bool,
    parse_flags,
    setting,
    settings,
    split_hostport,
    to_env,
    update_readme,
)


@dataclass(frozen=True)
class Settings:
    listen: str = setting("X_LISTEN", "127.0.0.1:5060", "listen address")
    workers: int = setting("X_WORKERS", 2, "worker count")
    grace: float = setting("X_GRACE", 1.5, "seconds", aliases=("X_OLD_GRACE",))
    plaintext: bool = setting("X_PLAINTEXT", False, "no TLS")
    token: str = setting("X_TOKEN", "", "a secret", secret=True)

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise ConfigError("workers must be positive")
        if self.token and len(self.token) < 8:
            raise ConfigError("token too short")


def test_defaults_then_environment() -> None:
    assert load(Settings, {}) == Settings()
    got = load(Settings, {"X_WORKERS": "8", "X_GRACE": "0.25", "X_PLAINTEXT": "YES"})
    assert (got.workers, got.grace, got.plaintext) == (8, 0.25, True)


def test_the_table_is_derived_from_the_declaration() -> None:
    assert [s.name for s in settings(Settings)] == ["listen", "workers", "grace", "plaintext", "token"]
    assert env_table(Settings)["grace"] == ("X_GRACE", "1.5", "seconds")
    assert env_table(Settings)["plaintext"] == ("X_PLAINTEXT", "false", "no TLS")


@pytest.mark.parametrize(("env", "named"), [
    ({"X_WORKERS": "many"}, "X_WORKERS='many'"),
    ({"X_PLAINTEXT": "maybe"}, "X_PLAINTEXT='maybe'"),
    ({"X_GRACE": "1s"}, "X_GRACE='1s'"),
])
def test_a_bad_variable_is_named_in_the_error(env: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        load(Settings, env)


def test_a_former_name_is_still_read_and_the_current_one_wins() -> None:
    assert load(Settings, {"X_OLD_GRACE": "3"}).grace == 3.0
    assert load(Settings, {"X_OLD_GRACE": "3", "X_GRACE": "4"}).grace == 4.0


def test_flags_override_environment() -> None:
    got = parse_flags(Settings, ["--workers", "4", "--no-plaintext"], {"X_WORKERS": "8", "X_PLAINTEXT": "1"},
                      prog="x", description="x")
    assert (got.workers, got.plaintext) == (4, False)


def test_flags_on_a_subcommand_parser() -> None:
    parser = argparse.ArgumentParser(prog="x")
    serve = parser.add_subparsers(dest="command").add_parser("serve")
    add_flags(serve, Settings)
    ns = parser.parse_args(["serve", "--listen", "10.0.0.1:5070"])
    assert not hasattr(ns, "grace")  # not given: left to the environment, read when the command runs
    got = from_args(Settings, ns, {"X_GRACE": "2", "X_TOKEN": "s3cret-token", "X_LISTEN": "127.0.0.2:1"})
    assert (got.listen, got.grace, got.token) == ("10.0.0.1:5070", 2.0, "s3cret-token")


def test_invalid_combination_exits_with_usage(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        parse_flags(Settings, ["--workers", "0"], {}, prog="x", description="x")
    assert exc.value.code == 2
    assert "workers must be positive" in capsys.readouterr().err


def test_a_bad_flag_value_exits_with_usage(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        parse_flags(Settings, ["--grace", "soon"], {}, prog="x", description="x")
    assert exc.value.code == 2 and "--grace='soon'" in capsys.readouterr().err


def test_secrets_have_no_flag_are_masked_and_never_echoed(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse_flags(Settings, ["--token", "abc"], {}, prog="x", description="x")
    assert "unrecognized arguments: --token" in capsys.readouterr().err
    got = load(Settings, {"X_TOKEN": "s3cret-token"})
    assert "s3cret" not in repr(got)
    assert any(line.startswith("X_TOKEN=<set>  #") for line in describe(got))
    assert not any("s3cret" in line for line in describe(got))
    assert "secret: environment only" in markdown_table(Settings)

    @dataclass(frozen=True)
    class Numeric:
        pin: int = setting("X_PIN", 0, "a secret number", secret=True)

    with pytest.raises(ConfigError) as exc:
        load(Numeric, {"X_PIN": "12ab34"})
    assert "X_PIN" in str(exc.value) and "12ab34" not in str(exc.value)


def test_to_env_reproduces_the_settings() -> None:
    got = load(Settings, {"X_WORKERS": "8", "X_PLAINTEXT": "1", "X_GRACE": "0.25"})
    assert load(Settings, to_env(got)) == got


def test_a_readme_table_between_markers_is_regenerated() -> None:
    stale = ("intro\n<!-- config-table:begin tests.unit.config.test_settings:Settings -->\n| old |\n"
             "<!-- config-table:end -->\nafter\n")
    fresh = update_readme(stale)
    assert fresh.startswith("intro\n") and fresh.endswith("<!-- config-table:end -->\nafter\n")
    assert "| old |" not in fresh and "| `X_GRACE` | `1.5` | seconds (also read under its former name `X_OLD_GRACE`) |" in fresh
    assert update_readme(fresh) == fresh


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
        parse_flags(Settings, ["--help"], {"X_WORKERS": "0"}, prog="x", description="x")
    out = capsys.readouterr().out
    assert exc.value.code == 0 and "--workers" in out and "X_WORKERS" in out
    assert "X_GRACE, X_OLD_GRACE" in out and "--token" not in out
