"""The watch watchdog's fallback to read probes is for an etcd without progress requests
(older than 3.4), known by its version, not for any etcd that once failed to answer one:
a loaded etcd 3.4 answers reads while a stalled watch stream answers nothing, and read
probes would keep that stream forever (the scale simulation's stale mirrors)."""

import queue
import time
from types import SimpleNamespace
from typing import Any, List, Optional

import pytest

from networkd.etcd.channel import StreamWatchdog, answers_progress


class Call:
    def __init__(self) -> None:
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


def client(version: Optional[str]) -> Any:
    """Reads answer; Status reports ``version`` (None: it fails)."""

    def status(*_args: Any, **_kwargs: Any) -> Any:
        if version is None:
            raise TimeoutError("no answer")
        return SimpleNamespace(version=version)

    return SimpleNamespace(
        kvstub=SimpleNamespace(Range=lambda *_a, **_k: SimpleNamespace()),
        maintenancestub=SimpleNamespace(Status=status),
        call_credentials=None,
        metadata=None,
    )


@pytest.mark.parametrize(
    "version, progress, cancelled, reads",
    [
        ("3.4.23", False, True, False),  # stalled stream on 3.4: cancelled, reconnects
        (None, False, True, False),  # version unknown: cancelled (safe), asked again later
        ("3.3.11", False, False, True),  # no progress requests: reads probe from now on
        ("3.4.23", True, False, False),  # progress answered: nothing to do
    ],
)
def test_reads_replace_progress_only_on_an_etcd_without_it(version, progress, cancelled, reads):
    requests: queue.Queue = queue.Queue()
    call = Call()
    dog = StreamWatchdog(client(version), requests, call, b"/k", interval=0.05, deadline=0.1)
    dog.start()
    seen: List[Any] = []
    deadline = time.monotonic() + 0.6
    while time.monotonic() < deadline:
        try:
            seen.append(requests.get(timeout=0.02))
            if progress:
                dog.seen(SimpleNamespace(watch_id=-1))
        except queue.Empty:
            pass
    dog.stop()
    assert seen  # progress requests were sent
    assert call.cancelled == cancelled
    assert dog._use_reads == reads


def test_answers_progress_by_version():
    assert answers_progress(client("3.4.0"), 1.0) is True
    assert answers_progress(client("3.5.9"), 1.0) is True
    assert answers_progress(client("3.3.11"), 1.0) is False
    assert answers_progress(client("garbage"), 1.0) is None
    assert answers_progress(client(None), 1.0) is None
