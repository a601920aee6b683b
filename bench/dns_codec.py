"""Where hand-written DNS code is kept, and why: microseconds per call, side by side with
dnslib doing the same job (docs/ARCHITECTURE.md, "Hand-written DNS code").

1. parsing a client query (every memo miss): networkd/dns/wire.py vs DNSRecord.parse;
2. a local name's answer: records.py precomputed bytes + answers.local_answer vs
   building and packing the reply with dnslib;
3. a cached forwarded answer: answers.cached_answer (slices and TTL patches of bytes
   dnslib packed at fill time) vs unpacking and repacking with dnslib per client.
The fill itself (once per upstream answer) always uses dnslib, and is timed too.
"""

import time
from typing import Callable

import dns.message
import dns.rrset
from dnslib import QTYPE, RR, A, DNSRecord

from networkd.dns import answers, wire
from networkd.dns.records import record_for
from tests.support.dnswire import fill_of

ROUNDS = 20000


def per_call_us(fn: Callable[[], object], rounds: int = ROUNDS) -> float:
    fn()
    start = time.perf_counter()
    for _ in range(rounds):
        fn()
    return (time.perf_counter() - start) / rounds * 1e6


def main() -> None:
    query = dns.message.make_query("host7.bench.lain", "A", use_edns=0).to_wire()
    parsed = wire.parse_query(query)
    record = record_for(["10.1.0.8"], 600)
    upstream = dns.message.make_response(dns.message.make_query("fwd7.bench.example", "A"))
    upstream.answer.append(dns.rrset.from_text("fwd7.bench.example.", 300, "IN", "A", "10.2.0.8"))
    upstream_wire = upstream.to_wire()
    entry = fill_of(upstream_wire, 0.0).entry
    fq = wire.parse_query(dns.message.make_query("fwd7.bench.example", "A").to_wire())

    def dnslib_local() -> bytes:
        request = DNSRecord.parse(query)
        reply = request.reply()
        reply.add_answer(RR(request.q.qname, QTYPE.A, rdata=A("10.1.0.8"), ttl=600))
        return bytes(reply.pack())

    def dnslib_cached() -> bytes:
        reply = DNSRecord.parse(upstream_wire)
        for rr in reply.rr:
            rr.ttl -= 1
        return bytes(reply.pack())

    rows = (
        ("parse a query", lambda: wire.parse_query(query), lambda: DNSRecord.parse(query)),
        (
            "local answer",
            lambda: answers.local_answer(parsed, record, 512),
            dnslib_local,
        ),
        (
            "cached answer",
            lambda: answers.cached_answer(fq, entry, 1.0, 512),
            dnslib_cached,
        ),
    )
    print(f"{'dns codec (us per call)':<24} {'networkd':>9} {'dnslib':>9} {'ratio':>7}")
    for label, ours, theirs in rows:
        a, b = per_call_us(ours), per_call_us(theirs)
        print(f"{label:<24} {a:>9.2f} {b:>9.2f} {b / a:>6.1f}x", flush=True)
    fill = per_call_us(lambda: fill_of(upstream_wire, 0.0), 5000)
    print(f"{'cache fill (dnslib)':<24} {fill:>9.2f}", flush=True)


if __name__ == "__main__":
    main()
