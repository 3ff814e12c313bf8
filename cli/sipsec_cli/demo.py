"""``sipsec demo``: identity-based crypto, then real secured and plain calls across two domains, with timings.

Part 1, the crypto walk-through: two PKG domains (atlanta.com, biloxi.com) are set up, Alice
and Bob get their keys, Alice encapsulates a 256-bit key to Bob's SIP address, Bob opens it,
Alice signs an INVITE and Bob verifies it; tampering is shown to be rejected and a 3-of-5
threshold PKG re-derives Bob's key.

Part 2, the calls: both domains start in this process on loopback (atlanta.com on 127.0.0.2,
biloxi.com on 127.0.0.3; PKG, location, proxy and UA gateway each, in-memory stores,
in-process crypto — see :mod:`sipsec_cli.topology`). sip:alice@atlanta.com calls
sip:bob@biloxi.com (Bob auto-answers) secured, holds briefly and hangs up; then the same
call unsecured. Shown: each outer message as the proxies received it (what an eavesdropper
sees), the inner messages as the gateways opened them with the verified signer, and the
measured costs beside the thesis' Tables 1–6 (Fontanini 2008, §4.9).
"""

from __future__ import annotations

import asyncio
import json
import logging
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from rich import box
from rich.console import Console
from rich.panel import Panel
from rich.table import Table
from sipsec import ibc, lifecycle

from sipsec_cli.plan import PLAN

if TYPE_CHECKING:  # the call part imports the services only when it runs
    from sipsec_gateway.calls import Call

    from sipsec_cli.topology import TwoDomainTopology

__all__ = ["DemoFailure", "run_demo"]

#: Thesis §4.9.1, Tables 1–4 (MIRACL, 512-bit supersingular curve, ~80-bit security): medians.
THESIS_MS = {"encapsulate": 90.0, "decapsulate": 80.0}
INVITE = (
    b"INVITE sip:bob@biloxi.com SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP pc33.atlanta.com;branch=z9hG4bK776asdhds\r\n"
    b"Max-Forwards: 70\r\nTo: Bob <sip:bob@biloxi.com>\r\n"
    b"From: Alice <sip:alice@atlanta.com>;tag=1928301774\r\n"
    b"Call-ID: a84b4c76e66710@pc33.atlanta.com\r\nCSeq: 314159 INVITE\r\n"
    b"Contact: <sip:alice@pc33.atlanta.com>\r\nContent-Length: 0\r\n\r\n"
)


class DemoFailure(Exception):
    """A demo step did not do what it should."""


@dataclass
class Step:
    name: str
    detail: str
    median_ms: float | None = None
    thesis_ms: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _median_ms(fn: Callable[[], object], repeat: int) -> float:
    samples = []
    for _ in range(repeat):
        t0 = time.perf_counter_ns()
        fn()
        samples.append(time.perf_counter_ns() - t0)
    return statistics.median(samples) / 1e6


def _expect_raises(exc: type[Exception], fn: Callable[[], object], what: str) -> None:
    try:
        fn()
    except exc:
        return
    raise DemoFailure(f"{what} was not rejected")


