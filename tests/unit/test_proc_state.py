"""The worker state machine and its restart throttle."""

import pytest

from networkd.proc_state import (
    BACKOFF_MAX,
    TRANSITIONS,
    IllegalTransition,
    ProcessState,
    backoff_delay,
    check_transition,
)

S = ProcessState


def test_every_state_is_in_the_table() -> None:
    assert set(TRANSITIONS) == set(ProcessState)
    assert {s.value for s in ProcessState} == {
        "STARTING",
        "RUNNING",
        "BACKOFF",
        "STOPPING",
        "EXITED",
        "FATAL",
    }


@pytest.mark.parametrize(
    "old,new",
    [(S.RUNNING, S.BACKOFF), (S.FATAL, S.RUNNING), (S.EXITED, S.RUNNING), (S.STOPPING, S.RUNNING)],
)
def test_illegal_transitions_raise(old: ProcessState, new: ProcessState) -> None:
    with pytest.raises(IllegalTransition):
        check_transition(old, new)


def test_backoff_grows_and_is_capped() -> None:
    delays = [backoff_delay(n) for n in range(1, 12)]
    assert delays[0] == 0.25 and delays[1] == 0.5 and delays[2] == 1.0
    assert all(a <= b for a, b in zip(delays, delays[1:]))
    assert max(delays) == BACKOFF_MAX
