"""``bench/up_cpu.py --profile``'s reading of a py-spy raw profile, on a profile written here
(the profilers themselves need a running ``sipsec up``: the bench, not the suite)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[3] / "bench" / "up_cpu.py"

#: py-spy's raw format: one line per distinct stack, frames root first, then the sample count.
RAW = """\
<module> (sipsec-gateway:6);main (sipsec_gateway/__main__.py:192);run (sipsec/lifecycle.py:52);Runner.run (asyncio/runners.py:118) 40
<module> (sipsec-gateway:6);run (sipsec/lifecycle.py:52);Runner.run (asyncio/runners.py:118);Agent._handle (sipsec_gateway/calls.py:763);SecuredIO.open (sipsec_gateway/secured.py:113);open_message (sipsec/envelope/opening.py:147) 20
<module> (sipsec-gateway:6);run (sipsec/lifecycle.py:52);Runner.run (asyncio/runners.py:118);Agent._handle (sipsec_gateway/calls.py:763);SecuredIO.open (sipsec_gateway/secured.py:113);pairing (sipsec/ibc/hazmat/backend.py:533) 10
<module> (sipsec-gateway:6);run (sipsec/lifecycle.py:52);Runner.run (asyncio/runners.py:118);Agent._handle (sipsec_gateway/calls.py:763);parse_message (sipsec/sip/parser.py:40) 20
<module> (sipsec-gateway:6);Thread.run (threading.py:982) 10
not a stack line
"""


@pytest.fixture(scope="module")
def bench():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("up_cpu_bench", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_samples_go_to_the_area_of_their_innermost_frame(bench, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    raw = tmp_path / "gateway.txt"
    raw.write_text(RAW)
    prof = bench.summarize_profile(raw, top=3)
    assert prof["samples"] == 100
    assert prof["areas"] == {
        "event loop in C (uvloop: sockets, epoll)": 40.0,
        "envelope (CMS build/parse)": 20.0,
        "SIP stack (parse, transactions, sockets)": 20.0,
        "pairing / group arithmetic": 10.0,
        "threads in C (gRPC core's poller, executors)": 10.0,
    }
    assert prof["top"][0] == ["Runner.run (asyncio/runners.py:118)", 40.0]
    assert len(prof["top"]) == 3


def test_a_function_counts_every_sample_it_was_on_the_stack_for(bench, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    raw = tmp_path / "gateway.txt"
    raw.write_text(RAW)
    inclusive = dict((k, v) for k, v in bench.summarize_profile(raw, top=10)["inclusive"])
    assert inclusive["Agent._handle (sipsec_gateway/calls.py:763)"] == 50.0
    assert inclusive["SecuredIO.open (sipsec_gateway/secured.py:113)"] == 30.0
    # the frames every stack of a service passes through are left out
    assert not any("lifecycle.py" in k or "__main__.py" in k for k in inclusive)


def test_an_empty_profile_has_no_shares(bench, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    raw = tmp_path / "idle.txt"
    raw.write_text("")
    assert bench.summarize_profile(raw) == {"samples": 0, "areas": {}, "top": [], "inclusive": []}
