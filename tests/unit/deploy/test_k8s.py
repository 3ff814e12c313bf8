"""k8s/: kustomize builds, schema validation (kubernetes-validate, offline), hardening, probes,
configuration against the services' READMEs, and the network policies against the flows of docs/architecture.md#services-and-flows."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator, Mapping
from functools import cache
from typing import Any

import kubernetes_validate
import pytest
import yaml
from sipsec_cli.up import DOMAINS

from tests.unit.deploy._catalog import (
    ROOT,
    SERVICES,
    Service,
    check_help,
    parse_pkg_argv,
    script_invocations,
    subcommands,
)

KUBECTL = shutil.which("kubectl") or "/usr/bin/kubectl"
K8S_VERSION = "1.32.0"
#: every shipped overlay: the two domains of `sipsec up` first, then the third (chicago.com)
OVERLAYS = [d.name.split(".")[0] for d in DOMAINS] + sorted(
    p.name for p in (ROOT / "k8s" / "overlays").iterdir() if p.name not in {d.name.split(".")[0] for d in DOMAINS})
WORKLOADS = ("Deployment", "StatefulSet")
GRPC_SERVICES = {"pkg", "location", "worker"}
SECRET_STANDIN = "00" * 32
PINS = "sipsec-pins"  #: the provider's ConfigMap of pinned fingerprints (k8s/README.md, Pins)
PIN_STANDIN = "sha256:" + "ab" * 32


@cache
def build(path: str) -> tuple[dict[str, Any], ...]:
    res = subprocess.run([KUBECTL, "kustomize", str(ROOT / path)], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, f"kubectl kustomize {path} failed:\n{res.stderr}"
    return tuple(doc for doc in yaml.safe_load_all(res.stdout) if doc)


def kinds(docs: tuple[dict[str, Any], ...], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def workloads(docs: tuple[dict[str, Any], ...]) -> list[dict[str, Any]]:
    """The Deployments and StatefulSets: everything that runs pods."""
    return [d for d in docs if d["kind"] in WORKLOADS]


def service_for_image(image: str) -> Service | None:
    """The service whose image ``image`` is (``registry.invalid/sipsec/sipsec-pkg:0.1.0`` -> pkg,
    whatever registry the kustomize ``images:`` put in front); other images (redis) -> None."""
    m = re.fullmatch(r"(?:.*/)?sipsec-([a-z]+)(?:[:@].*)?", image)
    return SERVICES[m.group(1)] if m else None


def containers(dep: dict[str, Any]) -> Iterator[dict[str, Any]]:
    spec = dep["spec"]["template"]["spec"]
    yield from spec.get("initContainers", [])
    yield from spec["containers"]


@pytest.fixture(scope="module", params=OVERLAYS)
def overlay(request: pytest.FixtureRequest) -> tuple[str, tuple[dict[str, Any], ...]]:
    return request.param, build(f"k8s/overlays/{request.param}")


def test_base_builds_on_its_own() -> None:
    docs = build("k8s/base")
    names = {(d["kind"], d["metadata"]["name"]) for d in workloads(docs)}
    assert names == {("Deployment", n) for n in ("pkg", "location", "proxy", "worker")} | {
        ("StatefulSet", "redis"), ("StatefulSet", "gateway")}


def test_every_object_passes_schema_validation(overlay: tuple[str, tuple[dict[str, Any], ...]]) -> None:
    _, docs = overlay
    for doc in docs:
        if doc["apiVersion"].startswith("monitoring.coreos.com/"):
            continue  # Prometheus Operator kinds: tests/unit/observability/test_k8s_monitoring.py
        try:
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{doc['kind']}/{doc['metadata']['name']}: {exc.message} at {list(exc.path)}")


def test_schema_validation_rejects_a_broken_object() -> None:
    """The validator is live: a Deployment with a misspelt field fails strict validation."""
    dep = dict(kinds(build("k8s/base"), "Deployment")[0])
    dep["spec"] = {**dep["spec"], "replicass": 2}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(dep, K8S_VERSION, strict=True)


def test_overlay_sets_namespace_and_domain(overlay: tuple[str, tuple[dict[str, Any], ...]]) -> None:
    name, docs = overlay
    domain = f"{name}.com"
    ns = kinds(docs, "Namespace")
    assert [n["metadata"]["name"] for n in ns] == [f"sipsec-{name}"]
    assert ns[0]["metadata"]["labels"]["sipsec.io/part-of"] == "sipsec"
    assert ns[0]["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    for doc in docs:
        if doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] == f"sipsec-{name}", doc["metadata"]["name"]
    cms = {c["metadata"]["name"].rsplit("-", 1)[0]: c["data"] for c in kinds(docs, "ConfigMap")}
    assert cms["pkg-env"]["SIPSEC_PKG_DOMAIN"] == domain
    assert cms["proxy-env"]["SIPSEC_PROXY_DOMAINS"] == domain
    pkg = next(d for d in kinds(docs, "Deployment") if d["metadata"]["name"] == "pkg")
    pkg_env = _container_env(pkg["spec"]["template"]["spec"]["containers"][0], _cm_data(docs))
    peers = [e for e in pkg_env["SIPSEC_PKG_PEERS"].split(";") if e]
    for short in OVERLAYS:
        if short != name:
            assert f"{short}.com,pkg.sipsec-{short}.svc.cluster.local:50051,{PIN_STANDIN}" in peers
            # the peer proxy's TLS listener (RFC 3261 §26.2)
            assert f"{short}.com=proxy.sipsec-{short}.svc.cluster.local:5061;transport=tls" in cms["proxy-env"]["SIPSEC_PROXY_ROUTES"]
    assert len(peers) == len(OVERLAYS) - 1 and not any(p.startswith(f"{domain},") for p in peers)


def test_hardened_security_context_and_resources(overlay: tuple[str, tuple[dict[str, Any], ...]]) -> None:
    _, docs = overlay
    for dep in workloads(docs):
        name = dep["metadata"]["name"]
        pod = dep["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", name
        assert pod.get("automountServiceAccountToken") is False, name
        for c in containers(dep):
            sc = c["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True, (name, c["name"])
            assert sc["allowPrivilegeEscalation"] is False, (name, c["name"])
            assert sc["capabilities"]["drop"] == ["ALL"], (name, c["name"])
            assert not sc["capabilities"].get("add"), (name, c["name"])
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(c["resources"][kind]), (name, c["name"], kind)


def test_probes(overlay: tuple[str, tuple[dict[str, Any], ...]]) -> None:
    _, docs = overlay
    for dep in workloads(docs):
        name = dep["metadata"]["name"]
        main = dep["spec"]["template"]["spec"]["containers"][0]
        ports = {p["name"]: p["containerPort"] for p in main["ports"]}
        for probe in ("readinessProbe", "livenessProbe"):
            assert probe in main, (name, probe)
            if name in GRPC_SERVICES:
                assert main[probe]["grpc"]["port"] == ports["grpc"], (name, probe)
        if name == "gateway":  # readiness (store, PKG, users, not draining) apart from liveness
            assert main["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
            assert main["livenessProbe"]["httpGet"] == {"path": "/livez", "port": "http"}


def test_services_select_deployments_and_target_named_ports(overlay: tuple[str, tuple[dict[str, Any], ...]]) -> None:
    _, docs = overlay
    deps = workloads(docs)
    for svc in kinds(docs, "Service"):
        sel = svc["spec"]["selector"]
        matching = [d for d in deps if sel.items() <= d["spec"]["template"]["metadata"]["labels"].items()]
        assert len(matching) == 1, svc["metadata"]["name"]
        names = {p["name"] for p in matching[0]["spec"]["template"]["spec"]["containers"][0]["ports"]}
        for port in svc["spec"]["ports"]:
            assert port["targetPort"] in names, (svc["metadata"]["name"], port)


def _cm_data(docs: tuple[dict[str, Any], ...]) -> dict[str, dict[str, str]]:
    return {c["metadata"]["name"]: c["data"] for c in kinds(docs, "ConfigMap")}


def _container_env(c: dict[str, Any], cms: Mapping[str, Mapping[str, str]], *,
                   pod: str = "pod-0", namespace: str = "sipsec-test") -> dict[str, str]:
    """The environment the kubelet gives container ``c`` of pod ``pod``: envFrom, then env in
    order, ``$(VAR)`` expanded from what precedes it; a pin or Secret gets a well-formed stand-in."""
    env: dict[str, str] = {}
    for src in c.get("envFrom", []):
        ref = src["configMapRef"]["name"]
        assert ref in cms, f"envFrom names a missing ConfigMap {ref}"
        env.update(cms[ref])
    for item in c.get("env", []):
        if "valueFrom" in item:
            if set(item["valueFrom"]) == {"fieldRef"}:  # the downward API: the pod's own name
                field = item["valueFrom"]["fieldRef"]["fieldPath"]
                env[item["name"]] = {"metadata.name": pod, "metadata.namespace": namespace}[field]
                continue
            if set(item["valueFrom"]) == {"configMapKeyRef"}:  # a pin the provider sets: a well-formed one
                ref = item["valueFrom"]["configMapKeyRef"]
                assert ref["name"] == PINS and not ref.get("optional"), item
                env[item["name"]] = PIN_STANDIN
                continue
            assert set(item["valueFrom"]) == {"secretKeyRef"}, item  # a Secret's value: a well-formed hex key
            env[item["name"]] = SECRET_STANDIN
        else:  # $(VAR) refers to a variable set before it (Kubernetes' dependent variables)
            env[item["name"]] = re.sub(r"\$\(([A-Za-z0-9_]+)\)", lambda m: env[m.group(1)], item.get("value", ""))
    return env


def pod_env(doc: dict[str, Any], c: dict[str, Any], docs: tuple[dict[str, Any], ...], ordinal: int = 0) -> dict[str, str]:
    """:func:`_container_env` of container ``c`` in the ``ordinal``-th pod of workload ``doc``."""
    return _container_env(c, _cm_data(docs), pod=f"{doc['metadata']['name']}-{ordinal}",
                          namespace=doc["metadata"]["namespace"])


def test_pins_are_required_values_not_placeholders(overlay: tuple[str, tuple[dict[str, Any], ...]]) -> None:
    """No fingerprint ships in the manifests (no all-zero placeholder): the gateway's and the
    proxy's pin of their PKG and the PKG's pin of its federation peer come from the provider's
    required (non-optional) sipsec-pins ConfigMap keys, which the overlays do not generate."""
    name, docs = overlay
    text = yaml.safe_dump_all(list(docs))
    assert not re.search(r"sha256:0{16,}", text) and not re.search(r"sha256:[0-9a-f]{64}", text)
    assert PINS not in {c["metadata"]["name"].rsplit("-", 1)[0] for c in kinds(docs, "ConfigMap")}
    peer_pins = [f"PEER_PIN_{p.upper()}_COM" for p in OVERLAYS if p != name]
    wanted = {"gateway": ["SIPSEC_GATEWAY_PKG_FINGERPRINT"], "proxy": ["SIPSEC_PROXY_PKG_FINGERPRINT"],
              "pkg": peer_pins}
    for dep in workloads(docs):
        name = dep["metadata"]["name"]
        for var in wanted.get(name, []):
            env = {e["name"]: e for e in dep["spec"]["template"]["spec"]["containers"][0].get("env", [])}
            ref = env[var]["valueFrom"]["configMapKeyRef"]
            assert ref["name"] == PINS and ref.get("optional") is not True, name
            for cm in kinds(docs, "ConfigMap"):
                assert not cm["data"].get(var), (name, cm["metadata"]["name"])  # not shadowed by a default


def test_configuration_is_documented_parses_and_files_are_mounted(overlay: tuple[str, tuple[dict[str, Any], ...]]) -> None:
    _, docs = overlay
    calls: set[tuple[str, ...]] = set()
    for dep in workloads(docs):
        pod = dep["spec"]["template"]["spec"]
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        for c in containers(dep):
            svc = service_for_image(c["image"])
            if svc is None:
                continue
            env = pod_env(dep, c, docs)
            # every setting (SIPSEC_*) documented; others are helpers of $(VAR) references
            undocumented = [v for v in env if v.startswith("SIPSEC_") and not svc.documented(v)]
            assert not undocumented, f"{dep['metadata']['name']}: {undocumented} not in {svc.readme.relative_to(ROOT)}"
            svc.parse_env(env)
            mounts = [(m["mountPath"], m) for m in c.get("volumeMounts", [])]
            for var, value in env.items():
                if value.startswith("/"):
                    under = [m for path, m in mounts if value == path or value.startswith(path.rstrip("/") + "/")]
                    assert under, f"{dep['metadata']['name']}/{c['name']}: {var}={value} is on no volume"
                    vol = volumes[under[0]["name"]]
                    if "secret" in vol and "items" in vol["secret"]:
                        assert value.rsplit("/", 1)[1] in {i["path"] for i in vol["secret"]["items"]}
            argv = list(c.get("command") or []) + list(c.get("args") or [])
            if not c.get("command"):
                argv = [svc.script, *argv]
            for call in script_invocations(argv):
                assert call[0] == svc.script
                assert bool(subcommands(call)) == svc.has_subcommands, call
                calls.add((call[0], *subcommands(call)))
                if call[0] == "sipsec-pkg":
                    parse_pkg_argv(call)
    for invoked, (code, out) in check_help(calls).items():
        assert code == 0 and "usage" in out.lower(), f"{' '.join(invoked)} --help failed:\n{out}"


def test_pkg_reads_kek_and_material_from_secret_and_volume(overlay: tuple[str, tuple[dict[str, Any], ...]]) -> None:
    _, docs = overlay
    dep = next(d for d in kinds(docs, "Deployment") if d["metadata"]["name"] == "pkg")
    vols = {v["name"]: v for v in dep["spec"]["template"]["spec"]["volumes"]}
    assert vols["kek"]["secret"]["secretName"] == "pkg-kek"
    assert "persistentVolumeClaim" in vols["data"]
    server = dep["spec"]["template"]["spec"]["containers"][0]
    data_mount = next(m for m in server["volumeMounts"] if m["name"] == "data")
    assert data_mount["readOnly"] is True
    env = _container_env(server, _cm_data(docs))
    assert "SIPSEC_PKG_KEK" not in env and env["SIPSEC_PKG_KEK_FILE"].startswith("/run/secrets/")


def test_monitoring_annotations_point_at_metrics_ports(overlay: tuple[str, tuple[dict[str, Any], ...]]) -> None:
    _, docs = overlay
    for dep in workloads(docs):
        name = dep["metadata"]["name"]
        if name == "redis":
            continue
        ann = dep["spec"]["template"]["metadata"].get("annotations", {})
        assert ann.get("prometheus.io/scrape") == "true", name
        ports = {p["name"]: p["containerPort"] for p in dep["spec"]["template"]["spec"]["containers"][0]["ports"]}
        assert int(ann["prometheus.io/port"]) == ports.get("metrics", ports.get("http")), name


def _secret_file(dep: dict[str, Any], c: dict[str, Any], path: str) -> tuple[str, str]:
    """(Secret name, key) of the file ``path`` in container ``c``: mounted read-only from a
    required Secret (not optional), readable by the pod's non-root group (0440 with fsGroup)."""
    pod = dep["spec"]["template"]["spec"]
    mount = next(m for m in c["volumeMounts"] if path.startswith(m["mountPath"].rstrip("/") + "/"))
    assert mount["readOnly"] is True, path
    vol = next(v for v in pod["volumes"] if v["name"] == mount["name"])["secret"]
    assert vol.get("optional") is not True, path
    assert vol["defaultMode"] == 0o440 and pod["securityContext"]["fsGroup"] == pod["securityContext"]["runAsGroup"]
    item = next(i for i in vol["items"] if i["path"] == path[len(mount["mountPath"].rstrip("/")) + 1:])
    return vol["secretName"], item["key"]


