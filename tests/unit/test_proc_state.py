"""The worker state machine, its restart policy (``decide``) and the restart throttle."""

import pytest

from networkd.proc_state import (
    BACKOFF_MAX,
    EXIT_FATAL,
    MAX_START_FAILURES,
    START_SECONDS,
    TRANSITIONS,
    Decision,
    Exit,
    IllegalTransition,
    ProcessState,
    backoff_delay,
    check_transition,
    decide,
    is_up,
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
    [
        (S.RUNNING, S.BACKOFF),
        (S.RUNNING, S.STARTING),
        (S.FATAL, S.RUNNING),
        (S.EXITED, S.RUNNING),
        (S.STOPPING, S.RUNNING),
    ],
)
def test_illegal_transitions_raise(old: ProcessState, new: ProcessState) -> None:
    with pytest.raises(IllegalTransition):
        check_transition(old, new)


def test_backoff_grows_and_is_capped() -> None:
    delays = [backoff_delay(n) for n in range(1, 12)]
    assert delays[0] == 0.25 and delays[1] == 0.5 and delays[2] == 1.0
    assert all(a <= b for a, b in zip(delays, delays[1:]))
    assert max(delays) == BACKOFF_MAX


# ------------------------------------------------------------------ the restart policy

KILLED = Exit(None, "SIGKILL")
TERMED_CLEAN = Exit(0)  # a worker that got TERM exits 0 from its handler
CRASHED = Exit(1)
SEGV = Exit(None, "SIGSEGV")
FATAL_EXIT = Exit(EXIT_FATAL)
NOW, LATER, NEVER = 0.0, "later", None

# (state when the process ended, how, daemon stopping, failures so far)
#   -> (next state, restart: NOW / LATER / NEVER, failures after)
POLICY = [
    # RUNNING: any end restarts at once and forgets earlier start failures, except 78.
    (S.RUNNING, CRASHED, False, 3, S.EXITED, NOW, 0),
    (S.RUNNING, KILLED, False, 0, S.EXITED, NOW, 0),
    (S.RUNNING, SEGV, False, 0, S.EXITED, NOW, 0),
    (S.RUNNING, TERMED_CLEAN, False, 0, S.EXITED, NOW, 0),
    (S.RUNNING, FATAL_EXIT, False, 0, S.FATAL, NEVER, 0),
    # STARTING: an error is a failed start (backoff, then FATAL); an outside kill is not.
    (S.STARTING, CRASHED, False, 0, S.BACKOFF, LATER, 1),
    (S.STARTING, SEGV, False, 2, S.BACKOFF, LATER, 3),
    (S.STARTING, CRASHED, False, MAX_START_FAILURES - 1, S.FATAL, NEVER, MAX_START_FAILURES),
    (S.STARTING, KILLED, False, 2, S.EXITED, NOW, 2),
    (S.STARTING, Exit(None, "SIGTERM"), False, 0, S.EXITED, NOW, 0),
    (S.STARTING, TERMED_CLEAN, False, 1, S.EXITED, NOW, 1),
    (S.STARTING, FATAL_EXIT, False, 0, S.FATAL, NEVER, 0),
    # STOPPING for a restart: start again whatever the exit (even 78: it was asked to stop).
    (S.STOPPING, TERMED_CLEAN, False, 0, S.EXITED, NOW, 0),
    (S.STOPPING, KILLED, False, 0, S.EXITED, NOW, 0),
    (S.STOPPING, FATAL_EXIT, False, 0, S.EXITED, NOW, 0),
    # The daemon is stopping: nothing starts again, nothing is FATAL.
    (S.STOPPING, TERMED_CLEAN, True, 0, S.EXITED, NEVER, 0),
    (S.RUNNING, FATAL_EXIT, True, 0, S.EXITED, NEVER, 0),
    (S.STARTING, CRASHED, True, 4, S.EXITED, NEVER, 4),
    # States without a process: nothing changes.
    (S.BACKOFF, CRASHED, False, 1, S.BACKOFF, NEVER, 1),
    (S.FATAL, CRASHED, False, 5, S.FATAL, NEVER, 5),
    (S.EXITED, CRASHED, False, 0, S.EXITED, NEVER, 0),
]


def assert_legal(state: ProcessState, decision: Decision) -> None:
    """The policy only asks for legal moves, then (to start again) EXITED/BACKOFF -> STARTING."""
    if decision.state != state:
        check_transition(state, decision.state)
    if decision.restart_in is not None:
        check_transition(decision.state, S.STARTING)


@pytest.mark.parametrize("state,how,stopping,failures,new,restart,failures_after", POLICY)
def test_decide(state, how, stopping, failures, new, restart, failures_after) -> None:
    decision = decide(state, how, stopping, failures)
    assert decision.state == new
    assert decision.start_failures == failures_after
    if restart is NOW:
        assert decision.restart_in == 0.0
    elif restart is NEVER:
        assert decision.restart_in is None
    else:
        assert decision.restart_in == backoff_delay(failures_after)
    assert_legal(state, decision)


def test_decide_covers_every_state_and_exit_kind() -> None:
    """Every (state, kind of exit, stopping) combination gives a legal decision."""
    hows = [CRASHED, SEGV, KILLED, TERMED_CLEAN, FATAL_EXIT, Exit(None), Exit(None, "signal 99")]
    for state in ProcessState:
        for how in hows:
            for stopping in (False, True):
                for failures in range(MAX_START_FAILURES + 1):
                    decision = decide(state, how, stopping, failures)
                    assert_legal(state, decision)
                    assert decision.reason


def test_exit_from_multiprocessing_exitcode() -> None:
    assert Exit.from_exitcode(-9) == Exit(None, "SIGKILL")
    assert Exit.from_exitcode(78) == Exit(78)
    assert Exit.from_exitcode(-200).text == "signal signal 200"
    assert Exit.from_exitcode(None).text == "unknown"
    assert Exit(None, "SIGSEGV").text == "signal SIGSEGV"


def test_running_after_start_seconds_on_the_monotonic_clock() -> None:
    assert not is_up(S.STARTING, True, 100.0, 100.0 + START_SECONDS - 0.01)
    assert is_up(S.STARTING, True, 100.0, 100.0 + START_SECONDS)
    assert not is_up(S.STARTING, False, 100.0, 200.0)
    assert not is_up(S.BACKOFF, True, 100.0, 200.0)
