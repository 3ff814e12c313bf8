"""Prometheus file_sd target files for a running ``sipsec up``.

Reads the JSON object that ``sipsec up --json`` prints first (a file, or ``-`` for standard
input) and writes one ``<service>.json`` per scrape job of ``deploy/prometheus/prometheus.yml``
into a folder: every service's ``/metrics`` address (its ``metrics`` port; a UA gateway that
has none serves ``/metrics`` on its control API port), labelled with the domain it serves.

    python deploy/prometheus/up_targets.py up.json deploy/prometheus/targets
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

__all__ = ["JOBS", "main", "targets_of"]

#: Services of ``sipsec up`` that serve ``/metrics``, and the port names that may serve it (first found).
JOBS: dict[str, tuple[str, ...]] = {
    "pkg": ("metrics",),
    "location": ("metrics",),
    "proxy": ("metrics",),
    "gateway": ("metrics", "http"),
    "worker": ("metrics",),
}


def targets_of(doc: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """``{service: [file_sd target group, ...]}`` for every service of ``doc`` that has metrics."""
    groups: dict[str, list[dict[str, Any]]] = {service: [] for service in JOBS}
    for row in doc["services"]:
        port_name = next((p for p in JOBS.get(row["service"], ()) if p in row["ports"]), None)
        if port_name is None:
            continue
        host = str(row["address"]).rsplit(":", 1)[0] if ":" in str(row["address"]) else str(row["address"])
        groups[row["service"]].append(
            {"targets": [f"{host}:{row['ports'][port_name]}"], "labels": {"domain": row["domain"]}}
        )
    return groups


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("up_json", help="file holding `sipsec up --json` output, or - for stdin")
    parser.add_argument("folder", type=Path, help="where to write the <service>.json target files")
    args = parser.parse_args(argv)
    text = sys.stdin.read() if args.up_json == "-" else Path(args.up_json).read_text()
    try:
        doc = json.loads(text.splitlines()[0])
    except (IndexError, ValueError) as exc:
        parser.exit(1, f"up_targets: {args.up_json}: not the JSON of `sipsec up --json` ({exc})\n")
    args.folder.mkdir(parents=True, exist_ok=True)
    for service, groups in targets_of(doc).items():
        tmp = args.folder / f".{service}.json.tmp"
        tmp.write_text(json.dumps(groups, indent=2, sort_keys=True) + "\n")
        tmp.replace(args.folder / f"{service}.json")  # atomic: Prometheus never reads half a file
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