def test_sip_over_tls_between_gateway_and_proxy_and_between_proxies(
        overlay: tuple[str, tuple[dict[str, Any], ...]]) -> None:
    """Gateway↔proxy and proxy↔proxy SIP is TLS (RFC 3261 §26.2): the certificates, keys and the
    CA are files of the provider's Secrets, every next hop is verified by name (RFC 5922 §7)."""
    name, docs = overlay
    deps = {d["metadata"]["name"]: d for d in workloads(docs)}
    gw_c, px_c = (deps[n]["spec"]["template"]["spec"]["containers"][0] for n in ("gateway", "proxy"))
    gw, px = pod_env(deps["gateway"], gw_c, docs), pod_env(deps["proxy"], px_c, docs)
    assert gw["SIPSEC_GATEWAY_TRANSPORT"] == "tls"
    assert gw["SIPSEC_GATEWAY_PROXY"] == "proxy:5061"
    assert gw["SIPSEC_GATEWAY_TLS_SERVER_NAME"] == f"proxy.sipsec-{name}.svc.cluster.local"
    assert _secret_file(deps["gateway"], gw_c, gw["SIPSEC_GATEWAY_TLS_CERT"]) == ("gateway-tls", "tls.crt")
    assert _secret_file(deps["gateway"], gw_c, gw["SIPSEC_GATEWAY_TLS_KEY"]) == ("gateway-tls", "tls.key")
    assert _secret_file(deps["gateway"], gw_c, gw["SIPSEC_GATEWAY_TLS_CA"]) == ("sipsec-ca", "ca.crt")
    assert px["SIPSEC_PROXY_TLS_LISTEN"] == "0.0.0.0:5061"
    assert _secret_file(deps["proxy"], px_c, px["SIPSEC_PROXY_TLS_CERT"]) == ("proxy-tls", "tls.crt")
    assert _secret_file(deps["proxy"], px_c, px["SIPSEC_PROXY_TLS_KEY"]) == ("proxy-tls", "tls.key")
    assert _secret_file(deps["proxy"], px_c, px["SIPSEC_PROXY_TLS_CA"]) == ("sipsec-ca", "ca.crt")
    assert _secret_file(deps["proxy"], px_c, px["SIPSEC_PROXY_USERS_FILE"])[0] == "proxy-users"
    # every route to another domain is TLS to the peer proxy's TLS port; none is plaintext
    routes = [r.strip() for r in px["SIPSEC_PROXY_ROUTES"].split(",") if r.strip()]
    assert routes and all(r.endswith(":5061;transport=tls") for r in routes), routes
    for peer in OVERLAYS:
        if peer != name:
            assert f"{peer}.com=proxy.sipsec-{peer}.svc.cluster.local:5061;transport=tls" in routes
    # the gateway's SIP listener is TLS now, and named so
    ports = {p["name"]: p["containerPort"] for p in gw_c["ports"]}
    assert ports["sip-tls"] == 5070 and "sip-tcp" not in ports
    assert {p["containerPort"] for p in px_c["ports"] if p["name"] == "sip-tls"} == {5061}