def _walk(repeat: int, steps: list[Step]) -> None:
    policy = ibc.PeriodPolicy()
    period = policy.current(time.time())

    atlanta_master, atlanta = ibc.setup("atlanta.com", policy)
    biloxi_master, biloxi = ibc.setup("biloxi.com", policy)
    steps.append(
        Step(
            "setup",
            "two PKG domains: atlanta.com and biloxi.com (BLS12-381, P_pub in G2)",
            _median_ms(lambda: ibc.setup("example.com", policy), repeat),
            extra={"params_bytes": len(biloxi.to_bytes()), "period": period},
        )
    )

    alice_sig_id = atlanta.identity("sip:alice@atlanta.com", ibc.Purpose.SIG, period)
    bob_enc_id = biloxi.identity('"Bob" <sip:bob@Biloxi.COM:5060>', ibc.Purpose.ENC, period)
    alice_sig = ibc.extract(atlanta_master, atlanta, alice_sig_id)
    bob_enc = ibc.extract(biloxi_master, biloxi, bob_enc_id)
    steps.append(
        Step(
            "extract",
            f"keys for {alice_sig_id.aor} (sig) and {bob_enc_id.aor} (enc), period {period}",
            _median_ms(lambda: ibc.extract(biloxi_master, biloxi, bob_enc_id), repeat),
        )
    )

    key, ciphertext = ibc.encapsulate(biloxi, bob_enc_id)
    steps.append(
        Step(
            "encapsulate",
            "Alice wraps a fresh 256-bit key to Bob's SIP address (BF FullIdent KEM)",
            _median_ms(lambda: ibc.encapsulate(biloxi, bob_enc_id), repeat),
            THESIS_MS["encapsulate"],
            extra={"ciphertext_bytes": len(ciphertext)},
        )
    )

    opened = ibc.decapsulate(bob_enc, ciphertext)
    if opened != key:
        raise DemoFailure("Bob opened a different key than Alice wrapped")
    steps.append(
        Step(
            "decapsulate",
            "Bob opens it with his private key: same key",
            _median_ms(lambda: ibc.decapsulate(bob_enc, ciphertext), repeat),
            THESIS_MS["decapsulate"],
        )
    )

    signature = ibc.sign(alice_sig, INVITE)
    steps.append(
        Step(
            "sign",
            "Alice signs her INVITE (Cha–Cheon IBS; the thesis had no signatures)",
            _median_ms(lambda: ibc.sign(alice_sig, INVITE), repeat),
            extra={"signature_bytes": len(signature)},
        )
    )
    ibc.verify(atlanta, alice_sig_id, INVITE, signature)
    steps.append(
        Step(
            "verify",
            "Bob verifies it against sip:alice@atlanta.com and atlanta.com's parameters",
            _median_ms(lambda: ibc.verify(atlanta, alice_sig_id, INVITE, signature), repeat),
        )
    )

    tampered = bytearray(ciphertext)
    tampered[-1] ^= 1
    _expect_raises(
        ibc.InvalidCiphertext,
        lambda: ibc.decapsulate(bob_enc, bytes(tampered)),
        "a tampered ciphertext",
    )
    _expect_raises(
        ibc.InvalidSignature,
        lambda: ibc.verify(atlanta, alice_sig_id, INVITE.replace(b"bob", b"eve"), signature),
        "a signature on an altered INVITE",
    )
    mallory_id = atlanta.identity("sip:mallory@atlanta.com", ibc.Purpose.SIG, period)
    _expect_raises(
        ibc.InvalidSignature,
        lambda: ibc.verify(atlanta, mallory_id, INVITE, signature),
        "a signature claimed by another identity",
    )
    steps.append(
        Step(
            "tamper",
            "a flipped ciphertext bit, an altered INVITE and a wrong signer are all rejected",
        )
    )

    shares, tparams = ibc.split_master(biloxi_master, biloxi, 3, 5)
    partials = [ibc.partial_extract(s, bob_enc_id) for s in shares]
    combined = ibc.combine(tparams, bob_enc_id, partials[1:4])
    if combined != bob_enc:
        raise DemoFailure("the 3-of-5 threshold PKG derived a different key")
    steps.append(
        Step(
            "threshold",
            "a 3-of-5 threshold PKG for biloxi.com: nodes 2, 3, 4 re-derive Bob's key",
            _median_ms(lambda: ibc.combine(tparams, bob_enc_id, partials[1:4]), repeat),
        )
    )


# -- part 2: calls across two domains ----------------------------------------------------------

#: The caller and callee of the one two-domain description (:data:`sipsec_cli.plan.PLAN`).
ALICE, BOB = PLAN.caller, PLAN.callee
#: Thesis §4.9: Tables 1 and 2 (total encrypt / decrypt of a message, median of 5 runs) and
#: Tables 5 and 6 (test 1: setup time and signalling bytes per call, unsecured vs secured).
THESIS_TOTAL_MS = {"seal_kem": 591.0, "open_kem": 438.0}
THESIS_CALL = {"plain_setup_ms": 182.0, "secured_setup_ms": 1347.0, "plain_bytes": 2668, "secured_bytes": 7429}
HOLD_S = 0.3
STEP_TIMEOUT_S = 10.0
CALLS_TIMEOUT_S = 120.0
CALL_RUNS = 5
_SECRETS_ON_THE_WIRE = (b"alice", b"m=audio", b"application/sdp")


