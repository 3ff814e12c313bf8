"""Scripted sipvicious check: can an attacker list the users, or guess a phone password?

Runs the Debian ``sipvicious`` tools — as an attacker on the network would — against the real
processes of ``sipsec up`` (loopback only) and reports what they claim:

1. ``sipsec up`` starts (users alice@atlanta.com and bob@biloxi.com provisioned at their PKGs);
   alice logs in on the atlanta.com gateway with a phone password (``--phone-password``, default
   a fresh random one), bob on the biloxi.com gateway without one (the default deployment),
   both through the control API, so that both are registered at their proxies.
2. ``svwar`` (extension enumeration) runs against each domain's **proxy** and each gateway's
   **phone side** (its plain-SIP UDP port), once per method it supports (REGISTER, OPTIONS,
   INVITE), with a small dictionary that holds the real users and names that exist nowhere
   (:data:`EXTENSIONS`), each run from a loopback source address of its own. svwar first sends
   a request for a random numeric user and takes the answer as "unknown user"; every later
   answer that differs from it is a user it claims to have found (RFC 3261 gives a registrar
   and a proxy no duty to answer unknown and known users alike; a secure edge must, §26.1.2).
   The report keeps svwar's claims and, from its ``--debug`` output, the final answer
   to each name.
3. ``svcrack`` (Digest password guessing, RFC 8760 / RFC 2617) runs against alice on the
   atlanta.com phone side with a dictionary of ``--guesses`` passwords whose *last* entry is
   her real one, for at most ``--crack-timeout-s`` seconds. It talks through a UDP relay of
   this tool (svcrack's Via names the relay; the relay puts an MD5 challenge first, the one
   algorithm svcrack answers), which sees every guess and its answer: answered
   at once by a new challenge (401/407: wrong password, go on), accepted (2xx: cracked), or
   throttled — refused without a new challenge (403, 429, 503, ...: the password got no
   verdict), answered by a challenge only after ``SLOW_S`` seconds, or not answered at all.

    .venv/bin/python bench/scan.py            # a summary
    .venv/bin/python bench/scan.py --json     # one JSON object on stdout

The check passes when every svwar run completed and none found a user, and svcrack was
throttled without cracking; ``--check`` makes the exit status say so (1 when not). Progress goes to stderr.
Needs ``svwar`` and ``svcrack`` (Debian package ``sipvicious``; ``scripts/install-system-deps.sh``).
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from binascii import Error as HexError
from binascii import a2b_hex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from flood import SipsecUp, log, loopback, run_reported  # noqa: E402  (the shared sipsec up driver)

__all__ = ["EXTENSIONS", "METHODS", "REAL_USERS", "CrackRelay", "main", "parse_svwar", "run_svcrack", "run_svwar"]

#: The dictionary of every svwar run: the real users of both domains and names that exist nowhere.
EXTENSIONS = ("carol", "alice", "100", "admin", "bob", "1000", "operator", "test", "dave", "guest")
REAL_USERS = {"atlanta.com": ("alice",), "biloxi.com": ("bob",)}
METHODS = ("REGISTER", "OPTIONS", "INVITE")
DOMAINS = ("atlanta.com", "biloxi.com")
#: Wrong guesses tried before the real password (the last entry of svcrack's dictionary).
WRONG = ("123456", "password", "12345678", "qwerty", "123456789", "12345", "1234", "111111", "1234567",
         "dragon", "123123", "baseball", "abc123", "football", "monkey", "letmein", "696969", "shadow",
         "master", "666666", "qwertyuiop", "123321", "mustang", "1234567890", "michael", "654321",
         "superman", "1qaz2wsx", "7777777", "121212", "000000", "qazwsx", "123qwe", "killer", "trustno1",
         "jordan", "jennifer", "zxcvbnm", "asdfgh", "hunter", "buster", "soccer", "harley", "batman",
         "andrew", "tigger", "sunshine", "iloveyou", "2000", "charlie", "robert", "thomas", "hockey")
SLOW_S = 1.0
SVWAR_TIMEOUT_S = 20.0
SCANNER_BASE = 100  # svwar run i binds 127.0.0.(100 + i)
CRACKER, RELAY = "127.0.0.160", "127.0.0.161"


# --------------------------------------------------------------------------- svwar


def _extension_of(text: str) -> str | None:
    """The extension sipvicious hid in its From tag (hex of ``ext\\x01random``), or None."""
    for line in text.split("\r\n"):
        name = line.split(":", 1)[0].strip().lower()
        if name in ("from", "f") and "tag=" in line:
            tag = line.split("tag=", 1)[1].split(";")[0].strip()
            try:
                raw = a2b_hex(tag)
            except (HexError, ValueError):
                return None
            return raw.split(b"\x01", 1)[0].decode("utf-8", "replace")
    return None


def parse_svwar(stdout: str) -> tuple[dict[str, str], dict[str, list[str]]]:
    """(svwar's table: extension → its verdict, the answers its ``--debug`` printed: extension → status lines)."""
    claims: dict[str, str] = {}
    answers: dict[str, list[str]] = {}
    for line in stdout.splitlines():
        s = line.strip()
        if s.startswith("|"):
            cells = [c.strip() for c in s.strip("|").split("|")]
            if len(cells) == 2 and cells[0] and cells[0] != "Extension":
                claims[cells[0]] = cells[1]
        elif s.startswith(("b'SIP/2.0", 'b"SIP/2.0')):
            try:
                raw = ast.literal_eval(s)
            except (ValueError, SyntaxError):
                continue
            if not isinstance(raw, bytes):
                continue
            text = raw.decode("utf-8", "replace")
            ext = _extension_of(text) or "?"
            answers.setdefault(ext, []).append(text.split("\r\n", 1)[0][len("SIP/2.0 "):])
    return claims, answers


def _free_udp_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def run_svwar(target: tuple[str, int], domain: str, method: str, source: str, dictionary: Path,
              timeout_s: float = SVWAR_TIMEOUT_S) -> dict[str, Any]:
    """One svwar run; what it claims and the answers it got."""
    argv = ["svwar", "-d", str(dictionary), "-m", method, "--domain", domain, "-b", source,
            "-P", str(_free_udp_port(source)), "--maximumtime", "5", "--debug", f"udp://{target[0]}:{target[1]}"]
    t0 = time.monotonic()
    try:
        res = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s, stdin=subprocess.DEVNULL)
        out, err, code = res.stdout, res.stderr, res.returncode
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode(errors="replace") if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        err, code = f"killed after {timeout_s:g} s", None
    claims, answers = parse_svwar(out)
    probe = [a for ext, lines in answers.items() if ext.isdigit() and ext not in EXTENSIONS for a in lines]
    notes = [ln.split(":", 2)[-1] for ln in err.splitlines() if ln.startswith(("ERROR", "WARNING", "CRITICAL"))]
    # our own reading of the same answers: a real user whose final answers differ from those of
    # the names that exist nowhere (svwar's verdict aside)
    def finals(ext: str) -> set[str]:
        return {a.split()[0] for a in answers.get(ext, []) if not a.startswith("1")}

    nobody = set().union(*(finals(e) for e in EXTENSIONS if e not in sum(REAL_USERS.values(), ())))
    return {
        "users_found": sorted(claims), "verdicts": claims,
        "real_users_found": sorted(set(claims) & set(REAL_USERS[domain])),
        "real_users_distinguishable": sorted(u for u in REAL_USERS[domain] if finals(u) and finals(u) != nobody),
        "answers": {ext: answers[ext] for ext in EXTENSIONS if ext in answers},
        "unknown_user_probe": probe[:3], "notes": notes[:6],
        "completed": code == 0, "exit": code, "seconds": round(time.monotonic() - t0, 2),
    }


