"""Import boundaries (docs/architecture.md#layers): the sans-IO layers stay I/O-free; packages stay decoupled."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FORBIDDEN_ROOTS = {"asyncio", "grpc", "redis", "socket", "_socket"}


def _modules_loaded_by(modules: list[str]) -> set[str]:
    code = (
        "import importlib, json, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr
    return set(json.loads(proc.stdout.strip().splitlines()[-1]))


def test_ibc_and_sip_pull_in_no_io_modules() -> None:
    loaded = _modules_loaded_by(["sipsec.ibc", "sipsec.ibc.hazmat", "sipsec.sip"])
    assert {"sipsec.ibc", "sipsec.sip"} <= loaded
    offending = sorted(m for m in loaded if m.split(".")[0] in FORBIDDEN_ROOTS)
    assert offending == [], f"sans-IO layers import I/O modules: {offending}"


def test_the_probe_would_notice() -> None:
    # the same probe does see socket when something imports it
    loaded = _modules_loaded_by(["socket"])
    assert "socket" in loaded


def _imported_names(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute | ast.Name)
            and (node.func.attr if isinstance(node.func, ast.Attribute) else node.func.id)
            in ("import_module", "__import__")
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            names.add(node.args[0].value)
    return {n.split(".")[0] for n in names}


def _service_packages() -> dict[str, Path]:
    return {p.name: p for p in sorted(ROOT.glob("services/*/sipsec_*")) if p.is_dir()}


def test_library_imports_no_service_or_cli() -> None:
    violations = []
    for path in sorted((ROOT / "libs" / "sipsec").rglob("*.py")):
        for name in _imported_names(path):
            if name.startswith("sipsec_"):
                violations.append(f"{path.relative_to(ROOT)} imports {name}")
    assert violations == []


def test_services_do_not_import_each_other_or_the_cli() -> None:
    packages = _service_packages()
    violations = []
    for own, folder in packages.items():
        for path in sorted(folder.rglob("*.py")):
            for name in _imported_names(path):
                if name.startswith("sipsec_") and name != own:
                    violations.append(f"{path.relative_to(ROOT)} imports {name}")
    assert violations == []


def test_scanner_sees_imports(tmp_path: Path) -> None:
    sample = tmp_path / "m.py"
    sample.write_text(
        "import sipsec_pkg.x\nfrom sipsec_proxy import y\nimport importlib\n"
        "importlib.import_module('sipsec_worker.z')\nfrom . import local\n"
    )
    assert _imported_names(sample) == {"sipsec_pkg", "sipsec_proxy", "importlib", "sipsec_worker"}