@dataclass
class CallRun:
    """One call's measured cost, from the caller's point of view (the thesis' §4.9.2)."""

    secure: bool
    setup_ms: float
    bytes_total: int
    messages: int
    caller_crypto_ms: dict[str, list[float]]
    callee_crypto_ms: dict[str, list[float]]
    summary: dict[str, Any]


@dataclass
class CallSection:
    secured: list[CallRun] = field(default_factory=list)
    plain: list[CallRun] = field(default_factory=list)
    wire: list[dict[str, Any]] = field(default_factory=list)
    inner: list[dict[str, Any]] = field(default_factory=list)
    hosts: dict[str, str] = field(default_factory=dict)
    events: list[str] = field(default_factory=list)


def _ms(crypto: dict[str, list[float]]) -> dict[str, list[float]]:
    return {op: [v * 1e3 for v in values] for op, values in crypto.items()}


async def _one_call(topo: TwoDomainTopology, secure: bool, hold_s: float) -> tuple[CallRun, Call, Call]:
    from sipsec_gateway.calls import CallState

    kind = "secured" if secure else "plain"
    alice, bob = topo.atlanta.gateway, topo.biloxi.gateway
    assert bob.secure is not None
    before = set(bob.secure.calls)
    t0 = time.perf_counter()
    call = await alice.place_call(ALICE, BOB, secure=secure, timeout=STEP_TIMEOUT_S)
    setup_ms = (time.perf_counter() - t0) * 1e3
    if call.state is not CallState.ESTABLISHED:
        raise DemoFailure(f"the {kind} call from {ALICE} to {BOB} was not answered: "
                          f"{call.status} {call.reason}".rstrip())
    if call.secure is not secure:
        raise DemoFailure(f"the {kind} call was set up {'secured' if call.secure else 'plain'}")
    if hold_s > 0:
        await asyncio.sleep(hold_s)
    try:
        status = await asyncio.wait_for(alice.hangup(call.id), STEP_TIMEOUT_S)
    except TimeoutError:
        raise DemoFailure(f"hanging up the {kind} call got no answer in {STEP_TIMEOUT_S:g} s") from None
    if status != 200:
        raise DemoFailure(f"hanging up the {kind} call got {status} instead of 200")
    incoming = [c for cid, c in bob.secure.calls.items() if cid not in before and c.direction == "incoming"]
    if len(incoming) != 1:
        raise DemoFailure(f"bob's gateway saw {len(incoming)} incoming calls instead of 1")
    callee = incoming[0]
    try:
        await asyncio.wait_for(callee.ended.wait(), STEP_TIMEOUT_S)
    except TimeoutError:
        raise DemoFailure(f"bob's side of the {kind} call did not end after alice's BYE") from None
    run = CallRun(secure, setup_ms, call.bytes_sent + call.bytes_received,
                  call.messages_sent + call.messages_received, _ms(call.crypto), _ms(callee.crypto),
                  call.summary())
    return run, call, callee


def _header(text: str, *names: str) -> str:
    for line in text.split("\r\n")[1:]:
        if not line:
            break
        name, _, value = line.partition(":")
        if name.strip().lower() in names:
            return value.strip()
    return ""


def _wire(topo: TwoDomainTopology, caller: Call) -> list[dict[str, Any]]:
    """What each proxy received for this call: the eavesdropper's view."""
    from sipsec_gateway.trace import render

    views = []
    for name, stack in topo.domains.items():
        if stack.tap is None:
            continue
        raw = [data for cid, data in stack.tap.records if cid == caller.outer_call_id]
        lowered = b"\n".join(raw).lower()
        for secret in _SECRETS_ON_THE_WIRE:
            if caller.secure and secret in lowered:
                raise DemoFailure(f"the {name} proxy saw {secret.decode()!r} in a secured call")
        views.append({"proxy": name, "messages": [render(d) for d in raw], "bytes": [len(d) for d in raw]})
    if caller.secure and not all(v["messages"] for v in views):
        raise DemoFailure("a proxy saw none of the secured call's messages")
    return views


