"""How often the lease keeper renews, and how long the lease counts as alive: the trade
between a fast hard failover and tolerance of a slow etcd (networkd.election.lease)."""

from typing import List, Tuple, Union

import pytest

from networkd.election.lease import LeaseKeeper, default_interval, default_margin, grant_timeout
from networkd.etcd.keepalive import KeepAliveStreams, KeepAliveTimeout, Outstanding
from tests.support.clock import FakeClock

Outcome = Union[int, Tuple[int, float], Exception]


class Streams:
    """Renewal outcomes in order: a TTL (renewed), (TTL, send time) for an earlier request's
    late answer, or an exception (failed)."""

    def __init__(self, outcomes: List[Outcome], silent: bool = True) -> None:
        self.outcomes = outcomes
        self.silent = silent  # what silent_for answers: the channel answered nothing lately

    def silent_for(self, seconds: float) -> bool:
        return self.silent

    def renew(self, client: object, lease_id: int, now: float) -> Tuple[int, float]:
        outcome = self.outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        if isinstance(outcome, tuple):
            return outcome
        return outcome, now

    def close(self) -> None:
        pass


def keeper(tmp_path, ttl: float, outcomes: List[Outcome]) -> LeaseKeeper:
    k = LeaseKeeper(lambda: object(), ttl, str(tmp_path / "lease"), clock=FakeClock(100.0))
    k._streams = Streams(outcomes)  # type: ignore[assignment]
    k._current = k._held(7, float(ttl), k._clock())
    return k


@pytest.mark.parametrize(
    "ttl, interval, margin, shortest_tolerance, longest_tolerance",
    [
        # TTL, renewal interval, margin, how long etcd may not answer before the owner
        # lets go (TTL - margin - interval .. TTL - margin)
        (2, 1.0, 0.3, 0.7, 1.7),
        (1, 0.5, 0.3, 0.2, 0.7),
        (4, 2.0, 0.5, 1.5, 3.5),
        (10, 5.0, 1.25, 3.75, 8.75),
    ],
)
def test_renewal_interval_and_margin_by_ttl(
    ttl, interval, margin, shortest_tolerance, longest_tolerance
):
    assert default_interval(ttl) == interval
    assert default_margin(ttl) == margin
    assert ttl - margin - interval == pytest.approx(shortest_tolerance)
    assert ttl - margin == pytest.approx(longest_tolerance)


def test_a_failed_renewal_is_retried_at_an_eighth_of_the_ttl_then_paced_again(tmp_path):
    k = keeper(tmp_path, 2, [ConnectionError("stream ended"), 2, 2])
    clock = k._clock
    assert k._pace() == 1.0
    clock.now += 1.0  # type: ignore[attr-defined]
    k._tick()
    assert k.health().keepalive_failures == 1
    assert k._pace() == 0.25
    # the lease still counts from the last renewal that worked
    assert k.valid_until() == pytest.approx(100.0 + 2 - 0.3)
    clock.now += 0.25  # type: ignore[attr-defined]
    k._tick()
    assert k._pace() == 1.0
    assert k.valid_until() == pytest.approx(101.25 + 2 - 0.3)
    assert k.alive()


def test_a_late_answer_counts_from_when_its_request_was_sent(tmp_path):
    """A slow etcd: the renewal at 101.0 missed its deadline; the retry at 101.25 got the
    first request's answer (keepalive.py): renewed, counted from 101.0, not 101.25."""
    k = keeper(tmp_path, 2, [KeepAliveTimeout("no answer"), (2, 101.0)])
    clock = k._clock
    clock.now += 1.0  # type: ignore[attr-defined]
    k._tick()
    assert k.health().keepalive_failures == 1 and k._pace() == 0.25
    clock.now += 0.25  # type: ignore[attr-defined]
    k._tick()
    assert k._pace() == 1.0  # renewed: back to the normal pace, no reconnect
    assert k.valid_until() == pytest.approx(101.0 + 2 - 0.3)