# --------------------------------------------------------------------------- svcrack


@dataclass
class _Guess:
    sent_at: float
    password_guess: bool
    statuses: list[tuple[int, float]] = field(default_factory=list)


_MD5 = re.compile(rb"algorithm\s*=\s*\"?md5\"?\s*(,|$)", re.IGNORECASE)


def md5_first(data: bytes) -> bytes:
    """``data`` with its MD5 Digest challenges moved before the others (svcrack answers the
    first challenge and knows MD5 only; an attacker picks the weakest algorithm offered, which
    RFC 8760 §2.4 lets a client do). Anything else is passed through unchanged."""
    head, sep, body = data.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    auth = [i for i, ln in enumerate(lines) if ln.lower().startswith((b"www-authenticate:", b"proxy-authenticate:"))]
    if len(auth) < 2:
        return data
    md5 = [lines[i] for i in auth if _MD5.search(lines[i])]
    rest = [lines[i] for i in auth if not _MD5.search(lines[i])]
    out = [ln for i, ln in enumerate(lines) if i not in auth]
    out[auth[0]:auth[0]] = md5 + rest
    return b"\r\n".join(out) + sep + body


class CrackRelay:
    """A UDP relay between svcrack and the target that records each request and its answers.

    svcrack binds ``(client_host, port)`` and names ``(relay_host, port)`` in its Via (``-x``);
    the relay forwards its requests from that address, so every answer comes back here.
    """

    def __init__(self, relay_host: str, client_host: str, target: tuple[str, int]) -> None:
        self.target = target
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((relay_host, 0))
        self.sock.settimeout(0.1)
        self.port = int(self.sock.getsockname()[1])
        self.client = (client_host, self.port)
        self.requests: dict[str, _Guess] = {}
        self.order: list[str] = []
        self.lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def _branch(text: str) -> str | None:
        for line in text.split("\r\n")[1:]:
            name = line.split(":", 1)[0].strip().lower()
            if name in ("via", "v") and "branch=" in line:
                return line.split("branch=", 1)[1].split(";")[0].split(",")[0].strip()
        return None

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data, addr = self.sock.recvfrom(65535)
            except TimeoutError:
                continue
            except OSError:
                return
            text = data.decode("utf-8", "replace")
            branch = self._branch(text)
            now = time.monotonic()
            if addr == self.client:
                if branch is not None and not text.startswith("SIP/2.0"):
                    head = text.split("\r\n\r\n", 1)[0].lower()
                    guess = "\nauthorization:" in head or "\nproxy-authorization:" in head
                    with self.lock:
                        if branch not in self.requests:
                            self.requests[branch] = _Guess(now, guess)
                            self.order.append(branch)
                with contextlib.suppress(OSError):
                    self.sock.sendto(data, self.target)
            elif addr == self.target:
                if text.startswith("SIP/2.0 ") and branch is not None:
                    with self.lock:
                        g = self.requests.get(branch)
                        if g is not None:
                            with contextlib.suppress(ValueError):
                                g.statuses.append((int(text[8:11]), now - g.sent_at))
                with contextlib.suppress(OSError):
                    self.sock.sendto(md5_first(data), self.client)

    def __enter__(self) -> CrackRelay:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()

    def summary(self) -> dict[str, Any]:
        """Per guess: challenged at once (401/407), accepted (2xx), or throttled: refused with any
        other status (403, 429, 503, ...: no new challenge, so no verdict on the password),
        challenged only after ``SLOW_S``, or not answered."""
        buckets = {"challenged": 0, "accepted": 0, "refused": 0, "slow_challenge": 0, "unanswered": 0}
        refused: dict[str, int] = {}
        unauth: dict[str, int] = {}
        with self.lock:
            reqs = [self.requests[b] for b in self.order]
        for g in reqs:
            final = next(((st, dt) for st, dt in g.statuses if st >= 200), None)
            if not g.password_guess:
                key = "none" if final is None else str(final[0])
                unauth[key] = unauth.get(key, 0) + 1
                continue
            if final is None:
                buckets["unanswered"] += 1
            elif 200 <= final[0] < 300:
                buckets["accepted"] += 1
            elif final[0] in (401, 407):
                buckets["slow_challenge" if final[1] >= SLOW_S else "challenged"] += 1
            else:
                buckets["refused"] += 1
                refused[str(final[0])] = refused.get(str(final[0]), 0) + 1
        guesses = sum(1 for g in reqs if g.password_guess)
        return {
            "guesses_sent": guesses,
            "challenged": buckets["challenged"],
            "throttled": buckets["refused"] + buckets["slow_challenge"] + buckets["unanswered"],
            "throttled_by": {"refused": refused, "slow_challenge": buckets["slow_challenge"],
                             "unanswered": buckets["unanswered"]},
            "accepted": buckets["accepted"],
            "unauthenticated_requests": sum(unauth.values()), "unauthenticated_answers": unauth,
        }


