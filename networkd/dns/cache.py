"""Cache of forwarded answers keyed by (name, type, class), TTLs counting down.

An entry keeps the answer's records (after the question, without OPT) and where their
TTL fields are; serving it patches each TTL to what is left. Negative answers (NXDOMAIN,
or NOERROR without answers) live for min(SOA TTL, SOA minimum) as RFC 2308 says, and are
not cached without an SOA. Upstream failures (our own SERVFAIL) live a short while only.
Bounded: when full, the oldest entries go first.
"""

import struct
from typing import Dict, NamedTuple, Optional, Tuple

from networkd.dns import wire

MAX_TTL = 86400
SERVFAIL_TTL = 1.0


class CacheEntry(NamedTuple):
    rcode: int
    flags: int
    counts: Tuple[int, int, int]
    body: bytes
    ttl_offsets: Tuple[Tuple[int, int], ...]
    stored_at: float
    expires_at: float


class ForwardCache:
    def __init__(self, max_entries: int = 20000, max_ttl: int = MAX_TTL) -> None:
        self.max_entries = max_entries
        self.max_ttl = max_ttl
        self._entries: Dict[bytes, CacheEntry] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        self._entries.clear()

    def get(self, key: bytes, now: float) -> Optional[CacheEntry]:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry.expires_at <= now:
            del self._entries[key]
            return None
        return entry

    def _put(self, key: bytes, entry: CacheEntry) -> None:
        entries = self._entries
        entries.pop(key, None)
        while len(entries) >= self.max_entries:
            # dicts keep insertion order: the first key is the oldest
            del entries[next(iter(entries))]
        entries[key] = entry

    def store(self, key: bytes, scan: wire.Scan, now: float) -> Optional[CacheEntry]:
        """Cache an upstream answer when its rcode and TTLs allow; returns the entry."""
        if not scan.cacheable:
            return None
        if scan.rcode == wire.RCODE_NOERROR and scan.counts[0] > 0:
            ttl = scan.min_ttl or 0
        elif scan.rcode in (wire.RCODE_NOERROR, wire.RCODE_NXDOMAIN):
            if scan.negative_ttl is None:
                return None
            ttl = scan.negative_ttl
        else:
            return None
        ttl = min(ttl, self.max_ttl)
        if ttl <= 0:
            return None
        entry = CacheEntry(
            scan.rcode, scan.flags, scan.counts, scan.body, scan.ttl_offsets, now, now + ttl
        )
        self._put(key, entry)
        return entry

    def store_failure(self, key: bytes, now: float, ttl: float = SERVFAIL_TTL) -> None:
        self._put(key, CacheEntry(wire.RCODE_SERVFAIL, 0, (0, 0, 0), b"", (), now, now + ttl))


def patched_body(entry: CacheEntry, now: float) -> bytes:
    """The entry's records with every TTL reduced by the time spent in the cache."""
    if not entry.ttl_offsets:
        return entry.body
    elapsed = int(now - entry.stored_at)
    left = max(0, int(entry.expires_at - now))
    body = bytearray(entry.body)
    pack_into = struct.Struct(">I").pack_into
    for offset, ttl in entry.ttl_offsets:
        value = ttl - elapsed
        if value > left:
            value = left
        pack_into(body, offset, value if value > 0 else 0)
    return bytes(body)
