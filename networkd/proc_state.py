"""Worker process states and the transitions allowed between them (as in supervisord)."""

import enum
from typing import Dict, FrozenSet


class ProcessState(str, enum.Enum):
    STARTING = "STARTING"  # spawned, not yet up for START_SECONDS
    RUNNING = "RUNNING"
    BACKOFF = "BACKOFF"  # failed while starting; waits before the next try
    STOPPING = "STOPPING"  # asked to stop (restart or final stop)
    EXITED = "EXITED"  # gone; restarted at once unless the daemon is stopping
    FATAL = "FATAL"  # failed too often while starting: reported, not restarted


S = ProcessState
TRANSITIONS: Dict[ProcessState, FrozenSet[ProcessState]] = {
    S.STARTING: frozenset({S.RUNNING, S.BACKOFF, S.STOPPING, S.EXITED, S.FATAL}),
    S.RUNNING: frozenset({S.STOPPING, S.EXITED}),
    S.BACKOFF: frozenset({S.STARTING, S.FATAL, S.EXITED}),
    S.STOPPING: frozenset({S.EXITED}),
    S.EXITED: frozenset({S.STARTING}),
    S.FATAL: frozenset({S.STARTING}),
}

# A worker alive this long is RUNNING; an error exit before that is a failure to start.
START_SECONDS = 1.0
# Start failures in a row before FATAL, and the growing delay between tries.
MAX_START_FAILURES = 5
BACKOFF_BASE = 0.25
BACKOFF_MAX = 8.0


class IllegalTransition(RuntimeError):
    pass


def check_transition(old: ProcessState, new: ProcessState) -> None:
    if new not in TRANSITIONS[old]:
        raise IllegalTransition(f"{old.value} -> {new.value}")


def backoff_delay(failures: int) -> float:
    """Delay before start try number ``failures + 1``: 0.25 s, 0.5 s, 1 s, ... capped."""
    return min(BACKOFF_BASE * (2 ** max(failures - 1, 0)), BACKOFF_MAX)
