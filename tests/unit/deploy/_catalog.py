"""What the deployment tests know about each service: folder, console script, config class.

Shared by the docker-compose and Kubernetes checks, so that both compare the manifests
against the same source of truth: the service's README (documented variables), its
console script (real subcommands) and its config class (values that parse).
"""

from __future__ import annotations

import importlib
import json
import re
import subprocess
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[3]
BIN = Path(sys.executable).parent

__all__ = ["ROOT", "SERVICES", "Service", "check_help", "dockerfile_command", "dockerfile_stage",
           "documented_names", "parse_pkg_argv",
           "script_invocations", "service_for_image", "service_for_target", "subcommands"]


@dataclass(frozen=True)
class Service:
    """One service folder under services/."""

    folder: str
    script: str
    config: str  # "module:Class" with a from_env(environ) classmethod
    has_subcommands: bool = False  # otherwise the script takes options only (argparse
    # answers `<script> anything --help` with 0, so a stray word must be caught here)

    @property
    def readme(self) -> Path:
        return ROOT / "services" / self.folder / "README.md"

    @property
    def dockerfile(self) -> Path:
        """The one Dockerfile; this service's image is its stage named :attr:`target`."""
        return ROOT / "Dockerfile"

    @property
    def target(self) -> str:
        """The Dockerfile stage (build target) of this service's image: ``sipsec-pkg`` -> ``pkg``."""
        return self.script.removeprefix("sipsec-")

    def documented(self, var: str) -> bool:
        """Whether the README names ``var`` (see :func:`documented_names`)."""
        return var in documented_names(self.readme.read_text())

    def parse_env(self, env: Mapping[str, str]) -> Any:
        """Build the service's config from ``env``; raises when a value does not parse."""
        module, cls = self.config.split(":")
        return getattr(importlib.import_module(module), cls).from_env(dict(env))


SERVICES: dict[str, Service] = {
    "pkg": Service("pkg", "sipsec-pkg", "sipsec_pkg.config:PkgConfig", has_subcommands=True),
    "location": Service("location", "sipsec-location", "sipsec_location.config:LocationConfig", has_subcommands=True),
    "worker": Service("crypto-worker", "sipsec-worker", "sipsec_worker.config:WorkerConfig", has_subcommands=True),
    "proxy": Service("proxy", "sipsec-proxy", "sipsec_proxy.config:ProxyConfig", has_subcommands=True),
    "gateway": Service("ua-gateway", "sipsec-gateway", "sipsec_gateway.config:GatewayConfig",
                       has_subcommands=True),
}


def documented_names(text: str) -> set[str]:
    """Every ``SIPSEC_*`` variable a README names, including its shorthand rows:
    `` `SIPSEC_PROXY_METRICS_HOST` / `_METRICS_PORT` `` names SIPSEC_PROXY_METRICS_PORT too
    (the suffix replaces as many trailing words of the previous full name as it has)."""
    names: set[str] = set()
    for line in text.splitlines():
        last: list[str] | None = None
        for token in re.findall(r"`([A-Z0-9_]+)`", line):
            if token.startswith("SIPSEC_"):
                names.add(token)
                last = token.split("_")
            elif token.startswith("_") and last is not None:
                words = token[1:].split("_")
                names.add("_".join(last[: len(last) - len(words)] + words))
        names.update(re.findall(r"(?<![A-Z0-9_])SIPSEC_[A-Z0-9_]*[A-Z0-9]", line))
    return names


def service_for_target(target: str) -> Service:
    """The service whose image is the Dockerfile stage ``target`` (KeyError for another)."""
    for svc in SERVICES.values():
        if svc.target == target:
            return svc
    raise KeyError(target)


def service_for_image(image: str) -> Service | None:
    """``sipsec-pkg:dev`` (or ``registry/sipsec-pkg@sha256:...``, or the older ``sipsec/pkg:dev``)
    -> the pkg Service; other images (redis) -> None."""
    m = re.fullmatch(r"(?:.*/)?sipsec[-/]([a-z]+)(?:[:@].*)?", image)
    return SERVICES.get(m.group(1)) if m else None


def _instruction(text: str, name: str) -> list[str] | None:
    found = None
    for line in text.splitlines():
        if line.strip().upper().startswith(name + " "):
            found = json.loads(line.strip()[len(name):].strip())
    return found


def dockerfile_stage(svc: Service) -> str:
    """The text of the service's stage in the Dockerfile (from its FROM to the next FROM)."""
    stages = re.split(r"(?im)^(?=FROM\s)", svc.dockerfile.read_text())
    for stage in stages:
        if re.match(rf"(?i)FROM\s+\S+\s+AS\s+{re.escape(svc.target)}\s*$", stage.splitlines()[0]):
            return stage
    raise KeyError(f"no stage {svc.target!r} in {svc.dockerfile}")


def dockerfile_command(svc: Service) -> tuple[list[str], list[str]]:
    """(ENTRYPOINT, CMD) of the service's Dockerfile stage, exec form."""
    text = dockerfile_stage(svc)
    return _instruction(text, "ENTRYPOINT") or [], _instruction(text, "CMD") or []


_SHELL_SPLIT = re.compile(r"\|\||&&|;|\n")


def script_invocations(argv: list[str]) -> list[list[str]]:
    """The ``sipsec-*`` invocations in an argv: itself, or each command of a ``sh -c`` script."""
    if argv and argv[0].startswith("sipsec-"):
        return [argv]
    if argv[:1] in (["/bin/sh"], ["sh"]) and len(argv) >= 3 and argv[1].startswith("-") and "c" in argv[1]:
        calls = []
        for part in _SHELL_SPLIT.split(argv[2]):
            words = part.replace(">", " > ").replace("<", " < ").split()
            for i, word in enumerate(words):
                if word.startswith("sipsec-"):
                    tail: list[str] = []
                    for w in words[i + 1:]:
                        if w in (">", "<", "|", "2", "2>&1") or w.startswith(("/", "2>")):
                            break
                        tail.append(w)
                    calls.append([word, *tail])
                    break
        return calls
    return []


def subcommands(call: list[str]) -> list[str]:
    """The subcommand words of an invocation (``user add`` of ``sipsec-pkg user add sip:a@b``)."""
    words = []
    for w in call[1:]:
        if not re.fullmatch(r"[a-z][a-z-]*", w):
            break
        words.append(w)
    return words


def check_help(calls: Iterable[tuple[str, ...]]) -> dict[tuple[str, ...], tuple[int, str]]:
    """Run ``<script> <subcommand...> --help`` for each call, in parallel; return code and output."""
    pending = {c: subprocess.Popen([str(BIN / c[0]), *c[1:], "--help"], stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, text=True) for c in set(calls)}
    results = {}
    for c, proc in pending.items():
        out, _ = proc.communicate(timeout=60)
        results[c] = (proc.returncode, out)
    return results


def parse_pkg_argv(call: list[str]) -> Any:
    """Parse a ``sipsec-pkg`` invocation with its real argument parser (SystemExit if invalid)."""
    from sipsec_pkg.__main__ import build_parser

    return build_parser().parse_args(call[1:])
