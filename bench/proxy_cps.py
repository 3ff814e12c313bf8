"""Benchmark: highest sipp call rate each proxy sustains with >= 99.5 % of calls completed.

For the sipsec proxy and then Kamailio (bench/kamailio/kamailio.cfg, a minimal stateful proxy),
on the same machine with the same sipp settings: sipp's built-in ``uac`` sends INVITE/ACK/BYE
calls with no pause (``-d 0``) to a sipp ``uas`` through the proxy (``-rsa`` = the proxy; the
Request-URI names the UAS, which both proxies forward to after Record-Routing the INVITE).
The uac uses one UDP socket per call (``-t un``), as many phones would: the kernel spreads
sources over the sipsec proxy's SO_REUSEPORT workers (``--workers``, default 2) and over
Kamailio's UDP children alike; ``--uac-transport u1`` sends every call from one socket.

    .venv/bin/python bench/proxy_cps.py            # a table
    .venv/bin/python bench/proxy_cps.py --json     # {"sipsec_cps": .., "kamailio_cps": .., "ratio": ..}

A rate passes when >= 99.5 % of the calls complete *and* the run lasts at most 15 % (+0.5 s)
longer than calls / rate (a proxy that falls behind and only completes the calls late, through
retransmissions and socket buffers, has not sustained the rate). The search climbs a ladder of
rates until one fails, then bisects once between the last passing and the first failing rate; every trial runs ``--calls`` calls (default 5,000), and
the whole search for one proxy stops after ``--budget-s`` seconds. Bar (docs/architecture.md#performance-bars): ratio >= 0.5.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.sipp import Sipp, free_port_on  # noqa: E402  (the repository's sipp harness)

LADDER = (200, 400, 600, 800, 1000, 1300, 1600, 2000, 2500, 3000, 4000)
PASS_RATIO = 0.995
UAC_TRANSPORT = "un"  # sipp -t for the uac; --uac-transport
MAX_STRETCH = 1.15  # a trial may last at most 15 % (+0.5 s) longer than calls / rate
SLACK_S = 0.5


@contextmanager
def sipsec_proxy(workers: int) -> Iterator[tuple[str, int]]:
    port = free_port_on("127.0.0.1")
    env = {**os.environ, "SIPSEC_PROXY_DOMAINS": "bench.test", "SIPSEC_PROXY_LISTEN": f"127.0.0.1:{port}",
           "SIPSEC_PROXY_AUTH": "none", "SIPSEC_PROXY_RATE_LIMIT": "0", "SIPSEC_PROXY_METRICS_PORT": "-1",
           "SIPSEC_PROXY_WORKERS": str(workers), "SIPSEC_LOG_LEVEL": "WARNING",
           "SIPSEC_PROXY_DRAIN_SECONDS": "0", "SIPSEC_PROXY_QUEUE_SIZE": "65536",
           # the uac names the uas by address (no registration), as with Kamailio: a configured
           # peer host (the proxy is no open relay; any port there except its service ports)
           "SIPSEC_PROXY_PEERS": "127.0.0.1"}
    exe = Path(sys.executable).parent / "sipsec-proxy"
    proc = subprocess.Popen([str(exe), "serve"], env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout is not None
        if "listening" not in proc.stdout.readline():
            raise RuntimeError("sipsec-proxy did not start")
        yield ("127.0.0.1", port)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextmanager
def kamailio_proxy(workers: int) -> Iterator[tuple[str, int]]:
    exe = shutil.which("kamailio") or "/usr/sbin/kamailio"
    if not os.access(exe, os.X_OK):
        raise RuntimeError("kamailio is not installed: apt-get install -y kamailio")
    port = free_port_on("127.0.0.1")
    run = Path(tempfile.mkdtemp(prefix="sipsec-kamailio-"))
    cfg = ROOT / "bench" / "kamailio" / "kamailio.cfg"
    proc = subprocess.Popen(
        [exe, "-f", str(cfg), "-DD", "-E", "-n", str(workers), "-l", f"udp:127.0.0.1:{port}",
         "-m", "256", "-M", "16", "-P", str(run / "kamailio.pid"), "-Y", str(run)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        time.sleep(1.5)
        if proc.poll() is not None:
            raise RuntimeError(f"kamailio exited with {proc.returncode}")
        yield ("127.0.0.1", port)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        shutil.rmtree(run, ignore_errors=True)


def trial(proxy: tuple[str, int], rate: int, calls: int) -> tuple[float, float]:
    """(fraction of ``calls`` completed, seconds sipp's uac ran) at ``rate`` calls/s."""
    duration = calls / rate
    uas = Sipp("uas", calls=calls, timeout_s=duration + 40, trace_msg=False)
    uas.start()
    uac = Sipp("uac", remote=uas.address, calls=calls, rate=rate, timeout_s=duration + 20, trace_msg=False,
               transport=UAC_TRANSPORT,
               extra_args=["-rsa", f"{proxy[0]}:{proxy[1]}", "-d", "0", "-l", str(max(200, rate * 4)),
                           *(["-max_socket", "10000"] if UAC_TRANSPORT == "un" else [])])
    try:
        uac.start()
        result = uac.wait()
    finally:
        uas.stop()
        uas.cleanup()
        uac.cleanup()
    return max(0, result.successful_calls) / calls, result.elapsed_s


def passed(rate: int, calls: int, completed: float, elapsed: float) -> bool:
    """>= 99.5 % completed, and at the offered rate: a proxy that only queues (the calls finish
    late, carried by retransmissions and socket buffers) has not sustained that rate."""
    return completed >= PASS_RATIO and elapsed <= calls / rate * MAX_STRETCH + SLACK_S


def search(proxy: tuple[str, int], calls: int, budget_s: float, log: Callable[[str], None]) -> tuple[int, float]:
    """(highest passing rate, calls completed per second of that trial's run)."""
    start = time.monotonic()
    best, failed, best_effective = 0, 0, 0.0

    def attempt(rate: int) -> float | None:
        completed, elapsed = trial(proxy, rate, calls)
        ok = passed(rate, calls, completed, elapsed)
        effective = completed * calls / elapsed if elapsed > 0 else 0.0
        log(f"  rate {rate:5d} cps: {completed * 100:6.2f} % completed in {elapsed:5.1f} s "
            f"(ideal {calls / rate:5.1f} s, {effective:6.0f} calls/s) {'pass' if ok else 'FAIL'}")
        return effective if ok else None

    for rate in LADDER:
        if time.monotonic() - start + calls / rate > budget_s:
            break
        effective = attempt(rate)
        if effective is None:
            failed = rate
            break
        best, best_effective = rate, effective
    if best and failed and time.monotonic() - start + calls / best < budget_s:
        mid = (best + failed) // 2
        if mid > best:
            effective = attempt(mid)
            if effective is not None:
                best, best_effective = mid, effective
    return best, best_effective


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--calls", type=int, default=5000, help="calls per trial (default 5000)")
    parser.add_argument("--budget-s", type=float, default=130.0, help="time limit per proxy's search")
    parser.add_argument("--workers", type=int, default=2, help="sipsec proxy worker processes (SO_REUSEPORT)")
    parser.add_argument("--uac-transport", choices=("un", "u1"), default="un",
                        help="sipp uac transport: un = one UDP socket per call, like many phones "
                             "(default); u1 = one socket for every call")
    parser.add_argument("--kamailio-workers", type=int, default=2, help="kamailio UDP children (-n)")
    args = parser.parse_args()
    global UAC_TRANSPORT
    UAC_TRANSPORT = args.uac_transport

    def log(text: str) -> None:
        if not args.json:
            print(text, flush=True)

    log(f"sipsec proxy ({args.workers} worker(s)):")
    with sipsec_proxy(args.workers) as addr:
        sipsec_cps, sipsec_eff = search(addr, args.calls, args.budget_s, log)
    log(f"kamailio ({args.kamailio_workers} UDP children):")
    with kamailio_proxy(args.kamailio_workers) as addr:
        kamailio_cps, kamailio_eff = search(addr, args.calls, args.budget_s, log)
    ratio = sipsec_cps / kamailio_cps if kamailio_cps else 0.0
    figures = {"sipsec_cps": sipsec_cps, "kamailio_cps": kamailio_cps, "ratio": round(ratio, 3),
               "sipsec_completed_per_s": round(sipsec_eff), "kamailio_completed_per_s": round(kamailio_eff),
               "calls_per_trial": args.calls, "pass_ratio": PASS_RATIO, "max_stretch": MAX_STRETCH,
               "uac_transport": args.uac_transport, "sipsec_workers": args.workers, "kamailio_workers": args.kamailio_workers,
               "cpus": os.cpu_count()}
    if args.json:
        print(json.dumps(figures))
    else:
        print(f"sipsec {sipsec_cps} cps, kamailio {kamailio_cps} cps, ratio {ratio:.2f} (bar >= 0.5)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
