"""The forwarding cache: TTLs count down, RFC 2308 negative caching, bounds."""

import dns.message
import dns.rrset

from networkd.dns import wire
from networkd.dns.cache import ForwardCache, patched_body


def scan_of(resp: dns.message.Message, query: dns.message.Message) -> wire.Scan:
    qlen = len(wire.parse_query(query.to_wire()).question)
    return wire.scan_response(resp.to_wire(), qlen)


def answer(ttl: int = 100, name: str = "a.example.") -> tuple:
    query = dns.message.make_query(name, "A")
    resp = dns.message.make_response(query)
    resp.answer.append(dns.rrset.from_text(name, ttl, "IN", "A", "10.0.0.1"))
    return query, resp


def test_positive_entry_ttl_counts_down_and_expires() -> None:
    cache = ForwardCache()
    query, resp = answer(100)
    entry = cache.store(b"k", scan_of(resp, query), now=1000.0)
    assert entry is not None
    body = patched_body(entry, 1030.5)
    ttl = int.from_bytes(body[6:10], "big")
    assert ttl == 69  # 69.5 s left, rounded down
    assert cache.get(b"k", 1099.0) is not None
    assert cache.get(b"k", 1100.0) is None and len(cache) == 0


def test_negative_caching_uses_soa_minimum() -> None:
    cache = ForwardCache()
    query = dns.message.make_query("nx.example.", "A")
    resp = dns.message.make_response(query)
    resp.set_rcode(3)
    resp.authority.append(dns.rrset.from_text("example.", 3600, "IN", "SOA", "ns. a. 1 2 3 4 20"))
    entry = cache.store(b"nx", scan_of(resp, query), now=0.0)
    assert entry is not None and entry.expires_at == 20.0
    soa_ttl = int.from_bytes(patched_body(entry, 5.0)[6:10], "big")
    assert soa_ttl == 15  # clamped to the negative lifetime, counting down
    no_soa = dns.message.make_response(query)
    no_soa.set_rcode(3)
    assert cache.store(b"nx2", scan_of(no_soa, query), now=0.0) is None


def test_not_cached_servfail_zero_ttl_truncated() -> None:
    cache = ForwardCache()
    query, resp = answer(0)
    assert cache.store(b"z", scan_of(resp, query), 0.0) is None
    query, resp = answer(10)
    resp.set_rcode(2)
    assert cache.store(b"s", scan_of(resp, query), 0.0) is None
    query, resp = answer(10)
    resp.flags |= 0x0200
    assert cache.store(b"t", scan_of(resp, query), 0.0) is None
    cache.store_failure(b"f", 0.0, 1.0)
    entry = cache.get(b"f", 0.5)
    assert entry is not None and entry.rcode == 2
    assert cache.get(b"f", 1.0) is None


def test_bounded_oldest_evicted() -> None:
    cache = ForwardCache(max_entries=10)
    query, resp = answer(100)
    scan = scan_of(resp, query)
    for i in range(25):
        cache.store(b"k%d" % i, scan, 0.0)
    assert len(cache) == 10
    assert cache.get(b"k0", 1.0) is None and cache.get(b"k24", 1.0) is not None
