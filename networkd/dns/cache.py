"""The cache of forwarded answers: keyed by (name, type, class, DO, CD), TTLs counting down,
bounded in bytes.

One cache for the node: the forwarder fills it and sends every entry to every replica,
which keeps a copy for the hot path (docs/ARCHITECTURE.md, "One cache for the node").
Entries carry monotonic timestamps; CLOCK_MONOTONIC is one clock for every process of
the host, so TTLs count down the same in every copy.

An entry keeps the answer's records (after the question, OPT removed) exactly as
networkd/dns/fill.py packed them with dnslib, where each section ends, and where every
TTL field is; serving it patches each TTL to what is left and drops whole sections that
do not fit (networkd/dns/answers.py). Bounded by bytes: when full, the oldest entries go
first (insertion order, the same in every copy).
"""

import math
import struct
from collections import OrderedDict
from typing import Iterator, NamedTuple, Optional, Tuple
from typing import OrderedDict as OrderedDictType

from networkd.dns import wire

MAX_TTL = 86400
SERVFAIL_TTL = 1.0
# What an entry costs beyond its key, body and TTL-field bytes: the entry tuple, the
# objects' headers, its floats, the dict slot and the OrderedDict's link (tracemalloc on
# CPython 3.11 measures about 510 for an entry decoded from the channel, 450 before the
# OrderedDict; tests/unit/test_dns_cache.py checks it).
ENTRY_OVERHEAD = 576
MAX_KEY = wire.MAX_NAME + 5
# Where each TTL field is and what it said: (offset in body, ttl) packed, 6 bytes each
# (a bytes object instead of a tuple of tuples: a tenth of the memory).
TTL_FIELD = struct.Struct(">HI")

_U32 = struct.Struct(">I")


class CacheEntry(NamedTuple):
    rcode: int
    flags: int  # the upstream's header flags (AD is relayed to clients that ask for it)
    counts: Tuple[int, int, int]  # answer, authority, additional (OPT excluded)
    body: bytes  # the records after the question
    ends: Tuple[int, int]  # offsets in body where the answer and the authority sections end
    ttls: bytes  # TTL_FIELD records: (offset in body, ttl as received), ascending
    stored_at: float  # time.monotonic()
    expires_at: float


def entry_size(key: bytes, entry: CacheEntry) -> int:
    """Bytes an entry is charged against the cache size."""
    return len(key) + len(entry.body) + len(entry.ttls) + ENTRY_OVERHEAD


def failure_entry(now: float, ttl: float = SERVFAIL_TTL) -> CacheEntry:
    """Our own SERVFAIL after every upstream failed: remembered a second, not longer."""
    return CacheEntry(wire.RCODE_SERVFAIL, 0, (0, 0, 0), b"", (0, 0), b"", now, now + ttl)


class ForwardCache:
    def __init__(self, max_bytes: int = 64 << 20) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        # Oldest first. An OrderedDict, not a dict: a dict keeps the slots of deleted keys
        # until it is resized, so finding its first key after many evictions from the
        # front scans them all (30 us per eviction at 100,000 entries, measured; an
        # OrderedDict 0.7 us), and a full cache evicts on every fill.
        self._entries: OrderedDictType[bytes, CacheEntry] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        self._entries.clear()
        self.bytes = 0

    def get(self, key: bytes, now: float) -> Optional[CacheEntry]:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry.expires_at <= now:
            self._remove(key)
            return None
        return entry

    def items(self) -> Iterator[Tuple[bytes, CacheEntry]]:
        """Every entry, oldest first (a snapshot for a replica that just connected)."""
        return iter(list(self._entries.items()))

    def put(self, key: bytes, entry: CacheEntry) -> bool:
        """Store an entry unless it is already expired or larger than the whole cache."""
        size = entry_size(key, entry)
        if len(key) > MAX_KEY or size > self.max_bytes or entry.expires_at <= entry.stored_at:
            return False
        self._remove(key)
        entries = self._entries
        while entries and self.bytes + size > self.max_bytes:
            oldest, entry = entries.popitem(last=False)
            self.bytes -= entry_size(oldest, entry)
        entries[key] = entry
        self.bytes += size
        return True

    def merge(self, key: bytes, entry: CacheEntry, now: float) -> bool:
        """Keep ``entry`` unless a newer one is cached (a replica restoring a new forwarder)."""
        current = self.get(key, now)
        if current is not None and current.stored_at >= entry.stored_at:
            return False
        return entry.expires_at > now and self.put(key, entry)

    def _remove(self, key: bytes) -> None:
        entry = self._entries.pop(key, None)
        if entry is not None:
            self.bytes -= entry_size(key, entry)


def exact_until(entry: CacheEntry, now: float) -> float:
    """Until when ``patched_body(entry, t)`` stays what it is at ``now`` (exclusive): the
    next instant a TTL counts down, each whole second after ``stored_at`` (or before
    ``expires_at``), and never past the expiry. ``now`` itself when a TTL counts down
    right after this instant (``now`` on such a second): nothing to keep then."""
    since = now - entry.stored_at
    step = 1.0 - (since - math.floor(since))
    left = entry.expires_at - now
    cap = left - math.floor(left)
    if step >= 1.0 or cap == 0.0:
        return now
    return min(now + step, now + cap, entry.expires_at)


def patched_body(entry: CacheEntry, now: float, end: Optional[int] = None) -> bytes:
    """The entry's records up to ``end`` with every TTL reduced by the time spent cached."""
    body = entry.body if end is None else entry.body[:end]
    if not entry.ttls or not body:
        return body
    elapsed = int(now - entry.stored_at)
    left = max(0, int(entry.expires_at - now))
    out = bytearray(body)
    limit = len(out)
    pack_into = _U32.pack_into
    for offset, ttl in TTL_FIELD.iter_unpack(entry.ttls):
        if offset >= limit:
            break  # offsets are ascending: the rest lie in dropped sections
        value = ttl - elapsed
        if value > left:
            value = left
        pack_into(out, offset, value if value > 0 else 0)
    return bytes(out)
