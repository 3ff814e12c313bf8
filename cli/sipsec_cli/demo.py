"""``sipsec demo``: a walk-through of identity-based crypto across two domains, with timings.

Two PKG domains (atlanta.com, biloxi.com) are set up, Alice and Bob get their keys, Alice
encapsulates a 256-bit key to Bob's SIP address, Bob opens it, Alice signs an INVITE and Bob
verifies it; tampering is shown to be rejected and a 3-of-5 threshold PKG re-derives Bob's key.
Each operation's median time is shown beside the thesis figures (Fontanini 2008, §4.9.1).
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console
from rich.panel import Panel
from rich.table import Table
from sipsec import ibc

__all__ = ["run_demo"]

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


def _render(console: Console, steps: list[Step], repeat: int) -> None:
    console.print(
        Panel.fit(
            "Identity-based crypto for SIP, suite v1\n"
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


def run_demo(json_output: bool, repeat: int) -> int:
    """Run the walk-through; print tables (or one JSON object); 0 on success, 1 on failure."""
    repeat = max(1, repeat)
    steps: list[Step] = []
    error: str | None = None
    try:
        _walk(repeat, steps)
    except (DemoFailure, ibc.IbcError) as exc:
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
        if error:
            doc["error"] = error
        print(json.dumps(doc))
    else:
        _render(Console(), steps, repeat)
    if error:
        print(f"sipsec demo: step failed: {error}", file=sys.stderr)
        return 1
    return 0
