"""Cache fill: an upstream answer, parsed with dnslib, becomes a CacheEntry.

dnslib parses the whole message (every record, every name, compression pointers
followed with loop checks) and raises on anything malformed, so nothing an upstream
sends reaches a client or the cache without having been understood. The records are
then packed again with dnslib into the entry's body:

- the upstream's OPT record is dropped (every answer gets our own OPT);
- a negative answer's SOA gets the TTL RFC 2308 gives the answer, min(SOA TTL, SOA
  minimum);
- names equal to the question are packed as a pointer to the question, so a cached
  answer repeats the name as each client spelled it (and 0x20 case noise never leaks);
- names inside RDATA are compressed only for the RFC 1035 types (RFC 3597 section 4):
  dnslib would also compress DNAME, NAPTR and RP targets.

Packing record by record tells where each TTL field and each section ends, which is all
that serving needs (networkd/dns/cache.py, answers.py).
"""

from typing import List, NamedTuple, Optional, Tuple

from dnslib import QTYPE, RCODE, RR, SOA, DNSBuffer, DNSLabel, DNSQuestion, DNSRecord

from networkd.dns import wire
from networkd.dns.cache import MAX_TTL, TTL_FIELD, CacheEntry

# RDATA that may carry compressed names (RFC 3597 section 4): NS, CNAME, SOA, PTR, MX.
COMPRESSIBLE = frozenset((2, 5, 6, 12, 15))
DROPPED_TYPES = frozenset((wire.TYPE_OPT, 250))  # our own OPT replaces it; TSIG is per hop


class BadAnswer(ValueError):
    """An upstream answer that does not parse or does not answer the question."""


class Fill(NamedTuple):
    entry: CacheEntry
    cacheable: bool  # False: answer the waiting clients, do not keep it (TTL 0, TC, ...)


class _NoCompression(DNSBuffer):  # type: ignore[misc]
    """A buffer that writes every name in full (for RDATA of non-RFC 1035 types)."""

    def encode_name(self, name: object) -> None:
        self.encode_name_nocompress(name)


def parse_answer(data: bytes) -> DNSRecord:
    """dnslib's parse, with every failure (dnslib raises more than DNSError) as BadAnswer."""
    try:
        record = DNSRecord.parse(data)
    except Exception as exc:  # dnslib can raise DNSError, IndexError, UnicodeError, ...
        raise BadAnswer(f"unparseable answer: {exc}") from None
    if len(record.questions) != 1:
        raise BadAnswer(f"{len(record.questions)} questions in the answer")
    return record


def _pack_rr(buf: DNSBuffer, rr: RR) -> int:
    """Pack one record; returns the offset of its TTL field."""
    start = buf.offset
    if rr.rtype in COMPRESSIBLE:
        rr.pack(buf)
    else:
        buf.encode_name(rr.rname)
        buf.pack("!HHI", rr.rtype, rr.rclass, rr.ttl)
        rdata = _NoCompression()
        rr.rdata.pack(rdata)
        buf.pack("!H", len(rdata.data))
        buf.append(rdata.data)
    return wire.skip_name(bytes(buf.data), start) + 4


def _negative_ttl(auth: List[RR]) -> Optional[int]:
    for rr in auth:
        if rr.rtype == QTYPE.SOA and isinstance(rr.rdata, SOA):
            return min(rr.ttl, rr.rdata.times[4])
    return None


def _lifetime(rcode: int, answers: List[RR], auth: List[RR]) -> Optional[int]:
    """Seconds the answer may be cached, or None (RFC 2308 for negative answers)."""
    if rcode not in (RCODE.NOERROR, RCODE.NXDOMAIN):
        return None
    ttls = [rr.ttl for rr in answers]
    if rcode == RCODE.NOERROR and ttls:
        return min(ttls)
    negative = _negative_ttl(auth)
    if negative is None:
        return None
    return min([negative, *ttls])


def fill_from_answer(data: bytes, now: float, max_ttl: int = MAX_TTL) -> Fill:
    """The cache entry of an upstream answer (already matched to our query)."""
    record = parse_answer(data)
    header = record.header
    question = record.questions[0]
    qname = DNSLabel([label.lower() for label in question.qname.label])
    sections = [list(record.rr), list(record.auth), list(record.ar)]
    for section in sections:
        section[:] = [rr for rr in section if rr.rtype not in DROPPED_TYPES]
        for rr in section:
            if rr.ttl & 0x80000000:
                rr.ttl = 0  # RFC 2181 section 8: a TTL with the top bit set means zero
            if rr.rname == qname:
                rr.rname = qname
    negative = _negative_ttl(sections[1])
    if negative is not None and (header.rcode == RCODE.NXDOMAIN or not sections[0]):
        for rr in sections[1]:
            if rr.rtype == QTYPE.SOA:
                rr.ttl = negative
    body, ends, offsets = _pack(qname, question, sections)
    lifetime = _lifetime(header.rcode, sections[0], sections[1])
    cacheable = lifetime is not None and lifetime > 0 and not header.tc
    ttl = min(lifetime or 0, max_ttl) if cacheable else 0
    counts = (len(sections[0]), len(sections[1]), len(sections[2]))
    flags = int(header.bitmap)
    entry = CacheEntry(int(header.rcode), flags, counts, body, ends, offsets, now, now + ttl)
    return Fill(entry, cacheable)


def _pack(
    qname: DNSLabel, question: DNSQuestion, sections: List[List[RR]]
) -> Tuple[bytes, Tuple[int, int], bytes]:
    buf = DNSBuffer()
    buf.append(b"\x00" * 12)
    DNSQuestion(qname, question.qtype, question.qclass).pack(buf)
    start = buf.offset
    offsets = bytearray()
    ends = []
    for section in sections:
        for rr in section:
            try:
                offsets += TTL_FIELD.pack(_pack_rr(buf, rr) - start, rr.ttl)
            except Exception as exc:  # a record dnslib parsed but cannot write back
                raise BadAnswer(f"record not packable: {exc}") from None
        ends.append(buf.offset - start)
    body = bytes(buf.data[start:])
    if len(body) > 0xFFFF:
        raise BadAnswer("answer larger than a DNS message")
    return body, (ends[0], ends[1]), bytes(offsets)
