"""The bus over real ZeroMQ ipc sockets: snapshots, deltas, restarts, gaps, permissions."""

import os
import subprocess
import sys
import tempfile
import time
from typing import Callable, Dict, Iterator, List, Optional

import pytest
import zmq

from networkd.bus.messages import DomainEntry, WorkerStarted
from networkd.bus.publisher import (
    MAX_SUBSCRIPTIONS_PER_POLL,
    Publisher,
    endpoint_dir,
    endpoint_path,
)
from networkd.bus.subscriber import Subscriber
from tests.support.daemon import Daemon, wait_for

TOPIC = "state.domains"


@pytest.fixture
def run_dir() -> Iterator[str]:
    path = tempfile.mkdtemp(prefix="networkd-bus-")
    os.chmod(path, 0o755)
    yield path
    subprocess.run(["rm", "-rf", path], check=False)


def entry(name: str, ip: str) -> DomainEntry:
    return DomainEntry(name=name, ips=[ip], type="")


def pump(
    pub: Publisher,
    subs: List[Subscriber],
    until: Optional[Callable[[], bool]] = None,
    seconds: float = 3.0,
) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        pub.poll()
        for s in subs:
            s.poll(10)
        if until is not None and until():
            return
    if until is not None:
        raise AssertionError("bus did not converge")


def state(sub: Subscriber) -> Optional[Dict[str, DomainEntry]]:
    return sub.state("watcher", TOPIC)


def test_late_subscriber_and_restarted_publisher_converge(run_dir: str) -> None:
    ctx = zmq.Context()
    pub = Publisher(ctx, run_dir, "watcher")
    topic = pub.state(TOPIC)
    early = Subscriber(ctx, run_dir, {"watcher": [TOPIC]})
    topic.replace({})
    pump(pub, [early], lambda: state(early) is not None)
    for i in range(50):
        topic.set(f"n{i}.lain", entry(f"n{i}.lain", f"10.0.0.{i}"))
    topic.delete("n7.lain")
    expected = topic.items()
    pump(pub, [early], lambda: state(early) == expected)

    late = Subscriber(ctx, run_dir, {"watcher": [TOPIC]})
    pump(pub, [early, late], lambda: state(late) == expected)
    assert state(early) == expected

    # The publisher restarts (new process epoch) with different state.
    pub.close()
    time.sleep(0.2)
    pub2 = Publisher(ctx, run_dir, "watcher", epoch=time.time() + 1)
    topic2 = pub2.state(TOPIC)
    topic2.replace({"only.lain": entry("only.lain", "10.9.9.9")})
    expected2 = topic2.items()
    pump(
        pub2,
        [early, late],
        lambda: state(early) == expected2 and state(late) == expected2,
        seconds=5,
    )
    topic2.set("more.lain", entry("more.lain", "10.9.9.10"))
    expected3 = topic2.items()
    pump(pub2, [early, late], lambda: state(early) == expected3 and state(late) == expected3)
    for s in (early, late):
        s.close()
    pub2.close()
    ctx.destroy(0)


def test_sequence_gap_triggers_a_fresh_snapshot(run_dir: str) -> None:
    ctx = zmq.Context()
    pub = Publisher(ctx, run_dir, "watcher")
    topic = pub.state(TOPIC)
    sub = Subscriber(ctx, run_dir, {"watcher": [TOPIC]})
    topic.set("a.lain", entry("a.lain", "10.0.0.1"))
    pump(pub, [sub], lambda: state(sub) == topic.items())
    # A delta the subscriber never sees (as if dropped at a full queue).
    pub._seq[TOPIC] = pub._seq.get(TOPIC, 0) + 1
    topic.set("b.lain", entry("b.lain", "10.0.0.2"))
    pump(pub, [sub], lambda: state(sub) == topic.items())
    assert set(state(sub) or {}) == {"a.lain", "b.lain"}
    sub.close()
    pub.close()
    ctx.destroy(0)


def test_garbage_on_an_endpoint_is_rejected_not_fatal(run_dir: str) -> None:
    ctx = zmq.Context()
    os.makedirs(endpoint_dir(run_dir, "watcher"))
    raw = ctx.socket(zmq.XPUB)
    raw.bind(f"ipc://{endpoint_path(run_dir, 'watcher')}")
    sub = Subscriber(ctx, run_dir, {"watcher": [""]})
    time.sleep(0.3)
    raw.recv(zmq.NOBLOCK) if raw.poll(1000) else None
    for frames in (
        [b"state.domains", b"\xff\x00garbage"],
        [b"x"],
        [b"state.domains", b"\x93\x01\x02\x03"],
    ):
        raw.send_multipart(frames)
    assert sub.poll(300) == []
    sub.close()
    raw.close(0)
    ctx.destroy(0)


