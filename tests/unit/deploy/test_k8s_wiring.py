"""k8s/ as a running system would see it: every overlay rendered with ``kubectl kustomize`` (the
third domain, chicago.com, included), and checked for what a cluster would trip over at run time.

* Every ``host:port`` a container is configured with resolves to a Service (or a StatefulSet
  pod behind a headless Service) of the render that has that port; every advertised name
  resolves to the pod that advertises it.
* Every variable set is one the service reads (its settings in ``config.py``, :mod:`sipsec.config`).
* Every Secret file mounted is readable by the container's user, as the kubelet sets owner and
  mode (finding 3).
* Every flow the configuration implies is allowed by the NetworkPolicies, and no other ingress is.
* Gateway replicas are each addressable (finding 5); the SIP edge leaves the cluster (finding 6);
  images, disruption budgets, autoscaling, spreading, Redis and the docs (finding 7).
"""

from __future__ import annotations

import ipaddress
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml
from sipsec.config import EVENT_LOOP, settings
from sipsec_cli.up.supervise import AOF_DEFAULT_USER
from sipsec_pkg.config import parse_peers
from sipsec_proxy.config import ProxyConfig, parse_routes
from sipsec_proxy.locator import Contact
from sipsec_proxy.routing import RoutingPolicy, contact_target

from tests.unit.deploy._catalog import ROOT, Service
from tests.unit.deploy.test_k8s import (
    FLOWS,
    KUBECTL,
    OVERLAYS,
    Pod,
    _allowed,
    _flow,
    build,
    containers,
    kinds,
    pod_env,
    service_for_image,
    workloads,
)

Docs = tuple[dict[str, Any], ...]
SUFFIX = ".svc.cluster.local"


@cache
def fleet_docs() -> dict[str, Docs]:
    return {name: build(f"k8s/overlays/{name}") for name in OVERLAYS}


@pytest.fixture(scope="module", params=OVERLAYS)
def rendered(request: pytest.FixtureRequest) -> tuple[str, Docs]:
    return request.param, fleet_docs()[request.param]