def _inner(caller: Call, callee: Call) -> list[dict[str, Any]]:
    """Every secured message of the call as its receiving gateway opened it, with the verified signer."""
    from sipsec_gateway.trace import render

    entries: list[dict[str, Any]] = []
    for call, opened_by, expected in ((callee, BOB, ALICE), (caller, ALICE, BOB)):
        for entry in call.trace or []:
            if entry.direction != "received" or not entry.secured or entry.inner is None:
                continue
            inner = render(entry.inner)
            entries.append({
                "at": entry.at, "opened_by": opened_by, "start_line": inner.split("\r\n", 1)[0],
                "inner": inner, "outer_bytes": len(entry.outer), "signer": entry.signer,
                "expected_signer": expected, "verified": entry.signer == expected,
            })
    entries.sort(key=lambda e: e["at"])
    if len(entries) < 6:
        raise DemoFailure(f"only {len(entries)} secured messages were opened (INVITE, 180, 200, ACK, BYE, 200 expected)")
    for e in entries:
        if not e["verified"]:
            raise DemoFailure(f"{e['start_line']!r} opened by {e['opened_by']} was signed by "
                              f"{e['signer']}, not {e['expected_signer']}")
    return entries


async def _calls(runs: int) -> CallSection:
    from sipsec_cli.topology import TwoDomainTopology

    section = CallSection()
    say = section.events.append
    async with TwoDomainTopology() as topo:
        section.hosts = dict(topo.hosts)
        say("two domains up: " + "; ".join(
            f"{name}: PKG 127.0.0.1:{d.pkg.port}, proxy {d.proxy_address[0]}:{d.proxy_address[1]}, "
            f"gateway {d.gateway.sip_address[0]}:{d.gateway.sip_address[1]}" for name, d in topo.domains.items()))
        await topo.login(ALICE)
        say(f"{ALICE} logged in: PKG session, keys for this period, signed REGISTER accepted by "
            f"the atlanta.com proxy ({topo.atlanta.verifier.verified} verified)")
        await topo.login(BOB, auto_answer=True)
        say(f"{BOB} logged in the same way (auto-answer on; {topo.biloxi.verifier.verified} REGISTER "
            "verified by the biloxi.com proxy)")
        for here, there in ((topo.atlanta, topo.biloxi), (topo.biloxi, topo.atlanta)):
            if here.gateway.directory.get(there.name) != there.init.params:
                raise DemoFailure(f"{here.name} did not get {there.name}'s parameters through federation")
        say("federation: each gateway holds the other domain's parameters, fetched through its own "
            "PKG, which verified the peer's signed parameters against the pinned Ed25519 fingerprint")
        for secure in (True, False):  # warm-up, as the thesis timed softphones already started
            await _one_call(topo, secure, 0.0)
        topo.clear_taps()  # registrations and warm-up done: from here on, only the calls shown
        run, caller, callee = await _one_call(topo, True, HOLD_S)
        section.secured.append(run)
        section.wire = _wire(topo, caller)
        section.inner = _inner(caller, callee)
        say(f"secured call answered ({run.summary['sip_status']}) in {run.setup_ms:.1f} ms, held {HOLD_S:g} s, "
            f"hung up (BYE → 200): {run.messages} messages, {run.bytes_total:,} bytes")
        run, caller, _ = await _one_call(topo, False, HOLD_S)
        section.plain.append(run)
        say(f"the same call unsecured: answered in {run.setup_ms:.1f} ms, {run.bytes_total:,} bytes")
        for _ in range(runs - 1):
            section.secured.append((await _one_call(topo, True, 0.0))[0])
            section.plain.append((await _one_call(topo, False, 0.0))[0])
        if runs > 1:
            say(f"{runs - 1} more calls of each kind for the medians below")
    secured_bytes = statistics.median(r.bytes_total for r in section.secured)
    plain_bytes = statistics.median(r.bytes_total for r in section.plain)
    if not secured_bytes > plain_bytes:
        raise DemoFailure(f"a secured call took {secured_bytes} bytes, not more than a plain one ({plain_bytes})")
    return section


