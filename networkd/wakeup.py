"""A pipe that another thread pokes to wake a worker's bus poll (pass ``rfd`` as an extra
fd to ``Subscriber.poll``); ZeroMQ sockets stay in the thread that made them."""

import os
from typing import Optional, Sequence


class Wakeup:
    """A non-blocking pipe: ``poke`` from any thread, ``drain`` after the poll woke."""

    def __init__(self) -> None:
        self.rfd, self.wfd = os.pipe()
        os.set_blocking(self.rfd, False)
        os.set_blocking(self.wfd, False)

    def poke(self) -> None:
        try:
            os.write(self.wfd, b"x")
        except (BlockingIOError, OSError):
            pass  # already poked (pipe full) or closing

    def drain(self) -> bool:
        """Empty the pipe; True when it had been poked."""
        poked = False
        try:
            while os.read(self.rfd, 4096):
                poked = True
        except (BlockingIOError, OSError):
            pass
        return poked

    def close(self) -> None:
        os.close(self.rfd)
        os.close(self.wfd)


def sleep_ms(now: float, due: Sequence[Optional[float]], shortest: int, longest: int) -> int:
    """How long a loop may sleep in its poll: milliseconds until the earliest of ``due``
    (monotonic instants; None: nothing due), +1 so it never wakes just before, within
    ``shortest`` and ``longest``."""
    times = [t for t in due if t is not None]
    if not times:
        return longest
    wait = int((min(times) - now) * 1000) + 1
    return max(shortest, min(longest, wait))