@pytest.mark.parametrize(
    "error, silent, step, failures, replaced",
    [
        # timeouts on a channel that answered nothing for an interval: stuck, a new channel
        (KeepAliveTimeout("no answer"), True, 0.25, 2, True),
        (KeepAliveTimeout("no answer"), True, 0.25, 1, False),  # retried on the channel first
        # timeouts while late answers still come and the lease lives: etcd is slow, a new
        # channel would add load
        (KeepAliveTimeout("no answer"), False, 0.25, 2, False),
        (KeepAliveTimeout("no answer"), False, 0.25, 4, False),
        # ... until the lease is no longer alive (1.7 s after the last renewal): another
        # member may answer in time (one slow member)
        (KeepAliveTimeout("no answer"), False, 1.0, 2, True),
        # a broken or refused connection: a new channel (another endpoint) at once
        (ConnectionError("stream ended"), False, 0.25, 2, True),
        (ConnectionError("stream ended"), True, 0.25, 2, True),
    ],
)
def test_the_channel_is_replaced_when_broken_silent_or_the_lease_is_in_danger(
    tmp_path, error, silent, step, failures, replaced
):
    k = keeper(tmp_path, 2, [error] * failures)
    k._streams.silent = silent  # type: ignore[attr-defined]
    first = k._holder.get()
    clock = k._clock
    for _ in range(failures):
        clock.now += step  # type: ignore[attr-defined]
        k._tick()
    assert k.health().keepalive_failures == failures
    assert (k._holder.peek() is not first) == replaced


def test_a_late_answer_never_moves_the_last_renewal_back(tmp_path):
    k = keeper(tmp_path, 2, [2, (2, 99.0)])
    clock = k._clock
    clock.now += 1.0  # type: ignore[attr-defined]
    k._tick()
    clock.now += 1.0  # type: ignore[attr-defined]
    k._tick()
    assert k.valid_until() == pytest.approx(101.0 + 2 - 0.3)


def test_a_retiring_lease_with_a_shorter_ttl_sets_the_pace(tmp_path):
    k = keeper(tmp_path, 4, [4, 1])
    k._retiring = k._held(8, 1.0, k._clock())
    assert k._pace() == 0.5
    k._retiring = None
    assert k._pace() == 2.0


def test_alive_ends_a_margin_before_the_earliest_expiry(tmp_path):
    k = keeper(tmp_path, 2, [])
    clock = k._clock
    clock.now += 1.69  # type: ignore[attr-defined]
    assert k.alive()
    clock.now += 0.02  # type: ignore[attr-defined]
    assert not k.alive()


def test_a_stopped_keeper_does_not_renew_on_a_second_stop(tmp_path):
    """A node that went away (stop without the last renewal) stays gone when its elector
    stops too: its lease runs out TTL after the last renewal, not after the stop."""
    k = keeper(tmp_path, 2, [2])
    k.stop()
    k.stop(renew_first=True)
    assert k._streams.outcomes == [2]  # type: ignore[attr-defined]


def test_answers_belong_to_requests_in_the_order_they_were_sent():
    """etcd answers a stream's keep-alives in order: the n-th answer is the n-th request's."""
    pending = Outstanding()
    pending.sent(7, 1.0)
    pending.sent(8, 1.1)
    pending.sent(7, 1.5)
    assert pending.answered(7) == 1.0
    assert pending.answered(8) == 1.1
    assert len(pending) == 1
    assert pending.answered(7) == 1.5
    assert len(pending) == 0


@pytest.mark.parametrize(
    "sent, answer, reason",
    [
        ([], 7, "keep-alive answer for lease 7 nobody asked for"),
        ([8], 7, "keep-alive answer for lease 7, not 8"),
    ],
)
def test_an_answer_out_of_order_is_refused(sent, answer, reason):
    pending = Outstanding()
    for lease_id in sent:
        pending.sent(lease_id, 1.0)
    with pytest.raises(ConnectionError, match=reason):
        pending.answered(answer)


def test_a_channel_is_silent_until_it_answers_and_again_an_interval_after():
    clock = FakeClock(50.0)
    streams = KeepAliveStreams(clock=clock)
    assert streams.silent_for(1.0)  # never answered
    streams._answered()  # what a stream's reader calls for every answer
    clock.now += 0.9
    assert not streams.silent_for(1.0)
    clock.now += 0.1
    assert streams.silent_for(1.0)


@pytest.mark.parametrize("ttl, timeout", [(1, 0.5), (2, 1.0), (4, 1.0), (10, 1.0)])
def test_a_grant_may_take_longer_than_a_keepalive_but_not_the_life_of_a_retiring_lease(
    ttl, timeout
):
    """A grant is a raft write: a loaded cluster commits it in more than the 0.4 s a
    keep-alive gets; a retiring lease (a -vip.ttl change) must still be renewed meanwhile."""
    assert grant_timeout(ttl) == timeout
    assert grant_timeout(ttl) < ttl - default_margin(ttl)
