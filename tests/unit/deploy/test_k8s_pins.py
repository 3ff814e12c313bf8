"""Pins that are checked: a pod whose pin is empty, a placeholder or
malformed does not run.

The manifests take every pin from the provider's ``sipsec-pins`` ConfigMap (test_k8s.py); here
the services themselves refuse a bad one at start, with the environment the render gives each
container: the gateway's and the proxy's pin of their PKG (empty allowed only with
``SIPSEC_INSECURE_DEV=1``, logged as ``INSECURE:``) and the PKG's pins of its federation peers
(always required). Each case runs the real console script too: one line on stderr naming the
variable, exit status 1 (sipsec.cli: a configuration error).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from sipsec.config import ConfigError, pin_problem, require_pin

from tests.unit.deploy.test_k8s import (
    OVERLAYS,
    PIN_STANDIN,
    build,
    containers,
    pod_env,
    service_for_image,
    workloads,
)

BIN = Path(sys.executable).parent
ZERO = "sha256:" + "0" * 64
BAD = {"empty": "", "all-zero placeholder": ZERO, "placeholder without prefix": "f" * 64,
       "malformed": "sha256:not-a-fingerprint", "truncated": PIN_STANDIN[:-2], "a file name": "/run/pins/pkg"}


def _env(overlay: str, workload: str, container: str = "") -> dict[str, str]:
    """The environment of ``workload``'s main container (or ``container``) in ``overlay``, with a
    well-formed stand-in for every pin and Secret value."""
    docs = build(f"k8s/overlays/{overlay}")
    dep = next(d for d in workloads(docs) if d["metadata"]["name"] == workload)
    c = next(c for c in containers(dep) if c["name"] == (container or workload))
    env = pod_env(dep, c, docs)
    svc = service_for_image(c["image"])
    assert svc is not None
    return env


def _config(workload: str, env: dict[str, str]) -> Any:
    svc = {"gateway": "sipsec_gateway.config:GatewayConfig", "proxy": "sipsec_proxy.config:ProxyConfig",
           "pkg": "sipsec_pkg.config:PkgConfig"}[workload]
    module, cls = svc.split(":")
    return getattr(__import__(module, fromlist=[cls]), cls).from_env(env)


PIN_OF = {"gateway": "SIPSEC_GATEWAY_PKG_FINGERPRINT", "proxy": "SIPSEC_PROXY_PKG_FINGERPRINT"}


def test_pin_problem_names_placeholders_and_typos() -> None:
    assert pin_problem(PIN_STANDIN) is None
    assert pin_problem(PIN_STANDIN.removeprefix("sha256:").upper()) is None
    assert pin_problem(":".join(PIN_STANDIN[7:][i:i + 2] for i in range(0, 64, 2))) is None
    assert pin_problem(ZERO) == pin_problem("F" * 64) == "is a placeholder"
    for value in ("sha256:", "sha256:" + "g" * 64, PIN_STANDIN + "00", "sha1:" + "ab" * 20):
        assert pin_problem(value) == "is malformed", value


@pytest.mark.parametrize("workload", ["gateway", "proxy"])
@pytest.mark.parametrize("case", sorted(BAD))
def test_gateway_and_proxy_refuse_a_bad_pin(workload: str, case: str) -> None:
    env = {**_env(OVERLAYS[0], workload), PIN_OF[workload]: BAD[case]}
    with pytest.raises(ConfigError, match=PIN_OF[workload]) as err:
        _config(workload, env).check_trust()
    assert BAD[case] not in str(err.value) or not BAD[case]  # the message names the variable, not the value


@pytest.mark.parametrize("workload", ["gateway", "proxy"])
def test_insecure_dev_allows_only_an_empty_pin_and_says_so(workload: str) -> None:
    env = {**_env(OVERLAYS[0], workload), "SIPSEC_INSECURE_DEV": "1"}
    (warning,) = _config(workload, {**env, PIN_OF[workload]: ""}).check_trust()
    assert warning.startswith("INSECURE:") and PIN_OF[workload] in warning
    for case in ("all-zero placeholder", "malformed"):  # a stand-in is no pin, even in development
        with pytest.raises(ConfigError, match="is a placeholder|is malformed"):
            _config(workload, {**env, PIN_OF[workload]: BAD[case]}).check_trust()
    assert _config(workload, {**_env(OVERLAYS[0], workload), PIN_OF[workload]: PIN_STANDIN}).check_trust() == []


@pytest.mark.parametrize("case", sorted(BAD))
def test_pkg_refuses_a_bad_peer_pin(case: str) -> None:
    env = _env(OVERLAYS[0], "pkg")
    good = env["SIPSEC_PKG_PEERS"]
    assert len(_config("pkg", env).peers) == len(OVERLAYS) - 1
    entries = [e for e in good.split(";") if e]
    first_peer = entries[0].split(",")[0]
    entries[0] = entries[0].rsplit(",", 1)[0] + "," + BAD[case]
    env["SIPSEC_PKG_PEERS"] = ";".join(entries)
    with pytest.raises(ConfigError, match=first_peer if case != "empty" else "no pinned fingerprint"):
        _config("pkg", env)
    with pytest.raises(ConfigError):  # the development switch changes nothing for federation
        _config("pkg", {**env, "SIPSEC_INSECURE_DEV": "1"})


def test_require_pin_contract() -> None:
    assert require_pin(PIN_STANDIN, "X_PIN", "things", insecure=False) is None
    with pytest.raises(ConfigError, match="X_PIN is required"):
        require_pin("  ", "X_PIN", "things", insecure=False)
    with pytest.raises(ConfigError, match="X_PIN is a placeholder"):
        require_pin(ZERO, "X_PIN", "things", insecure=True)


def _run(argv: list[str], env: dict[str, str]) -> tuple[int, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SIPSEC_")}
    proc = subprocess.run([str(BIN / argv[0]), *argv[1:]], env={**clean, **env}, capture_output=True, text=True,
                          timeout=60, stdin=subprocess.DEVNULL)
    return proc.returncode, proc.stderr


@pytest.mark.parametrize(("workload", "script"), [("gateway", "sipsec-gateway"), ("proxy", "sipsec-proxy")])
def test_the_pod_command_exits_on_a_placeholder_pin(workload: str, script: str) -> None:
    """The container's own command with its rendered environment, the pin an all-zero placeholder:
    it stops before listening, with one line naming the variable."""
    env = {**_env(OVERLAYS[0], workload), PIN_OF[workload]: ZERO}
    code, err = _run([script, "serve"], env)
    assert code == 1, err
    assert err.strip().count("\n") == 0 and "Traceback" not in err
    assert f"{PIN_OF[workload]} is a placeholder" in err, err


def test_the_pkg_command_exits_on_an_empty_peer_pin() -> None:
    env = _env(OVERLAYS[0], "pkg")
    env["SIPSEC_PKG_PEERS"] = env["SIPSEC_PKG_PEERS"].replace(PIN_STANDIN, "", 1)
    code, err = _run(["sipsec-pkg", "serve"], env)
    assert code == 1 and "Traceback" not in err, err
    assert "SIPSEC_PKG_PEERS" in err and "no pinned fingerprint" in err, err