async def _calls_within(runs: int, timeout_s: float) -> CallSection:
    try:
        return await asyncio.wait_for(_calls(runs), timeout_s)
    except TimeoutError:
        raise DemoFailure(f"the calls did not finish within {timeout_s:g} s") from None


def _op_median(runs: list[CallRun], side: str, op: str) -> float | None:
    samples = [v for r in runs for v in getattr(r, side).get(op, [])]
    return statistics.median(samples) if samples else None


def _call_doc(runs: list[CallRun]) -> dict[str, Any]:
    first = runs[0].summary
    ops = sorted({op for r in runs for op in r.caller_crypto_ms} | {op for r in runs for op in r.callee_crypto_ms})
    return {
        "answered": first["state"] in ("established", "ended") and first["sip_status"] == 200,
        "sip_status": first["sip_status"],
        "secure": first["secure"],
        "runs": len(runs),
        "setup_ms": statistics.median(r.setup_ms for r in runs),
        "setup_ms_runs": [round(r.setup_ms, 3) for r in runs],
        "bytes": statistics.median(r.bytes_total for r in runs),
        "bytes_runs": [r.bytes_total for r in runs],
        "messages": runs[0].messages,
        "caller_crypto_ms": {op: _op_median(runs, "caller_crypto_ms", op) for op in ops
                             if _op_median(runs, "caller_crypto_ms", op) is not None},
        "callee_crypto_ms": {op: _op_median(runs, "callee_crypto_ms", op) for op in ops
                             if _op_median(runs, "callee_crypto_ms", op) is not None},
    }


def _comparison(steps: list[Step], section: CallSection) -> list[dict[str, Any]]:
    """The rows of the thesis' Tables 1–6, measured in this run, with the thesis' figures."""
    by_name = {s.name: s for s in steps}
    secured, plain = _call_doc(section.secured), _call_doc(section.plain)
    rows: list[dict[str, Any]] = []

    def row(key: str, table: str, measure: str, value: float | None, thesis: float | None, unit: str) -> None:
        rows.append({"key": key, "tables": table, "measure": measure, "sipsec": value, "thesis": thesis,
                     "unit": unit})

    def step(name: str) -> float | None:
        return by_name[name].median_ms if name in by_name else None

    row("ibe_encrypt_ms", "1, 3", "IBE encrypt: KEM to bob's SIP address", step("encapsulate"),
        THESIS_MS["encapsulate"], "ms")
    row("ibe_decrypt_ms", "2, 4", "IBE decrypt: bob's private key", step("decapsulate"),
        THESIS_MS["decapsulate"], "ms")
    row("ibs_sign_ms", "—", "IBS sign (thesis: no signatures)", step("sign"), None, "ms")
    row("ibs_verify_ms", "—", "IBS verify", step("verify"), None, "ms")
    row("invite_seal_ms", "1", "INVITE sealed by alice: sign+KEM+AES+CMS",
        secured["caller_crypto_ms"].get("seal_kem"), THESIS_TOTAL_MS["seal_kem"], "ms")
    row("invite_open_ms", "2", "INVITE opened by bob: KEM+AES+verify",
        secured["callee_crypto_ms"].get("open_kem"), THESIS_TOTAL_MS["open_kem"], "ms")
    row("later_seal_ms", "—", "later message sealed: dialog key + sign",
        secured["caller_crypto_ms"].get("seal_kek"), None, "ms")
    row("later_open_ms", "—", "later message opened: dialog key + verify",
        secured["caller_crypto_ms"].get("open_kek"), None, "ms")
    row("plain_setup_ms", "5", "setup, plain (INVITE → 200 → ACK)", plain["setup_ms"],
        THESIS_CALL["plain_setup_ms"], "ms")
    row("secured_setup_ms", "6", "setup, secured", secured["setup_ms"], THESIS_CALL["secured_setup_ms"], "ms")
    row("plain_bytes", "5", "bytes per call, plain (INVITE … BYE 200)", plain["bytes"],
        THESIS_CALL["plain_bytes"], "bytes")
    row("secured_bytes", "6", "bytes per call, secured", secured["bytes"], THESIS_CALL["secured_bytes"], "bytes")
    row("setup_ratio", "5, 6", "setup, secured ÷ plain", secured["setup_ms"] / plain["setup_ms"],
        THESIS_CALL["secured_setup_ms"] / THESIS_CALL["plain_setup_ms"], "×")
    row("bytes_ratio", "5, 6", "bytes, secured ÷ plain", secured["bytes"] / plain["bytes"],
        THESIS_CALL["secured_bytes"] / THESIS_CALL["plain_bytes"], "×")
    return rows


