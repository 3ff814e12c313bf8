"""Federation as lists: a further domain joins with one new overlay plus one
line in the overlay of every existing domain.

The test copies k8s/ into a temporary directory, adds denver.com the way k8s/README.md says
(an overlay and a peer component made from chicago.com's, and the line
``- ../../peers/denver.com`` in each existing overlay), renders all four domains with
``kubectl kustomize``, validates the new one strictly against the Kubernetes schemas, and checks
that every domain routes SIP to, prefetches and pins every other one, and to nobody else.
"""

from __future__ import annotations

import difflib
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import yaml
from sipsec_pkg.config import parse_peers
from sipsec_proxy.config import parse_routes

from tests.unit.deploy._catalog import ROOT
from tests.unit.deploy.test_k8s import (
    K8S_VERSION,
    KUBECTL,
    OVERLAYS,
    PIN_STANDIN,
    PINS,
    kinds,
    pod_env,
    workloads,
)

NEW = "denver"


def _render(path: Path) -> tuple[dict[str, Any], ...]:
    res = subprocess.run([KUBECTL, "kustomize", str(path)], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    return tuple(d for d in yaml.safe_load_all(res.stdout) if d)


def _join(k8s: Path) -> dict[str, list[str]]:
    """Add denver.com as k8s/README.md describes; the lines each existing overlay gained."""
    template = "chicago"
    shutil.copytree(k8s / "peers" / f"{template}.com", k8s / "peers" / f"{NEW}.com")
    for path in (k8s / "peers" / f"{NEW}.com").iterdir():
        path.write_text(path.read_text().replace(template, NEW).replace(template.upper(), NEW.upper()))
    (k8s / "overlays" / NEW).mkdir()
    for name in ("kustomization.yaml", "namespace.yaml"):
        text = (k8s / "overlays" / template / name).read_text().replace(template, NEW)
        if name == "kustomization.yaml":  # the new domain's own peers: chicago's, and chicago
            text = text.replace(f"  - ../../peers/{NEW}.com\n", "")
            text = text.replace("  # federation peers: one line each\n",
                                f"  # federation peers: one line each\n  - ../../peers/{template}.com\n")
        (k8s / "overlays" / NEW / name).write_text(text)
    added: dict[str, list[str]] = {}
    for name in OVERLAYS:
        path = k8s / "overlays" / name / "kustomization.yaml"
        before = path.read_text()
        lines = before.splitlines(keepends=True)
        last = max(i for i, line in enumerate(lines) if line.strip().startswith("- ../../peers/"))
        lines.insert(last + 1, f"  - ../../peers/{NEW}.com\n")
        path.write_text("".join(lines))
        diff = difflib.unified_diff(before.splitlines(), path.read_text().splitlines(), lineterm="", n=0)
        added[name] = [d for d in diff if d.startswith(("+", "-")) and not d.startswith(("+++", "---"))]
    return added


def test_a_fourth_domain_joins_with_one_overlay_and_one_line_per_peer(tmp_path: Path) -> None:
    k8s = tmp_path / "k8s"
    shutil.copytree(ROOT / "k8s", k8s)
    added = _join(k8s)
    for name, lines in added.items():
        assert lines == [f"+  - ../../peers/{NEW}.com"], (name, lines)
    domains = [*OVERLAYS, NEW]
    renders = {name: _render(k8s / "overlays" / name) for name in domains}
    for doc in renders[NEW]:
        if not doc["apiVersion"].startswith("monitoring.coreos.com/"):
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    proxies = {d["metadata"]["namespace"] for r in renders.values() for d in kinds(r, "Service")
               if d["metadata"]["name"] == "proxy" and any(p["port"] == 5061 for p in d["spec"]["ports"])}
    pkgs = {d["metadata"]["namespace"] for r in renders.values() for d in kinds(r, "Service")
            if d["metadata"]["name"] == "pkg" and any(p["port"] == 50051 for p in d["spec"]["ports"])}
    for name, docs in renders.items():
        others = {f"{d}.com" for d in domains if d != name}
        deps = {d["metadata"]["name"]: d for d in workloads(docs)}
        proxy = pod_env(deps["proxy"], deps["proxy"]["spec"]["template"]["spec"]["containers"][0], docs)
        gateway = pod_env(deps["gateway"], deps["gateway"]["spec"]["template"]["spec"]["containers"][0], docs)
        pkg_c = deps["pkg"]["spec"]["template"]["spec"]["containers"][0]
        pkg = pod_env(deps["pkg"], pkg_c, docs)
        routes = parse_routes(proxy["SIPSEC_PROXY_ROUTES"])
        assert set(routes) == others, name
        for domain, route in routes.items():
            assert route.transport == "TLS" and route.port == 5061
            assert route.host == f"proxy.sipsec-{domain.split('.')[0]}.svc.cluster.local"
            assert f"sipsec-{domain.split('.')[0]}" in proxies
        assert {d.strip() for d in gateway["SIPSEC_GATEWAY_PEER_DOMAINS"].split(",") if d.strip()} == others
        peers = parse_peers(pkg["SIPSEC_PKG_PEERS"])
        assert set(peers) == others, name
        for domain, peer in peers.items():
            short = domain.split(".")[0]
            assert peer.endpoint == f"pkg.sipsec-{short}.svc.cluster.local:50051" and f"sipsec-{short}" in pkgs
            assert peer.fingerprint == PIN_STANDIN
        pins = {e["name"]: e["valueFrom"]["configMapKeyRef"] for e in pkg_c["env"] if "valueFrom" in e}
        assert {ref["key"] for ref in pins.values()} == others  # each peer's pin: its own key of sipsec-pins
        assert all(ref["name"] == PINS and not ref.get("optional") for ref in pins.values())
