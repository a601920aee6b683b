"""Answers built outside the memo: pure functions of a parsed query and the data to serve.

Every answer of this server (RFC-exact, the same for a miss and a hit):

- QR, the query's opcode, RD and CD copied, RA set (a recursive service, RFC 1035 4.1.1);
- AA only on local names (we are their authority); never on forwarded answers;
- AD on a forwarded answer only when the upstream set it and the client asked with AD or
  DO (RFC 6840 5.7);
- an EDNS query gets exactly one OPT record: ours, with our UDP size and the client's DO;
- over UDP an answer that does not fit the client's size loses the additional section,
  then the authority section; TC is set only when the answer section itself does not
  fit (RFC 2181 9), and then the answer carries no records;
- over TCP the limit is the 65,535 bytes of the length prefix, the same rules applying.

Local and cached answers are concatenations of precomputed bytes (the hot path's slow
half, benchmarked in bench/dns.py); error answers are built with dnslib.
"""

from typing import Optional

from dnslib import EDNS0, DNSBuffer, DNSHeader, DNSQuestion, DNSRecord

from networkd.dns import wire
from networkd.dns.cache import CacheEntry, patched_body
from networkd.dns.records import Record

TCP_LIMIT = 65535
HEADER = wire.HEADER


def limit_for(q: wire.Query, tcp: bool) -> int:
    return TCP_LIMIT if tcp else q.max_udp


def our_opt(q: wire.Query) -> bytes:
    return b"" if q.edns is None else wire.opt_record(wire.OUR_UDP_SIZE, q.edns.flags)


def local_answer(q: wire.Query, record: Record, limit: int) -> bytes:
    """A local name's A or AAAA records (AA set); as many as fit, with TC, when too many."""
    rrs, count, size = record.answer(q.qtype)
    flags = wire.response_flags(q.flags, wire.RCODE_NOERROR, aa=True)
    opt = our_opt(q)
    room = limit - 12 - len(q.question) - len(opt)
    if len(rrs) > room:
        count = max(0, room // size)
        rrs = rrs[: count * size]
        flags |= wire.FLAG_TC
    return HEADER.pack(q.id, flags, 1, count, 0, 1 if opt else 0) + q.question + rrs + opt


def cached_answer(q: wire.Query, entry: CacheEntry, now: float, limit: int) -> bytes:
    """A forwarded answer from a cache entry (or a fill), TTLs counted down, cut to ``limit``."""
    flags = wire.response_flags(q.flags, entry.rcode)
    if entry.flags & wire.FLAG_AD and (q.flags & wire.FLAG_AD or q.dnssec_ok):
        flags |= wire.FLAG_AD
    opt = our_opt(q)
    room = limit - 12 - len(q.question) - len(opt)
    an, ns, ar = entry.counts
    answer_end, authority_end = entry.ends
    if len(entry.body) <= room:
        end = len(entry.body)
    elif authority_end <= room:
        end, ar = authority_end, 0  # glue and the like only: no TC (RFC 2181 9)
    elif answer_end <= room and an:
        end, ns, ar = answer_end, 0, 0
    else:
        end, an, ns, ar = 0, 0, 0, 0
        flags |= wire.FLAG_TC
    body = patched_body(entry, now, end)
    head = HEADER.pack(q.id, flags, 1, an, ns, ar + (1 if opt else 0))
    return head + q.question + body + opt


def error_answer(q: wire.Query, rcode: int) -> bytes:
    """An answer without records (REFUSED, NOTIMP, SERVFAIL, BADVERS), built with dnslib."""
    flags = wire.response_flags(q.flags, rcode & 0xF)
    labels = wire.decode_labels(q.qname)
    record = DNSRecord(
        DNSHeader(q.id, flags), q=DNSQuestion(labels, q.qtype, q.qclass)
    )  # the name as asked
    if q.edns is not None:
        record.add_ar(
            EDNS0(
                flags="do" if q.dnssec_ok else "",
                udp_len=wire.OUR_UDP_SIZE,
                ext_rcode=rcode >> 4,
            )
        )
    return bytes(record.pack())


def formerr_answer(data: bytes) -> Optional[bytes]:
    """FORMERR for a query that does not parse: the header (and question, if it reads).

    None for what must not be answered at all: shorter than a header, or a response."""
    if len(data) < 12:
        return None
    qid, query_flags = wire.U16.unpack_from(data)[0], wire.U16.unpack_from(data, 2)[0]
    if query_flags & wire.FLAG_QR:
        return None
    header = DNSHeader(qid, wire.response_flags(query_flags, wire.RCODE_FORMERR))
    record = DNSRecord(header)
    if wire.U16.unpack_from(data, 4)[0] == 1:
        buffer = DNSBuffer(data)
        buffer.offset = 12
        try:
            record.add_question(DNSQuestion.parse(buffer))
        except Exception:  # a question dnslib cannot read: answer with the header only
            pass
    return bytes(record.pack())


def cut_to_fit(answer: bytes, limit: int = TCP_LIMIT) -> bytes:
    """Last guard before framing: an answer over ``limit`` becomes its header and question
    with TC set (answers are built to fit; this keeps a bug from killing a send path)."""
    if len(answer) <= limit:
        return answer
    try:
        question_end = wire.read_name(answer, 12) + 4
    except wire.FormatError:
        question_end = 12
    qdcount = 1 if question_end > 12 else 0
    flags = wire.U16.unpack_from(answer, 2)[0] | wire.FLAG_TC
    head = HEADER.pack(wire.U16.unpack_from(answer)[0], flags, qdcount, 0, 0, 0)
    return head + answer[12:question_end]
