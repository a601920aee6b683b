"""A replica's memo of finished answers: the bytes after the query's ID -> the answer's.

Two kinds share one dict, so a hit costs the UDP hot path one lookup whichever it is:

- answers for local names, kept until the zone changes (``clear``);
- answers built from the cache, each exact only until one of its TTLs counts down
  (``cache.exact_until``): put with that instant, and dropped by ``expire`` once it has
  passed. The server calls ``expire`` before each batch when ``next_expiry`` is due, so
  no answer is served past its instant; every entry has its own second, so they are
  rebuilt spread over the second, not all at once.

A timed answer may carry the parsed query it answered (``put(..., query=q)``). When it
expires, that query is kept in ``stale`` for a few seconds: the next client asking the
same bytes gets its answer rebuilt from the query and the cache entry (the TTLs counted
down) without parsing it again or looking at the zone, which is what every cached
name costs once a second while it is asked (docs/ARCHITECTURE.md, "Hot path").
``stale`` holds at most STALE_MAX queries and is emptied every STALE_SECONDS, and with
the memo on ``clear`` (the zone changed) and ``clear_timed`` (the cache was cleared).

Bounded in bytes (``max_bytes``, each entry charged its key, its answer and ``overhead``
for what Python holds besides): cleared whole when full.
"""

import heapq
import itertools
import math
from typing import Any, Dict, List, Optional, Tuple

MEMO_BYTES = 16 << 20
MEMO_KEY_MAX = 512  # longer queries (big OPT options) are answered but not memoized
OVERHEAD = 200  # dict slot, the two bytes objects' headers, the heap item when timed
STALE_MAX = 16384  # parsed queries kept for a rebuild (a few hundred bytes each)
STALE_SECONDS = 3.0


class Memo:
    def __init__(self, max_bytes: int = MEMO_BYTES, overhead: int = OVERHEAD) -> None:
        self.answers: Dict[bytes, bytes] = {}
        self.bytes = 0
        self.max_bytes = max_bytes
        self.overhead = overhead
        self.next_expiry = math.inf  # the earliest instant a timed answer stops being exact
        # heap of (until, seq, key, answer, query); seq keeps equal instants from
        # comparing what follows
        self._timed: List[Tuple[float, int, bytes, bytes, Any]] = []
        self._seq = itertools.count()
        self.stale: Dict[bytes, Any] = {}  # key -> the query of an answer that expired
        self._stale_until = 0.0

    def __len__(self) -> int:
        return len(self.answers)

    def put(
        self, key: bytes, answer: bytes, until: Optional[float] = None, query: Any = None
    ) -> None:
        """Remember ``answer`` for ``key``: for good, or (``until``) only before that
        instant, keeping ``query`` for a rebuild once it has passed."""
        if len(key) > MEMO_KEY_MAX:
            return
        answers = self.answers
        old = answers.get(key)
        if old is not None:
            self.bytes -= len(old)
        else:
            size = len(key) + len(answer) + self.overhead
            if self.bytes + size > self.max_bytes:
                self.clear()
            self.bytes += len(key) + self.overhead
        answers[key] = answer
        self.bytes += len(answer)
        if until is not None:
            heapq.heappush(self._timed, (until, next(self._seq), key, answer, query))
            if until < self.next_expiry:
                self.next_expiry = until

    def expire(self, now: float) -> None:
        """Drop the timed answers no longer exact at ``now`` (their instant has come)."""
        heap = self._timed
        answers = self.answers
        stale = self.stale
        if now >= self._stale_until:
            stale.clear()  # in place: the server holds its methods
            self._stale_until = now + STALE_SECONDS
        while heap and heap[0][0] <= now:
            _until, _seq, key, answer, query = heapq.heappop(heap)
            if answers.get(key) is answer:  # not replaced since (then its own item counts)
                del answers[key]
                self.bytes -= len(key) + len(answer) + self.overhead
                if query is not None and len(stale) < STALE_MAX:
                    stale[key] = query
        self.next_expiry = heap[0][0] if heap else math.inf

    def clear_timed(self) -> None:
        """Drop every answer built from the cache (the cache was cleared)."""
        answers = self.answers
        for _until, _seq, key, answer, _query in self._timed:
            if answers.get(key) is answer:
                del answers[key]
                self.bytes -= len(key) + len(answer) + self.overhead
        self._timed = []
        self.stale.clear()
        self.next_expiry = math.inf

    def clear(self) -> None:
        self.answers.clear()
        self._timed = []
        self.stale.clear()
        self.bytes = 0
        self.next_expiry = math.inf
