"""``sipsec load --emit-sipp DIR``: SIPp scenarios and injection CSVs for a provisioned population.

The population is provisioned and logged in on the target exactly as for a ``sipsec load`` run;
then, instead of placing calls, these files are written (0600: the CSVs hold phone passwords):

* ``register.xml`` + ``register-<domain>.csv`` (SEQUENTIAL ``user;[authentication …]``): each
  user's phone REGISTERs (401 answered) with its Contact on the UAS's port (``-key contact_port``);
* ``uas.xml``: one SIPp UAS answering every call to any registered user (180, 200, ACK, BYE/200);
* ``uac.xml`` + ``calls-<domain>.csv`` (RANDOM ``caller;callee@other-domain;[authentication …]``):
  INVITE / 407 / ACK / INVITE with credentials / 180 / 200 (``rtd``) / ACK / hold / BYE / 200;
* ``commands.txt``: the SIPp command lines for this target.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

from sipsec_cli.load.run import Population
from sipsec_cli.load.target import Target

__all__ = ["REGISTER_XML", "UAC_XML", "UAS_XML", "write_sipp"]

_HEAD = '<?xml version="1.0" encoding="ISO-8859-1" ?>\n<!DOCTYPE scenario SYSTEM "sipp.dtd">\n'
_SDP = """      v=0
      o=user1 53655765 2353687637 IN IP[local_ip_type] [local_ip]
      s=-
      c=IN IP[media_ip_type] [media_ip]
      t=0 0
      m=audio [media_port] RTP/AVP 0
      a=rtpmap:0 PCMU/8000