ATTACK = r"""
import os, sys, zmq
path = sys.argv[1]
results = []
ctx = zmq.Context()
s = ctx.socket(zmq.XPUB)
try:
    s.bind("ipc://" + path)
    results.append("bind-ok")
except zmq.ZMQError as e:
    results.append("bind-denied")
try:
    os.unlink(path)
    results.append("unlink-ok")
except OSError:
    results.append("unlink-denied")
try:
    os.mkdir(os.path.join(os.path.dirname(os.path.dirname(path)), "intruder"))
    results.append("mkdir-ok")
except OSError:
    results.append("mkdir-denied")
print(",".join(results))
"""


def test_an_unprivileged_worker_cannot_bind_or_replace_another_endpoint(tmp_path: str) -> None:
    daemon = Daemon(str(tmp_path), workers=("api",)).start()
    try:
        daemon.wait_running(["api"])
        target = endpoint_path(daemon.run_dir, "supervisor")
        assert os.path.exists(target)
        for user in ("networkd-dns", "networkd"):
            result = subprocess.run(
                [
                    "setpriv",
                    f"--reuid={user}",
                    f"--regid={user}",
                    "--clear-groups",
                    sys.executable,
                    "-c",
                    ATTACK,
                    target,
                ],
                capture_output=True,
                text=True,
                timeout=20,
            )
            assert result.stdout.strip() == "bind-denied,unlink-denied,mkdir-denied", (user, result)
        assert os.path.exists(target)
        # The supervisor's endpoint still works: a status still reads its workers.
        wait_for(lambda: daemon.ctl_status()["workers"], 10)
    finally:
        daemon.close()


def test_a_topic_is_silent_until_its_first_publication_which_is_a_snapshot(run_dir: str) -> None:
    ctx = zmq.Context()
    pub = Publisher(ctx, run_dir, "watcher")
    sub = Subscriber(ctx, run_dir, {"watcher": [TOPIC]})
    topic = pub.state(TOPIC)  # created, not yet published: "unknown", not "empty"
    pump(pub, [sub], seconds=0.5)
    assert state(sub) is None
    topic.replace({})  # the first publication, even of nothing, is a snapshot
    pump(pub, [sub], lambda: state(sub) == {}, seconds=2)
    topic.set("a.lain", entry("a.lain", "10.0.0.1"))
    pump(pub, [sub], lambda: set(state(sub) or {}) == {"a.lain"}, seconds=2)
    sub.close()
    pub.close()
    ctx.destroy(0)


def test_a_subscription_flood_is_worked_off_a_bounded_amount_per_poll(run_dir: str) -> None:
    """A subscriber (of a group allowed to connect) floods subscriptions: each poll reads
    at most MAX_SUBSCRIPTIONS_PER_POLL of them, so the loop around it keeps running (its
    events reach the other subscribers between polls) and one snapshot answers each poll."""
    flood = 20_000
    ctx = zmq.Context()
    pub = Publisher(ctx, run_dir, "watcher")
    pub.state(TOPIC).replace({"a.lain": entry("a.lain", "10.0.0.1")})
    legit = Subscriber(ctx, run_dir, {"watcher": [TOPIC, "worker."]})
    pump(pub, [legit], lambda: state(legit) is not None)
    # No high-water marks on the way (libzmq's would drop most of the flood): the worst
    # case, every subscription queued at the publisher at once.
    pub.socket.setsockopt(zmq.RCVHWM, 0)
    flooder = ctx.socket(zmq.XSUB)
    flooder.setsockopt(zmq.SNDHWM, 0)
    flooder.connect(f"ipc://{endpoint_path(run_dir, 'watcher')}")
    for _ in range(flood):
        flooder.send(b"\x01" + TOPIC.encode())
    reads: List[int] = []
    ticks = 0
    snapshots = 0
    events = 0
    deadline = time.monotonic() + 20
    while sum(reads) < flood and time.monotonic() < deadline:
        reads.append(pub.poll())
        ticks += 1
        pub.event("worker.api.start", WorkerStarted("api", ticks))  # the loop's own work
        for env in legit.poll(1):
            snapshots += env.kind == "snapshot"
            events += env.topic == "worker.api.start"
    assert sum(reads) == flood, "every subscription was read in the end"
    assert max(reads) <= MAX_SUBSCRIPTIONS_PER_POLL
    assert len(reads) >= flood // MAX_SUBSCRIPTIONS_PER_POLL
    deadline = time.monotonic() + 5
    while events < ticks and time.monotonic() < deadline:
        events += sum(env.topic == "worker.api.start" for env in legit.poll(5))
    assert events == ticks, "every tick's event went out while the flood was worked off"
    assert 1 <= snapshots <= len(reads), "one snapshot per poll, not one per subscription"
    flooder.close(0)
    legit.close()
    pub.close()
    ctx.destroy(0)
