"""Signals whose default action would end a networkd process, and that nobody uses.

The Go daemon ignored them (its runtime catches every signal and drops the ones a program
did not ask for), so operators and tools send them without a second thought: a
``systemctl kill -s USR2 networkd`` or a stray ``pkill -USR2`` must not kill a node's
network. Python's default for most of them is to terminate, without a graceful stop (no
VIP released, lock file left, resolv.conf not restored).

- ``LOGGED``: the supervisor queues them like the signals it acts on, and its main loop
  logs ``signal ignored`` (an operator sees that something sent one).
- ``QUIET``: SIG_IGN, never logged: SIGPIPE and SIGXFSZ are raised by a failing write, and
  logging one would write again (a broken stderr pipe would loop forever). Python ignores
  both at start-up already; they are set again here so nothing depends on that.

The fork server (``workers/forkguard.py``) sets all of them to SIG_IGN, and the workers it
forks inherit that: a signal to the whole unit (systemd's ``KillMode=control-group``
``systemctl kill``) kills no worker either.
"""

import signal
from typing import List

_LOGGED_NAMES = ("SIGUSR2", "SIGALRM", "SIGVTALRM", "SIGPROF", "SIGIO", "SIGPWR", "SIGXCPU")
_QUIET_NAMES = ("SIGPIPE", "SIGXFSZ")


def _present(names: tuple) -> List[int]:
    return [int(getattr(signal, n)) for n in names if hasattr(signal, n)]


def realtime_signals() -> List[int]:
    """SIGRTMIN..SIGRTMAX (the two glibc keeps for itself are not valid_signals)."""
    low = int(getattr(signal, "SIGRTMIN", 34))
    return sorted(int(s) for s in signal.valid_signals() if int(s) >= low)


LOGGED: List[int] = _present(_LOGGED_NAMES) + realtime_signals()
QUIET: List[int] = _present(_QUIET_NAMES)


def name(signum: int) -> str:
    """``SIGUSR2``; real-time signals as ``SIGRTMIN+3``."""
    try:
        return signal.Signals(signum).name
    except ValueError:
        low = int(getattr(signal, "SIGRTMIN", 34))
        return f"SIGRTMIN+{signum - low}" if signum >= low else f"signal {signum}"


def ignore_all() -> None:
    """SIG_IGN for every signal above (the fork server, and through it the workers)."""
    for signum in LOGGED + QUIET:
        signal.signal(signum, signal.SIG_IGN)
