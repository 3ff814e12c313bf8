"""``sipsec up``'s statistics and reports: ``--calls N`` driven through the ua-gateways' control
API, the calls' summary (setup percentiles, bytes, crypto time per operation), and the tables."""

from __future__ import annotations

import json
import statistics
import time
import urllib.error
import urllib.request
from typing import Any, TextIO

from sipsec_cli.up.environment import Topology, UpError, gateway_token, gateway_token_file
from sipsec_cli.up.supervise import Supervisor

__all__ = ["drive_calls", "print_calls", "print_services", "summarize_calls"]


def _http_json(method: str, url: str, body: dict[str, Any] | None, timeout: float,
               token: str = "") -> dict[str, Any]:
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(url, data=data, method=method,  # noqa: S310 (loopback http only)
                                 headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310
            payload = json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode(errors="replace")[:500]
        raise UpError(f"{method} {url}: HTTP {exc.code} {detail}") from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise UpError(f"{method} {url}: {exc}") from None
    if not isinstance(payload, dict):
        raise UpError(f"{method} {url}: expected a JSON object")
    return payload


_SETTLED = {"established", "ended", "failed"}


def drive_calls(topo: Topology, n: int, timeout_s: float) -> dict[str, Any]:
    """Place ``n`` secured calls from the plan's caller (alice@atlanta.com) to its callee
    (bob@biloxi.com) through the gateways' control API: log both in (the callee answers
    automatically), then for each call POST /v1/calls, poll GET /v1/calls/{id} until it is
    established or failed, and hang up (DELETE), with the token each gateway generated in its
    state directory (:func:`~sipsec_cli.up.environment.gateway_token`)."""
    caller, callee = topo.plan.caller, topo.plan.callee
    caller_dom = topo.plan.domain(caller.rsplit("@", 1)[1])
    callee_dom = topo.plan.domain(callee.rsplit("@", 1)[1])
    gw_a, gw_b = topo.get(caller_dom, "gateway"), topo.get(callee_dom, "gateway")
    if gw_a is None or gw_b is None:
        raise UpError("--calls needs the gateway service of both domains (see --only)")
    base_a, base_b = f"http://{gw_a.addr('http')}", f"http://{gw_b.addr('http')}"
    token_a, token_b = gateway_token(topo, caller_dom), gateway_token(topo, callee_dom)
    metrics = {caller_dom.name: f"http://{gw_a.addr('metrics')}", callee_dom.name: f"http://{gw_b.addr('metrics')}"}
    _http_json("POST", f"{base_b}/v1/users",
               {"aor": callee, "password": topo.passwords[callee], "auto_answer": True}, timeout_s, token_b)
    _http_json("POST", f"{base_a}/v1/users", {"aor": caller, "password": topo.passwords[caller]}, timeout_s,
               token_a)
    before = {name: _crypto_totals(url, timeout_s) for name, url in metrics.items()}
    results: list[dict[str, Any]] = []
    for _ in range(n):
        t0 = time.monotonic()
        call = _http_json("POST", f"{base_a}/v1/calls",
                          {"from": caller, "to": callee, "secure": True, "wait": False}, timeout_s, token_a)
        call_id = str(call.get("id", ""))
        if not call_id:
            raise UpError(f"POST /v1/calls returned no call id: {call}")
        while str(call.get("state")) not in _SETTLED:
            if time.monotonic() - t0 > timeout_s:
                call = {**call, "state": "failed", "reason": f"not settled after {timeout_s:.0f} s"}
                break
            time.sleep(0.01)
            call = _http_json("GET", f"{base_a}/v1/calls/{call_id}", None, timeout_s, token_a)
        call["wall_ms"] = (time.monotonic() - t0) * 1000.0
        if call.get("state") == "established":
            _http_json("DELETE", f"{base_a}/v1/calls/{call_id}", None, timeout_s, token_a)
        results.append(call)
    summary = summarize_calls(results)
    by_side: dict[str, dict[str, float]] = {}
    for name, url in metrics.items():
        after = _crypto_totals(url, timeout_s)
        side: dict[str, float] = {}
        for op, (total, count) in sorted(after.items()):
            t0, c0 = before[name].get(op, (0.0, 0.0))
            if count > c0:
                side[op] = round((total - t0) / (count - c0) * 1000.0, 3)
        by_side[name] = side
    summary["crypto_ms_mean_by_domain"] = by_side
    return summary


def _crypto_totals(base_url: str, timeout_s: float) -> dict[str, tuple[float, float]]:
    """(seconds, operations) per envelope operation so far, from a gateway's
    ``sipsec_gateway_crypto_seconds`` histogram (both sides of a call, every message), from its
    metrics port (``base_url``; never the control API's)."""
    from prometheus_client.parser import text_string_to_metric_families

    try:
        with urllib.request.urlopen(f"{base_url}/metrics", timeout=timeout_s) as resp:  # noqa: S310
            text = resp.read().decode()
    except (urllib.error.URLError, OSError) as exc:
        raise UpError(f"GET {base_url}/metrics: {exc}") from None
    sums: dict[str, float] = {}
    counts: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        if family.name != "sipsec_gateway_crypto_seconds":
            continue
        for sample in family.samples:
            op = sample.labels.get("op", "")
            if sample.name.endswith("_sum"):
                sums[op] = sample.value
            elif sample.name.endswith("_count"):
                counts[op] = sample.value
    return {op: (sums.get(op, 0.0), counts[op]) for op in counts}


def _pct(values: list[float], q: int) -> float | None:
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def summarize_calls(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Setup-time percentiles, signalling bytes and crypto time per operation (caller side),
    from the gateway's call documents (``setup_ms``, ``wire.bytes_total``, ``crypto``)."""
    ok = [r for r in results if r.get("state") in ("established", "ended")]
    setup = [float(r["setup_ms"]) for r in ok if r.get("setup_ms") is not None]
    wire = [int(r["wire"]["bytes_total"]) for r in ok if isinstance(r.get("wire"), dict)]
    crypto: dict[str, list[float]] = {}
    counts: dict[str, int] = {}
    for r in ok:
        for op, cost in (r.get("crypto") or {}).items():
            crypto.setdefault(op, []).append(float(cost["mean_ms"]))
            counts[op] = counts.get(op, 0) + int(cost["count"])
    return {
        "calls": len(results),
        "succeeded": len(ok),
        "failed": len(results) - len(ok),
        "setup_ms_p50": _round(_pct(setup, 50)),
        "setup_ms_p95": _round(_pct(setup, 95)),
        "bytes_per_call_mean": _round(statistics.fmean(wire) if wire else None),
        "crypto_ms_per_op_median": {op: _round(statistics.median(v)) for op, v in sorted(crypto.items())},
        "crypto_ops": dict(sorted(counts.items())),
        "failures": [{"state": r.get("state"), "sip_status": r.get("sip_status"), "reason": r.get("reason")}
                     for r in results if r not in ok],
    }


def print_services(sup: Supervisor, json_output: bool, out: TextIO) -> None:
    """The table of running processes (nothing with ``--json``: the rows go into its object)."""
    if json_output:
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title="sipsec up — two-domain topology")
    for col in ("domain", "service", "pid", "address", "ports", "health", "ready"):
        table.add_column(col)
    for r in sup.rows():
        ports = " ".join(f"{k}={v}" for k, v in r["ports"].items())
        ready = f"{r['ready_s']:.2f} s" if r["ready_s"] is not None else ""
        table.add_row(r["domain"], r["service"], str(r["pid"] or ""), r["address"], ports, r["health"], ready)
    console = Console(file=out, width=120)
    console.print(table)
    console.print(f"state: {sup.topo.state_dir} (logs/, credentials.json)")
    for d in sup.topo.plan.domains:
        if sup.topo.get(d, "gateway") is not None:
            console.print(f"{d.name} gateway control API token (Authorization: Bearer …): "
                          f"{gateway_token_file(sup.topo, d)}")


def print_calls(summary: dict[str, Any], topo: Topology, out: TextIO) -> None:
    """The ``--calls`` table."""
    from rich.console import Console
    from rich.table import Table

    def fmt(v: Any) -> str:
        return "-" if v is None else (f"{v:.2f}" if isinstance(v, float) else str(v))

    caller, callee = (a.removeprefix("sip:") for a in (topo.plan.caller, topo.plan.callee))
    table = Table(title=f"secured calls {caller} → {callee}")
    table.add_column("measure")
    table.add_column("value", justify="right")
    for key in ("calls", "succeeded", "failed", "setup_ms_p50", "setup_ms_p95", "bytes_per_call_mean"):
        table.add_row(key, fmt(summary[key]))
    for op, ms in summary["crypto_ms_per_op_median"].items():
        table.add_row(f"caller crypto {op} (ms, median of calls; {summary['crypto_ops'][op]} ops)", fmt(ms))
    for domain, ops in summary.get("crypto_ms_mean_by_domain", {}).items():
        for op, ms in ops.items():
            table.add_row(f"{domain} gateway {op} (ms, mean)", fmt(ms))
    Console(file=out, width=120).print(table)
