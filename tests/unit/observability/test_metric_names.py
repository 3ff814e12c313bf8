"""Every metric a service registers follows the Prometheus conventions: ``promtool check
metrics`` finds nothing in each service's exposition, and our own rules hold on top — the
``sipsec_`` prefix, ``_total`` counters, base units, label names from bounded sets (never an
identity, a Call-ID, an address or a token), and ``sipsec_build_info`` with the service name."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Callable

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

pytestmark = pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed (make install)")


def _pkg() -> bytes:
    from sipsec_pkg.metrics import PkgMetrics

    m = PkgMetrics()
    m.peers(["biloxi.com"])
    return bytes(m.render())


def _location() -> bytes:
    from sipsec_location.metrics import LocationMetrics

    return generate_latest(LocationMetrics().registry)


def _proxy() -> bytes:
    from sipsec_proxy.metrics import ProxyMetrics

    return generate_latest(ProxyMetrics().registry)


def _worker() -> bytes:
    from sipsec_worker.metrics import WorkerMetrics

    return generate_latest(WorkerMetrics().registry)


def _gateway() -> bytes:
    from sipsec_gateway.metrics import GatewayMetrics

    return bytes(GatewayMetrics().exposition())


SERVICES: dict[str, Callable[[], bytes]] = {
    "pkg": _pkg, "location": _location, "proxy": _proxy, "worker": _worker, "gateway": _gateway,
}

#: Label names that would carry an identity, an id or a secret (unbounded, or worse).
FORBIDDEN_LABELS = re.compile(r"(?i)^(aor|user|username|uri|call_?id|tag|branch|token|password|address|addr|ip|"
                              r"client|contact|from|to|identity|session)$")
#: Unit suffixes of a histogram or summary (base units only).
UNITS = ("_seconds", "_bytes", "_size", "_items", "_ratio")
#: Families that come from prometheus_client's default process/platform collectors.
FOREIGN = ("process_", "python_")


def promtool_problems(exposition: bytes) -> str:
    """What ``promtool check metrics`` says about ``exposition`` (read on stdin); "" when clean."""
    res = subprocess.run(["promtool", "check", "metrics"], input=exposition, capture_output=True, timeout=30)
    return "" if res.returncode == 0 else (res.stdout + res.stderr).decode()


def test_promtool_flags_a_badly_named_metric() -> None:
    """The check itself can fail: a counter without ``_total`` and a non-base unit."""
    bad = (b"# HELP sipsec_bad_requests Requests.\n# TYPE sipsec_bad_requests counter\nsipsec_bad_requests 1\n"
           b"# HELP sipsec_bad_latency_milliseconds Latency.\n# TYPE sipsec_bad_latency_milliseconds gauge\n"
           b"sipsec_bad_latency_milliseconds 1\n")
    problems = promtool_problems(bad)
    assert "_total" in problems and "base unit" in problems, problems


@pytest.mark.parametrize("service", SERVICES)
def test_promtool_check_metrics_is_clean(service: str) -> None:
    assert promtool_problems(SERVICES[service]()) == ""


@pytest.mark.parametrize("service", SERVICES)
def test_names_units_and_labels_follow_the_project_rules(service: str) -> None:
    families = list(text_string_to_metric_families(SERVICES[service]().decode()))
    ours = [f for f in families if not f.name.startswith(FOREIGN)]
    assert ours
    for family in ours:
        assert family.name.startswith("sipsec_"), family.name
        assert family.documentation.strip(), family.name
        if family.type in ("histogram", "summary"):
            assert family.name.endswith(UNITS), family.name
        assert not re.search(r"_(milli|micro|kilo|mega)|_ms$|_msec", family.name), family.name
        for sample in family.samples:
            bad = [label for label in sample.labels if FORBIDDEN_LABELS.match(label)]
            assert not bad, (family.name, bad)
    (info,) = [f for f in families if f.name == "sipsec_build_info"]
    (sample,) = info.samples
    assert sample.value == 1 and sample.labels["service"] == service
    assert set(sample.labels) == {"version", "revision", "service"} and sample.labels["version"]


def test_the_process_wide_metrics_are_clean() -> None:
    """The library's metrics in the default registry (store, engine, envelope, SIP transport),
    which every service's ``/metrics`` serves beside its own."""
    from prometheus_client import REGISTRY
    from sipsec.stores.access import store_metrics

    store_metrics().errors.labels("pkg", "get_user", "timeout")
    exposition = generate_latest(REGISTRY)
    assert b"sipsec_store_operation_seconds" in exposition
    assert promtool_problems(exposition) == ""


def test_federation_peer_labels_come_from_the_configuration() -> None:
    """Per-peer series exist for the configured peers only (an unconfigured domain is refused
    before any fetch, so it never becomes a label value)."""
    families = {f.name: f for f in text_string_to_metric_families(_pkg().decode())}
    peers = {s.labels["peer"] for s in families["sipsec_pkg_federation_fetches"].samples}
    assert peers == {"biloxi.com"}
