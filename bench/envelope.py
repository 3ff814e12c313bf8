"""Benchmark of the secured SIP envelope: seal/open medians and the bytes of the RFC 3665 call flow, secured vs plain.

    .venv/bin/python bench/envelope.py [--json] [--rounds N] [--dump DIR] [--breakdown]

Prints (and with ``--json`` emits one JSON object): ``seal_first_ms`` / ``open_first_ms``
(a dialog's first request: BF-IBE KEM + Cha–Cheon signature), ``seal_dialog_ms`` /
``open_dialog_ms`` (a later message under the dialog key, signed: the default
every-message policy), medians over ``--rounds``; and for the RFC 3665 basic call flow
(INVITE, 100, 180, 200, ACK, BYE, 200) ``plain_bytes``, ``secured_bytes`` and
``bytes_ratio`` under the default policy (with ``outer_header_bytes`` / ``cms_bytes``,
where those bytes go), plus the same under the dialog-establishing policy and, for
comparison, with compression off (``*_uncompressed``). ``--dump DIR`` writes the secured
outer messages of that flow, one file each. ``--breakdown`` prints the byte budget of
every secured message of the flow (default policy): the outer start line and each outer
header, then every region of the CMS body (framing, each OID, recipient info, GCM nonce and
tag, ciphertext) and, inside the ciphertext, the CompressedData framing, the raw DEFLATE
stream, and the SignedData regions (each signed attribute, signature, inner message)
with their uncompressed size and an attribution of the compressed bytes (the growth of the
compressed prefix as each region is added — an estimate, deflate codes across regions).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import zlib  # noqa: E402

from sipsec.envelope import Compression, SigningPolicy, cms, compression, oids, open_message, seal  # noqa: E402
from sipsec.envelope import _der as der  # noqa: E402
from sipsec.stores.envelope import InMemoryDialogStore, InMemoryReplayCache  # noqa: E402

from tests.unit.envelope.rfc3665 import (  # noqa: E402
    ALICE,
    BOB,
    CallRun,
    Party,
    Pki,
    Step,
    ack,
    invite,
    run_basic_call,
)


def _median_ms(samples: list[float]) -> float:
    return round(statistics.median(samples) * 1000, 3)


async def _timings(pki: Pki, rounds: int) -> dict[str, float]:
    alice, bob = Party(pki.keyring(ALICE)), Party(pki.keyring(BOB))
    seal_first, open_first, seal_dialog, open_dialog = [], [], [], []
    for i in range(rounds):
        call_id = f"bench-{i}@atlanta.example.com"
        now = time.time()
        t0 = time.perf_counter()
        first = seal(invite(call_id), alice.keys, BOB, now=now)
        t1 = time.perf_counter()
        opened = await open_message(first.message, bob.keys, bob.dialogs, bob.replay, now=now)
        t2 = time.perf_counter()
        later = seal(ack(call_id), alice.keys, first.dialog, now=now)
        t3 = time.perf_counter()
        await open_message(later.message, bob.keys, bob.dialogs, bob.replay, now=now)
        t4 = time.perf_counter()
        assert opened.first
        seal_first.append(t1 - t0)
        open_first.append(t2 - t1)
        seal_dialog.append(t3 - t2)
        open_dialog.append(t4 - t3)
    return {
        "seal_first_ms": _median_ms(seal_first),
        "open_first_ms": _median_ms(open_first),
        "seal_dialog_ms": _median_ms(seal_dialog),
        "open_dialog_ms": _median_ms(open_dialog),
    }


async def _call(pki: Pki, policy: SigningPolicy,
                compression: Compression = Compression.SIP_DICTIONARY) -> CallRun:
    alice = Party(pki.keyring(ALICE), InMemoryDialogStore(), InMemoryReplayCache())
    bob = Party(pki.keyring(BOB), InMemoryDialogStore(), InMemoryReplayCache())
    return await run_basic_call(alice, bob, policy, compression=compression)


# --- the byte budget (--breakdown) -------------------------------------------------------------

_OID_NAMES = {
    der.oid(getattr(oids, name)): name.removeprefix("ID_").lower().replace("_", "-")
    for name in oids.__all__ if name.startswith("ID_")
}
_SIGNED_ATTR_NAMES = {
    oids.ID_CONTENT_TYPE: "content-type", oids.ID_MESSAGE_DIGEST: "message-digest",
    oids.ID_SIGNING_TIME: "signing-time", oids.ID_SIPSEC_AA_SIGNER: "signer",
    oids.ID_SIPSEC_AA_NONCE: "nonce",
}
# primitive leaves, by (path of the enclosing constructed TLVs' names, tag)
_LEAF_NAMES = {
    ("kekri", 0x02): "version", ("kekri/kekid", 0x04): "dialog key id", ("sid", 0x0C): "AOR",
    ("kekri", 0x04): "wrapped CEK", ("kemri", 0x02): "version/kekLength",
    ("kemri", 0x80): "rid: recipient identity", ("kemri", 0x04): "kemct / wrapped CEK",
    ("gcm-params", 0x04): "GCM nonce", ("gcm-params", 0x02): "GCM ICV length",
    ("eci", 0x80): "ciphertext", ("aed", 0x04): "mac (GCM tag)", ("aed", 0x02): "version",
    ("cd", 0x02): "version", ("cd-eci/[0]", 0x04): "deflate stream",
    ("sd", 0x02): "version", ("sd-eci/[0]", 0x04): "eContent (MIME entity + SIP message)",
    ("si", 0x02): "version", ("si", 0x80): "sid (subjectKeyIdentifier)", ("si", 0x04): "signature",
}


def _regions(data: bytes, scope: str = "", out: list[tuple[str, int]] | None = None) -> list[tuple[str, int]]:
    """``(region, bytes)`` for every byte of the DER ``data`` (constructed headers count as framing)."""
    out = [] if out is None else out
    pos = 0
    children: list[tuple[int, int, int, int]] = []
    while pos < len(data):
        tag, start, end = der.read_tlv(data, pos)
        children.append((tag, pos, start, end))
        pos = end
    previous_oid = b""
    for tag, head, start, end in children:
        body = data[start:end]
        if tag == 0x06:
            out.append(("OID " + _OID_NAMES.get(data[head:end], "?"), end - head))
            previous_oid = data[head:end]
            continue
        if tag & 0x20:  # constructed: its header is framing, its contents named by context
            name = _scope(scope, tag, previous_oid, body)
            if name.startswith("attr:"):  # a signed attribute: one region, OID included
                out.append(("signed " + name, end - head))
                continue
            out.append((f"framing ({scope or 'top'})", start - head))
            _regions(body, name, out)
            continue
        leaf = _LEAF_NAMES.get((scope, tag), f"{scope} tag {tag:#04x}")
        out.append((leaf, end - head))
    return out


def _scope(parent: str, tag: int, previous_oid: bytes, body: bytes) -> str:
    if parent == "" and tag == 0x30:
        return "ci"
    if parent == "ci" and tag == 0xA0:
        return "ci/[0]"
    if parent == "ci/[0]":
        return "aed"
    if parent == "aed":
        return {0x31: "ris", 0x30: "eci", 0xA1: "authAttrs"}.get(tag, "aed")
    if parent == "ris":
        return {0xA2: "kekri", 0xA4: "ori"}.get(tag, "ris")
    if parent == "kekri" and tag == 0x30:
        return "kekri/kekid" if body[:1] == b"\x04" else "kekri/alg"
    if parent == "ori":
        return "kemri"
    if parent == "eci" and tag == 0x30:
        return "gcm-alg"
    if parent == "gcm-alg":
        return "gcm-params"
    if parent == "top-cd":
        return "cd"
    if parent == "cd" and tag == 0x30:
        return "cd-eci" if body[:1] == b"\x06" and len(body) > 20 else "cd-alg"
    if parent == "cd-eci":
        return "cd-eci/[0]"
    if parent == "top-sd":
        return "sd"
    if parent == "sd":
        return {0x31: "sd-set", 0x30: "sd-eci"}.get(tag, "sd")
    if parent == "sd-eci":
        return "sd-eci/[0]"
    if parent == "sd-set" and tag == 0x30:
        return "alg" if len(body) < 40 else "si"
    if parent == "si" and tag == 0xA0:
        return "signed-attrs"
    if parent == "signed-attrs":
        return "attr:" + _SIGNED_ATTR_NAMES.get(_first_oid(body), "?")
    return parent + "/" + f"{tag:#04x}"


def _first_oid(body: bytes) -> str:
    _, _, end = der.read_tlv(body, 0)
    for dotted in (str(getattr(oids, n)) for n in oids.__all__ if n.startswith("ID_")):
        if der.oid(dotted) == body[:end]:
            return dotted
    return "?"


def _attributed(data: bytes, regions: list[tuple[str, int]], primer: bytes) -> list[int]:
    """The compressed bytes attributed to each region: growth of the compressed prefix."""
    sizes, offset, before = [], 0, 0
    for _, n in regions:
        offset += n
        co = zlib.compressobj(level=9, wbits=-15, memLevel=9, zdict=compression.dictionary(primer))
        size = len(co.compress(data[:offset]) + co.flush())
        sizes.append(size - before)
        before = size
    return sizes


def _budget(step: Step, content_type: str, content: bytes, primer: bytes) -> list[str]:
    m = step.sealed.message
    lines = [f"== {step.name}: plain {len(step.inner.to_bytes())} B, secured {len(m.to_bytes())} B"
             f" = outer headers {len(m.to_bytes()) - len(m.body)} + CMS {len(m.body)}"]
    head = m.to_bytes()[: len(m.to_bytes()) - len(m.body)]
    for line in head.split(b"\r\n")[:-1]:
        label = line.split(b":", 1)[0].decode() if b":" in line and not line.startswith(b"SIP/") else "start line"
        label = "blank line" if not line else label
        lines.append(f"  outer  {label:<38} {len(line) + 2:>5}")
    for name, n in _regions(m.body):
        lines.append(f"  cms    {name:<38} {n:>5}")
    if content_type == oids.ID_CT_COMPRESSED_DATA:
        for name, n in _regions(content, "top-cd"):
            lines.append(f"  plain  {name:<38} {n:>5}")
        inner_type, inner = cms.parse_compressed_data(content, primer=primer)
        stream = compression.compress(inner, primer)
        lines.append(f"  deflate raw stream (RFC 1951, no framing)      {len(stream):>5}")
    else:
        inner_type, inner = content_type, content
    if inner_type == oids.ID_SIGNED_DATA:
        regions = _regions(inner, "top-sd")
        attributed = _attributed(inner, regions, primer) if content_type == oids.ID_CT_COMPRESSED_DATA else [n for _, n in regions]
        lines.append(f"  {'signed (uncompressed B -> compressed B)':<45} {len(inner):>5} {sum(attributed):>5}")
        for (name, n), z in zip(regions, attributed, strict=True):
            lines.append(f"  sd     {name:<38} {n:>5} {z:>5}")
    return lines


async def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="emit one JSON object")
    parser.add_argument("--rounds", type=int, default=50, help="timed rounds (default 50)")
    parser.add_argument("--dump", type=Path, help="write the secured outer messages here")
    parser.add_argument("--breakdown", action="store_true",
                        help="print the byte budget of every secured message (default policy)")
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error("--rounds must be positive")

    pki = Pki.create()
    result: dict[str, float | int | str] = {}
    result.update(await _timings(pki, args.rounds))
    captured: list[tuple[str, bytes]] = []
    build = cms.build_auth_enveloped

    def capture(recipient: bytes, content_type: str, content: bytes, cek: bytes) -> bytes:
        captured.append((content_type, content))
        return build(recipient, content_type, content, cek)

    cms.build_auth_enveloped = capture
    try:
        default = await _call(pki, SigningPolicy.EVERY_MESSAGE)
    finally:
        cms.build_auth_enveloped = build
    establishing = await _call(pki, SigningPolicy.DIALOG_ESTABLISHING)
    uncompressed = await _call(pki, SigningPolicy.EVERY_MESSAGE, Compression.NONE)
    result.update(
        {
            "plain_bytes": default.plain_bytes,
            "secured_bytes": default.secured_bytes,
            "bytes_ratio": round(default.secured_bytes / default.plain_bytes, 3),
            # where the secured bytes go: outer header sections vs CMS bodies (default policy)
            "outer_header_bytes": sum(
                len(st.sealed.message.to_bytes()) - len(st.sealed.message.body) for st in default.steps
            ),
            "cms_bytes": sum(len(st.sealed.message.body) for st in default.steps),
            "secured_bytes_dialog_establishing": establishing.secured_bytes,
            "bytes_ratio_dialog_establishing": round(
                establishing.secured_bytes / establishing.plain_bytes, 3
            ),
            "compression": Compression.SIP_DICTIONARY.value,
            "secured_bytes_uncompressed": uncompressed.secured_bytes,
            "bytes_ratio_uncompressed": round(uncompressed.secured_bytes / uncompressed.plain_bytes, 3),
            "rounds": args.rounds,
        }
    )
    if args.dump is not None:
        args.dump.mkdir(parents=True, exist_ok=True)
        for index, step in enumerate(default.steps, start=1):
            path = args.dump / f"{index:02d}-{step.name}.sip"
            path.write_bytes(step.sealed.message.to_bytes())
        result["dump"] = str(args.dump)
    if args.breakdown:
        primer = default.steps[0].sealed.dialog.primer
        for index, (step, (content_type, content)) in enumerate(zip(default.steps, captured, strict=True)):
            out = sys.stderr if args.json else sys.stdout
            print("\n".join(_budget(step, content_type, content, primer if index else b"")), file=out)
    if args.json:
        print(json.dumps(result))
    else:
        width = max(len(k) for k in result)
        for key, value in result.items():
            print(f"{key:<{width}}  {value}")
        print("per message (default policy): name plain secured")
        for step in default.steps:
            print(f"  {step.name:<8} {len(step.inner.to_bytes()):>5} {len(step.sealed.message.to_bytes()):>6}")
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
