"""RFC 3263 §4 server location (SRV, then A/AAAA) for foreign domains, asynchronous and cached."""

from __future__ import annotations

import ipaddress
import random
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import dns.asyncresolver
import dns.exception
import dns.nameserver
import dns.rdatatype
import dns.resolver
from prometheus_client import CollectorRegistry, Counter
from sipsec.aio.transport import Peer
from sipsec.config import split_hostport
from sipsec.sip import SipURI, is_ip_literal

__all__ = ["DNS_OUTCOMES", "DNS_TYPES", "NEGATIVE_TTL", "DnsFailure", "SipResolver", "order_srv", "parse_dns"]

#: Label values of ``sipsec_proxy_dns_lookups_total``.
DNS_TYPES = ("SRV", "A", "AAAA")
DNS_OUTCOMES = ("ok", "cached", "nxdomain", "nodata", "timeout", "error")
#: Seconds a negative answer (NXDOMAIN, no records) is cached.
NEGATIVE_TTL = 30.0

_NXDOMAIN = ("\x00nxdomain",)  # cached marker of a name that does not exist
_SRV_PREFIX = {"UDP": "_sip._udp", "TCP": "_sip._tcp", "TLS": "_sips._tcp"}
_DEFAULT_PORT = {"UDP": 5060, "TCP": 5060, "TLS": 5061}


class DnsFailure(Exception):
    """No server could be located: ``status`` is the SIP answer (404 name unknown, 503 DNS down)."""

    def __init__(self, status: int, outcome: str) -> None:
        super().__init__(f"{outcome} ({status})")
        self.status = status
        self.outcome = outcome


@dataclass(frozen=True)
class _Srv:
    priority: int
    weight: int
    port: int
    target: str


def parse_dns(text: str) -> list[tuple[str, int]] | None:
    """``off`` -> None; ``system`` -> [] (resolv.conf); ``host:port,...`` -> the nameservers."""
    value = text.strip().lower()
    if value in ("", "off"):
        return None
    if value == "system":
        return []
    servers: list[tuple[str, int]] = []
    for item in filter(None, (p.strip() for p in text.split(","))):
        host, port = split_hostport(item, 53)
        ipaddress.ip_address(host.strip("[]"))  # a nameserver must be an IP address
        servers.append((host.strip("[]"), port))
    if not servers:
        raise ValueError("dns: off | system | host:port[,host:port]")
    return servers


def order_srv(records: Sequence[_Srv], rng: random.Random) -> list[_Srv]:
    """RFC 2782: ascending priority; within a priority, weighted random selection."""
    out: list[_Srv] = []
    for prio in sorted({r.priority for r in records}):
        # zero-weight entries first, so that they have a small chance when others weigh more
        pool = sorted((r for r in records if r.priority == prio), key=lambda r: r.weight != 0)
        while pool:
            total = sum(r.weight for r in pool)
            pick = rng.randint(0, total)
            running = 0
            for i, r in enumerate(pool):
                running += r.weight
                if running >= pick:
                    out.append(pool.pop(i))
                    break
    return out


