"""The sipsec Grafana dashboards, as code (grafana-foundation-sdk).

Writes one JSON file per dashboard into ``deploy/grafana/dashboards/`` (committed; a test
regenerates them and compares the bytes):

* ``sipsec-pkg.json``: request rate, p50/p95/p99 latency and outcomes per RPC, logins and
  throttling, keys issued by purpose, federation (per peer), the store, readiness, builds and
  key-material checks, the PKG nodes up;
* ``sipsec-calls.json``: call setups per second, setup latency secured vs plain, failures and
  envelope rejections by reason, envelope and crypto-worker latencies, the worker pool, the
  gateways' stores;
* ``sipsec-proxy-location.json``: SIP requests, transaction latency, rejections, registrations,
  the location cache, transports; the location service's RPCs and bindings; readiness, builds.

Every dashboard has the variables ``datasource`` (a Prometheus), ``domain`` and ``instance``;
every panel query selects on the scrape jobs of ``deploy/prometheus/prometheus.yml``
(``sipsec-pkg``, ``sipsec-location``, ``sipsec-proxy``, ``sipsec-gateway``, ``sipsec-worker``)
and on ``domain=~"$domain", instance=~"$instance"``. Only metrics the services export today
are used (``tests/e2e/observability`` checks that every panel query returns data from a live
``sipsec up``).

    python deploy/grafana/dashboards.py            # rewrite deploy/grafana/dashboards/*.json
    python deploy/grafana/dashboards.py --out DIR  # write them elsewhere
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from grafana_foundation_sdk.builders import common as gc
from grafana_foundation_sdk.builders import dashboard as gd
from grafana_foundation_sdk.builders import prometheus as gp
from grafana_foundation_sdk.builders import timeseries as gt
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common as mc
from grafana_foundation_sdk.models import dashboard as md

__all__ = ["DASHBOARDS", "Dash", "Panel", "Query", "build", "main", "render"]

HERE = Path(__file__).resolve().parent
OUT = HERE / "dashboards"

RATE = "$__rate_interval"
DATASOURCE = md.DataSourceRef(type_val="prometheus", uid="${datasource}")
#: gRPC status codes that spend the PKG availability budget (server-side failures).
SERVER_ERRORS = "INTERNAL|UNAVAILABLE|UNKNOWN|DEADLINE_EXCEEDED|DATA_LOSS"


def sel(job: str, *extra: str, domain: str = '"$domain"') -> str:
    """A label selector body: the job, the dashboard variables and ``extra`` matchers."""
    return ", ".join([f'job="{job}"', f"domain=~{domain}", 'instance=~"$instance"', *extra])


PKG = sel("sipsec-pkg")
LOC = sel("sipsec-location")
PROXY = sel("sipsec-proxy")
GW = sel("sipsec-gateway")
# the crypto-worker pool serves every domain: its targets carry domain="shared"
WORKER = sel("sipsec-worker", domain='"$domain|shared"')


@dataclass(frozen=True)
class Query:
    """One panel target: a PromQL expression and its legend."""

    expr: str
    legend: str


@dataclass(frozen=True)
class Panel:
    """A time-series panel: title, unit (Grafana unit id), what it shows, its queries."""

    title: str
    unit: str
    description: str
    queries: tuple[Query, ...]
    width: int = 12


@dataclass(frozen=True)
class Dash:
    """A dashboard: uid, title, the jobs its ``instance`` variable lists, rows of panels."""

    uid: str
    title: str
    description: str
    jobs: str
    rows: tuple[tuple[str, tuple[Panel, ...]], ...]


def q(expr: str, legend: str) -> Query:
    return Query(" ".join(expr.split()), legend)


def quantiles(metric: str, selector: str, by: str, qs: tuple[float, ...] = (0.5, 0.95, 0.99)) -> tuple[Query, ...]:
    """p50/p95/p99 (``qs``) of a histogram, per ``by`` label."""
    return tuple(
        q(f"histogram_quantile({x}, sum by ({by}, le) (rate({metric}_bucket{{{selector}}}[{RATE}])))",
          f"{{{{{by}}}}} p{round(x * 100)}")
        for x in qs
    )


PKG_DASH = Dash(
    uid="sipsec-pkg",
    title="sipsec / PKG",
    description="Private Key Generators: RPCs, logins, key issuance, federation (RFC 5091 keys, "
                "served over gRPC).",
    jobs="sipsec-pkg",
    rows=(
        ("Requests", (
            Panel("Request rate by RPC", "reqps", "gRPC requests handled per second (health checks excluded).",
                  (q(f"sum by (method) (rate(sipsec_rpc_server_handled_total{{{PKG}}}[{RATE}]))", "{{method}}"),)),
            Panel("Latency by RPC (p50/p95/p99)", "s", "Server handling time per RPC.",
                  quantiles("sipsec_rpc_server_handling_seconds", PKG, "method")),
            Panel("Server-error ratio (availability SLO: 99.9 %)", "percentunit",
                  "Share of RPCs ending INTERNAL, UNAVAILABLE, UNKNOWN, DEADLINE_EXCEEDED or DATA_LOSS.",
                  (q(f"""(sum(rate(sipsec_rpc_server_handled_total{{{PKG}, code=~"{SERVER_ERRORS}"}}[{RATE}]))
                         or vector(0))
                       / sum(rate(sipsec_rpc_server_handled_total{{{PKG}}}[{RATE}]))""", "server errors"),)),
            Panel("Non-OK outcomes by RPC and status", "reqps",
                  "Requests that did not end OK, by method and gRPC status code (client errors included).",
                  (q(f'sum by (method, code) (rate(sipsec_rpc_server_handled_total{{{PKG}, code!="OK"}}[{RATE}]))',
                     "{{method}} {{code}}"),)),
            Panel("GetPrivateKey within 100 ms (latency SLO: 99 %)", "percentunit",
                  "Share of GetPrivateKey RPCs handled within 100 ms.",
                  (q(f"""sum(rate(sipsec_rpc_server_handling_seconds_bucket{{{PKG}, method="GetPrivateKey", le="0.1"}}[{RATE}]))
                       / sum(rate(sipsec_rpc_server_handling_seconds_count{{{PKG}, method="GetPrivateKey"}}[{RATE}]))""",
                     "within 100 ms"),)),
            Panel("PKG nodes up", "none", "1 when Prometheus scraped the node, 0 when it could not.",
                  (q(f"up{{{PKG}}}", "{{domain}} {{instance}}"),)),
        )),
        ("Logins", (
            Panel("Logins by outcome", "reqps", "Login RPCs by gRPC status code.",
                  (q(f'sum by (code) (rate(sipsec_rpc_server_handled_total{{{PKG}, method="Login"}}[{RATE}]))',
                     "{{code}}"),)),
            Panel("Refused logins by reason", "reqps", "bad_credentials, backoff, invalid_request.",
                  (q(f"sum by (reason) (rate(sipsec_pkg_login_failures_total{{{PKG}}}[{RATE}]))", "{{reason}}"),)),
            Panel("Throttling", "reqps",
                  "Attempts refused unchecked during a back-off, and failures that started or lengthened one "
                  "(a password-guessing signal), by scope.",
                  (q(f"sum by (scope) (rate(sipsec_pkg_login_throttled_total{{{PKG}}}[{RATE}]))", "throttled {{scope}}"),
                   q(f"sum by (scope) (rate(sipsec_pkg_login_backoffs_total{{{PKG}}}[{RATE}]))", "back-offs {{scope}}"))),
            Panel("Active sessions", "none", "Login sessions not idle past the timeout.",
                  (q(f"sum by (domain, instance) (sipsec_pkg_active_sessions{{{PKG}}})", "{{domain}} {{instance}}"),)),
        )),
        ("Issuance", (
            Panel("Keys issued by purpose and period", "ops",
                  "Private keys (mode=full) and threshold partial keys (mode=partial) issued, by purpose "
                  "(sig: Cha-Cheon signing, enc: Boneh-Franklin decryption) and period (current, or ahead: "
                  "the next period's keys fetched before it starts).",
                  (q(f"sum by (purpose, mode, period) (rate(sipsec_pkg_extractions_total{{{PKG}}}[{RATE}]))",
                     "{{purpose}} {{mode}} {{period}}"),), width=24),
        )),
        ("Federation", (
            Panel("Peer parameters: cache", "ops",
                  "Peer-domain parameter requests served from the cache, fetched from the peer, or served "
                  "stale because the peer failed.",
                  (q(f"sum(rate(sipsec_pkg_federation_cache_hits_total{{{PKG}}}[{RATE}]))", "hits"),
                   q(f"sum(rate(sipsec_pkg_federation_cache_misses_total{{{PKG}}}[{RATE}]))", "misses"),
                   q(f"sum(rate(sipsec_pkg_federation_stale_served_total{{{PKG}}}[{RATE}]))", "stale served"))),
            Panel("Federation failures by reason", "ops",
                  "unknown_domain, unavailable, bad_signature, pin_mismatch (alerted), bad_params, wrong_domain.",
                  (q(f"sum by (reason) (rate(sipsec_pkg_federation_errors_total{{{PKG}}}[{RATE}]))", "{{reason}}"),)),
            Panel("GetDomainParams latency (p50/p95/p99)", "s",
                  "Time to answer a peer-parameter request (cache or a fetch from the peer PKG).",
                  quantiles("sipsec_rpc_server_handling_seconds", f'{PKG}, method="GetDomainParams"', "method")),
            Panel("Peer fetches by peer and outcome", "ops",
                  "Fetches of a peer PKG's signed parameters (cache misses), by configured peer domain and "
                  "outcome (ok, unavailable, refused: signature, pin or domain check failed).",
                  (q(f"sum by (peer, outcome) (rate(sipsec_pkg_federation_fetches_total{{{PKG}}}[{RATE}]))",
                     "{{peer}} {{outcome}}"),)),
            Panel("Peer fetch latency by peer (p50/p95)", "s", "Time to fetch a peer PKG's parameters.",
                  quantiles("sipsec_pkg_federation_fetch_duration_seconds", PKG, "peer", (0.5, 0.95)), width=24),
        )),
        ("Store (Redis)", (
            Panel("Store operation latency (p50/p95/p99)", "s",
                  "One PKG store operation against Redis (a round trip or a pipeline), by operation.",
                  quantiles("sipsec_store_operation_seconds", f'{PKG}, store="pkg"', "op")),
            Panel("Store errors by kind", "ops",
                  "Failed store operations: timeout, connection, pool_timeout, response (0 when none).",
                  (q(f"""sum by (kind) (rate(sipsec_store_errors_total{{{PKG}, store="pkg"}}[{RATE}]))
                       or on() vector(0)""", "{{kind}}"),)),
        )),
        ("Health", (
            Panel("Readiness by check", "none",
                  "1 when the check passed its last run (store: Redis answers within 1 s; key_material: the "
                  "node's secret fits the public parameters); the node serves only when all do.",
                  (q(f"min by (instance, check) (sipsec_readiness_check_ok{{{PKG}}})", "{{instance}} {{check}}"),)),
            Panel("Builds and key-material checks", "none",
                  "Running builds by version and revision; key-material self-checks by result (at start).",
                  (q(f"count by (version, revision) (sipsec_build_info{{{PKG}}})", "{{version}} {{revision}}"),
                   q(f"sum by (result) (sipsec_pkg_key_material_checks_total{{{PKG}}})", "self-check {{result}}"))),
        )),
    ),
)

CALLS_DASH = Dash(
    uid="sipsec-calls",
    title="sipsec / Calls",
    description="Call setups through the UA gateways, the envelope (RFC 5652 CMS around RFC 3261 "
                "messages) and the crypto-worker pool.",
    jobs="sipsec-gateway|sipsec-worker",
    rows=(
        ("Call setups", (
            Panel("Call setups per second by outcome", "ops",
                  "Setups (either direction) by outcome (answered, failed, timeout, cancelled, policy, "
                  "challenged: a Digest challenge to a phone) and whether the call was secured.",
                  (q(f"sum by (outcome, secure) (rate(sipsec_gateway_call_setups_total{{{GW}}}[{RATE}]))",
                     "{{outcome}} secure={{secure}}"),)),
            Panel("Setup latency, secured vs plain (p50/p95)", "s",
                  "INVITE sent to 2xx received, calls placed by the gateway.",
                  quantiles("sipsec_gateway_call_setup_duration_seconds", GW, "secure", (0.5, 0.95))),
            Panel("Setup success ratio (SLO: 99.5 %)", "percentunit",
                  "Answered over answered + failed + timed out (cancelled calls and policy refusals excluded).",
                  (q(f"""sum(rate(sipsec_gateway_call_setups_total{{{GW}, outcome="answered"}}[{RATE}]))
                       / sum(rate(sipsec_gateway_call_setups_total{{{GW}, outcome=~"answered|failed|timeout"}}[{RATE}]))""",
                     "success"),)),
            Panel("Setup failures by outcome", "ops", "Setups that were not answered.",
                  (q(f'sum by (outcome) (rate(sipsec_gateway_call_setups_total{{{GW}, outcome!="answered"}}[{RATE}]))',
                     "{{outcome}}"),)),
            Panel("Envelope rejections by reason", "ops",
                  "Received secured messages rejected (bad-signature, replay, decrypt-failed, ...), unsecured "
                  "requests refused by policy, unsecured answers in a secured dialog.",
                  (q(f"sum by (reason) (rate(sipsec_gateway_envelope_rejections_total{{{GW}}}[{RATE}]))",
                     "{{reason}}"),)),
            Panel("Calls in progress and users", "none", "Dialogs by kind; users logged in.",
                  (q(f"sum by (secure) (sipsec_gateway_dialogs{{{GW}}})", "dialogs secure={{secure}}"),
                   q(f"sum(sipsec_gateway_users_logged_in{{{GW}}})", "users logged in"))),
        )),
        ("Crypto", (
            Panel("Envelope operation latency (p50/p95)", "s",
                  "Seal/open with a KEM (first message of a dialog) or the dialog key, REGISTER signatures.",
                  quantiles("sipsec_gateway_crypto_seconds", GW, "op", (0.5, 0.95))),
            Panel("Crypto-worker call latency (p50/p95)", "s", "One call from a gateway to a crypto-worker.",
                  quantiles("sipsec_engine_remote_call_duration_seconds", GW, "op", (0.5, 0.95))),
            Panel("Crypto-worker calls by outcome", "ops", "Calls from the gateways' engines, by operation and outcome.",
                  (q(f"sum by (op, outcome) (rate(sipsec_engine_remote_calls_total{{{GW}}}[{RATE}]))",
                     "{{op}} {{outcome}}"),)),
            Panel("PKG fetches by kind and outcome", "ops", "Logins, parameters and private keys the gateways fetched.",
                  (q(f"sum by (kind, outcome) (rate(sipsec_gateway_key_fetches_total{{{GW}}}[{RATE}]))",
                     "{{kind}} {{outcome}}"),)),
            Panel("Threshold PKG nodes: answer time (p95)", "s",
                  "Per configured threshold PKG node (gateways with several PKG targets): time to answer "
                  "GetPrivateKey with a partial key, its pairing check included. 0 when no gateway uses a "
                  "threshold PKG.",
                  (q(f"""histogram_quantile(0.95, sum by (node, le) (rate(
                           sipsec_pkgclient_threshold_node_duration_seconds_bucket{{{GW}}}[{RATE}])))
                       or on() vector(0)""", "{{node}}"),)),
            Panel("Threshold PKG nodes: invalid partials", "ops",
                  "Partial keys that failed their pairing check or claimed another node's index, per configured "
                  "node (a node holding a wrong share). 0 when none.",
                  (q(f"""sum by (node) (rate(sipsec_pkgclient_bad_threshold_shares_total{{{GW}}}[{RATE}]))
                       or on() vector(0)""", "{{node}}"),)),
            Panel("Secured signalling bytes", "Bps", "SIP bytes on the secured side, by direction.",
                  (q(f"sum by (direction) (rate(sipsec_gateway_wire_bytes_total{{{GW}}}[{RATE}]))", "{{direction}}"),),
                  width=24),
        )),
        ("Worker pool", (
            Panel("Pool tasks", "none", "Admitted tasks (running or waiting), waiting tasks, capacity.",
                  (q(f"sum by (instance) (sipsec_worker_tasks_in_flight{{{WORKER}}})", "in flight {{instance}}"),
                   q(f"sum by (instance) (sipsec_worker_queue_depth{{{WORKER}}})", "queued {{instance}}"),
                   q(f"sum by (instance) (sipsec_worker_task_capacity{{{WORKER}}})", "capacity {{instance}}"))),
            Panel("Pool utilisation", "percentunit", "Tasks in flight over capacity (alerted above 90 %).",
                  (q(f"max by (instance) (sipsec_worker_tasks_in_flight{{{WORKER}}} / sipsec_worker_task_capacity{{{WORKER}}})",
                     "{{instance}}"),)),
            Panel("Worker operations by kind and outcome", "ops", "Batch items counted one by one.",
                  (q(f"sum by (kind, outcome) (rate(sipsec_worker_operations_total{{{WORKER}}}[{RATE}]))",
                     "{{kind}} {{outcome}}"),)),
            Panel("Worker RPC latency (p50/p95)", "s", "Server handling time per crypto RPC, and per batch of a stream (method Stream).",
                  quantiles("sipsec_rpc_server_handling_seconds", WORKER, "method", (0.5, 0.95))),
            Panel("Worker readiness", "none", "1 when the worker's pool takes work.",
                  (q(f"min by (instance) (sipsec_ready{{{WORKER}}})", "{{instance}}"),), width=24),
        )),
        ("Gateway store (Redis)", (
            Panel("Store operation latency (p95)", "s",
                  "The gateways' dialog and replay-token stores: one operation against Redis, by store.",
                  quantiles("sipsec_store_operation_seconds", GW, "store", (0.95,))),
            Panel("Store errors by store and kind", "ops",
                  "Failed store operations: timeout, connection, pool_timeout, response (0 when none).",
                  (q(f"""sum by (store, kind) (rate(sipsec_store_errors_total{{{GW}}}[{RATE}]))
                       or on() vector(0)""", "{{store}} {{kind}}"),)),
        )),
    ),
)

PROXY_DASH = Dash(
    uid="sipsec-proxy-location",
    title="sipsec / Proxy and location",
    description="The proxy/registrar (RFC 3261 sections 16 and 10) and the location service.",
    jobs="sipsec-proxy|sipsec-location",
    rows=(
        ("Proxy", (
            Panel("Requests by method and final status class", "reqps",
                  "Requests answered or forwarded, by the class of the final response sent upstream.",
                  (q(f"sum by (method, status_class) (rate(sipsec_proxy_requests_total{{{PROXY}}}[{RATE}]))",
                     "{{method}} {{status_class}}"),)),
            Panel("Transaction latency (p50/p95)", "s", "Server transaction: request to final response.",
                  quantiles("sipsec_proxy_transaction_duration_seconds", PROXY, "method", (0.5, 0.95))),
            Panel("Rejections by reason", "reqps", "Requests refused or messages dropped by the proxy core.",
                  (q(f"sum by (reason) (rate(sipsec_proxy_rejections_total{{{PROXY}}}[{RATE}]))", "{{reason}}"),)),
            Panel("Registrations by result", "reqps", "REGISTER requests: ok, challenged, denied, rejected, error.",
                  (q(f"sum by (result) (rate(sipsec_proxy_registrations_total{{{PROXY}}}[{RATE}]))", "{{result}}"),)),
            Panel("Forwarded by method", "reqps", "Requests forwarded downstream.",
                  (q(f"sum by (method) (rate(sipsec_proxy_forwarded_total{{{PROXY}}}[{RATE}]))", "{{method}}"),)),
            Panel("Location cache", "reqps", "Lookups the proxy's cache answered (hit) or the location service did.",
                  (q(f"sum by (result) (rate(sipsec_proxy_location_cache_lookups_total{{{PROXY}}}[{RATE}]))",
                     "{{result}}"),)),
            Panel("Active transactions", "none", "Server and client transactions in the table.",
                  (q(f"sum by (domain, instance) (sipsec_proxy_active_transactions{{{PROXY}}})",
                     "{{domain}} {{instance}}"),)),
            Panel("SIP transport", "reqps", "Messages received and sent, dropped by reason (RFC 3261 section 18).",
                  (q(f"sum by (transport, kind) (rate(sipsec_sip_messages_received_total{{{PROXY}}}[{RATE}]))",
                     "received {{transport}} {{kind}}"),
                   q(f"sum by (transport, kind) (rate(sipsec_sip_messages_sent_total{{{PROXY}}}[{RATE}]))",
                     "sent {{transport}} {{kind}}"),
                   q(f"sum by (transport, reason) (rate(sipsec_sip_messages_dropped_total{{{PROXY}}}[{RATE}]))",
                     "dropped {{transport}} {{reason}}"))),
            Panel("Open SIP connections", "none", "TCP/TLS connections open.",
                  (q(f"sum by (transport) (sipsec_sip_connections_open{{{PROXY}}})", "{{transport}}"),), width=24),
        )),
        ("Location", (
            Panel("Location RPCs by method and status", "reqps", "Bind/Lookup/... by gRPC status code.",
                  (q(f"sum by (method, code) (rate(sipsec_rpc_server_handled_total{{{LOC}}}[{RATE}]))",
                     "{{method}} {{code}}"),)),
            Panel("Location RPC latency (p50/p95/p99)", "s", "Server handling time per RPC.",
                  quantiles("sipsec_rpc_server_handling_seconds", LOC, "method")),
            Panel("Bindings", "none", "Live AOR to contact bindings in the store.",
                  (q(f"sum by (domain) (sipsec_location_bindings{{{LOC}}})", "{{domain}}"),), width=24),
        )),
        ("Health", (
            Panel("Readiness by check", "none",
                  "1 when the check passed its last run: the proxy's location (the location service's own "
                  "readiness, or Redis), the location service's store (Redis answers within 1 s).",
                  (q(f"min by (job, instance, check) (sipsec_readiness_check_ok{{{PROXY}}})",
                     "proxy {{instance}} {{check}}"),
                   q(f"min by (job, instance, check) (sipsec_readiness_check_ok{{{LOC}}})",
                     "location {{instance}} {{check}}"))),
            Panel("Builds", "none", "Running builds by service, version and revision.",
                  (q(f"count by (service, version, revision) (sipsec_build_info{{{PROXY}}})",
                     "{{service}} {{version}} {{revision}}"),
                   q(f"count by (service, version, revision) (sipsec_build_info{{{LOC}}})",
                     "{{service}} {{version}} {{revision}}"))),
        )),
    ),
)

DASHBOARDS: tuple[Dash, ...] = (PKG_DASH, CALLS_DASH, PROXY_DASH)


def _variables(d: Dash) -> list[Any]:
    domain_values = 'label_values(up{job=~"sipsec-.*"}, domain)'
    instance_values = f'label_values(up{{job=~"{d.jobs}", domain=~"$domain|shared"}}, instance)'
    return [
        gd.DatasourceVariable("datasource").label("Data source").type("prometheus"),
        gd.QueryVariable("domain").label("Domain").datasource(DATASOURCE).query(domain_values)
        .refresh(md.VariableRefresh.ON_TIME_RANGE_CHANGED).sort(md.VariableSort.ALPHABETICAL_ASC)
        .multi(True).include_all(True).all_value(".*"),
        gd.QueryVariable("instance").label("Instance").datasource(DATASOURCE).query(instance_values)
        .refresh(md.VariableRefresh.ON_TIME_RANGE_CHANGED).sort(md.VariableSort.ALPHABETICAL_ASC)
        .multi(True).include_all(True).all_value(".*"),
    ]


def _panel(p: Panel, panel_id: int) -> gt.Panel:
    panel = (gt.Panel().id(panel_id).title(p.title).description(p.description).unit(p.unit).datasource(DATASOURCE)
             .height(8).span(p.width).min(0)
             .legend(gc.VizLegendOptions().show_legend(True).display_mode(mc.LegendDisplayMode.LIST)
                     .placement(mc.LegendPlacement.BOTTOM))
             .tooltip(gc.VizTooltipOptions().mode(mc.TooltipDisplayMode.MULTI).sort(mc.SortOrder.DESCENDING)))
    for i, query in enumerate(p.queries):
        panel = panel.with_target(gp.Dataquery().expr(query.expr).legend_format(query.legend)
                                  .ref_id(chr(ord("A") + i)).datasource(DATASOURCE))
    return panel


def build(d: Dash) -> Any:
    """The dashboard model of ``d``."""
    board = (gd.Dashboard(d.title).uid(d.uid).description(d.description).tags(["sipsec"])
             .editable().timezone("browser").time("now-1h", "now").refresh("30s")
             .tooltip(md.DashboardCursorSync.CROSSHAIR).variables(_variables(d)))
    panel_id = 0
    for title, panels in d.rows:
        panel_id += 1
        board = board.with_row(gd.Row(title).id(panel_id))
        for p in panels:
            panel_id += 1
            board = board.with_panel(_panel(p, panel_id))
    return board.build()


def render(d: Dash) -> str:
    """The JSON text of ``d`` as committed: sorted keys, two-space indent, a final newline."""
    return json.dumps(build(d), cls=JSONEncoder, sort_keys=True, indent=2) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write the sipsec Grafana dashboards as JSON.")
    parser.add_argument("--out", type=Path, default=OUT, help=f"folder to write into (default {OUT})")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    for d in DASHBOARDS:
        (args.out / f"{d.uid}.json").write_text(render(d))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