#: svcrack 0.3.3 takes ``-b`` but never passes it on, and so would listen on every interface:
#: this runs the packaged svcrack with its socket bound to the given loopback address.
_SVCRACK_BOUND = """
import os, sys
script = os.path.realpath(sys.argv[1])
sys.path.insert(0, os.path.dirname(script))
bind, sys.argv = sys.argv[2], ["svcrack", *sys.argv[3:]]
from sipvicious import svcrack
init = svcrack.ASipOfRedWine.__init__
def bound(self, *args, **kwargs):
    kwargs["bindingip"] = bind
    init(self, *args, **kwargs)
svcrack.ASipOfRedWine.__init__ = bound
sys.exit(svcrack.main())
"""


def _svcrack_argv(args: list[str], bind: str) -> list[str]:
    """svcrack with ``args``, run by the packaged script's own interpreter, bound to ``bind``."""
    exe = shutil.which("svcrack")
    if exe is None:
        raise RuntimeError("svcrack is not installed (Debian package sipvicious)")
    with open(os.path.realpath(exe), "rb") as fh:
        first = fh.readline().decode(errors="replace")
    python = first[2:].strip().split()[0] if first.startswith("#!") else "python3"
    return [python, "-c", _SVCRACK_BOUND, exe, loopback(bind), *args]


