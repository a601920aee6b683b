"""The signals networkd ignores, and the ones it leaves alone."""

import signal

from networkd import signals


def test_ignored_signals_leave_the_handled_ones_and_the_fatal_ones_alone() -> None:
    ignored = set(signals.LOGGED) | set(signals.QUIET)
    for sig in (signal.SIGUSR2, signal.SIGPIPE, signal.SIGALRM, signal.SIGPROF, signal.SIGXFSZ):
        assert sig in ignored
    for handled in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1, signal.SIGCHLD):
        assert handled not in ignored  # acted on, or harmless by default
    assert signal.SIGPIPE in signals.QUIET and signal.SIGXFSZ in signals.QUIET
    rt = signals.realtime_signals()
    assert rt and set(rt) <= ignored and min(rt) >= 34
    assert signals.name(signal.SIGUSR2) == "SIGUSR2"
    assert signals.name(rt[0] + 3) == "SIGRTMIN+3"
