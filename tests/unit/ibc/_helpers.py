"""Shared fixtures-as-functions for the sipsec.ibc tests (domains are costly only a little)."""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path
from types import ModuleType

from sipsec import ibc

VECTORS = Path(__file__).resolve().parents[2] / "vectors" / "ibc"
PERIOD = 684


@functools.cache
def domain(name: str) -> tuple[ibc.MasterSecret, ibc.DomainParams]:
    return ibc.setup(name)


def key(
    aor: str, purpose: ibc.Purpose, period: int = PERIOD
) -> tuple[ibc.DomainParams, ibc.PrivateKey]:
    ident = ibc.Identity.for_aor(aor, purpose, period, ibc.PeriodPolicy())
    master, params = domain(ident.domain)
    return params, ibc.extract(master, params, ident)


@functools.cache
def load_script(name: str) -> ModuleType:
    """Import tests/vectors/ibc/<name>.py as a module (it is a script, not a package)."""
    spec = importlib.util.spec_from_file_location(f"ibc_vectors_{name}", VECTORS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
