"""The fault suite runs only when asked (``make fault-test``, or ``SIPSEC_FAULT_TEST=1``): it
takes minutes. One ``sipsec up`` serves every row of ``test_faults.py`` (``test_threshold_pkg.py``
runs its threshold PKG on the integration harness); the report is written when the suite ends
(``build/fault-report.json``, or ``SIPSEC_FAULT_REPORT``) and its path printed."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.faults.harness import Row, Stack

REPORT = Path(os.environ.get("SIPSEC_FAULT_REPORT", Path(__file__).parents[2] / "build" / "fault-report.json"))
ROWS: list[Row] = []


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get("SIPSEC_FAULT_TEST") == "1":
        return
    skip = pytest.mark.skip(reason="the fault-injection suite runs with `make fault-test` (SIPSEC_FAULT_TEST=1)")
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(skip)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    for tool in ("sipp", "redis-server"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is not installed (make install)")
    base = tmp_path_factory.mktemp("faults")
    s = Stack(base / "state", base / "skew")
    try:
        s.start()
        yield s
    finally:
        code = s.close()
        write_report()
        assert code == 0, "".join(s.up.err)


def write_report() -> None:
    """The rows measured so far, as JSON (fault, calls lost, recovery seconds, data lost, signal…)."""
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    doc: dict[str, Any] = {"rows": [r.as_dict() for r in ROWS]}
    REPORT.write_text(json.dumps(doc, indent=1) + "\n")


def pytest_sessionfinish(session: pytest.Session) -> None:
    """The rows of every module (the threshold rows run without ``stack``)."""
    if ROWS:
        write_report()


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if ROWS:
        terminalreporter.write_line(f"fault report: {REPORT}")
        for r in ROWS:
            terminalreporter.write_line(
                f"  {r.fault:<28} lost {r.calls_lost}/{r.calls_in_flight} in flight, refused {r.calls_refused_during_fault} "
                f"{r.refused_statuses}, recovery {r.recovery_s} s, data lost {sum(r.data_lost.values())}, "
                f"left up {r.left_up_on_phone}, signal {r.signal!r}" + (f"  FAILED: {r.failures}" if r.failures else ""))
