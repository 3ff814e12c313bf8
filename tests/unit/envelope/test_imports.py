"""Import hygiene: the envelope pulls in neither grpc nor redis, and the store module imports on its own."""

from __future__ import annotations

import subprocess
import sys


def _run(code: str) -> str:
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def test_envelope_imports_no_grpc_or_redis() -> None:
    out = _run("import sys, sipsec.envelope; print(sorted(m for m in ('grpc', 'redis') if m in sys.modules))")
    assert out == "[]"


def test_store_module_imports_first() -> None:
    assert _run("import sipsec.stores.envelope as s; print(s.DEFAULT_DIALOG_TTL_S)") == "43200.0"