"""


def _send(text: str, retrans: bool = True) -> str:
    attr = ' retrans="500"' if retrans else ""
    return f"  <send{attr}>\n    <![CDATA[\n\n{text}\n    ]]>\n  </send>\n"


def _req(first: str, cseq: str, extra: str = "", body: str = "", to: str = "To: <sip:[field1]>",
         branch: str = "[branch]") -> str:
    lines = [first, f"      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch={branch}",
             "      From: <sip:[field0]@[local_ip]>;tag=[pid]SIPpLoad[call_number]", f"      {to}",
             "      Call-ID: [call_id]", f"      CSeq: {cseq}", "      Max-Forwards: 70"]
    if extra:
        lines.append(extra)
    if body:
        lines += ["      Content-Type: application/sdp", "      Content-Length: [len]", "", body]
    else:
        lines.append("      Content-Length: 0")
    return "\n".join(lines)


REGISTER_XML = _HEAD + '<scenario name="sipsec load: phone REGISTER with Digest (CSV users)">\n' + _send(_req(
    "      REGISTER sip:[remote_ip]:[remote_port] SIP/2.0", "1 REGISTER",
    "      Contact: <sip:[field0]@[local_ip]:[contact_port]>\n      Expires: 3600", to="To: <sip:[field0]@[local_ip]>")
) + '  <recv response="401" auth="true"/>\n' + _send(_req(
    "      REGISTER sip:[remote_ip]:[remote_port] SIP/2.0", "2 REGISTER",
    "      Contact: <sip:[field0]@[local_ip]:[contact_port]>\n"
    "      [field1]\n      Expires: 3600",
    to="To: <sip:[field0]@[local_ip]>")
) + '  <recv response="200" rtd="true"/>\n</scenario>\n'

UAC_XML = _HEAD + '<scenario name="sipsec load: phone call with Digest (CSV callers and callees)">\n' + _send(_req(
    "      INVITE sip:[field1] SIP/2.0", "1 INVITE", "      Contact: <sip:[field0]@[local_ip]:[local_port]>",
    _SDP)
) + ('  <recv response="100" optional="true"/>\n  <recv response="407" auth="true"/>\n'
     + _send(_req("      ACK sip:[field1] SIP/2.0", "1 ACK", to="[last_To:]", branch="[branch-3]"), False)
     ) + _send(_req(
         "      INVITE sip:[field1] SIP/2.0", "2 INVITE",
         "      Contact: <sip:[field0]@[local_ip]:[local_port]>\n"
         "      [field2]", _SDP)
     ) + ('  <recv response="100" optional="true"/>\n  <recv response="180" optional="true"/>\n'
          '  <recv response="183" optional="true"/>\n  <recv response="200" rtd="true" rrs="true"/>\n'
          + _send(_req("      ACK [next_url] SIP/2.0", "2 ACK", to="[last_To:]"), False)
          + '  <pause/>\n'
          + _send(_req("      BYE [next_url] SIP/2.0", "3 BYE", to="[last_To:]"))
          + '  <recv response="200" crlf="true"/>\n  <timewait milliseconds="500"/>\n</scenario>\n')


def _resp(status: str, tag: bool, body: str = "") -> str:
    lines = [f"      SIP/2.0 {status}", "      [last_Via:]", "      [last_From:]",
             "      [last_To:]" + (";tag=[pid]SIPpUas[call_number]" if tag else ""), "      [last_Call-ID:]",
             "      [last_CSeq:]"]
    if tag:
        lines.append("      Contact: <sip:[local_ip]:[local_port];transport=[transport]>")
    if body:
        lines += ["      Content-Type: application/sdp", "      Content-Length: [len]", "", body]
    else:
        lines.append("      Content-Length: 0")
    return "\n".join(lines)


UAS_XML = _HEAD + '<scenario name="sipsec load: the phones of every callee">\n  <recv request="INVITE" crlf="true"/>\n' + (
    _send(_resp("180 Ringing", True), False) + _send(_resp("200 OK", True, _SDP))
    + '  <recv request="ACK" rtd="true" crlf="true"/>\n  <recv request="BYE"/>\n'
    + _send(_resp("200 OK", False), False) + '  <timewait milliseconds="500"/>\n</scenario>\n')


def _auth(user: str, password: str) -> str:
    """The CSV field SIPp expands into Digest credentials (its keyword cannot nest ``[fieldN]``)."""
    return f"[authentication username={user} password={password}]"


def _private(path: Path, text: str) -> Path:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    return path


def write_sipp(directory: Path, target: Target, pop: Population, seed: int = 0) -> list[Path]:
    """Write the scenarios, CSVs and command lines for ``pop`` on ``target`` into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    written = [_private(directory / n, x) for n, x in (("register.xml", REGISTER_XML), ("uac.xml", UAC_XML),
                                                        ("uas.xml", UAS_XML))]
    names = list(pop.users)
    commands = []
    for d in names:
        other = next(o for o in names if o != d)
        reg = "SEQUENTIAL\n" + "".join(f"{u};{_auth(u, phone)};\n" for u, _, phone in pop.users[d])
        rng = random.Random(seed)
        pairs = [(rng.choice(pop.users[d]), rng.choice(pop.users[other])[0])
                 for _ in range(max(100, 4 * len(pop.users[d])))]
        calls = "RANDOM\n" + "".join(f"{u};{c}@{other};{_auth(u, phone)};\n" for (u, _, phone), c in pairs)
        written.append(_private(directory / f"register-{d}.csv", reg))
        written.append(_private(directory / f"calls-{d}.csv", calls))
        host, port = target.domains[d].phone
        n = len(pop.users[d])
        commands += [
            f"# {d}: the callee phones (one UAS), then their REGISTERs pointing at it, then the calls",
            f"sipp -sf uas.xml -i LOCAL_IP_{d} -p UAS_PORT_{d} -bg",
            f"sipp {host}:{port} -sf register.xml -inf register-{d}.csv -key contact_port UAS_PORT_{d} "
            f"-i LOCAL_IP_{d} -m {n} -r 20",
            f"sipp {host}:{port} -sf uac.xml -inf calls-{d}.csv -i LOCAL_IP_{d} -r RATE -m CALLS -d HOLD_MS",
        ]
    written.append(_private(directory / "commands.txt", "\n".join(commands) + "\n"))
    return written
