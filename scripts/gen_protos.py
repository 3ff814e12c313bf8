"""Generates the Python protobuf/gRPC stubs for every API under protos/ into one place.

    python scripts/gen_protos.py            # regenerate libs/sipsec/rpc/_gen
    python scripts/gen_protos.py --check    # exit 1 when the committed stubs are stale (the
                                            # generator's version stamps are not compared)

Generated modules import each other as ``sipsec.<api>.v1``; they are rewritten to
``sipsec.rpc._gen.sipsec.<api>.v1`` so that the stubs live inside the library and never
shadow its real packages.
"""

from __future__ import annotations

import argparse
import filecmp
import re
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTOS = ROOT / "protos"
OUT = ROOT / "libs" / "sipsec" / "rpc" / "_gen"
_IMPORT = re.compile(r"^from sipsec\.(\S+) import", re.M)
#: the generator's own version stamps: they say which grpcio-tools/protoc wrote a file (and so the
#: oldest runtime it accepts), not what the API is, so --check compares the files without them
_STAMPS = (
    re.compile(r"^GRPC_GENERATED_VERSION = '[^']*'$", re.M),
    re.compile(r"^# Protobuf Python Version: .*$", re.M),
    re.compile(r"(ValidateProtobufRuntimeVersion\(\s*_runtime_version\.Domain\.PUBLIC,)\s*\d+,\s*\d+,\s*\d+,"),
)


def _contract(path: Path) -> str:
    """A generated file's text without the generator's version stamps."""
    text = path.read_text()
    for stamp in _STAMPS:
        text = stamp.sub(lambda m: m.group(1) if m.groups() else "", text)
    return text


def generate(out: Path) -> list[Path]:
    from grpc_tools import protoc  # imported late: a dev-only dependency

    protos = sorted(PROTOS.rglob("*.proto"))
    if not protos:
        return []
    out.mkdir(parents=True, exist_ok=True)
    include = str(Path(protoc.__file__).parent / "_proto")
    args = ["protoc", f"-I{PROTOS}", f"-I{include}", f"--python_out={out}", f"--pyi_out={out}",
            f"--grpc_python_out={out}", *map(str, protos)]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    files = sorted(p for p in out.rglob("*") if p.is_file())
    for path in files:
        if path.suffix in (".py", ".pyi"):
            text = _IMPORT.sub(r"from sipsec.rpc._gen.sipsec.\1 import", path.read_text())
            path.write_text(text)
    for folder in [out, *(p for p in out.rglob("*") if p.is_dir())]:
        (folder / "__init__.py").touch()
    return sorted(p for p in out.rglob("*") if p.is_file())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare with the committed stubs")
    args = parser.parse_args()
    if not args.check:
        shutil.rmtree(OUT, ignore_errors=True)
        files = generate(OUT)
        print(f"generated {len(files)} files into {OUT.relative_to(ROOT)}")
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        fresh = Path(tmp)
        generate(fresh)
        want = {p.relative_to(fresh) for p in fresh.rglob("*") if p.is_file()}
        have = {p.relative_to(OUT) for p in OUT.rglob("*") if p.is_file() and "__pycache__" not in p.parts} if OUT.exists() else set()
        stale = sorted(str(p) for p in want ^ have)
        stale += sorted(str(p) for p in want & have
                        if not filecmp.cmp(fresh / p, OUT / p, shallow=False) and _contract(fresh / p) != _contract(OUT / p))
    if stale:
        print("stale gRPC stubs (run `make protos`):", *stale, sep="\n  ")
        return 1
    print("gRPC stubs are fresh")
    return 0


if __name__ == "__main__":
    sys.exit(main())
