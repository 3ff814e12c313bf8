"""The parts of ``sipsec load`` that need no network: profiles, thresholds, histograms, SIPp files,
and the PKG's bulk import lines."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest
from sipsec_cli.load.profile import Profile, ProfileError
from sipsec_cli.load.run import make_population
from sipsec_cli.load.sipp import REGISTER_XML, UAC_XML, UAS_XML, write_sipp
from sipsec_cli.load.stats import Aggregate, Recorder, ThresholdError, parse_threshold
from sipsec_cli.load.target import DomainTarget, Target
from sipsec_pkg.__main__ import parse_user_lines


def test_constant_ramp_and_step_profiles_offer_their_integral() -> None:
    assert Profile("constant", rate=50, duration_s=10).due(10) == 500
    assert Profile("constant", rate=50, duration_s=10).due(99) == 500  # nothing after the end
    ramp = Profile("ramp", rate=10, rate_to=30, duration_s=10)
    assert ramp.due(10) == 200 and ramp.rate_at(5) == 20
    step = Profile("step", rate=10, rate_to=30, step=10, step_s=2, duration_s=10)
    assert [step.rate_at(t) for t in (0, 2, 4, 9)] == [10, 20, 30, 30]
    assert step.due(10) == 2 * 10 + 2 * 20 + 6 * 30
    hold = Profile("hold", rate=100, concurrent=7, hold_s=5, duration_s=10)
    assert [hold.share(i, 3).concurrent for i in range(3)] == [3, 2, 2]
    assert Profile("constant", rate=90, duration_s=1).share(1, 3).rate == pytest.approx(30)


@pytest.mark.parametrize("kwargs", [{"kind": "burst"}, {"rate": 0}, {"kind": "ramp"}, {"kind": "hold"},
                                    {"kind": "step", "rate_to": 5}])
def test_nonsense_profiles_are_refused(kwargs: dict[str, object]) -> None:
    with pytest.raises(ProfileError):
        Profile(**kwargs)  # type: ignore[arg-type]


def _summary(**over: object) -> dict[str, object]:
    base = {"started": 1000, "not_started": 0, "failed": 4, "achieved_cps": 48.0,
            "setup_ms": {"p50": 20.0, "p95": 45.0, "p99": 120.0, "max": 300.0, "mean": 25.0}}
    base.update(over)
    return base


def test_thresholds_like_k6() -> None:
    s = _summary()
    assert parse_threshold("p95<50ms").check(s)["ok"]
    assert not parse_threshold("p99 < 0.1s").check(s)["ok"]  # 120 ms
    assert parse_threshold("failed<0.5%").check(s) == {"threshold": "failed<0.5%", "value": 0.4, "ok": True}
    assert not parse_threshold("failed<=3").check(s)["ok"]  # a count
    assert parse_threshold("achieved>=45/s").check(s)["ok"]
    assert not parse_threshold("p50<1ms").check(_summary(setup_ms={"p50": None}))["ok"]  # no data fails


@pytest.mark.parametrize("text", ["p95", "p95<<5", "latency<5ms", "p100<5ms", "failed<5ms", "p95<5%", ""])
def test_bad_thresholds_are_refused_with_a_reason(text: str) -> None:
    with pytest.raises(ThresholdError, match="threshold"):
        parse_threshold(text)


def test_snapshots_merge_into_totals_histogram_and_timeline() -> None:
    a, b = Recorder(), Recorder()
    for ms in (10, 20, 30):
        a.setup(ms / 1000)
    b.setup(0.5)
    b.fail("INVITE 503")
    a.counts["completed"] += 3
    agg = Aggregate()
    agg.add(0, a.snapshot(0.0))
    agg.add(1, b.snapshot(0.0))
    agg.add(0, a.snapshot(1.0))  # an empty second
    assert agg.totals["established"] == 4 and agg.totals["completed"] == 3 and agg.failures == {"INVITE 503": 1}
    ms = agg.setup_ms()
    assert ms["p50"] == pytest.approx(20, rel=0.01) and ms["max"] == pytest.approx(500, rel=0.01)
    rows = agg.finish_timeline()
    assert [r["t"] for r in rows] == [0, 1] and rows[0]["established"] == 4 and rows[1]["established"] == 0


def test_pkg_import_lines() -> None:
    pairs = parse_user_lines("# users\nsip:alice@atlanta.com:pa:ss\n\nbob@atlanta.com:x\n", "atlanta.com")
    assert pairs == [("sip:alice@atlanta.com", "pa:ss"), ("sip:bob@atlanta.com", "x")]
    for bad, why in (("alice@biloxi.com:x", "domain"), ("alice@atlanta.com:", "empty password"),
                     ("nocolon", "expected"), ("a@atlanta.com:x\na@atlanta.com:y", "twice")):
        with pytest.raises(SystemExit, match=why):
            parse_user_lines(bad, "atlanta.com")


def test_sipp_files_are_well_formed_and_hold_the_population(tmp_path) -> None:  # type: ignore[no-untyped-def]
    for xml in (REGISTER_XML, UAC_XML, UAS_XML):
        ET.fromstring(xml.split("\n", 2)[2])  # after the XML declaration and DOCTYPE
    assert "[field2]" in UAC_XML and "[field1]" in REGISTER_XML  # the credentials come from the CSVs
    pop = make_population(["atlanta.com", "biloxi.com"], 5)
    target = Target("addresses", {d: DomainTarget(d, ("127.0.0.1", 5000 + i)) for i, d in enumerate(pop.users)})
    paths = write_sipp(tmp_path / "sipp", target, pop)
    assert {p.name for p in paths} >= {"uac.xml", "uas.xml", "register.xml", "calls-atlanta.com.csv",
                                       "register-biloxi.com.csv", "commands.txt"}
    assert all(p.stat().st_mode & 0o077 == 0 for p in paths)  # phone passwords inside
    calls = (tmp_path / "sipp" / "calls-atlanta.com.csv").read_text().splitlines()
    assert calls[0] == "RANDOM" and len(calls) > 100
    atlanta = {u for u, _, _ in pop.users["atlanta.com"]}
    biloxi = {f"{u}@biloxi.com" for u, _, _ in pop.users["biloxi.com"]}
    fields = [line.split(";") for line in calls[1:]]
    assert all(f[0] in atlanta and f[1] in biloxi for f in fields)
    assert all(f[2].startswith(f"[authentication username={f[0]} password=") for f in fields)
    assert len({(f[0], f[1]) for f in fields}) > 10  # random pairs, not one


def test_the_histogram_exports_in_hdr_encoding() -> None:
    from hdrh.histogram import HdrHistogram
    from sipsec_cli.load.stats import SparseHistogram

    h = SparseHistogram()
    for us in (1_500, 12_345, 12_399, 250_000, 3_000_000):
        h.record(us)
    assert h.percentile(50) == 12_300 and h.percentiles_ms()["max"] == 3000.0
    back = HdrHistogram.decode(h.hdr().encode())
    assert back.get_total_count() == 5
    assert back.get_value_at_percentile(50) == pytest.approx(12_345, rel=0.01)


def test_pkg_user_import_command(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import os
    import subprocess
    import sys
    from pathlib import Path

    pkg = str(Path(sys.executable).parent / "sipsec-pkg")
    env = {**os.environ, "SIPSEC_PKG_DATA_DIR": str(tmp_path), "SIPSEC_PKG_STORE": "memory"}
    env["SIPSEC_PKG_KEK"] = subprocess.run([pkg, "gen-kek"], capture_output=True, text=True, check=True).stdout.strip()
    subprocess.run([pkg, "init", "--domain", "atlanta.com"], env=env, capture_output=True, check=True)
    (tmp_path / "users.txt").write_text("sip:u1@atlanta.com:one\nu2@atlanta.com:t:w:o\n")
    done = subprocess.run([pkg, "user", "import", str(tmp_path / "users.txt")], env=env, capture_output=True,
                          text=True, check=False)
    assert done.returncode == 0 and "imported 2 users" in done.stderr
    listed = subprocess.run([pkg, "user", "list"], env=env, capture_output=True, text=True, check=True).stdout
    assert listed.split() == ["sip:u1@atlanta.com", "sip:u2@atlanta.com"]
    bad = subprocess.run([pkg, "user", "import", "-"], env=env, input="u3@biloxi.com:x\n", capture_output=True,
                         text=True, check=False)
    assert bad.returncode == 1 and "line 1" in bad.stderr and "not in this PKG's domain" in bad.stderr
    assert "u3" not in subprocess.run([pkg, "user", "list"], env=env, capture_output=True, text=True).stdout
