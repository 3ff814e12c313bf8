"""The container stage: collected only when SIPSEC_COMPOSE_TEST=1 (``make compose-test``).

Without it (a plain ``pytest`` / ``make test``) nothing here is collected and the run's header
says so: these tests need a Docker engine and minutes of image builds, and a skipped test is
not a passing one. With it, a missing engine is a failure, not a skip.
"""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

ENABLED = os.environ.get("SIPSEC_COMPOSE_TEST") == "1"

if not ENABLED:
    collect_ignore_glob = ["test_*.py"]


def _engine() -> str | None:
    """Why the Docker engine is not usable, or None when it is."""
    for tool in ("docker", "docker-compose", "sipp", "tcpdump"):
        if shutil.which(tool) is None:
            return f"{tool} not found"
    out = subprocess.run(["docker", "info", "--format", "{{.ServerVersion}}"], capture_output=True, text=True,
                         timeout=30)
    return None if out.returncode == 0 else f"docker info failed: {out.stderr.strip()[:200]}"


def pytest_report_header(config: pytest.Config) -> str:
    if not ENABLED:
        reason = _engine() or "engine present"
        return (f"container stage skipped: no SIPSEC_COMPOSE_TEST=1 ({reason}); "
                "`make compose-test` runs tests/compose against a Docker engine")
    return "container stage: tests/compose against the local Docker engine"


@pytest.fixture(scope="session")
def engine() -> None:
    reason = _engine()
    if reason is not None:
        pytest.fail(f"SIPSEC_COMPOSE_TEST=1 but the container stage cannot run: {reason}")