class SipResolver:
    """Locates the next hops of a SIP URI (RFC 3263 §4.1/§4.2, NAPTR skipped) with a TTL cache."""

    def __init__(self, nameservers: list[tuple[str, int]], *, timeout: float = 2.0,
                 registry: CollectorRegistry | None = None, cache_size: int = 4096,
                 rng: random.Random | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        if nameservers:
            self.resolver = dns.asyncresolver.Resolver(configure=False)
            self.resolver.nameservers = [dns.nameserver.Do53Nameserver(h, p) for h, p in nameservers]
        else:
            self.resolver = dns.asyncresolver.Resolver()  # /etc/resolv.conf
        self.resolver.cache = None  # our own cache below, bounded and counted
        self.resolver.timeout = timeout
        self.resolver.lifetime = timeout
        self.cache_size = cache_size
        self.rng = rng or random.SystemRandom()
        self.clock = clock
        # (name, type) -> (expiry, records or None for a negative answer)
        self._cache: OrderedDict[tuple[str, str], tuple[float, tuple[str, ...] | None]] = OrderedDict()
        self.lookups = Counter("sipsec_proxy_dns_lookups_total",
                               "RFC 3263 DNS lookups by record type and outcome (cached = answered from the TTL cache).",
                               ["type", "outcome"], registry=registry)
        for t in DNS_TYPES:
            for o in DNS_OUTCOMES:
                self.lookups.labels(t, o)

    async def _query(self, name: str, rdtype: str) -> tuple[str, ...] | None:
        """Records as text (None: the name has no such records); DnsFailure on NXDOMAIN/errors."""
        key = (name.lower(), rdtype)
        now = self.clock()
        hit = self._cache.get(key)
        if hit is not None and hit[0] > now:
            self._cache.move_to_end(key)
            self.lookups.labels(rdtype, "cached").inc()
            if hit[1] == _NXDOMAIN:
                raise DnsFailure(404, "nxdomain")
            return hit[1]
        try:
            answer = await self.resolver.resolve(name, rdtype, search=False, raise_on_no_answer=False)
        except dns.resolver.NXDOMAIN:
            self.lookups.labels(rdtype, "nxdomain").inc()
            self._store(key, now + NEGATIVE_TTL, _NXDOMAIN)
            raise DnsFailure(404, "nxdomain") from None
        except (dns.exception.Timeout, dns.resolver.LifetimeTimeout):
            self.lookups.labels(rdtype, "timeout").inc()
            raise DnsFailure(503, "timeout") from None
        except dns.exception.DNSException:
            self.lookups.labels(rdtype, "error").inc()
            raise DnsFailure(503, "error") from None
        if answer.rrset is None or len(answer.rrset) == 0:
            self.lookups.labels(rdtype, "nodata").inc()
            self._store(key, now + NEGATIVE_TTL, None)
            return None
        self.lookups.labels(rdtype, "ok").inc()
        records = tuple(r.to_text() for r in answer.rrset)
        self._store(key, now + answer.rrset.ttl, records)
        return records

    def _store(self, key: tuple[str, str], expiry: float, value: tuple[str, ...] | None) -> None:
        self._cache[key] = (expiry, value)
        self._cache.move_to_end(key)
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)

    async def _addresses(self, host: str) -> list[str]:
        """A records of ``host``, else AAAA; [] when it has neither."""
        records = await self._query(host, "A")
        if records is None:
            records = await self._query(host, "AAAA")
        return list(records or ())

    async def resolve(self, uri: SipURI, transports: Sequence[str]) -> list[Peer]:
        """The hops to try in order for ``uri``, over the ``transports`` this proxy has.

        Raises :class:`DnsFailure`: 404 when the name does not exist or has no usable records,
        503 when DNS timed out or failed (RFC 3263 §4.3 leaves the next step to the caller).
        """
        maddr = uri.params.get("maddr")
        host = (maddr or uri.host).strip("[]")
        param = (uri.params.get("transport") or "").upper()
        sips = uri.scheme == "sips"
        if sips:
            candidates = ["TLS"]
        elif param:
            candidates = [param]
        elif is_ip_literal(host) or uri.port is not None:
            candidates = ["UDP"]  # §4.1: numeric host or explicit port, no transport: UDP for sip
        else:
            candidates = ["UDP", "TCP"]  # no NAPTR: SRV for each supported transport in turn
        candidates = [t for t in candidates if t in transports]
        if not candidates:
            raise DnsFailure(404, "nodata")
        if is_ip_literal(host):
            return [Peer(candidates[0], host, uri.port or _DEFAULT_PORT[candidates[0]])]
        if uri.port is not None:  # §4.2: explicit port -> A/AAAA only
            return [Peer(candidates[0], a, uri.port) for a in await self._addresses(host)] or self._none()
        for transport in candidates:
            try:
                srv = await self._query(f"{_SRV_PREFIX[transport]}.{host}", "SRV")
            except DnsFailure as exc:
                if exc.status != 404:
                    raise
                srv = None  # a missing _sip._udp name is NXDOMAIN in real zones: no SRV, go on
            if srv is None:
                continue
            records = []
            for text in srv:
                prio, weight, port, target = text.split()
                records.append(_Srv(int(prio), int(weight), int(port), target))
            if len(records) == 1 and records[0].target == ".":  # RFC 2782: service not available here
                raise DnsFailure(404, "nodata")
            hops: list[Peer] = []
            for rec in order_srv(records, self.rng):
                try:
                    addrs = await self._addresses(rec.target)
                except DnsFailure:
                    continue  # try the next target
                hops.extend(Peer(transport, a, rec.port) for a in addrs)
            return hops or self._none()
        # §4.2: no SRV records -> A/AAAA of the domain on the default port of the transport
        transport = candidates[0]
        return [Peer(transport, a, _DEFAULT_PORT[transport]) for a in await self._addresses(host)] or self._none()

    @staticmethod
    def _none() -> list[Peer]:
        raise DnsFailure(404, "nodata")

    @staticmethod
    def needs_dns(host: str) -> bool:
        """True for a host name other than localhost (IP literals need no lookup)."""
        return bool(host) and not is_ip_literal(host) and host.lower() != "localhost"
