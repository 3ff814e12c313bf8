"""Processes seen through /proc: whether one runs, which are its children (Linux)."""

from __future__ import annotations

import re
from pathlib import Path

__all__ = ["alive", "children_of"]


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, dead but not yet reaped by its new parent, does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def children_of(pid: int) -> set[int]:
    """Processes whose parent is ``pid`` now."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
        except OSError:
            continue
        m = re.search(r"^PPid:\s+(\d+)$", status, re.M)
        if m and int(m.group(1)) == pid:
            found.add(int(entry.name))
    return found
