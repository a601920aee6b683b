"""A replica's memo of finished answers: the bytes after the query's ID -> the answer's.

Two kinds share one dict, so a hit costs the UDP hot path one lookup whichever it is:

- answers for local names, kept until the zone changes (``clear``);
- answers built from the cache, each exact only until one of its TTLs counts down
  (``cache.exact_until``): put with that instant, and dropped by ``expire`` once it has
  passed. The server calls ``expire`` before each batch when ``next_expiry`` is due, so
  no answer is served past its instant; every entry has its own second, so they are
  rebuilt spread over the second, not all at once.

Bounded in bytes (``max_bytes``, each entry charged its key, its answer and ``overhead``
for what Python holds besides): cleared whole when full.
"""

import heapq
import math
from typing import Dict, List, Optional, Tuple

MEMO_BYTES = 16 << 20
MEMO_KEY_MAX = 512  # longer queries (big OPT options) are answered but not memoized
OVERHEAD = 200  # dict slot, the two bytes objects' headers, the heap item when timed


class Memo:
    def __init__(self, max_bytes: int = MEMO_BYTES, overhead: int = OVERHEAD) -> None:
        self.answers: Dict[bytes, bytes] = {}
        self.bytes = 0
        self.max_bytes = max_bytes
        self.overhead = overhead
        self.next_expiry = math.inf  # the earliest instant a timed answer stops being exact
        self._timed: List[Tuple[float, bytes, bytes]] = []  # heap of (until, key, answer)

    def __len__(self) -> int:
        return len(self.answers)

    def put(self, key: bytes, answer: bytes, until: Optional[float] = None) -> None:
        """Remember ``answer`` for ``key``: for good, or (``until``) only before that
        instant."""
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
            heapq.heappush(self._timed, (until, key, answer))
            if until < self.next_expiry:
                self.next_expiry = until

    def expire(self, now: float) -> None:
        """Drop the timed answers no longer exact at ``now`` (their instant has come)."""
        heap = self._timed
        answers = self.answers
        while heap and heap[0][0] <= now:
            _until, key, answer = heapq.heappop(heap)
            if answers.get(key) is answer:  # not replaced since (then its own item counts)
                del answers[key]
                self.bytes -= len(key) + len(answer) + self.overhead
        self.next_expiry = heap[0][0] if heap else math.inf

    def clear_timed(self) -> None:
        """Drop every answer built from the cache (the cache was cleared)."""
        answers = self.answers
        for _until, key, answer in self._timed:
            if answers.get(key) is answer:
                del answers[key]
                self.bytes -= len(key) + len(answer) + self.overhead
        self._timed = []
        self.next_expiry = math.inf

    def clear(self) -> None:
        self.answers.clear()
        self._timed = []
        self.bytes = 0
        self.next_expiry = math.inf
