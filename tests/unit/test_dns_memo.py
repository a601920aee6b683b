"""The replica's memo: local answers kept, cached ones never served past their instant,
bytes accounted so that expiring entries does not creep toward a whole clear."""

import math

from networkd.dns.memo import MEMO_KEY_MAX, STALE_SECONDS, Memo


def test_local_answers_stay_timed_ones_go_at_their_instant() -> None:
    memo = Memo()
    memo.put(b"local", b"L")
    memo.put(b"cached", b"C1", until=10.5)
    memo.put(b"later", b"C2", until=11.0)
    assert memo.next_expiry == 10.5
    memo.expire(10.4)
    assert memo.answers == {b"local": b"L", b"cached": b"C1", b"later": b"C2"}
    memo.expire(10.5)  # exact only before its instant
    assert memo.answers == {b"local": b"L", b"later": b"C2"}
    assert memo.next_expiry == 11.0
    memo.expire(12.0)
    assert memo.answers == {b"local": b"L"}
    assert memo.next_expiry == math.inf


def test_a_rebuilt_answer_is_not_dropped_by_its_predecessor_s_instant() -> None:
    memo = Memo()
    memo.put(b"k", b"old", until=1.0)
    memo.put(b"k", b"new", until=2.0)  # replaced before the old one's instant
    memo.expire(1.0)
    assert memo.answers == {b"k": b"new"}
    memo.expire(2.0)
    assert memo.answers == {}


def test_clear_timed_keeps_local_answers() -> None:
    memo = Memo()
    memo.put(b"local", b"L")
    memo.put(b"cached", b"C", until=5.0)
    memo.clear_timed()
    assert memo.answers == {b"local": b"L"}
    assert memo.next_expiry == math.inf
    assert memo.bytes == len(b"local") + len(b"L") + memo.overhead


def test_bytes_come_back_when_timed_answers_expire() -> None:
    memo = Memo(max_bytes=10_000, overhead=100)
    for second in range(1000):  # one name rebuilt every second for 1,000 seconds
        memo.expire(float(second))
        memo.put(b"name", b"x" * 50, until=second + 0.5)
        memo.put(b"local", b"L")
        assert memo.bytes == (4 + 50 + 100) + (5 + 1 + 100)
    assert memo.answers[b"local"] == b"L"  # never cleared whole on the way


def test_bounded_in_bytes_and_keys() -> None:
    memo = Memo(max_bytes=1000, overhead=100)
    for i in range(20):
        memo.put(b"k%d" % i, b"a" * 50)
        assert memo.bytes <= 1000
    assert 0 < len(memo) < 20  # cleared whole when full, then refilled
    memo.put(b"q" * (MEMO_KEY_MAX + 1), b"a")
    assert b"q" * (MEMO_KEY_MAX + 1) not in memo.answers


def test_an_expired_answer_leaves_its_query_for_a_rebuild_for_a_few_seconds() -> None:
    memo = Memo()
    query = object()
    memo.put(b"cached", b"C", until=1.0, query=query)
    memo.put(b"plain", b"P", until=1.0)  # no query given: nothing to rebuild from
    memo.expire(1.0)
    assert memo.answers == {}
    assert memo.stale == {b"cached": query}
    memo.put(b"other", b"O", until=1.0 + STALE_SECONDS)
    memo.expire(1.0 + STALE_SECONDS)  # a few seconds on: forgotten, so it stays bounded
    assert memo.stale == {}


def test_replaced_answers_and_clears_leave_no_stale_query() -> None:
    memo = Memo()
    memo.put(b"k", b"old", until=1.0, query="q-old")
    memo.put(b"k", b"new", until=2.0, query="q-new")
    memo.expire(1.0)  # the old item's instant: the key holds a newer answer
    assert memo.stale == {} and memo.answers == {b"k": b"new"}
    memo.expire(2.0)
    assert memo.stale == {b"k": "q-new"}
    memo.clear_timed()  # the cache was cleared: nothing may be rebuilt from it
    assert memo.stale == {}
    memo.put(b"k", b"x", until=3.0, query="q")
    memo.expire(3.0)
    memo.clear()  # the zone changed: a name may have become local
    assert memo.stale == {}
