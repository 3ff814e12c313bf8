#!/usr/bin/env bash
# Fills build/wheelhouse with one wheel per pin of requirements/lock.txt, built or fetched on
# this host by the project's pip (.venv/bin/pip wheel). The image build copies the wheelhouse
# in and installs from it with --no-index: no network inside the build, the locked set only.
#   scripts/build-wheelhouse.sh            (idempotent: wheels already there are kept)
set -euo pipefail
cd "$(dirname "$0")/.."
pip=.venv/bin/pip
[ -x "$pip" ] || { echo "no .venv: run make install first" >&2; exit 1; }
out=build/wheelhouse
mkdir -p "$out"
"$pip" wheel --quiet --no-deps --wheel-dir "$out" --find-links "$out" -r requirements/lock.txt
# Every pin has its wheel (a pin without one would fail the offline install later, less clearly).
.venv/bin/python - "$out" <<'PY'
import sys
from pathlib import Path

from packaging.utils import canonicalize_name, parse_wheel_filename

have = {(canonicalize_name(n), str(v)) for n, v, *_ in
        (parse_wheel_filename(p.name) for p in Path(sys.argv[1]).glob("*.whl"))}
missing = []
for line in Path("requirements/lock.txt").read_text().splitlines():
    if line and not line.startswith("#"):
        name, _, version = line.partition("==")
        if (canonicalize_name(name), version) not in have:
            missing.append(line)
if missing:
    sys.exit("wheelhouse lacks: " + ", ".join(missing))
print(f"wheelhouse {sys.argv[1]}: {len(have)} wheels")
PY