# --------------------------------------------------------------------------- network policies


def _selects(selector: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    if not all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expr in selector.get("matchExpressions", []):
        value = labels.get(expr["key"])
        op = expr["operator"]
        if op == "In" and value not in expr["values"]:
            return False
        if op == "NotIn" and value in expr["values"]:
            return False
        if op == "Exists" and value is None:
            return False
        if op == "DoesNotExist" and value is not None:
            return False
    return True


def _peer_matches(peer: Mapping[str, Any], pol_ns: str, other: tuple[dict[str, str], str, dict[str, str]]) -> bool:
    labels, ns, ns_labels = other
    if "ipBlock" in peer:
        return True
    if "namespaceSelector" in peer:
        if not _selects(peer["namespaceSelector"], ns_labels):
            return False
    elif ns != pol_ns:
        return False
    return _selects(peer.get("podSelector", {}), labels)


def _port_matches(rules_ports: list[dict[str, Any]] | None, port: int, proto: str) -> bool:
    if not rules_ports:
        return True
    return any(p.get("port") in (None, port) and p.get("protocol", "TCP") == proto for p in rules_ports)


Pod = tuple[dict[str, str], str, dict[str, str]]  # labels, namespace, namespace labels


def _allowed(policies: list[dict[str, Any]], pod: Pod, other: Pod, port: int, proto: str, direction: str) -> bool:
    """Kubernetes semantics: a pod selected by any policy of this type allows only what one of them allows."""
    ptype, key, peers_key = ("Ingress", "ingress", "from") if direction == "in" else ("Egress", "egress", "to")
    selecting = [p for p in policies if p["metadata"]["namespace"] == pod[1]
                 and ptype in p["spec"].get("policyTypes", ["Ingress"])
                 and _selects(p["spec"]["podSelector"], pod[0])]
    if not selecting:
        return True
    for pol in selecting:
        for rule in pol["spec"].get(key, []):
            peers = rule.get(peers_key)
            if _port_matches(rule.get("ports"), port, proto) and (
                    not peers or any(_peer_matches(pr, pol["metadata"]["namespace"], other) for pr in peers)):
                return True
    return False


def _flow(policies: list[dict[str, Any]], src: Pod, dst: Pod, port: int, proto: str = "TCP") -> bool:
    return _allowed(policies, src, dst, port, proto, "out") and _allowed(policies, dst, src, port, proto, "in")


@pytest.fixture(scope="module")
def fleet() -> tuple[list[dict[str, Any]], dict[str, dict[str, Pod]]]:
    """Every overlay together: every policy, and a pod per (domain, app) with its labels."""
    policies: list[dict[str, Any]] = []
    pods: dict[str, dict[str, Pod]] = {}
    for name in OVERLAYS:
        docs = build(f"k8s/overlays/{name}")
        policies += kinds(docs, "NetworkPolicy")
        ns = kinds(docs, "Namespace")[0]
        ns_labels = {**ns["metadata"]["labels"], "kubernetes.io/metadata.name": ns["metadata"]["name"]}
        pods[name] = {d["metadata"]["name"]: (d["spec"]["template"]["metadata"]["labels"], ns["metadata"]["name"], ns_labels)
                      for d in workloads(docs)}
    return policies, pods


def test_default_deny_selects_every_pod_both_ways(fleet: tuple[list[dict[str, Any]], dict[str, dict[str, Pod]]]) -> None:
    policies, _ = fleet
    for name in OVERLAYS:
        deny = [p for p in policies if p["metadata"]["name"] == "default-deny-all"
                and p["metadata"]["namespace"] == f"sipsec-{name}"]
        assert len(deny) == 1
        assert deny[0]["spec"]["podSelector"] == {}
        assert set(deny[0]["spec"]["policyTypes"]) == {"Ingress", "Egress"}
        assert not deny[0]["spec"].get("ingress") and not deny[0]["spec"].get("egress")


# docs/architecture.md#services-and-flows: (from, to, port, protocol, across domains?)
FLOWS = [
    ("pkg", "redis", 6379, "TCP", False),
    ("location", "redis", 6379, "TCP", False),
    ("gateway", "redis", 6379, "TCP", False),
    ("redis-exporter", "redis", 6379, "TCP", False),  # server statistics (components/monitoring)
    ("gateway", "pkg", 50051, "TCP", False),
    ("gateway", "worker", 50053, "TCP", False),
    ("gateway", "proxy", 5060, "TCP", False),
    ("gateway", "proxy", 5061, "TCP", False),  # SIP over TLS, SIPSEC_GATEWAY_TRANSPORT=tls
    ("proxy", "location", 50052, "TCP", False),
    ("proxy", "pkg", 50051, "TCP", False),
    ("proxy", "gateway", 5070, "TCP", False),
    ("pkg", "pkg", 50051, "TCP", True),
    ("proxy", "proxy", 5060, "UDP", True),
    ("proxy", "proxy", 5060, "TCP", True),
    ("proxy", "proxy", 5061, "TCP", True),  # the federation routes: ;transport=tls
]
NOT_FLOWS = [
    ("worker", "redis", 6379, "TCP", False),
    ("proxy", "redis", 6379, "TCP", False),
    ("location", "pkg", 50051, "TCP", False),
    ("gateway", "location", 50052, "TCP", False),
    ("worker", "pkg", 50051, "TCP", False),
    ("pkg", "worker", 50053, "TCP", False),
    ("gateway", "gateway", 5070, "TCP", True),
    ("gateway", "proxy", 5061, "TCP", True),  # a gateway speaks only to its own domain's proxy
    ("proxy", "pkg", 50051, "TCP", True),
    ("proxy", "gateway", 5070, "UDP", False),
    ("gateway", "worker", 50053, "TCP", True),
    ("pkg", "redis", 6379, "TCP", True),
    ("location", "location", 50052, "TCP", True),
]


@pytest.mark.parametrize(("src", "dst", "port", "proto", "across"), FLOWS)
def test_each_real_flow_is_allowed(fleet: tuple[list[dict[str, Any]], dict[str, dict[str, Pod]]],
                                   src: str, dst: str, port: int, proto: str, across: bool) -> None:
    policies, pods = fleet
    a, b = OVERLAYS[0], OVERLAYS[1] if across else OVERLAYS[0]
    assert _flow(policies, pods[a][src], pods[b][dst], port, proto)
    assert _flow(policies, pods[b][src], pods[a][dst], port, proto)


@pytest.mark.parametrize(("src", "dst", "port", "proto", "across"), NOT_FLOWS)
def test_other_traffic_is_denied(fleet: tuple[list[dict[str, Any]], dict[str, dict[str, Pod]]],
                                 src: str, dst: str, port: int, proto: str, across: bool) -> None:
    policies, pods = fleet
    a, b = OVERLAYS[0], OVERLAYS[1] if across else OVERLAYS[0]
    assert not _flow(policies, pods[a][src], pods[b][dst], port, proto)


def test_every_pod_may_resolve_names(fleet: tuple[list[dict[str, Any]], dict[str, dict[str, Pod]]]) -> None:
    policies, pods = fleet
    dns: Pod = ({"k8s-app": "kube-dns"}, "kube-system", {"kubernetes.io/metadata.name": "kube-system"})
    for name in OVERLAYS:
        for pod in pods[name].values():
            assert _allowed(policies, pod, dns, 53, "UDP", "out")


def test_no_placeholder_pin_ships_in_any_deployment_file() -> None:
    """Neither k8s/ nor docker-compose.yml carries a fingerprint of its own (an all-zero
    placeholder, or any literal one): pins come from the PKGs' own output at deployment."""
    files = [*sorted((ROOT / "k8s").rglob("*.yaml")), *sorted((ROOT / "k8s").rglob("*.env")),
             ROOT / "docker-compose.yml"]
    assert len(files) > 10
    for path in files:
        text = path.read_text()
        assert not re.search(r"sha256:[0-9a-fA-F]{16,}", text), path
