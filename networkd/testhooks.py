"""Test-only hooks, off unless the daemon's environment has ``NETWORKD_TEST_HOOKS=1``.

They let the integration tests cause failures that no outside action can, with real
processes and real signals:

- the control-socket command ``{"cmd": "test-raise"}`` makes the supervisor's main loop
  raise ``InjectedFault`` (the graceful stop after an internal error);
- SIGUSR2 to a worker makes it exit 78 at once (a worker saying "restarting will not
  help" while RUNNING). Without the hook a worker ignores SIGUSR2 (``networkd.signals``).

The packaged unit never sets the variable; the control socket is root-only anyway.
"""

import os
import signal
from types import FrameType
from typing import Optional

ENV = "NETWORKD_TEST_HOOKS"


class InjectedFault(RuntimeError):
    """Raised on purpose by a test hook."""


def enabled() -> bool:
    return os.environ.get(ENV) == "1"


def install_worker_hooks() -> None:
    if not enabled():
        return
    from networkd.proc_state import EXIT_FATAL

    def exit_fatal(signum: int, frame: Optional[FrameType]) -> None:
        os._exit(EXIT_FATAL)

    signal.signal(signal.SIGUSR2, exit_fatal)
