"""Threshold partials per node (sipsec.pkgclient): each node's answer time and its invalid partials,
labelled by the connection's configured name (never by the index an answer claims), and the
families pass the metric lint (``promtool check metrics`` and the project's naming rules)."""

from __future__ import annotations

import shutil
import subprocess
import time
from dataclasses import dataclass, field
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from sipsec.ibc import (
    DomainParams,
    MasterShare,
    PartialKey,
    Purpose,
    partial_extract,
    setup_threshold,
)
from sipsec.pkgclient import (
    KeyResponse,
    PkgClientError,
    PkgClientMetrics,
    Session,
    ThresholdPkgClient,
)

AOR = "sip:carol@chicago.com"
HIST = "sipsec_pkgclient_threshold_node_duration_seconds"


@pytest.fixture(scope="module")
def domain() -> tuple[list[MasterShare], DomainParams]:
    return setup_threshold("chicago.com", 2, 4)


@dataclass
class FakeNode:
    """Stands for a ``PkgClient`` of one node: answers with its share's partial key (or fails)."""

    name: str
    share: MasterShare | None
    params: DomainParams
    delay: float = 0.0
    claim: int | None = None  # answer under another index than the share's
    node_index: int | None = None
    session: Session | None = field(default_factory=lambda: Session(AOR, "token", 600))

    @property
    def target(self) -> str:
        return f"{self.name}.nodes.test:7000"

    async def fetch_key(self, purpose: Purpose, *, period: int | None = None, next_period: bool = False) -> KeyResponse:
        import asyncio

        await asyncio.sleep(self.delay)
        if self.share is None:
            raise PkgClientError("node down")
        assert period is not None
        partial = partial_extract(self.share, self.params.identity(AOR, purpose, period))
        if self.claim is not None:
            partial = PartialKey(index=self.claim, value=partial.value)
        return KeyResponse(AOR, purpose, period, 0.0, 0.0, None, partial)


def _samples(registry: CollectorRegistry, name: str) -> dict[tuple[str, ...], float]:
    return {tuple(sorted(s.labels.items())): s.value for m in registry.collect() for s in m.samples if s.name == name}


async def test_every_node_is_timed_by_result_under_its_configured_name(domain: Any) -> None:
    shares, params = domain
    liar = MasterShare(shares[2].index, 12345)  # a wrong share that claims node 3's index
    nodes = [FakeNode("pkg-a", shares[0], params, delay=0.05), FakeNode("pkg-b", shares[1], params),
             FakeNode("pkg-c", liar, params), FakeNode("pkg-d", None, params)]
    registry = CollectorRegistry()
    metrics = PkgClientMetrics(registry)
    metrics.nodes(n.name for n in nodes)
    client = ThresholdPkgClient(nodes, metrics=metrics, clock=time.time)  # type: ignore[arg-type]
    result = await client.get_private_key(params, Purpose.SIG)
    assert result.used_nodes == (1, 2)
    counts = {dict(k)["node"] + "/" + dict(k)["result"]: v for k, v in _samples(registry, HIST + "_count").items()
              if v}
    assert counts == {"pkg-a/ok": 1, "pkg-b/ok": 1, "pkg-c/invalid": 1, "pkg-d/error": 1}
    sums = {dict(k)["node"]: v for k, v in _samples(registry, HIST + "_sum").items() if v}
    assert sums["pkg-a"] >= 0.05 > sums["pkg-b"]  # each node's own round trip
    assert _samples(registry, "sipsec_pkgclient_bad_threshold_shares_total")[(("node", "pkg-c"),)] == 1


async def test_a_claimed_index_never_becomes_a_label(domain: Any) -> None:
    shares, params = domain
    nodes = [FakeNode("pkg-a", shares[0], params), FakeNode("pkg-b", shares[1], params),
             FakeNode("pkg-c", shares[2], params, claim=4242)]
    registry = CollectorRegistry()
    client = ThresholdPkgClient(nodes, metrics=PkgClientMetrics(registry))  # type: ignore[arg-type]
    for _ in range(3):
        await client.get_private_key(params, Purpose.ENC)
    labels = {dict(k)["node"] for k in _samples(registry, HIST + "_count")}
    assert labels == {"pkg-a", "pkg-b", "pkg-c"}


async def test_configured_nodes_show_before_any_answer() -> None:
    registry = CollectorRegistry()
    PkgClientMetrics(registry).nodes(["pkg-a", "pkg-b"])
    counts = _samples(registry, HIST + "_count")
    assert {dict(k)["node"] for k in counts} == {"pkg-a", "pkg-b"} and set(counts.values()) == {0.0}


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed (make install)")
def test_the_families_pass_the_metric_lint() -> None:
    """``promtool check metrics`` and the naming rules of tests/unit/observability/test_metric_names.py."""
    from tests.unit.observability.test_metric_names import FORBIDDEN_LABELS, UNITS

    registry = CollectorRegistry()
    metrics = PkgClientMetrics(registry)
    metrics.nodes(["pkg-a"])
    metrics.node_errors.labels("UNAVAILABLE").inc()
    metrics.keys.labels("threshold", "ok").inc()
    exposition = generate_latest(registry)
    res = subprocess.run(["promtool", "check", "metrics"], input=exposition, capture_output=True, timeout=30)
    assert res.returncode == 0, (res.stdout + res.stderr).decode()
    for family in text_string_to_metric_families(exposition.decode()):
        assert family.name.startswith("sipsec_pkgclient_") and family.documentation.strip()
        if family.type == "histogram":
            assert family.name.endswith(UNITS)
        for sample in family.samples:
            assert not [label for label in sample.labels if FORBIDDEN_LABELS.match(label)]


def test_the_gateway_exposes_them_for_its_configured_nodes() -> None:
    from sipsec_gateway.config import GatewayConfig
    from sipsec_gateway.gateway import Gateway

    gateway = Gateway(GatewayConfig(domain="chicago.com", pkg="127.0.0.1:7001,127.0.0.1:7002", pkg_plaintext=True))
    text = gateway.metrics.exposition().decode()
    for target in ("127.0.0.1:7001", "127.0.0.1:7002"):
        assert f'{HIST}_count{{node="{target}",result="ok"}} 0.0' in text
        assert f'sipsec_pkgclient_bad_threshold_shares_total{{node="{target}"}} 0.0' in text