# -- output ------------------------------------------------------------------------------------


def _fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "—"
    if unit == "bytes":
        return f"{value:,.0f} B"
    if unit == "×":
        return f"{value:.2f}×"
    return f"{value:.2f} ms" if value < 10 else f"{value:,.1f} ms" if value < 100 else f"{value:,.0f} ms"


def _render(console: Console, steps: list[Step], repeat: int) -> None:
    console.print(
        Panel.fit(
            "Part 1 — identity-based crypto for SIP, suite v1\n"
            f"[dim]{ibc.SUITE_ID.decode()} — BLS12-381 (~128-bit security)[/]",
            title="sipsec demo",
        )
    )
    for step in steps:
        console.print(f"[green]✓[/] [bold]{step.name}[/]: {step.detail}")
    table = Table(
        title=f"median of {repeat} runs, this machine vs the thesis (2008, ~80-bit security)"
    )
    table.add_column("operation")
    table.add_column("sipsec", justify="right")
    table.add_column("thesis", justify="right")
    table.add_column("speed-up", justify="right")
    for step in steps:
        if step.median_ms is None:
            continue
        thesis = f"~{step.thesis_ms:.0f} ms" if step.thesis_ms else "—"
        speed = f"{step.thesis_ms / step.median_ms:.0f}×" if step.thesis_ms else ""
        table.add_row(step.name, f"{step.median_ms:.3f} ms", thesis, speed)
    console.print(table)


def _render_calls(console: Console, steps: list[Step], section: CallSection) -> None:
    hosts = ", ".join(f"{d} on {h}" for d, h in section.hosts.items())
    console.print(Panel.fit(
        f"Part 2 — {ALICE} calls {BOB}: secured, held {HOLD_S:g} s, hung up; then the same call plain\n"
        f"[dim]two domains in this process ({hosts}): PKG, location, proxy and UA gateway each; "
        "in-memory stores, in-process crypto[/]",
        title="sipsec demo"))
    for event in section.events:
        console.print(f"[green]✓[/] {event}")

    for view in section.wire[:1]:
        table = Table(title=f"1. the wire: the secured call as the {view['proxy']} proxy received it "
                            "(what an eavesdropper sees)", box=box.SIMPLE_HEAD)
        table.add_column("#", justify="right", min_width=2)
        table.add_column("message", no_wrap=True, overflow="ellipsis", max_width=26)
        table.add_column("From", no_wrap=True)
        table.add_column("body", no_wrap=True)
        for i, text in enumerate(view["messages"], 1):
            start = text.split("\r\n", 1)[0].removesuffix(" SIP/2.0").removeprefix("SIP/2.0 ")
            ctype = _header(text, "content-type", "c")
            length = _header(text, "content-length", "l") or "0"
            body = f"CMS {length} B" if "pkcs7-mime" in ctype else (ctype.split(";", 1)[0] or "—")
            frm = _header(text, "from", "f")
            frm = frm[frm.find("<") + 1:frm.find(">")].removeprefix("sip:") if "<" in frm else frm
            table.add_row(str(i), start, frm, body)
        console.print(table)
        invite = next((m for m in view["messages"] if m.startswith("INVITE ")), None)
        if invite is not None:
            console.print(Panel(invite.rstrip(), title=f"the outer INVITE at the {view['proxy']} proxy",
                                border_style="red"))

    table = Table(title="2. inside: every secured message as the receiving gateway opened it", box=box.SIMPLE_HEAD)
    table.add_column("#", justify="right")
    table.add_column("opened by", no_wrap=True)
    table.add_column("inner message", no_wrap=True, overflow="ellipsis", max_width=28)
    table.add_column("verified signer", no_wrap=True)
    for i, e in enumerate(section.inner, 1):
        mark = "[green]✓[/] " if e["verified"] else "[red]✗[/] "
        start = e["start_line"].removesuffix(" SIP/2.0").removeprefix("SIP/2.0 ")
        opened_by = e["opened_by"].removeprefix("sip:").split("@", 1)[0] + "'s gateway"
        table.add_row(str(i), opened_by, start, mark + str(e["signer"]))
    console.print(table)
    first = next((e for e in section.inner if e["start_line"].startswith("INVITE ")), None)
    if first is not None:
        console.print(Panel(first["inner"].rstrip(), border_style="green",
                            title=f"the inner INVITE as bob's gateway opened it — signed by {first['signer']}"))

    runs = len(section.secured)
    table = Table(title=f"3. this run vs the thesis' Tables 1–6 (median of {runs} calls after a warm-up)")
    table.add_column("table", justify="center")
    table.add_column("measure")
    table.add_column("sipsec", justify="right")
    table.add_column("thesis (2008)", justify="right")
    table.add_column("faster", justify="right")
    for r in _comparison(steps, section):
        thesis = _fmt(r["thesis"], r["unit"])
        faster = f"{r['thesis'] / r['sipsec']:.0f}×" if r["unit"] == "ms" and r["thesis"] and r["sipsec"] else ""
        table.add_row(r["tables"], r["measure"], _fmt(r["sipsec"], r["unit"]),
                      ("~" + thesis) if r["unit"] == "ms" and r["thesis"] else thesis, faster)
    console.print(table)


