"""The product speaks of itself: links into docs/architecture.md resolve, and nothing in the
repository points at material outside it (a sibling design folder, a tracker's issue numbers)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ARCHITECTURE = ROOT / "docs" / "architecture.md"
SCOPES = ["README.md", "Makefile", "docker-compose.yml", "setup.py", "pyproject.toml", ".ci", "libs", "services",
          "cli", "docs", "k8s", "protos", "bench", "scripts", "tests"]
TEXT = {".py", ".md", ".proto", ".yaml", ".yml", ".toml", ".txt", ".sh", ".cfg", ".ini", ""}
SKIP_DIRS = {"__pycache__", "_gen", "node_modules"}
#: built from pieces so that this file does not match itself
OUTSIDE = [re.compile(p) for p in (r"\.\./" + "shared", "/work/" + "shared", "DESIGN" + r"(\.md| ?§)",
                                   r"\(" + r"issues? #?\d+\)")]


def _files() -> list[Path]:
    out: list[Path] = []
    for scope in SCOPES:
        path = ROOT / scope
        if path.is_file():
            out.append(path)
        elif path.is_dir():
            out += [p for p in path.rglob("*") if p.is_file() and p.suffix in TEXT
                    and not SKIP_DIRS & set(p.relative_to(ROOT).parts) and ".egg-info" not in str(p)]
    return sorted(out)


def _anchor(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _anchors() -> set[str]:
    return {_anchor(m.group(1)) for m in re.finditer(r"^#{1,6} (.+)$", ARCHITECTURE.read_text(encoding="utf-8"), re.M)}


def test_every_link_into_the_architecture_names_a_section() -> None:
    anchors = _anchors()
    assert {"layers", "one-secured-invite-phone-to-phone", "the-envelope", "failure-statuses",
            "identities-and-key-periods"} <= anchors
    cited = []
    for path in _files():
        text = path.read_text(encoding="utf-8", errors="replace")
        for m in re.finditer(r"architecture\.md#([\w-]+)", text):
            cited.append((path.relative_to(ROOT), m.group(1)))
            assert m.group(1) in anchors, f"{path.relative_to(ROOT)}: no section #{m.group(1)}"
    assert len(cited) >= 20


@pytest.mark.parametrize("doc", ["docs/architecture.md", "docs/dev/README.md", "README.md"])
def test_relative_links_resolve(doc: str) -> None:
    path = ROOT / doc
    for target in re.findall(r"\]\(([^)#\s]+)(?:#[\w-]+)?\)", path.read_text(encoding="utf-8")):
        if "://" in target:
            continue
        assert (path.parent / target).exists(), f"{doc}: broken link {target}"


def test_nothing_points_outside_the_repository() -> None:
    found = []
    for path in _files():
        text = path.read_text(encoding="utf-8", errors="replace")
        for pattern in OUTSIDE:
            found += [f"{path.relative_to(ROOT)}: {m.group(0)}" for m in pattern.finditer(text)]
    assert not found, found
