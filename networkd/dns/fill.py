"""Cache fill: an upstream answer, parsed with dnslib, becomes a CacheEntry.

The header and the question were already matched byte for byte to our query
(networkd/dns/upstream.py). dnslib parses every record after them (every name,
compression pointers followed with loop checks, every RDATA by its type) and raises on
anything malformed; on top of that each record must end exactly where its RDLENGTH says
and nothing may follow the last one (dnslib alone trusts its own reading of a record,
not the length field). So nothing an upstream sends reaches a client or the cache
without being understood.

The entry keeps the upstream's bytes after the question (they are what dnslib just
read; bench/dns_codec.py shows packing them again would double the cost of every miss):

- the upstream's OPT record is cut off (every answer gets our own OPT); records after
  it, if any, are dropped with it (additional data, RFC 2181 section 9);
- a negative answer's SOA is served with the TTL RFC 2308 gives the answer, min(SOA
  TTL, SOA minimum), and a TTL with the top bit set counts as zero (RFC 2181 section 8):
  both through the entry's TTL fields, which serving rewrites anyway;
- names compressed against the question (offset 12), as owner names usually are, are
  repeated as each client spelled the question, whatever case the upstream saw (0x20
  included); names the upstream wrote out in full keep its spelling.
"""

from typing import List, NamedTuple, Optional, Tuple

from dnslib import QTYPE, RCODE, RR, SOA, DNSBuffer

from networkd.dns import wire
from networkd.dns.cache import MAX_TTL, TTL_FIELD, CacheEntry


class BadAnswer(ValueError):
    """An upstream answer that does not parse or does not answer the question."""


class Fill(NamedTuple):
    entry: CacheEntry
    cacheable: bool  # False: answer the waiting clients, do not keep it (TTL 0, TC, ...)


class Parsed(NamedTuple):
    rcode: int
    flags: int
    counts: Tuple[int, int, int]  # OPT and what follows it not counted
    question_end: int
    records: List[Tuple[int, int, RR]]  # (start, end, record) in message order


def parse_answer(data: bytes, question_len: int) -> Parsed:
    """The records of an answer whose header and question were matched byte for byte to
    our query (upstream.reply_matches), each parsed by dnslib. Every dnslib failure
    (it raises more than DNSError) and every RDLENGTH it did not honour is BadAnswer.
    The OPT record, and anything after it, is only checked for place and bounds: it is
    cut off unread."""
    question_end = 12 + question_len
    if len(data) < question_end:
        raise BadAnswer("shorter than its question")
    _qid, flags, qdcount, an, ns, ar = wire.HEADER.unpack_from(data)
    if qdcount != 1:
        raise BadAnswer(f"{qdcount} questions in the answer")
    buffer = DNSBuffer(data)
    buffer.offset = question_end
    records: List[Tuple[int, int, RR]] = []
    total = an + ns + ar
    try:
        for index in range(total):
            start = buffer.offset
            rdata_at = wire.skip_name(data, start) + 10
            if rdata_at > len(data):
                raise BadAnswer(f"record at {start} runs past the end")
            if wire.U16.unpack_from(data, rdata_at - 10)[0] == wire.TYPE_OPT:
                if index < an + ns or data[start] != 0:
                    raise BadAnswer("OPT record outside the additional section")
                if rdata_at + wire.U16.unpack_from(data, rdata_at - 2)[0] > len(data):
                    raise BadAnswer("OPT record runs past the end")
                return Parsed(flags & 0xF, flags, (an, ns, index - an - ns), question_end, records)
            rr = RR.parse(buffer)
            if buffer.offset != rdata_at + wire.U16.unpack_from(data, rdata_at - 2)[0]:
                raise BadAnswer(f"record at {start} does not end where its length says")
            records.append((start, buffer.offset, rr))
    except (BadAnswer, wire.FormatError) as exc:
        raise BadAnswer(str(exc)) from None
    except Exception as exc:  # dnslib can raise DNSError, IndexError, UnicodeError, ...
        raise BadAnswer(f"unparseable record: {exc}") from None
    if buffer.offset != len(data):
        raise BadAnswer("trailing bytes after the records")
    return Parsed(flags & 0xF, flags, (an, ns, ar), question_end, records)


def _negative_ttl(authority: List[RR]) -> Optional[int]:
    for rr in authority:
        if rr.rtype == QTYPE.SOA and isinstance(rr.rdata, SOA):
            return min(rr.ttl, rr.rdata.times[4])
    return None


def _lifetime(rcode: int, answers: List[RR], authority: List[RR]) -> Optional[int]:
    """Seconds the answer may be cached, or None (RFC 2308 for negative answers)."""
    if rcode not in (RCODE.NOERROR, RCODE.NXDOMAIN):
        return None
    ttls = [rr.ttl for rr in answers]
    if rcode == RCODE.NOERROR and ttls:
        return min(ttls)
    negative = _negative_ttl(authority)
    if negative is None:
        return None
    return min([negative, *ttls])


def fill_from_answer(data: bytes, question_len: int, now: float, max_ttl: int = MAX_TTL) -> Fill:
    """The cache entry of an upstream answer matched to our query (question_len bytes)."""
    parsed = parse_answer(data, question_len)
    rcode = parsed.rcode
    an, ns, _ar = counts = parsed.counts
    records = parsed.records
    for _start, _end, rr in records:
        if rr.ttl & 0x80000000:
            rr.ttl = 0
    answers = [rr for _s, _e, rr in records[:an]]
    authority = [rr for _s, _e, rr in records[an : an + ns]]
    negative = _negative_ttl(authority)
    is_negative = rcode == RCODE.NXDOMAIN or not an
    body_start = parsed.question_end
    ttls = bytearray()
    for index, (start, _end, rr) in enumerate(records):
        ttl = rr.ttl
        if rr.rtype == QTYPE.SOA and an <= index < an + ns and is_negative and negative is not None:
            ttl = negative
        ttls += TTL_FIELD.pack(wire.skip_name(data, start) + 4 - body_start, ttl)
    end = records[-1][1] if records else body_start
    answer_end = records[an - 1][1] if an else body_start
    authority_end = records[an + ns - 1][1] if an + ns else answer_end
    lifetime = _lifetime(rcode, answers, authority)
    cacheable = lifetime is not None and lifetime > 0 and not parsed.flags & wire.FLAG_TC
    ttl = min(lifetime or 0, max_ttl) if cacheable else 0
    entry = CacheEntry(
        rcode,
        parsed.flags,
        counts,
        data[body_start:end],
        (answer_end - body_start, authority_end - body_start),
        bytes(ttls),
        now,
        now + ttl,
    )
    return Fill(entry, cacheable)
