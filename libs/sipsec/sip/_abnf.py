"""The RFC 3261 §25.1 grammar (plus RFC 3966 tel and RFC 5118 IPv6 fixes) as regex fragments.

Each fragment quotes the ABNF rule it implements.  Header values reach these regexes after
line folding has been replaced by a single SP (RFC 3261 §7.3.1: "LWS ... is equivalent to a
single SP"), so ``LWS`` / ``SWS`` below are plain ``[ \\t]`` runs.  Text is decoded from
UTF-8 with ``surrogateescape``, so ``UTF8-NONASCII`` is matched as "any non-ASCII code point".
"""

from __future__ import annotations

import re

__all__ = [
    "ABSOLUTE_URI_RE",
    "CALLID_RE",
    "CSEQ_RE",
    "DATE_RE",
    "GEN_PARAM_RE",
    "GEN_PARAMS_RUN_RE",
    "IPV4_RE",
    "VIA_PARAMS_RUN_RE",
    "HEADER_NAME_RE",
    "HOST",
    "HOSTNAME",
    "IPV4",
    "IPV6_REF_CANDIDATE",
    "NAME_ADDR_RE",
    "ADDR_SPEC_RE",
    "COMMA_RE",
    "REQUEST_LINE_RE",
    "STATUS_LINE_RE",
    "SIP_URI_RE",
    "TEL_DIGIT_RE",
    "TEL_URI_RE",
    "TOKEN",
    "TOKEN_RE",
    "URI_PARAM_RE",
    "URI_HEADER_RE",
    "VIA_PARM_RE",
    "VIA_PARAM_RE",
    "QUOTED_STRING",
    "DIGITS_RE",
]

# WSP = SP / HTAB ; LWS = [*WSP CRLF] 1*WSP ; SWS = [LWS]   (folding already unfolded)
SWS = r"[ \t]*"
LWS = r"[ \t]+"

# token = 1*(alphanum / "-" / "." / "!" / "%" / "*" / "_" / "+" / "`" / "'" / "~" )
TCHAR_CLASS = r"A-Za-z0-9\-.!%*_+`'~"
TOKEN = rf"[{TCHAR_CLASS}]+"
TOKEN_RE = re.compile(TOKEN)

# Method = INVITEm / ACKm / ... / extension-method ; extension-method = token
# header-name = token
HEADER_NAME_RE = re.compile(TOKEN)

# word = 1*(alphanum / "-" / "." / "!" / "%" / "*" / "_" / "+" / "`" / "'" / "~" /
#        "(" / ")" / "<" / ">" / ":" / "\" / DQUOTE / "/" / "[" / "]" / "?" / "{" / "}" )
WORD = r"[A-Za-z0-9\-.!%*_+`'~()<>:\\\"/\[\]?{}]+"
# callid = word [ "@" word ]
CALLID_RE = re.compile(rf"{WORD}(?:@{WORD})?")

# quoted-string = SWS DQUOTE *(qdtext / quoted-pair ) DQUOTE
# qdtext = LWS / %x21 / %x23-5B / %x5D-7E / UTF8-NONASCII
# quoted-pair = "\" (%x00-09 / %x0B-0C / %x0E-7F)
QUOTED_STRING = r'"(?:[ \t\x21\x23-\x5b\x5d-\x7e\x80-\U0010ffff]|\\[\x00-\x09\x0b\x0c\x0e-\x7f])*"'

# escaped = "%" HEXDIG HEXDIG
ESCAPED = r"%[0-9A-Fa-f]{2}"
# unreserved = alphanum / mark ; mark = "-" / "_" / "." / "!" / "~" / "*" / "'" / "(" / ")"
UNRESERVED = r"A-Za-z0-9\-_.!~*'()"
# user = 1*( unreserved / escaped / user-unreserved )
# user-unreserved = "&" / "=" / "+" / "$" / "," / ";" / "?" / "/"
USER = rf"(?:[{UNRESERVED}&=+$,;?/]|{ESCAPED})+"
# password = *( unreserved / escaped / "&" / "=" / "+" / "$" / "," )
PASSWORD = rf"(?:[{UNRESERVED}&=+$,]|{ESCAPED})*"

