"""``sipsec load``'s report: the summary document (JSON), the live table, and the HTML page with plots.

The HTML page is self-contained (plotly with its JavaScript inline, no network): setup latency
over time (p50/p95/p99 per second), offered vs achieved rate, concurrency (in flight, held),
CPU and RSS per process, and failures per second by reason.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sipsec_cli.load.stats import Aggregate

if TYPE_CHECKING:
    from rich.table import Table

    from sipsec_cli.load.run import LoadOptions
    from sipsec_cli.load.target import Target

__all__ = ["live_table", "summarize", "write_html", "write_json"]


def _per_held(baseline: dict[str, dict[str, float]], peak: dict[str, dict[str, float]],
              held: int) -> dict[str, float]:
    """RSS growth per held call of each process (KiB), from the baseline to when most calls were held."""
    if held <= 0:
        return {}
    return {label: round((peak[label]["rss_kib"] - baseline[label]["rss_kib"]) / held, 2)
            for label in peak if label in baseline}


def summarize(target: Target, options: LoadOptions, agg: Aggregate, samples: list[dict[str, Any]],
              baseline: dict[str, dict[str, float]], peak: dict[str, dict[str, float]], run_s: float,
              provision_s: float) -> dict[str, Any]:
    """The report document; ``thresholds`` holds each threshold's verdict and ``ok`` all of them."""
    timeline = agg.finish_timeline()
    totals = agg.totals
    not_started = agg.failures.get("not started: in-flight bound", 0)
    started = int(totals.get("started", 0))
    completed = int(totals.get("completed", 0))
    active = [r for r in timeline if r["completed"] or r["offered"]]
    span = max(1.0, (active[-1]["t"] - active[0]["t"] + 1) if active else options.profile.duration_s)
    summary: dict[str, Any] = {
        "target": target.kind,
        "domains": {d: {"phone": f"{t.phone[0]}:{t.phone[1]}", "api": t.api} for d, t in target.domains.items()},
        "users_per_domain": options.users,
        "pairs": "one pair (best case)" if options.one_pair else "random caller/callee pairs",
        "profile": vars(options.profile),
        "procs": options.procs,
        "provision_s": round(provision_s, 2),
        "run_s": round(run_s, 2),
        "offered": int(totals.get("offered", 0)),
        "started": started,
        "not_started": not_started,
        "established": int(totals.get("established", 0)),
        "completed": completed,
        "failed": int(totals.get("failed", 0)),
        "answered": int(totals.get("answered", 0)),
        "completed_ratio": round(completed / max(1, started + not_started), 5),
        "offered_cps": round(int(totals.get("offered", 0)) / options.profile.duration_s, 2),
        "achieved_cps": round(completed / span, 2),
        "setup_ms": agg.setup_ms(),
        "setup_hdr": agg.hist.hdr(),
        "failures": dict(agg.failures.most_common()),
        "concurrent_calls_held": agg.peak_held,
        "rss_kib_per_held_call": _per_held(baseline, peak, agg.peak_held),
        "timeline": timeline,
        "processes": samples,
    }
    verdicts = [t.check(summary) for t in options.thresholds]
    summary["thresholds"] = verdicts
    summary["ok"] = all(v["ok"] for v in verdicts)
    return summary


def live_table(agg: Aggregate, options: LoadOptions, now: float) -> Table:
    from rich.table import Table

    t = agg.totals
    ms = agg.setup_ms()
    in_flight, held = agg.gauges()

    def fmt(v: float | None) -> str:
        return "-" if v is None else f"{v:.1f}"

    table = Table(title=f"sipsec load — {options.profile.kind}, {now:.0f} s of {options.profile.duration_s:.0f} s")
    for col in ("offered", "achieved/s", "in flight", "held", "established", "completed", "failed",
                "p50 ms", "p95 ms", "p99 ms"):
        table.add_column(col, justify="right")
    table.add_row(str(t.get("offered", 0)), f"{t.get('completed', 0) / max(1.0, now):.1f}", str(in_flight), str(held),
                  str(t.get("established", 0)), str(t.get("completed", 0)), str(t.get("failed", 0)),
                  fmt(ms["p50"]), fmt(ms["p95"]), fmt(ms["p99"]))
    for reason, count in agg.failures.most_common(5):
        table.add_row(f"[red]{reason}", str(count), *[""] * 8)
    return table


