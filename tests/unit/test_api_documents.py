"""The api's HTTP threads render from a read-only copy of the mirrors, never the live ones
the bus loop changes (a dict changing size under a renderer raises, or mixes updates)."""

import threading
from typing import Any, Dict, List, Tuple

import pytest

from networkd.bus.messages import DomainEntry, WorkerInfo
from networkd.bus.view import FrozenView
from networkd.workers.api import Documents

Key = Tuple[str, str]


class LiveMirrors:
    """Stands in for a BusView: live dicts that a "bus loop" mutates."""

    def __init__(self) -> None:
        self.mirrors: Dict[Key, Dict[str, Any]] = {
            ("watcher", "state.domains"): {},
            ("supervisor", "state.workers"): {
                "api": WorkerInfo("api", 10, "RUNNING", 0, 0.0, "", "networkd")
            },
        }
        self.sources: List[str] = ["watcher", "supervisor"]

    def frozen(self) -> FrozenView:
        return FrozenView(self.mirrors, self.sources)

    def domains(self) -> Dict[str, Any]:
        return self.mirrors[("watcher", "state.domains")]


def test_copy_is_read_only_and_keeps_its_moment() -> None:
    live = LiveMirrors()
    live.domains()["a.lain"] = DomainEntry("a.lain", ["10.0.0.1"])
    docs = Documents(live.frozen, "10.0.0.9")
    live.domains()["b.lain"] = DomainEntry("b.lain", ["10.0.0.2"])  # after the copy
    text = docs.dns_config()[1].decode()
    assert "a.lain [10.0.0.1]" in text and "b.lain" not in text
    domains = docs.mirrors.mirror("watcher", "state.domains")
    assert domains is not None
    with pytest.raises(TypeError):
        domains["c.lain"] = DomainEntry("c.lain", ["10.0.0.3"])  # type: ignore[index]
    assert "b.lain" not in docs.dns_config()[1].decode()  # until the bus loop refreshes
    docs.refresh()
    assert "b.lain [10.0.0.2]" in docs.dns_config()[1].decode()
    assert b'"RUNNING"' in docs.status()[1]


def test_renderers_survive_a_bus_loop_changing_the_mirrors() -> None:
    live = LiveMirrors()
    docs = Documents(live.frozen, "10.0.0.9")
    errors: List[BaseException] = []
    stop = threading.Event()

    def http_thread() -> None:
        try:
            while not stop.is_set():
                docs.dns_config()
                docs.metrics()
                docs.status()
        except BaseException as exc:  # what a live mirror would raise mid-iteration
            errors.append(exc)

    thread = threading.Thread(target=http_thread)
    thread.start()
    try:
        for i in range(3000):  # the bus loop: big changes, a fresh copy after each
            name = f"n{i}.lain"
            live.domains()[name] = DomainEntry(name, [f"10.1.{i // 250}.{i % 250}"])
            if i % 3 == 0:
                live.domains().pop(f"n{i - 1}.lain", None)
            docs.refresh()
    finally:
        stop.set()
        thread.join(10)
    assert errors == []