def run_svcrack(target: tuple[str, int], domain: str, user: str, dictionary: Path,
                timeout_s: float) -> dict[str, Any]:
    """One bounded svcrack run against ``user`` through a :class:`CrackRelay`."""
    with CrackRelay(RELAY, CRACKER, target) as relay:
        argv = _svcrack_argv(["-u", user, "-d", str(dictionary), "--domain", domain, "-b", CRACKER,
                              "-x", RELAY, "-P", str(relay.port), "--maximumtime", "5", "-v",
                              f"udp://{RELAY}:{relay.port}"], CRACKER)
        t0 = time.monotonic()
        timed_out = False
        try:
            res = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s, stdin=subprocess.DEVNULL)
            out, err, code = res.stdout, res.stderr, res.returncode
        except subprocess.TimeoutExpired as exc:
            out = exc.stdout.decode(errors="replace") if isinstance(exc.stdout, bytes) else (exc.stdout or "")
            err = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else (exc.stderr or "")
            code, timed_out = None, True
        seconds = time.monotonic() - t0
        time.sleep(0.3)  # answers still on their way
        summary = relay.summary()
    said_cracked = any("The password for" in ln for ln in err.splitlines())
    table = [ln for ln in out.splitlines() if ln.strip().startswith("|") and "Password" not in ln]
    notes = [ln.split(":", 2)[-1] for ln in err.splitlines()
             if ln.startswith(("ERROR", "WARNING", "CRITICAL")) and "The password" not in ln]
    return {
        **summary,
        "cracked": bool(summary["accepted"]) or said_cracked or bool(table),
        "seconds": round(seconds, 2), "timed_out": timed_out, "exit": code, "notes": notes[:6],
        "stderr_tail": err[-1200:] if "Traceback" in err else "",
    }


# --------------------------------------------------------------------------- the check