def write_json(summary: dict[str, Any], path: Path) -> None:
    path.write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")


def write_html(summary: dict[str, Any], path: Path) -> None:
    """The report page: six plots over the run, plotly inline (opens offline in any browser)."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    rows = summary["timeline"]
    t = [r["t"] for r in rows]
    fig = make_subplots(rows=3, cols=2, subplot_titles=(
        "setup latency (ms) per second", "rate offered vs achieved (calls/s)", "concurrency (calls)",
        "failures per second, by reason", "CPU per process (% of a core)", "RSS per process (MiB)"))
    for q in ("p50", "p95", "p99"):
        fig.add_trace(go.Scatter(x=t, y=[r["setup_ms"][q] for r in rows], name=f"setup {q}", mode="lines+markers"),
                      row=1, col=1)
    fig.add_trace(go.Scatter(x=t, y=[r["offered"] for r in rows], name="offered"), row=1, col=2)
    fig.add_trace(go.Scatter(x=t, y=[r["completed"] for r in rows], name="achieved (completed)"), row=1, col=2)
    fig.add_trace(go.Scatter(x=t, y=[r["in_flight"] for r in rows], name="in flight"), row=2, col=1)
    fig.add_trace(go.Scatter(x=t, y=[r["held"] for r in rows], name="held (established)"), row=2, col=1)
    for reason in summary["failures"] or {}:
        fig.add_trace(go.Bar(x=t, y=[r["failures"].get(reason, 0) for r in rows], name=reason), row=2, col=2)
    samples = summary["processes"]
    labels = sorted({label for s in samples for label in s["processes"]})
    st = [s["t"] for s in samples]
    for label in labels:
        fig.add_trace(go.Scatter(x=st, y=[s["processes"].get(label, {}).get("cpu_percent") for s in samples],
                                 name=f"CPU {label}"), row=3, col=1)
        fig.add_trace(go.Scatter(x=st, y=[(s["processes"].get(label, {}).get("rss_kib") or 0) / 1024 for s in samples],
                                 name=f"RSS {label}"), row=3, col=2)
    fig.update_layout(height=1100, title_text=_title(summary), legend={"orientation": "h"})
    keys = ("target", "pairs", "users_per_domain", "offered", "completed", "failed", "offered_cps",
            "achieved_cps", "concurrent_calls_held")
    facts = "".join(f"<tr><th>{k}</th><td id='{k}'>{summary[k]}</td></tr>" for k in keys)
    facts += "".join(f"<tr><th>setup {k} (ms)</th><td>{v}</td></tr>" for k, v in summary["setup_ms"].items())
    verdicts = "".join(f"<li class='{'ok' if v['ok'] else 'fail'}'>{v['threshold']}: {v['value']} "
                       f"{'ok' if v['ok'] else 'FAILED'}</li>" for v in summary["thresholds"])
    body = fig.to_html(include_plotlyjs=True, full_html=False, div_id="plots")
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>{_title(summary)}</title>"
            "<style>body{font-family:sans-serif} .fail{color:#b00} th{text-align:left;padding-right:1em}</style>"
            f"</head><body><h1>{_title(summary)}</h1><table id='summary'>{facts}</table>"
            f"<ul id='thresholds'>{verdicts}</ul>{body}</body></html>")
    path.write_text(page, encoding="utf-8")


def _title(summary: dict[str, Any]) -> str:
    p = summary["profile"]
    return (f"sipsec load: {summary['target']}, {p['kind']} profile, {summary['users_per_domain']} users/domain, "
            f"{summary['pairs']}")
