"""Every service command has one shape: the README's commands run as real processes.

``sipsec-<service> --help`` and ``sipsec-<service> serve --help`` answer 0; an unknown flag or
a missing command is a usage error (2); a bad setting in the environment is a one-line error
naming the variable (1, no traceback); a bad flag value is a usage error naming the flag (2).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent
#: service -> (a documented integer setting's variable, its flag)
SERVICES = {
    "pkg": ("SIPSEC_PKG_METRICS_PORT", "--metrics-port"),
    "location": ("SIPSEC_LOCATION_METRICS_PORT", "--metrics-port"),
    "proxy": ("SIPSEC_PROXY_METRICS_PORT", "--metrics-port"),
    "gateway": ("SIPSEC_GATEWAY_KEEP_CALLS", "--keep-calls"),
    "worker": ("SIPSEC_WORKER_METRICS_PORT", "--metrics-port"),
}
README = (Path(__file__).resolve().parents[3] / "README.md").read_text()


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIPSEC_")}
    env.update(extra)
    return env


def _run_all(calls: dict[str, tuple[list[str], dict[str, str]]]) -> dict[str, tuple[int, str, str]]:
    """Run every call at once (a bad call must fail before serving: the timeout catches one that does not)."""
    procs = {key: subprocess.Popen([str(BIN / argv[0]), *argv[1:]], env=env, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
             for key, (argv, env) in calls.items()}
    results = {}
    for key, proc in procs.items():
        try:
            out, err = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
            pytest.fail(f"{calls[key][0]} did not exit: {out}{err}")
        results[key] = (proc.returncode, out, err)
    return results


@pytest.fixture(scope="module")
def results() -> dict[str, tuple[int, str, str]]:
    calls: dict[str, tuple[list[str], dict[str, str]]] = {}
    for svc, (var, flag) in SERVICES.items():
        script = f"sipsec-{svc}"
        calls[f"{svc} help"] = ([script, "--help"], _env())
        calls[f"{svc} serve help"] = ([script, "serve", "--help"], _env())
        calls[f"{svc} bad flag"] = ([script, "serve", "--no-such-flag"], _env())
        calls[f"{svc} no command"] = ([script], _env())
        calls[f"{svc} bad variable"] = ([script, "serve"], _env(**{var: "many"}))
        calls[f"{svc} bad flag value"] = ([script, "serve", flag, "many"], _env())
    return _run_all(calls)


@pytest.mark.parametrize("svc", list(SERVICES))
def test_the_readme_documents_serve(svc: str) -> None:
    assert f"`sipsec-{svc} " in README and "serve" in README.split(f"`sipsec-{svc} ", 1)[1].split("`", 1)[0]


@pytest.mark.parametrize("svc", list(SERVICES))
def test_help_at_each_level(svc: str, results: dict[str, tuple[int, str, str]]) -> None:
    code, out, _ = results[f"{svc} help"]
    assert code == 0 and out.startswith(f"usage: sipsec-{svc}") and "serve" in out
    code, out, _ = results[f"{svc} serve help"]
    var, flag = SERVICES[svc]
    assert code == 0 and out.startswith(f"usage: sipsec-{svc} serve")
    assert var in out and flag in out  # every setting is a flag, with its variable named


@pytest.mark.parametrize("svc", list(SERVICES))
def test_usage_errors_exit_2(svc: str, results: dict[str, tuple[int, str, str]]) -> None:
    code, _, err = results[f"{svc} bad flag"]
    assert code == 2 and "unrecognized arguments: --no-such-flag" in err
    code, _, err = results[f"{svc} no command"]
    assert code == 2 and "a command is required" in err and "serve" in err
    code, _, err = results[f"{svc} bad flag value"]
    flag = SERVICES[svc][1]
    assert code == 2 and f"argument {flag}" in err and "'many'" in err


@pytest.mark.parametrize("svc", list(SERVICES))
def test_a_bad_setting_is_one_line_naming_the_variable(svc: str, results: dict[str, tuple[int, str, str]]) -> None:
    code, out, err = results[f"{svc} bad variable"]
    var = SERVICES[svc][0]
    assert code == 1, (out, err)
    assert err.startswith(f"sipsec-{svc}: ") and var in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