def _login(base: str, body: dict[str, Any], token: str) -> dict[str, Any]:
    req = urllib.request.Request(f"{base}/v1/users", data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:  # noqa: S310 (loopback http only)
            doc: dict[str, Any] = json.loads(resp.read())
            return doc
    except urllib.error.HTTPError as exc:
        raise RuntimeError(f"login of {body['aor']} at {base}: HTTP {exc.code} "
                           f"{exc.read().decode(errors='replace')[:300]}") from None


def _run(args: argparse.Namespace) -> dict[str, Any]:
    for tool in ("svwar", "svcrack"):
        if shutil.which(tool) is None:
            raise RuntimeError(f"{tool} is not installed (Debian package sipvicious: scripts/install-system-deps.sh)")
    work = Path(tempfile.mkdtemp(prefix="sipsec-scan-"))
    try:
        names = work / "extensions.txt"
        names.write_text("\n".join(EXTENSIONS) + "\n")
        phone_password = args.phone_password or secrets.token_urlsafe(12)
        guesses = list(WRONG[: max(0, args.guesses - 1)]) + [phone_password]
        passwords = work / "passwords.txt"
        passwords.write_text("\n".join(guesses) + "\n")
        log("starting sipsec up")
        with SipsecUp() as up:
            creds = up.credentials()
            http = {d: "http://{}:{}".format(*up.address(d, "gateway", "http")) for d in DOMAINS}
            alice, bob = "sip:alice@atlanta.com", "sip:bob@biloxi.com"
            logins = {
                alice: _login(http["atlanta.com"], {"aor": alice, "password": creds[alice],
                                                    "phone_password": phone_password}, up.api_token("atlanta.com")),
                bob: _login(http["biloxi.com"], {"aor": bob, "password": creds[bob]}, up.api_token("biloxi.com")),
            }
            log("alice (with a phone password) and bob (without) logged in on their gateways")
            targets = [("proxy", d, up.address(d, "proxy", "sip")) for d in DOMAINS]
            targets += [("phone", d, up.address(d, "gateway", "plain")) for d in DOMAINS]
            svwar: list[dict[str, Any]] = []
            i = 0
            for side, domain, addr in targets:
                for method in args.methods:
                    source = loopback(f"127.0.0.{SCANNER_BASE + i}")
                    i += 1
                    run = run_svwar(addr, domain, method, source, names)
                    svwar.append({"target": side, "domain": domain, "address": f"{addr[0]}:{addr[1]}",
                                  "method": method, "source": source, **run})
                    log(f"svwar {method:8s} {side} {domain}: found {run['users_found'] or 'nothing'} "
                        f"({run['seconds']} s)")
            phone = up.address("atlanta.com", "gateway", "plain")
            log(f"svcrack: {len(guesses)} guesses at alice on the atlanta.com phone side, "
                f"at most {args.crack_timeout_s:g} s")
            crack = run_svcrack(phone, "atlanta.com", "alice", passwords, args.crack_timeout_s)
            crack.update({"target": "phone", "domain": "atlanta.com", "user": "alice",
                          "address": f"{phone[0]}:{phone[1]}", "dictionary_size": len(guesses),
                          "real_password_position": len(guesses)})
            log(f"svcrack: {crack['guesses_sent']} guesses, {crack['challenged']} challenged, "
                f"{crack['throttled']} throttled, cracked={crack['cracked']} ({crack['seconds']} s)")
            alive = up.alive()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    found = sorted({f"{r['target']}/{r['domain']}/{r['method']}: {u}" for r in svwar for u in r["users_found"]})
    return {
        "svwar": svwar,
        "users_found": found,
        "real_users_found": sorted({f"{r['target']}/{r['domain']}: {u}" for r in svwar for u in r["real_users_found"]}),
        "svcrack": crack,
        "logins": {aor: {"phone_auth": doc.get("phone_auth"), "registered": doc.get("registered")}
                   for aor, doc in logins.items()},
        "sipsec_up_alive": alive,
        "passed": {"every_svwar_run_completed": all(r["completed"] for r in svwar),
                   "no_user_found": not found, "svcrack_not_cracked": not crack["cracked"],
                   "svcrack_throttled": crack["throttled"] > 0},
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    assert __doc__ is not None
    p = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS, help="svwar methods")
    p.add_argument("--guesses", type=int, default=50, help="svcrack dictionary size, the real password last (50)")
    p.add_argument("--crack-timeout-s", type=float, default=30.0, help="svcrack's time bound (default 30)")
    p.add_argument("--phone-password", default=None, help="alice's phone password (default: a random one)")
    p.add_argument("--check", action="store_true",
                   help="exit 1 unless no user was found and svcrack was throttled without cracking")
    args = p.parse_args(argv)
    if not 1 <= args.guesses <= len(WRONG) + 1:
        p.error(f"--guesses must be in [1, {len(WRONG) + 1}]")
    if not 1 <= args.crack_timeout_s <= 300:
        p.error("--crack-timeout-s must be in [1, 300]")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    result = run_reported("scan", lambda: _run(args))
    if result is None:
        return 1
    if args.json:
        print(json.dumps(result))
    else:
        for r in result["svwar"]:
            print(f"svwar {r['method']:8s} {r['target']:5s} {r['domain']:11s}: "
                  f"found {', '.join(r['users_found']) or 'nothing'}")
        c = result["svcrack"]
        print(f"svcrack alice (phone side): {c['guesses_sent']} guesses in {c['seconds']} s, "
              f"{c['challenged']} challenged at once, {c['throttled']} throttled, cracked: {c['cracked']}")
        print("passed: " + ", ".join(f"{k}={v}" for k, v in result["passed"].items()))
    return 1 if args.check and not all(result["passed"].values()) else 0


if __name__ == "__main__":
    sys.exit(main())
