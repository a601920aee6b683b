"""Worker process states, the transitions allowed between them (as in supervisord), and
the restart policy: what the supervisor does when a worker's process ends.

``decide`` is the whole policy as a pure function; the supervisor only carries out its
``Decision`` (I/O, logging, timers). Every state it returns is a legal transition in
``TRANSITIONS``, the single table of legal moves (table-tested in tests/unit).
"""

import dataclasses
import enum
import signal
from typing import Dict, FrozenSet, Optional


class ProcessState(str, enum.Enum):
    STARTING = "STARTING"  # spawned, not yet up for START_SECONDS
    RUNNING = "RUNNING"
    BACKOFF = "BACKOFF"  # failed while starting; waits before the next try
    STOPPING = "STOPPING"  # asked to stop (restart or final stop)
    EXITED = "EXITED"  # gone; restarted at once unless the daemon is stopping
    FATAL = "FATAL"  # failed too often while starting, or said restarting will not help


S = ProcessState
TRANSITIONS: Dict[ProcessState, FrozenSet[ProcessState]] = {
    S.STARTING: frozenset({S.RUNNING, S.BACKOFF, S.STOPPING, S.EXITED, S.FATAL}),
    S.RUNNING: frozenset({S.STOPPING, S.EXITED, S.FATAL}),
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

# The exit code of a worker whose configuration cannot work: restarting will not help.
EXIT_FATAL = 78  # EX_CONFIG
# Deaths an operator or the kernel caused: restart at once, never a failure to start.
EXTERNAL_SIGNALS = frozenset({"SIGKILL", "SIGTERM", "SIGINT", "SIGHUP"})


class IllegalTransition(RuntimeError):
    pass


def check_transition(old: ProcessState, new: ProcessState) -> None:
    if new not in TRANSITIONS[old]:
        raise IllegalTransition(f"{old.value} -> {new.value}")


def backoff_delay(failures: int) -> float:
    """Delay before start try number ``failures + 1``: 0.25 s, 0.5 s, 1 s, ... capped."""
    return min(BACKOFF_BASE * (2 ** max(failures - 1, 0)), BACKOFF_MAX)


@dataclasses.dataclass(frozen=True)
class Exit:
    """How a process ended: an exit code, or the name of the signal that killed it."""

    code: Optional[int]
    signal: str = ""

    @classmethod
    def from_exitcode(cls, exitcode: Optional[int]) -> "Exit":
        """From ``multiprocessing.Process.exitcode`` (negative: killed by that signal)."""
        if exitcode is None or exitcode >= 0:
            return cls(exitcode)
        try:
            return cls(None, signal.Signals(-exitcode).name)
        except ValueError:
            return cls(None, f"signal {-exitcode}")

    @property
    def text(self) -> str:
        if self.signal:
            return f"signal {self.signal}"
        return "unknown" if self.code is None else f"exit {self.code}"

    @property
    def requested(self) -> bool:
        """A clean exit or an outside kill: never a failure to start."""
        return self.code == 0 or self.signal in EXTERNAL_SIGNALS


@dataclasses.dataclass(frozen=True)
class Decision:
    """What follows a worker's exit: the state to enter and when to start it again."""

    state: ProcessState
    restart_in: Optional[float]  # None: not again; 0: now; > 0: after that many seconds
    start_failures: int
    reason: str


def decide(state: ProcessState, how: Exit, stopping: bool, start_failures: int) -> Decision:
    """The restart policy: ``state`` is the worker's state when its process ended,
    ``stopping`` whether the whole daemon is stopping, ``start_failures`` the failed
    starts in a row so far."""
    text = how.text
    if state not in (S.STARTING, S.RUNNING, S.STOPPING):  # no process here: nothing to do
        return Decision(state, None, start_failures, text)
    if stopping:
        return Decision(S.EXITED, None, start_failures, text)
    if state == S.STOPPING:  # a restart was asked for: whatever the exit, start again
        return Decision(S.EXITED, 0.0, start_failures, text)
    if how.code == EXIT_FATAL:
        return Decision(S.FATAL, None, start_failures, f"{text}: restarting will not help")
    if state == S.RUNNING:
        return Decision(S.EXITED, 0.0, 0, text)
    if how.requested:
        return Decision(S.EXITED, 0.0, start_failures, text)
    failures = start_failures + 1
    if failures >= MAX_START_FAILURES:
        return Decision(S.FATAL, None, failures, f"{failures} failed starts, last {text}")
    delay = backoff_delay(failures)
    return Decision(S.BACKOFF, delay, failures, f"{text}; retry in {delay:.2f}s")


def is_up(state: ProcessState, alive: bool, started: float, now: float) -> bool:
    """A STARTING worker whose process has lived START_SECONDS (monotonic clock) is RUNNING."""
    return state == S.STARTING and alive and now - started >= START_SECONDS
