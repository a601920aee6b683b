"""The node's cache: fills from upstream answers (dnslib), TTLs counting down, RFC 2308
negative caching, what is not cached, and the bound in bytes."""

import tracemalloc
from typing import Tuple

import dns.message
import dns.rrset

from networkd.dns import channel
from networkd.dns.cache import (
    ForwardCache,
    entry_size,
    exact_until,
    failure_entry,
    patched_body,
)
from tests.support.dnswire import fill_of


def answer(ttl: int = 100, name: str = "a.example.", count: int = 1) -> Tuple[bytes, bytes]:
    query = dns.message.make_query(name, "A")
    resp = dns.message.make_response(query)
    ips = [f"10.0.{i // 250}.{i % 250 + 1}" for i in range(count)]
    resp.answer.append(dns.rrset.from_text(name, ttl, "IN", "A", *ips))
    return query.to_wire(), resp.to_wire()


def test_positive_entry_ttl_counts_down_and_expires() -> None:
    cache = ForwardCache()
    _query, data = answer(100)
    fill = fill_of(data, 1000.0)
    assert fill.cacheable and cache.put(b"key-1", fill.entry)
    body = patched_body(fill.entry, 1030.5)
    assert int.from_bytes(body[6:10], "big") == 69  # 69.5 s left, rounded down
    assert cache.get(b"key-1", 1099.0) is not None
    assert cache.get(b"key-1", 1100.0) is None and len(cache) == 0 and cache.bytes == 0


def test_a_memoised_answer_is_exact_until_its_next_countdown() -> None:
    """A replica keeps a cached answer until ``exact_until``: up to then the TTLs it shows
    are what a fresh answer would show; at that instant they count down. Entries stored at
    other fractions of a second count down at other instants (their rebuilds spread)."""
    _query, data = answer(100)
    for stored in (1000.0, 1000.3, 1000.95):
        entry = fill_of(data, stored).entry
        for now in (stored, stored + 0.5, stored + 41.2, stored + 99.01, stored + 7.0):
            until = exact_until(entry, now)
            assert now <= until <= min(now + 1.0, entry.expires_at) + 1e-9
            same = patched_body(entry, now)
            if until > now:
                assert patched_body(entry, until - 1e-6) == same
            if until < entry.expires_at:
                assert patched_body(entry, until + 1e-6) != same
    # table: (stored at, now) -> until
    entry = fill_of(data, 10.3).entry
    for now, want in ((10.3, 10.3), (10.8, 11.3), (12.0, 12.3), (109.9, 110.3)):
        assert abs(exact_until(entry, now) - want) < 1e-9, (now, want)


def test_negative_caching_uses_soa_minimum() -> None:
    query = dns.message.make_query("nx.example.", "A")
    resp = dns.message.make_response(query)
    resp.set_rcode(3)
    resp.authority.append(dns.rrset.from_text("example.", 3600, "IN", "SOA", "ns. a. 1 2 3 4 20"))
    fill = fill_of(resp.to_wire(), 0.0)
    assert fill.cacheable and fill.entry.expires_at == 20.0
    soa_ttl = int.from_bytes(patched_body(fill.entry, 5.0)[6:10], "big")
    assert soa_ttl == 15  # the SOA's TTL is the negative lifetime, counting down
    no_soa = dns.message.make_response(query)
    no_soa.set_rcode(3)
    assert not fill_of(no_soa.to_wire(), 0.0).cacheable


def test_not_cached_servfail_zero_ttl_truncated() -> None:
    _q, data = answer(0)
    assert not fill_of(data, 0.0).cacheable
    query = dns.message.make_query("s.example.", "A")
    servfail = dns.message.make_response(query)
    servfail.set_rcode(2)
    assert not fill_of(servfail.to_wire(), 0.0).cacheable
    truncated = dns.message.make_response(query)
    truncated.flags |= 0x0200
    truncated.answer.append(dns.rrset.from_text("s.example.", 60, "IN", "A", "10.0.0.1"))
    assert not fill_of(truncated.to_wire(), 0.0).cacheable
    cache = ForwardCache()
    assert cache.put(b"failed", failure_entry(0.0, 1.0))
    entry = cache.get(b"failed", 0.5)
    assert entry is not None and entry.rcode == 2
    assert cache.get(b"failed", 1.0) is None


def test_bounded_in_bytes_oldest_evicted() -> None:
    _q, data = answer(100, count=20)
    entry = fill_of(data, 0.0).entry
    size = entry_size(b"k%05d" % 0, entry)
    cache = ForwardCache(max_bytes=size * 10)
    for i in range(25):
        assert cache.put(b"k%05d" % i, entry)
    assert len(cache) == 10 and cache.bytes <= cache.max_bytes
    assert cache.get(b"k00000", 1.0) is None and cache.get(b"k00024", 1.0) is not None
    huge = ForwardCache(max_bytes=size - 1)
    assert not huge.put(b"k00000", entry) and len(huge) == 0


def test_merge_keeps_the_newer_entry() -> None:
    cache = ForwardCache()
    _q, data = answer(100)
    old, new = fill_of(data, 10.0).entry, fill_of(data, 20.0).entry
    assert cache.merge(b"key-1", new, 21.0)
    assert not cache.merge(b"key-1", old, 21.0)
    got = cache.get(b"key-1", 21.0)
    assert got is not None and got.stored_at == 20.0


def test_entry_size_covers_what_python_holds() -> None:
    """The bytes charged per entry are at least what a replica's copy really takes (entries
    decoded from the forwarder's messages, as a replica gets them)."""
    cache = ForwardCache(max_bytes=1 << 30)
    items = []
    for i in range(3000):
        fill = fill_of(answer(300, f"n{i}.example.", count=3)[1], 0.0)
        key = b"\x05n%04d\x07example\x00\x00\x01\x00\x01\x00" % i
        items.append(channel.encode("fill", [channel.encode_entry(key, fill.entry)]))
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for message in items:
        _kind, payload = channel.decode(message)
        cache.put(*channel.decode_entry(payload[0]))
    used = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    assert used <= cache.bytes, (used, cache.bytes)