def _pod_spec(doc: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = doc["spec"]["template"]["spec"]
    return spec


def _replicas(doc: dict[str, Any]) -> int:
    hpa = [h for h in kinds(fleet_docs_of(doc), "HorizontalPodAutoscaler")
           if h["spec"]["scaleTargetRef"]["name"] == doc["metadata"]["name"]]
    return int(hpa[0]["spec"]["minReplicas"]) if hpa else int(doc["spec"].get("replicas", 1))


def fleet_docs_of(doc: dict[str, Any]) -> Docs:
    return fleet_docs()[doc["metadata"]["namespace"].removeprefix("sipsec-")]


# --------------------------------------------------------------------------- name resolution


@dataclass(frozen=True)
class Target:
    """What a name resolves to: a Service's ports, and the workload and pod behind it."""

    namespace: str
    service: dict[str, Any]
    workload: dict[str, Any]
    pod: str | None  # a StatefulSet pod's own name (headless Service), or None: any replica

    def has_port(self, port: int, protocol: str) -> bool:
        return any(p["port"] == port and p.get("protocol", "TCP") == protocol for p in self.service["spec"]["ports"])


def _selected(svc: dict[str, Any], docs: Docs) -> dict[str, Any]:
    sel = svc["spec"]["selector"]
    (dep,) = [d for d in workloads(docs) if sel.items() <= d["spec"]["template"]["metadata"]["labels"].items()]
    return dep


def resolve(host: str, namespace: str) -> Target | None:
    """Cluster DNS: ``svc`` (the pod's namespace), ``svc.ns.svc.cluster.local``, or a
    StatefulSet pod ``pod.svc.ns.svc.cluster.local`` behind the headless Service ``svc``."""
    labels = host.removesuffix(SUFFIX).split(".") if host.endswith(SUFFIX) else [host, namespace]
    if "." in host and not host.endswith(SUFFIX):
        return None
    *pod, name, ns = labels
    docs = fleet_docs().get(ns.removeprefix("sipsec-"))
    svc = next((s for s in kinds(docs or (), "Service") if s["metadata"]["name"] == name), None)
    if svc is None or docs is None:
        return None
    dep = _selected(svc, docs)
    if not pod:
        return Target(ns, svc, dep, None)
    (pod_name,) = pod
    headless = svc["spec"].get("clusterIP") == "None"
    m = re.fullmatch(rf"{re.escape(dep['metadata']['name'])}-(\d+)", pod_name)
    if not (headless and dep["kind"] == "StatefulSet" and dep["spec"]["serviceName"] == name and m
            and int(m.group(1)) < _replicas(dep)):
        return None
    return Target(ns, svc, dep, pod_name)


def _hostport(text: str) -> tuple[str, int] | None:
    m = re.fullmatch(r"(?:[a-z]+://)?(?:[^@/]*@)?([A-Za-z0-9.-]+):(\d+)(?:/.*)?", text.strip())
    return (m.group(1), int(m.group(2))) if m else None


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def addresses(env: dict[str, str]) -> Iterator[tuple[str, str, int, str]]:
    """(variable, host, port, protocol) of every address a service's environment names: the
    proxy's routes and the PKG's peers through the services' own parsers, any other value (or
    comma/semicolon-separated part of one) of the form ``[scheme://][user@]host:port[/...]``.
    Listen addresses (IP literals) are not names to resolve."""
    for var, value in env.items():
        if not var.startswith("SIPSEC_"):
            continue
        if var == "SIPSEC_PROXY_ROUTES":
            for route in parse_routes(value).values():
                yield var, route.host, route.port, "UDP" if route.transport == "UDP" else "TCP"
            continue
        if var == "SIPSEC_PKG_PEERS":
            for peer in parse_peers(value).values():
                host, port = _hostport(peer.endpoint) or ("", 0)
                yield var, host, port, "TCP"
            continue
        for part in re.split(r"[,;]", value):
            hp = _hostport(part)
            if hp and not _is_ip(hp[0]):
                yield var, hp[0], hp[1], "TCP"


def _sip_ports(c: dict[str, Any]) -> set[tuple[int, str]]:
    return {(p["containerPort"], p["protocol"]) for p in c["ports"] if p["name"].startswith("sip")}


def test_every_configured_address_resolves_to_a_service_port(rendered: tuple[str, Docs]) -> None:
    """Finding 2's class of fault: a name no Service answers, or a port it does not expose."""
    _, docs = rendered
    checked = 0
    for dep in workloads(docs):
        for ordinal in range(_replicas(dep)):
            for c in containers(dep):
                if service_for_image(c["image"]) is None:
                    continue
                env = pod_env(dep, c, docs, ordinal)
                for var, host, port, proto in addresses(env):
                    target = resolve(host, dep["metadata"]["namespace"])
                    assert target is not None, f"{dep['metadata']['name']}: {var} names {host}, which no Service answers"
                    assert target.has_port(port, proto), f"{dep['metadata']['name']}: {var}: {host} has no {proto} {port}"
                    checked += 1
    assert checked >= 10 + 2 * (len(OVERLAYS) - 1)  # the gRPC and Redis targets, the peers' routes and PKGs


def test_advertised_names_reach_the_pod_that_advertises_them(rendered: tuple[str, Docs]) -> None:
    """The Via/Contact host a proxy or a gateway replica writes resolves to a Service selecting
    that very pod (a gateway replica: its own pod, finding 5) with its SIP ports; the gateway's
    TLS server name is the name its proxy advertises (the certificate's name)."""
    _, docs = rendered
    by_name = {d["metadata"]["name"]: d for d in workloads(docs)}
    for name, var in (("proxy", "SIPSEC_PROXY_ADVERTISE"), ("gateway", "SIPSEC_GATEWAY_ADVERTISE")):
        dep = by_name[name]
        main = _pod_spec(dep)["containers"][0]
        seen = set()
        for ordinal in range(_replicas(dep)):
            host = pod_env(dep, main, docs, ordinal)[var]
            target = resolve(host, dep["metadata"]["namespace"])
            assert target is not None and target.workload is dep, (name, host)
            if dep["kind"] == "StatefulSet" or _replicas(dep) > 1:
                assert target.pod == f"{name}-{ordinal}", f"{host} is not replica {ordinal}'s own name"
            for port, proto in _sip_ports(main):
                assert target.has_port(port, proto), (host, port, proto)
            seen.add(host)
        assert len(seen) == _replicas(dep), f"{name} replicas advertise the same name: {seen}"
    gw = pod_env(by_name["gateway"], _pod_spec(by_name["gateway"])["containers"][0], docs)
    px = pod_env(by_name["proxy"], _pod_spec(by_name["proxy"])["containers"][0], docs)
    assert gw["SIPSEC_GATEWAY_TLS_SERVER_NAME"] == px["SIPSEC_PROXY_ADVERTISE"]
    assert resolve(gw["SIPSEC_GATEWAY_TLS_SERVER_NAME"], by_name["gateway"]["metadata"]["namespace"]) is not None


def test_resolution_refuses_what_dns_would_not_answer() -> None:
    """The resolver of these tests is no rubber stamp."""
    ns = "sipsec-atlanta"
    assert resolve("pkg", ns) is not None and resolve("pkg.sipsec-biloxi.svc.cluster.local", ns) is not None
    assert resolve("gateway-1.gateway.sipsec-atlanta.svc.cluster.local", ns) is not None
    for host in ("nosuch", "pkg.sipsec-nowhere.svc.cluster.local", "gateway-2.gateway.sipsec-atlanta.svc.cluster.local",
                 "pkg-0.pkg.sipsec-atlanta.svc.cluster.local", "gateway.sipsec-atlanta", "proxy-atlanta"):
        assert resolve(host, ns) is None, host
    target = resolve("redis", ns)
    assert target is not None and target.has_port(6379, "TCP") and not target.has_port(6380, "TCP")


# --------------------------------------------------------------------------- variables


def _reads(svc: Service) -> set[str]:
    """Every variable the service's settings class reads (names and their aliases)."""
    module, cls = svc.config.split(":")
    config = getattr(__import__(module, fromlist=[cls]), cls)
    return {name for s in settings(config) for name in (s.env, *s.aliases)} | {EVENT_LOOP.env}


def test_every_variable_set_is_one_the_service_reads(rendered: tuple[str, Docs]) -> None:
    """A misspelt or stale variable is silently ignored by a service: none may be set. A
    variable that is no setting must be a helper another one refers to as ``$(NAME)``."""
    _, docs = rendered
    for dep in workloads(docs):
        for c in containers(dep):
            svc = service_for_image(c["image"])
            env = pod_env(dep, c, docs)
            refs = {m for item in c.get("env", []) for m in re.findall(r"\$\(([A-Za-z0-9_]+)\)", item.get("value", ""))}
            if svc is None:  # redis: its start script reads the ACL rules
                script = " ".join(c.get("args", []))
                assert all(f"${name}" in script for name in env), (dep["metadata"]["name"], sorted(env))
                continue
            unread = sorted(set(env) - _reads(svc) - refs)
            assert not unread, f"{dep['metadata']['name']}/{c['name']} sets {unread}, which {svc.config} does not read"


# --------------------------------------------------------------------------- Secret files


def secret_file_readable(pod: dict[str, Any], c: dict[str, Any], vol: dict[str, Any], item: dict[str, Any]) -> bool:
    """Whether container ``c``'s user can read ``item`` of Secret volume ``vol``, as the kubelet
    writes it: owner root; with an ``fsGroup``, group fsGroup and the mode or-ed with 0440
    (SetVolumeOwnership on a read-only volume); without one, group root and the mode as given."""
    pod_sc, c_sc = pod.get("securityContext", {}), c.get("securityContext", {})
    uid = c_sc.get("runAsUser", pod_sc.get("runAsUser"))
    assert uid is not None, f"{c['name']}: no runAsUser, the image's user decides"
    gid = c_sc.get("runAsGroup", pod_sc.get("runAsGroup"))
    fs_group = pod_sc.get("fsGroup")
    groups = {g for g in (gid, fs_group, *pod_sc.get("supplementalGroups", [])) if g is not None}
    mode = item.get("mode", vol["secret"].get("defaultMode", 0o644))
    group = 0
    if fs_group is not None:
        mode, group = mode | 0o440, fs_group
    return bool((uid == 0 and mode & 0o400) or (group in groups and mode & 0o040) or mode & 0o004)


def _secret_mounts(dep: dict[str, Any]) -> Iterator[tuple[dict[str, Any], dict[str, Any], dict[str, Any]]]:
    pod = _pod_spec(dep)
    vols = {v["name"]: v for v in pod.get("volumes", [])}
    for c in containers(dep):
        for m in c.get("volumeMounts", []):
            vol = vols.get(m["name"])
            if vol is not None and "secret" in vol:
                yield c, m, vol


def test_every_secret_file_is_readable_by_the_container_user(rendered: tuple[str, Docs]) -> None:
    """Finding 3: the proxy's Secrets mounted 0400 without fsGroup: PermissionError at start."""
    _, docs = rendered
    mounted = 0
    for dep in workloads(docs):
        for c, mount, vol in _secret_mounts(dep):
            assert mount.get("readOnly") is True, (dep["metadata"]["name"], mount)
            assert vol["secret"].get("items"), f"{vol['name']}: list the files, so each is known"
            for item in vol["secret"]["items"]:
                assert secret_file_readable(_pod_spec(dep), c, vol, item), \
                    f"{dep['metadata']['name']}/{c['name']}: {mount['mountPath']}/{item['path']} unreadable"
                mode = item.get("mode", vol["secret"].get("defaultMode", 0o644))
                assert mode & 0o007 == 0, f"{vol['name']}: world-readable"
                mounted += 1
    assert mounted >= 12


def test_the_readability_check_catches_finding_3() -> None:
    """0400 without fsGroup is unreadable by uid 10001; with fsGroup (or 0440 and the group) it is."""
    proxy = next(d for d in workloads(build("k8s/overlays/atlanta")) if d["metadata"]["name"] == "proxy")
    c, _, vol = next(iter(_secret_mounts(proxy)))
    item = vol["secret"]["items"][0]
    pod = _pod_spec(proxy)
    no_fs = {**pod, "securityContext": {k: v for k, v in pod["securityContext"].items() if k != "fsGroup"}}
    tight = {**vol, "secret": {**vol["secret"], "defaultMode": 0o400}}
    assert not secret_file_readable(no_fs, c, tight, item)
    assert not secret_file_readable(no_fs, c, vol, item)  # 0440, but the group is root's
    assert secret_file_readable(pod, c, tight, item)


# --------------------------------------------------------------------------- network policies


@cache
def policies_and_pods() -> tuple[list[dict[str, Any]], dict[str, dict[str, Pod]]]:
    policies: list[dict[str, Any]] = []
    pods: dict[str, dict[str, Pod]] = {}
    for name, docs in fleet_docs().items():
        policies += kinds(docs, "NetworkPolicy")
        ns = kinds(docs, "Namespace")[0]
        ns_labels = {**ns["metadata"]["labels"], "kubernetes.io/metadata.name": ns["metadata"]["name"]}
        pods[name] = {d["metadata"]["name"]: (d["spec"]["template"]["metadata"]["labels"], ns["metadata"]["name"], ns_labels)
                      for d in workloads(docs)}
    return policies, pods


def test_every_flow_the_configuration_needs_is_allowed(rendered: tuple[str, Docs]) -> None:
    """Derived from the wiring, not from a list: each address a pod is configured with is a flow
    from that pod to the pods behind it, and the policies of both ends must allow it."""
    name, docs = rendered
    policies, pods = policies_and_pods()
    flows = set()
    for dep in workloads(docs):
        for c in containers(dep):
            if service_for_image(c["image"]) is None:
                continue
            for var, host, port, proto in addresses(pod_env(dep, c, docs)):
                target = resolve(host, dep["metadata"]["namespace"])
                assert target is not None, (var, host)
                svc_port = next(p for p in target.service["spec"]["ports"] if p["port"] == port)
                to_port = next(p["containerPort"] for p in _pod_spec(target.workload)["containers"][0]["ports"]
                               if p["name"] == svc_port["targetPort"])
                dst = pods[target.namespace.removeprefix("sipsec-")][target.workload["metadata"]["name"]]
                flows.add((dep["metadata"]["name"], target.workload["metadata"]["name"], to_port, proto))
                assert _flow(policies, pods[name][dep["metadata"]["name"]], dst, to_port, proto), (
                    f"{dep['metadata']['name']} -> {host}:{port}/{proto} ({var}) is denied")
    # the proxy reaches a gateway replica at its advertised name (the Contact it registered)
    assert _flow(policies, pods[name]["proxy"], pods[name]["gateway"], 5070, "TCP")
    assert {("gateway", "proxy", 5061, "TCP"), ("proxy", "location", 50052, "TCP"), ("pkg", "pkg", 50051, "TCP"),
            ("proxy", "proxy", 5061, "TCP"), ("gateway", "worker", 50053, "TCP")} <= flows


OUTSIDE: Pod = ({}, "elsewhere", {"kubernetes.io/metadata.name": "elsewhere"})
MONITORING: Pod = ({"app.kubernetes.io/name": "prometheus"}, "monitoring", {"kubernetes.io/metadata.name": "monitoring"})
PORTAL: Pod = ({"sipsec.io/gateway-client": "true"}, "sipsec-atlanta",
               {"kubernetes.io/metadata.name": "sipsec-atlanta", "sipsec.io/part-of": "sipsec"})
#: ingress from outside the sipsec pods: (source, destination app, port, protocol)
EDGE = {("outside", "proxy", 5060, "UDP"), ("outside", "proxy", 5060, "TCP"), ("outside", "proxy", 5061, "TCP"),
        ("portal", "gateway", 8080, "TCP")}


def _expected_ingress(src: str, dst: str, port: int, proto: str, across: bool) -> bool:
    if ("outside", dst, port, proto) in EDGE:
        return True  # the SIP edge admits everyone
    if src in ("outside", "portal"):
        return (src, dst, port, proto) in EDGE
    if src == "monitoring":
        return any(p["name"] == "metrics" and p["containerPort"] == port for p in _ports(dst))
    return (src, dst, port, proto, across) in FLOWS or (not across and (src, dst, port, proto, True) in FLOWS)


def _ports(app: str) -> list[dict[str, Any]]:
    dep = next(d for d in workloads(fleet_docs()[OVERLAYS[0]]) if d["metadata"]["name"] == app)
    ports: list[dict[str, Any]] = _pod_spec(dep)["containers"][0]["ports"]
    return ports


def test_no_ingress_but_the_flows_and_the_edge() -> None:
    """Every (source, destination, port) pair, within a domain and across two, is admitted
    exactly when it is a flow of docs/architecture.md, the SIP edge, the portal or Prometheus."""
    policies, pods = policies_and_pods()
    a, b = OVERLAYS[0], OVERLAYS[1]
    apps = sorted(pods[a])
    checked = 0
    for dst in apps:
        for p in _ports(dst):
            port, proto = p["containerPort"], p["protocol"]
            sources: list[tuple[str, Pod, bool]] = [(s, pods[a][s], False) for s in apps]
            sources += [(s, pods[b][s], True) for s in apps]
            sources += [("outside", OUTSIDE, True), ("monitoring", MONITORING, True), ("portal", PORTAL, False)]
            for src, pod, across in sources:
                got = _allowed(policies, pods[a][dst], pod, port, proto, "in")
                want = _expected_ingress(src, dst, port, proto, across)
                assert got == want, f"{src} ({'other' if across else 'same'} domain) -> {dst}:{port}/{proto}: {got}"
                checked += 1
    assert checked > 200


# --------------------------------------------------------------------------- finding 5: gateway replicas


def test_gateway_replicas_are_each_addressable(rendered: tuple[str, Docs]) -> None:
    """Several gateway replicas behind one ClusterIP Service that is also their Contact host
    lose calls (finding 5): a StatefulSet behind a headless Service, each replica its own name."""
    _, docs = rendered
    (gw,) = [d for d in workloads(docs) if d["metadata"]["name"] == "gateway"]
    assert gw["kind"] == "StatefulSet" and gw["spec"]["replicas"] >= 2
    (svc,) = [s for s in kinds(docs, "Service") if s["metadata"]["name"] == gw["spec"]["serviceName"]]
    assert svc["spec"]["clusterIP"] == "None"
    for other in kinds(docs, "Service"):  # no load-balanced Service in front of the replicas' SIP
        if _selected(other, docs) is gw:
            assert other["spec"].get("clusterIP") == "None", other["metadata"]["name"]
    env = [e["name"] for e in _pod_spec(gw)["containers"][0]["env"]]
    assert env.index("POD_NAME") < env.index("SIPSEC_GATEWAY_ADVERTISE")


def test_the_proxy_routes_to_each_gateway_replica_it_registered(rendered: tuple[str, Docs]) -> None:
    """With the proxy's own routing policy and rendered configuration: a binding whose Contact is
    a replica's advertised name is a target (a configured hop), a name of no replica is not."""
    _, docs = rendered
    by_name = {d["metadata"]["name"]: d for d in workloads(docs)}
    px = pod_env(by_name["proxy"], _pod_spec(by_name["proxy"])["containers"][0], docs)
    policy = RoutingPolicy.build(ProxyConfig.from_env(px), [("0.0.0.0", 5060), ("0.0.0.0", 5061)],
                                 ("UDP", "TCP", "TLS"))
    gw = by_name["gateway"]
    port = next(p["containerPort"] for p in _pod_spec(gw)["containers"][0]["ports"] if p["name"] == "sip-tls")
    hosts = [pod_env(gw, _pod_spec(gw)["containers"][0], docs, n)["SIPSEC_GATEWAY_ADVERTISE"]
             for n in range(_replicas(gw))]
    for host in hosts:
        target = contact_target(policy, Contact(f"sip:u7f3a@{host}:{port};transport=tls", 1000, 3600))
        assert target is not None, f"the proxy would not route to {host}"
        assert (target.hop.host, target.hop.port) == (host, port)
    stranger = hosts[0].replace("gateway-0.", f"gateway-{_replicas(gw)}.", 1)
    assert contact_target(policy, Contact(f"sip:u7f3a@{stranger}:{port};transport=tls", 1000, 3600)) is None


def test_sip_tls_certificate_names_of_the_replicas_are_documented() -> None:
    text = (ROOT / "k8s" / "README.md").read_text()
    assert "*.gateway.sipsec-<domain>.svc.cluster.local" in text
    assert "--party gateway='*.gateway.sipsec-$d.svc.cluster.local'" in text


# --------------------------------------------------------------------------- finding 6: the SIP edge


def test_sip_edge_is_published_outside_the_cluster(rendered: tuple[str, Docs]) -> None:
    _, docs = rendered
    edges = [s for s in kinds(docs, "Service") if s["spec"].get("type") in ("LoadBalancer", "NodePort")]
    assert [e["metadata"]["name"] for e in edges] == ["proxy-edge"]
    (edge,) = edges
    assert edge["spec"]["externalTrafficPolicy"] == "Local"
    assert _selected(edge, docs)["metadata"]["name"] == "proxy"
    assert {(p["port"], p["protocol"]) for p in edge["spec"]["ports"]} == {(5060, "UDP"), (5060, "TCP"), (5061, "TCP")}


# --------------------------------------------------------------------------- finding 7


def test_images_are_named_by_the_project_and_set_in_one_place(rendered: tuple[str, Docs]) -> None:
    """No image in someone else's registry namespace (``sipsec/...`` on Docker Hub); the
    project's images are listed in the base's kustomize ``images:``, which an overlay overrides."""
    _, docs = rendered
    base = yaml.safe_load((ROOT / "k8s" / "base" / "kustomization.yaml").read_text())
    listed = {i["name"]: i for i in base["images"]}
    for dep in workloads(docs):
        for c in containers(dep):
            image = c["image"]
            assert not image.startswith(("sipsec/", "docker.io/sipsec/")), image
            assert ":" in image.rsplit("/", 1)[-1] or "@sha256:" in image, f"{image}: no tag"
            assert not image.endswith(":latest"), image
            if service_for_image(image) is not None:
                assert image.startswith("registry.invalid/sipsec/sipsec-"), image
    for raw in (ROOT / "k8s" / "base").glob("*.yaml"):
        for doc in yaml.safe_load_all(raw.read_text()):
            if doc and doc.get("kind") in ("Deployment", "StatefulSet"):
                for c in [*doc["spec"]["template"]["spec"].get("initContainers", []),
                          *doc["spec"]["template"]["spec"]["containers"]]:
                    assert c["image"] in listed, f"{raw.name}: {c['image']} is not in the base's images:"


def test_an_overlay_repoints_every_project_image(tmp_path: Path) -> None:
    """The provider's `images:` entries (k8s/README.md, Images) replace every placeholder."""
    k8s = tmp_path / "k8s"
    shutil.copytree(ROOT / "k8s", k8s)
    digest = "sha256:" + "12" * 32
    entries = [f"  - {{name: registry.invalid/sipsec/sipsec-{s}, newName: registry.example.net/sipsec/sipsec-{s}, "
               f'digest: "{digest}"}}' for s in ("pkg", "location", "proxy", "gateway", "worker")]
    overlay = k8s / "overlays" / OVERLAYS[0] / "kustomization.yaml"
    overlay.write_text(overlay.read_text() + "images:\n" + "\n".join(entries) + "\n")
    res = subprocess.run([KUBECTL, "kustomize", str(overlay.parent)], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    images = {c["image"] for d in yaml.safe_load_all(res.stdout) if d and d["kind"] in ("Deployment", "StatefulSet")
              for c in containers(d)}
    ours = {i for i in images if service_for_image(i) is not None}
    assert len(ours) == 5 and all(i.startswith("registry.example.net/sipsec/") and i.endswith(digest) for i in ours)
    assert not any("registry.invalid" in i for i in images)


def test_disruption_budgets_spread_and_autoscaling(rendered: tuple[str, Docs]) -> None:
    _, docs = rendered
    pdbs = kinds(docs, "PodDisruptionBudget")
    for dep in workloads(docs):
        name = dep["metadata"]["name"]
        labels = dep["spec"]["template"]["metadata"]["labels"]
        covering = [p for p in pdbs if p["spec"]["selector"]["matchLabels"].items() <= labels.items()]
        if _replicas(dep) > 1:
            assert len(covering) == 1, name
            assert covering[0]["spec"].get("maxUnavailable") == 1 or covering[0]["spec"].get("minAvailable", 0) < _replicas(dep)
            spread = _pod_spec(dep).get("topologySpreadConstraints", [])
            assert {s["topologyKey"] for s in spread} >= {"kubernetes.io/hostname", "topology.kubernetes.io/zone"}, name
            for s in spread:
                assert s["labelSelector"]["matchLabels"].items() <= labels.items(), name
        else:
            assert not covering, f"{name}: a budget on a single replica blocks every node drain"
    (hpa,) = kinds(docs, "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "worker"}
    assert hpa["spec"]["minReplicas"] >= 2 and hpa["spec"]["maxReplicas"] > hpa["spec"]["minReplicas"]
    (metric,) = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu"
    worker = next(d for d in workloads(docs) if d["metadata"]["name"] == "worker")
    assert "replicas" not in worker["spec"], "the autoscaler owns the worker's replicas"
    assert all("cpu" in c["resources"]["requests"] for c in containers(worker))


def test_redis_is_a_stateful_set_with_a_volume_append_only_and_no_eviction(rendered: tuple[str, Docs]) -> None:
    _, docs = rendered
    (redis,) = [d for d in workloads(docs) if d["metadata"]["name"] == "redis"]
    assert redis["kind"] == "StatefulSet"
    (claim,) = redis["spec"]["volumeClaimTemplates"]
    c = _pod_spec(redis)["containers"][0]
    assert {"name": claim["metadata"]["name"], "mountPath": "/data"} in c["volumeMounts"]
    assert not any(v["name"] == claim["metadata"]["name"] for v in _pod_spec(redis).get("volumes", []))
    script = " ".join(c["args"])
    for option in ("--dir /data", "--appendonly yes", "--appendfsync everysec", "--maxmemory-policy noeviction"):
        assert option in script, option
    m = re.search(r"--maxmemory (\d+)mb", script)
    limit = c["resources"]["limits"]["memory"]
    assert m and limit.endswith("Mi") and int(m.group(1)) < int(limit[:-2]), "maxmemory must fit the limit"
    assert f"'{AOF_DEFAULT_USER}'" in script  # the append-only file replays as this user


def test_docs_pipe_passwords_with_stdin_attached() -> None:
    """``kubectl exec`` without ``-i`` gives the command no stdin: ``--password-stdin`` reads nothing."""
    files = [ROOT / "README.md", *sorted((ROOT / "k8s").rglob("*.md")), *sorted((ROOT / "k8s").rglob("*.yaml")),
             *sorted((ROOT / "docs").glob("*.md"))]
    found = 0
    for path in files:
        for line in path.read_text().splitlines():
            if "kubectl" in line and "exec" in line and "--password-stdin" in line:
                found += 1
                assert re.search(r"\bexec\b[^|]*\s(-i|-it|-ti|--stdin)\b", line), f"{path.relative_to(ROOT)}: {line.strip()}"
    assert found >= 2
