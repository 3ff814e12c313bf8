"""What a load run measured: HDR-style setup-time histograms, a per-second timeline, failures by reason, thresholds.

Generators (one per process) keep a :class:`Recorder` and hand :meth:`Recorder.snapshot` dicts
(plain JSON: counters, the second's setup times in µs) to the coordinator, whose
:class:`Aggregate` merges them into totals, the whole run's histogram and the timeline.

The live histogram is :class:`SparseHistogram`: HDR's bucketing (3 significant digits) kept as
a dict of the buckets in use, so recording, merging and percentiles cost the buckets used, not
the whole range (``hdrhistogram``'s pure-Python ``add`` and percentile walks cost ~0.3 s each at
this range and starved the generator's event loop). The report exports the run's histogram in
HDR's own encoding (``hdrhistogram``: :meth:`SparseHistogram.hdr`), for HdrHistogram tools.
Thresholds are k6-style expressions over the totals (:func:`parse_threshold`).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from hdrh.histogram import HdrHistogram

__all__ = ["Aggregate", "Recorder", "SparseHistogram", "Threshold", "ThresholdError", "parse_threshold"]

#: Setup times are recorded in microseconds, 1 µs to 10 minutes, 3 significant digits.
_LOW_US, _HIGH_US, _DIGITS = 1, 600_000_000, 3
_COUNTERS = ("offered", "started", "established", "completed", "failed", "answered")


def _bucket(us: int) -> int:
    """The lowest value of ``us``'s bucket: ``us`` to 3 significant digits (HDR's precision)."""
    if us < 1000:
        return us
    scale = 10 ** (len(str(us)) - _DIGITS)
    return int(us // scale * scale)


class SparseHistogram:
    """Counts per HDR bucket (3 significant digits), only of the buckets in use."""

    def __init__(self) -> None:
        self.counts: Counter[int] = Counter()
        self.total = 0
        self.sum_us = 0
        self.max_us = 0

    def record(self, us: int, count: int = 1) -> None:
        us = max(_LOW_US, min(_HIGH_US, int(us)))
        self.counts[_bucket(us)] += count
        self.total += count
        self.sum_us += us * count
        self.max_us = max(self.max_us, us)

    def add(self, other: SparseHistogram) -> None:
        self.counts.update(other.counts)
        self.total += other.total
        self.sum_us += other.sum_us
        self.max_us = max(self.max_us, other.max_us)

    def percentile(self, q: float) -> int:
        """The smallest bucket value at or below which ``q`` % of the values lie (HDR's definition)."""
        wanted = max(1, math.ceil(self.total * q / 100.0))
        seen = 0
        for value in sorted(self.counts):
            seen += self.counts[value]
            if seen >= wanted:
                return value
        return self.max_us

    def percentiles_ms(self) -> dict[str, float | None]:
        if self.total == 0:
            return {"p50": None, "p90": None, "p95": None, "p99": None, "max": None, "mean": None}
        out: dict[str, float | None] = {f"p{q}": round(self.percentile(q) / 1000.0, 3) for q in (50, 90, 95, 99)}
        out["max"] = round(self.max_us / 1000.0, 3)
        out["mean"] = round(self.sum_us / self.total / 1000.0, 3)
        return out

    def hdr(self) -> str:
        """This histogram in HdrHistogram's compressed encoding (base64), or "" when empty."""
        if self.total == 0:
            return ""
        hist = HdrHistogram(_LOW_US, _HIGH_US, _DIGITS)
        for value, count in self.counts.items():
            hist.record_value(value, count)
        return str(hist.encode().decode())


@dataclass
class Recorder:
    """One generator's counters since its last snapshot (and its live gauges)."""

    counts: Counter[str] = field(default_factory=Counter)
    failures: Counter[str] = field(default_factory=Counter)
    setups_us: list[int] = field(default_factory=list)
    in_flight: int = 0
    held: int = 0  # calls established and not yet hung up

    def setup(self, seconds: float) -> None:
        self.counts["established"] += 1
        self.setups_us.append(max(_LOW_US, min(_HIGH_US, int(seconds * 1e6))))

    def fail(self, reason: str) -> None:
        self.counts["failed"] += 1
        self.failures[reason] += 1

    def snapshot(self, t: float) -> dict[str, Any]:
        """The counters since the last snapshot (then reset), the gauges, and ``t`` (seconds into the run)."""
        snap = {"t": t, "counts": dict(self.counts), "failures": dict(self.failures), "setups_us": self.setups_us,
                "in_flight": self.in_flight, "held": self.held}
        self.counts = Counter()
        self.failures = Counter()
        self.setups_us = []
        return snap


class Aggregate:
    """Totals, the run's histogram and the per-second timeline, merged from every generator's snapshots."""

    def __init__(self) -> None:
        self.totals: Counter[str] = Counter()
        self.failures: Counter[str] = Counter()
        self.hist = SparseHistogram()
        self.timeline: list[dict[str, Any]] = []
        self._second: dict[int, dict[str, Any]] = {}
        self._gauges: dict[int, tuple[int, int]] = {}  # generator -> (in flight, held)
        self.peak_held = 0

    def add(self, generator: int, snap: dict[str, Any]) -> None:
        counts = snap.get("counts", {})
        self.totals.update(counts)
        self.failures.update(snap.get("failures", {}))
        self._gauges[generator] = (int(snap.get("in_flight", 0)), int(snap.get("held", 0)))
        second = int(snap["t"])
        row = self._second.setdefault(second, {"hist": SparseHistogram(), "counts": Counter(), "failures": Counter()})
        row["counts"].update(counts)
        row["failures"].update(snap.get("failures", {}))
        for us in snap.get("setups_us", ()):
            self.hist.record(us)
            row["hist"].record(us)
        in_flight, held = self.gauges()
        row["in_flight"], row["held"] = in_flight, held
        self.peak_held = max(self.peak_held, held)

    def gauges(self) -> tuple[int, int]:
        return sum(g[0] for g in self._gauges.values()), sum(g[1] for g in self._gauges.values())

    def finish_timeline(self) -> list[dict[str, Any]]:
        """One row per second of the run: counts, setup percentiles of the calls set up in it, gauges."""
        rows = []
        for second in sorted(self._second):
            row = self._second[second]
            rows.append({"t": second, **{k: int(row["counts"].get(k, 0)) for k in _COUNTERS},
                         "failures": dict(row["failures"]), "in_flight": row.get("in_flight", 0),
                         "held": row.get("held", 0), "setup_ms": row["hist"].percentiles_ms()})
        self.timeline = rows
        return rows

    def setup_ms(self) -> dict[str, float | None]:
        return self.hist.percentiles_ms()


class ThresholdError(ValueError):
    """A threshold expression that cannot be parsed (the message says what is accepted)."""


_THRESHOLD = re.compile(r"^\s*(p\d{1,2}(?:\.\d+)?|max|mean|failed|achieved)\s*(<=|<|>=|>)\s*"
                        r"(\d+(?:\.\d+)?)\s*(ms|s|%|/s)?\s*$")


@dataclass(frozen=True)
class Threshold:
    """``metric op value``: setup percentiles/max/mean in ms, ``failed`` in % or a count,
    ``achieved`` in completed calls per second."""

    text: str
    metric: str
    op: str
    value: float
    percent: bool

    def measure(self, summary: dict[str, Any]) -> float | None:
        if self.metric == "failed":
            attempted = summary["started"] + summary["not_started"]
            failed = summary["failed"]
            return (100.0 * failed / attempted if attempted else 0.0) if self.percent else float(failed)
        if self.metric == "achieved":
            return float(summary["achieved_cps"])
        value = summary["setup_ms"].get(self.metric)
        return None if value is None else float(value)

    def check(self, summary: dict[str, Any]) -> dict[str, Any]:
        got = self.measure(summary)
        ok = got is not None and {"<": got < self.value, "<=": got <= self.value,
                                  ">": got > self.value, ">=": got >= self.value}[self.op]
        return {"threshold": self.text, "value": None if got is None else round(got, 3), "ok": bool(ok)}


def parse_threshold(text: str) -> Threshold:
    """``p95<50ms``, ``p99<=0.2s``, ``max<1s``, ``failed<0.5%``, ``failed<=3``, ``achieved>=45/s``."""
    m = _THRESHOLD.match(text)
    if m is None:
        raise ThresholdError(f"threshold {text!r}: expected METRIC OP VALUE[UNIT], METRIC one of pNN, max, mean "
                             "(ms or s), failed (% or a count), achieved (/s); OP one of < <= > >=")
    metric, op, number, unit = m.group(1), m.group(2), float(m.group(3)), m.group(4) or ""
    if metric.startswith("p") and not 0 < float(metric[1:]) < 100:
        raise ThresholdError(f"threshold {text!r}: a percentile is between 0 and 100")
    timed = metric.startswith("p") or metric in ("max", "mean")
    allowed = {"ms", "s", ""} if timed else ({"%", ""} if metric == "failed" else {"/s", ""})
    if unit not in allowed:
        raise ThresholdError(f"threshold {text!r}: {metric} takes {' or '.join(sorted(u for u in allowed if u))}")
    value = number * 1000.0 if unit == "s" else number
    return Threshold(text.strip(), metric, op, value, unit == "%")
