"""When the watcher counts its etcd connection as stuck, from its probes (pure logic).

The watcher's watch stream is quiet when nothing changes, so a probe read proves the
connection (networkd.etcd.channel explains why it must). A probe with a short deadline
cannot tell a slow etcd from a stuck connection: under load every read misses the
deadline, each miss replaced the channel and probed every endpoint, and that load made
more misses (docs/SCALE.md, "Overload feeds itself"). Instead, like the lease's
keep-alives (networkd.etcd.keepalive), probes go out at a steady pace, each with a long
deadline of its own, up to ``max_out`` without an answer; any answer, however late,
proves etcd answers. The connection is stuck when no probe has answered for ``silence``
seconds (a stall, a black hole, a partition): then the watch is cancelled and made anew.
``silence`` must exceed the pace plus the largest sudden rise in latency to tolerate: the
first late answer comes that much after the last prompt one (the reader: 0.5 + 2 s).
A probe that fails with an error (refused, not found, auth) cancels at once, as before.
"""

MAX_PROBES_OUT = 4


class ProbePace:
    def __init__(self, silence: float, now: float, max_out: int = MAX_PROBES_OUT) -> None:
        self.silence = silence
        self.max_out = max_out
        self.answered_at = now  # counted from the watch's start: it was just created
        self.out = 0

    def send(self) -> bool:
        """Whether to send the next probe now (False while ``max_out`` are unanswered)."""
        if self.out >= self.max_out:
            return False
        self.out += 1
        return True

    def answered(self, now: float) -> None:
        self.out = max(0, self.out - 1)
        self.answered_at = max(self.answered_at, now)

    def failed(self) -> None:
        self.out = max(0, self.out - 1)

    def stuck(self, now: float) -> bool:
        return now - self.answered_at > self.silence