def run_demo(json_output: bool, repeat: int, calls: bool = True, call_runs: int = CALL_RUNS) -> int:
    """Run the walk-through, then (with ``calls``) the two-domain calls; print tables (or one JSON
    object); 0 on success, 1 on failure (the message on stderr; everything started is stopped)."""
    repeat = max(1, repeat)
    steps: list[Step] = []
    section: CallSection | None = None
    error: str | None = None
    try:
        _walk(repeat, steps)
    except (DemoFailure, ibc.IbcError) as exc:
        error = f"{type(exc).__name__}: {exc}"
    if error is None and calls:
        logging.getLogger("sipsec").setLevel(logging.WARNING)
        try:
            section = lifecycle.run(_calls_within(max(1, call_runs), CALLS_TIMEOUT_S))
        except Exception as exc:  # noqa: BLE001 - the demo's top level: one clear line, exit 1
            logging.getLogger("sipsec.demo").debug("the call part failed", exc_info=True)
            error = f"{type(exc).__name__}: {exc}"
    if json_output:
        doc: dict[str, Any] = {
            "ok": error is None,
            "suite_id": ibc.SUITE_ID.decode(),
            "repeat": repeat,
            "steps": [
                {
                    "name": s.name,
                    "detail": s.detail,
                    "median_ms": s.median_ms,
                    "thesis_ms": s.thesis_ms,
                    **s.extra,
                }
                for s in steps
            ],
        }
        if section is not None:
            secured, plain = _call_doc(section.secured), _call_doc(section.plain)
            doc["calls"] = {
                "hosts": section.hosts, "events": section.events, "secured": secured, "plain": plain,
                "setup_ratio": secured["setup_ms"] / plain["setup_ms"],
                "bytes_ratio": secured["bytes"] / plain["bytes"],
            }
            doc["wire"] = section.wire
            doc["inner"] = [{k: v for k, v in e.items() if k != "at"} for e in section.inner]
            doc["comparison"] = _comparison(steps, section)
        if error:
            doc["error"] = error
        print(json.dumps(doc))
    else:
        console = Console()
        _render(console, steps, repeat)
        if section is not None:
            _render_calls(console, steps, section)
    if error:
        print(f"sipsec demo: step failed: {error}", file=sys.stderr)
        return 1
    return 0
