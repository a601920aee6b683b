"""Idle workers sleep until something is due instead of waking every 50 ms (an idle node
cost 6 % of a core in wakeups); these are the rules that bound the sleep."""

import select
from typing import List, Optional

import pytest

from networkd.wakeup import Wakeup, sleep_ms
from networkd.workers.watcher import WakingQueue, drain


@pytest.mark.parametrize(
    ("due", "expected"),
    [
        ([], 1000),  # nothing due: the longest sleep
        ([None, None], 1000),
        ([100.5], 501),  # half a second away (+1 ms: never wake just before it)
        ([100.5, 100.2, None], 201),  # the earliest counts
        ([99.0], 50),  # overdue: the shortest sleep, never a busy loop
        ([100.0], 50),
        ([100.02], 50),  # sooner than the shortest: at most that late, as before
        ([250.0], 1000),  # far away: the longest
    ],
)
def test_sleep_until_the_earliest_due_within_bounds(
    due: List[Optional[float]], expected: int
) -> None:
    assert sleep_ms(100.0, due, 50, 1000) == expected


def test_a_put_wakes_the_poll_and_drain_takes_everything() -> None:
    wakeup = Wakeup()
    inbox = WakingQueue(wakeup)
    try:
        poller = select.poll()
        poller.register(wakeup.rfd, select.POLLIN)
        assert poller.poll(0) == []
        inbox.put("a")
        inbox.put("b")
        assert poller.poll(0), "a put must make the wakeup readable"
        assert wakeup.drain()
        assert drain(inbox, wait=0.0) == ["a", "b"]
        assert poller.poll(0) == [] and drain(inbox, wait=0.0) == []
    finally:
        wakeup.close()