# IPv4address = 1*3DIGIT "." 1*3DIGIT "." 1*3DIGIT "." 1*3DIGIT
IPV4 = r"[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}"
# domainlabel = alphanum / alphanum *( alphanum / "-" ) alphanum
# toplabel = ALPHA / ALPHA *( alphanum / "-" ) alphanum
# hostname = *( domainlabel "." ) toplabel [ "." ]
DOMAINLABEL = r"[A-Za-z0-9](?:[A-Za-z0-9\-]*[A-Za-z0-9])?"
TOPLABEL = r"[A-Za-z](?:[A-Za-z0-9\-]*[A-Za-z0-9])?"
HOSTNAME = rf"(?:{DOMAINLABEL}\.)*{TOPLABEL}\.?"
# IPv6reference = "[" IPv6address "]"  — the candidate is checked against RFC 4291 with
# the ipaddress module, which is RFC 5118 §4.10's correction of the RFC 3261 ABNF.
IPV6_REF_CANDIDATE = r"\[[0-9A-Fa-f:.]+\]"
# host = hostname / IPv4address / IPv6reference
HOST = rf"(?:{IPV6_REF_CANDIDATE}|{IPV4}(?![A-Za-z0-9\-.])|{HOSTNAME})"

# SIP-URI = "sip:" [ userinfo ] hostport uri-parameters [ headers ]
# userinfo = ( user / telephone-subscriber ) [ ":" password ] "@"
# hostport = host [ ":" port ]
SIP_URI_RE = re.compile(
    rf"(?P<scheme>[Ss][Ii][Pp][Ss]?):"
    rf"(?:(?P<user>{USER})(?::(?P<password>{PASSWORD}))?@)?"
    rf"(?P<host>{HOST})(?::(?P<port>[0-9]{{1,5}}))?"
    rf"(?P<params>(?:;[^?]*)?)"
    rf"(?:\?(?P<headers>.*))?",
    re.DOTALL,
)
# uri-parameter = transport-param / user-param / ... / other-param
# other-param = pname [ "=" pvalue ] ; pname = 1*paramchar ; pvalue = 1*paramchar
# paramchar = param-unreserved / unreserved / escaped
# param-unreserved = "[" / "]" / "/" / ":" / "&" / "+" / "$"
PARAMCHAR = rf"(?:[\[\]/:&+${UNRESERVED}]|{ESCAPED})"
URI_PARAM_RE = re.compile(rf"({PARAMCHAR}+)(?:=({PARAMCHAR}+))?")
# header = hname "=" hvalue ; hname = 1*( hnv-unreserved / unreserved / escaped )
# hvalue = *( hnv-unreserved / unreserved / escaped )
# hnv-unreserved = "[" / "]" / "/" / "?" / ":" / "+" / "$"
HNVCHAR = rf"(?:[\[\]/?:+${UNRESERVED}]|{ESCAPED})"
URI_HEADER_RE = re.compile(rf"({HNVCHAR}+)=({HNVCHAR}*)")

# RFC 3966: telephone-uri = "tel:" telephone-subscriber
# global-number-digits = "+" *phonedigit DIGIT *phonedigit
# local-number-digits = *phonedigit-hex (HEXDIG / "*" / "#")*phonedigit-hex
# visual-separator = "-" / "." / "(" / ")"
# par = parameter / extension / isdn-subaddress ; parameter = ";" pname ["=" pvalue ]
# (the "at least one digit" rule is checked with TEL_DIGIT_RE, keeping this regex linear)
TEL_URI_RE = re.compile(
    r"(?P<scheme>[Tt][Ee][Ll]):(?P<number>\+?[0-9A-Fa-f*#\-.()]+)"
    rf"(?P<params>(?:;{PARAMCHAR}+(?:={PARAMCHAR}+)?)*)"
)
TEL_DIGIT_RE = re.compile(r"[0-9A-Fa-f*#]")

# absoluteURI = scheme ":" ( hier-part / opaque-part )       (RFC 3261 §25.1, from RFC 2396)
# scheme = ALPHA *( ALPHA / DIGIT / "+" / "-" / "." )
# uric = reserved / unreserved / escaped ; reserved = ";" / "/" / "?" / ":" / "@" / "&" / "=" / "+" / "$" / ","
ABSOLUTE_URI_RE = re.compile(
    rf"(?P<scheme>[A-Za-z][A-Za-z0-9+\-.]*):(?P<rest>(?:[;/?:@&=+$,{UNRESERVED}]|{ESCAPED})+)"
)

