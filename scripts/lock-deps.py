"""Writes requirements/lock.txt: the runtime dependency closure of ``sipsec``, pinned with ``==``.

The versions are the ones installed in the running environment (``.venv``), which the tests
ran against; the closure follows ``pyproject.toml``'s ``dependencies`` (no extras, markers
evaluated for Linux / CPython 3.11, the images' platform). The image build installs exactly
this set from a wheelhouse (scripts/build-wheelhouse.sh), with no index.

    .venv/bin/python scripts/lock-deps.py [--check]

``--check`` exits 1 when the file on disk differs from what would be written.
"""

from __future__ import annotations

import argparse
import sys
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
LOCK = ROOT / "requirements" / "lock.txt"
#: The images' platform: markers are evaluated for it, not for the machine running this. The
#: full version is Debian 12's Python (the offline base), the oldest 3.11 the images run: a
#: dependency needed only before some 3.11.x is then locked too (harmless on a later 3.11).
TARGET_ENV: dict[str, str] = {**{k: str(v) for k, v in default_environment().items()}, "sys_platform": "linux", "platform_system": "Linux",
              "os_name": "posix", "python_version": "3.11", "python_full_version": "3.11.2",
              "implementation_name": "cpython", "platform_python_implementation": "CPython"}
HEADER = """\
# The runtime dependencies of sipsec, pinned (written by scripts/lock-deps.py from the tested
# .venv; do not edit). The images install exactly these from build/wheelhouse, with no index:
#   .venv/bin/python scripts/lock-deps.py && scripts/build-wheelhouse.sh
"""


def _applies(req: Requirement, extra: str | None) -> bool:
    if req.marker is None:
        return True
    return bool(req.marker.evaluate({**TARGET_ENV, "extra": extra or ""}))


def closure(roots: list[Requirement]) -> dict[str, str]:
    """``{canonical name: installed version}`` for ``roots`` and everything they need."""
    pinned: dict[str, str] = {}
    todo = [r for r in roots if _applies(r, None)]
    while todo:
        req = todo.pop()
        name = canonicalize_name(req.name)
        try:
            dist = metadata.distribution(req.name)
        except metadata.PackageNotFoundError as exc:
            raise SystemExit(f"lock-deps: {req.name} is not installed in this environment") from exc
        if not req.specifier.contains(dist.version, prereleases=True):
            raise SystemExit(f"lock-deps: installed {req.name} {dist.version} does not satisfy {req}")
        if name in pinned and not req.extras:
            continue
        pinned[name] = dist.version
        for raw in dist.requires or []:
            sub = Requirement(raw)
            if _applies(sub, None) or any(_applies(sub, e) for e in req.extras):
                todo.append(sub)
    return pinned


def render() -> str:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins = closure([Requirement(d) for d in project["dependencies"]])
    return HEADER + "".join(f"{n}=={v}\n" for n, v in sorted(pins.items()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail when the lock file is stale")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        if not LOCK.exists() or LOCK.read_text() != text:
            print(f"{LOCK.relative_to(ROOT)} is stale: run .venv/bin/python scripts/lock-deps.py",
                  file=sys.stderr)
            return 1
        return 0
    LOCK.parent.mkdir(exist_ok=True)
    LOCK.write_text(text)
    print(f"wrote {LOCK.relative_to(ROOT)} ({text.count('==')} pins)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