# Request-Line = Method SP Request-URI SP SIP-Version CRLF
# SIP-Version = "SIP" "/" 1*DIGIT "." 1*DIGIT       (exactly one SP: RFC 4475 §3.1.2.9/3.1.2.10)
REQUEST_LINE_RE = re.compile(rf"({TOKEN}) ([^ \t]+) ([Ss][Ii][Pp])/([0-9]+)\.([0-9]+)")
# Status-Line = SIP-Version SP Status-Code SP Reason-Phrase CRLF
# Status-Code = 3DIGIT ; Reason-Phrase = *(reserved / unreserved / escaped / UTF8-NONASCII /
#               UTF8-CONT / SP / HTAB)        (an absent final SP is tolerated)
STATUS_LINE_RE = re.compile(
    r"[Ss][Ii][Pp]/([0-9]+)\.([0-9]+) ([0-9]{3})(?: ([^\x00-\x08\x0a-\x1f\x7f]*))?"
)

# generic-param = token [ EQUAL gen-value ] ; gen-value = token / host / quoted-string
# SEMI = SWS ";" SWS ; EQUAL = SWS "=" SWS
GEN_VALUE = rf"(?:{QUOTED_STRING}|{IPV6_REF_CANDIDATE}|{TOKEN})"
GEN_PARAM = rf"{SWS};{SWS}({TOKEN})(?:{SWS}={SWS}({GEN_VALUE}))?"
GEN_PARAM_RE = re.compile(GEN_PARAM)
GEN_PARAMS_RUN_RE = re.compile(rf"(?:{GEN_PARAM})*")

# via-parm = sent-protocol LWS sent-by *( SEMI via-params )
# sent-protocol = protocol-name SLASH protocol-version SLASH transport ; SLASH = SWS "/" SWS
# sent-by = host [ COLON port ] ; COLON = SWS ":" SWS
VIA_PARM_RE = re.compile(
    rf"{SWS}({TOKEN}){SWS}/{SWS}({TOKEN}){SWS}/{SWS}({TOKEN}){LWS}({HOST})(?:{SWS}:{SWS}([0-9]{{1,5}}))?"
)
# via-received = "received" EQUAL (IPv4address / IPv6address)   (RFC 5118 §4.5: also accept
# an IPv6reference) — so a Via parameter value may also hold bare IPv6 colons.
VIA_PARAM = rf"{SWS};{SWS}({TOKEN})(?:{SWS}={SWS}({QUOTED_STRING}|{IPV6_REF_CANDIDATE}|[{TCHAR_CLASS}:]+))?"
VIA_PARAM_RE = re.compile(VIA_PARAM)
VIA_PARAMS_RUN_RE = re.compile(rf"(?:{VIA_PARAM})*")
IPV4_RE = re.compile(IPV4)
# COMMA = SWS "," SWS
COMMA_RE = re.compile(rf"{SWS},{SWS}")

# name-addr = [ display-name ] LAQUOT addr-spec RAQUOT
# display-name = *(token LWS)/ quoted-string ; LAQUOT = SWS "<" ; RAQUOT = ">" SWS
# addr-spec = SIP-URI / SIPS-URI / absoluteURI
# (token display names may be followed directly by "<" — RFC 4475 §3.1.1.6 lwsdisp; they may
# also hold UTF-8, as deployed phones send it.)
DISPLAY_TOKENS = rf"[{TCHAR_CLASS}\x80-\U0010ffff]+(?:{LWS}[{TCHAR_CLASS}\x80-\U0010ffff]+)*"
NAME_ADDR_RE = re.compile(
    rf"{SWS}(?:({QUOTED_STRING})|({DISPLAY_TOKENS}))?{SWS}<([^<> \t\"]*)>"
)
# An addr-spec outside <> ends at the first ";" , "," or white space (RFC 3261 §20:
# a URI holding ",", "?" or ";" must be enclosed in <>).
ADDR_SPEC_RE = re.compile(rf"{SWS}([^<>\s;,\"]+)")

# CSeq = "CSeq" HCOLON 1*DIGIT LWS Method
CSEQ_RE = re.compile(rf"([0-9]+){LWS}({TOKEN})")

# rfc1123-date = wkday "," SP date1 SP time SP "GMT"
DATE_RE = re.compile(
    r"(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun), [0-9]{2} "
    r"(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) [0-9]{4} "
    r"[0-9]{2}:[0-9]{2}:[0-9]{2} GMT"
)

DIGITS_RE = re.compile(r"[0-9]+")
