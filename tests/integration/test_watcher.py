"""The watcher worker against a real etcd, in the real daemon (``-workers watcher``).

The oracle: a fresh ``ClusterState`` built from a direct read of etcd must equal what a
subscriber of the watcher's bus endpoint holds, for every topic.
"""

import json
import os
import random
import shutil
import tempfile
import time
from typing import Any, Callable, Dict, Iterator, List, Optional

import pytest
import zmq

from networkd import keys
from networkd.bus.subscriber import Subscriber
from networkd.etcd.state import TOPICS, ClusterState
from tests.support.daemon import Daemon, wait_for
from tests.support.etcd import EtcdServer
from tests.support.lain import one_key_of_each_kind, pod, pod_group

HOSTNAME = "node1"
WATCH_TOPICS = [*TOPICS, "state.etcd", "state.sync", "config.error"]


class WatcherView:
    """A subscriber of the watcher's endpoint, polled from the test thread."""

    def __init__(self, run_dir: str) -> None:
        self.context = zmq.Context()
        self.sub = Subscriber(self.context, run_dir, {"watcher": WATCH_TOPICS})
        self.events: List[Any] = []

    def poll(self, ms: int = 20) -> None:
        for env in self.sub.poll(ms):
            if env.kind == "event":
                self.events.append(env)

    def topic(self, topic: str) -> Optional[Dict[str, Any]]:
        self.poll(5)
        return self.sub.state("watcher", topic)

    def items(self) -> Dict[str, Dict[str, Any]]:
        self.poll(5)
        return {t: dict(self.sub.state("watcher", t) or {}) for t in TOPICS}

    def health(self) -> Any:
        return (self.topic("state.etcd") or {}).get("etcd")

    def in_sync(self) -> bool:
        sync = (self.topic("state.sync") or {}).get("sync")
        return bool(
            sync is not None and sync.in_sync and all(self.topic(t) is not None for t in TOPICS)
        )

    def wait_in_sync(self, timeout: float = 15.0) -> None:
        wait_for(self.in_sync, timeout, what="watcher in sync")

    def close(self) -> None:
        self.sub.close()
        self.context.destroy(0)


def expected_items(
    server: EtcdServer, hostname: str = HOSTNAME, client_factory: Optional[Callable[[], Any]] = None
) -> Dict[str, Dict[str, Any]]:
    """What the watcher must publish: the pure state of a direct full read."""
    client = client_factory() if client_factory is not None else server.client()
    try:
        pairs = []
        for watch_range in keys.WATCH_RANGES:
            if watch_range.prefix:
                results = client.get_prefix(watch_range.key)
            else:
                value, meta = client.get(watch_range.key)
                results = [(value, meta)] if meta is not None else []
            pairs += [(meta.key, value) for value, meta in results]
    finally:
        client.close()
    state = ClusterState(hostname)
    state.replace_all(pairs)
    return state.snapshot()


def wait_exact(
    view: WatcherView, server: EtcdServer, timeout: float = 10.0
) -> Dict[str, Dict[str, Any]]:
    want = expected_items(server)
    last: Dict[str, Any] = {}

    def same() -> bool:
        nonlocal last
        last = view.items()
        return last == want

    try:
        wait_for(same, timeout, what="watcher state equal to etcd")
    except AssertionError:
        diff = {t: (last.get(t), want[t]) for t in TOPICS if last.get(t) != want[t]}
        raise AssertionError(f"watcher state differs from etcd: {diff}") from None
    return want


def make_base_dir() -> str:
    base = tempfile.mkdtemp(prefix="networkd-watcher-")
    os.chmod(base, 0o755)  # the watcher runs as an unprivileged user
    return base


@pytest.fixture
def base_dir() -> Iterator[str]:
    base = make_base_dir()
    try:
        yield base
    finally:
        shutil.rmtree(base, ignore_errors=True)


def start_watcher(base: str, endpoint: str, **flags: Any) -> Daemon:
    daemon = Daemon(base, endpoint, workers=("watcher",), hostname=HOSTNAME, **flags)
    daemon.start()
    return daemon


def j(value: Any) -> str:
    return json.dumps(value)


def every_kind(version: int) -> Dict[str, str]:
    """One key of every kind of SPEC section 1; ``version`` changes every value."""
    n = version
    return {
        keys.vip_key("10.0.0.1"): j(
            {"app": "webrouter", "proc": "worker", "ports": [{"src": str(80 + n)}]}
        ),
        keys.vip_key("0.0.0.0", 9000): j(
            {"app": "app", "proc": "web", "ports": [{"dest": str(9000 + n)}]}
        ),
        keys.domain_key("Exact.Lain"): j({"ips": [f"10.0.1.{n}"], "type": ""}),
        keys.domain_key("*.lain"): j({"ips": [], "type": "webrouter" if n % 2 else "node"}),
        keys.domain_servers_key("example.com"): j({"servers": [f"10.0.2.{n}#53"]}),
        keys.pod_group_key("app", "app.worker.web"): pod_group(
            "app", "web", [pod(n + 1, HOSTNAME, f"172.20.0.{n}"), pod(9, "node2", "172.20.1.9")]
        ),
        keys.DEPLOYD_LEADER: f"10.0.3.{n}:9003",
        keys.SWARM_LEADER: f"10.0.4.{n}:2376",
        keys.STREAMROUTER_VIPPOOL: j([f"10.0.5.{n}"]),
        keys.WHITELIST_IPS: j([f"10.0.6.{n}/32"]),
        keys.whitelist_ex_ports_key("tcp"): j([str(8000 + n)]),
        keys.whitelist_in_ports_key("10.0.7.0/24"): j({"ports": {"tcp": [str(7000 + n)]}}),
        keys.apps_key("tinydns", "worker", "10.0.8.1", 53): f"node{n}",
    }


def test_every_key_kind_put_change_delete_and_late_subscriber(
    etcd: EtcdServer, base_dir: str
) -> None:
    client = etcd.client()
    first = every_kind(1)
    half = list(first)[::2]
    for key in half:  # some present before the start: the initial read
        client.put(key, first[key])
    daemon = start_watcher(base_dir, etcd.endpoint)
    view = WatcherView(daemon.run_dir)
    try:
        view.wait_in_sync()
        wait_exact(view, etcd)
        for key, value in first.items():  # the rest through the watch
            if key not in half:
                client.put(key, value)
        state = wait_exact(view, etcd)
        for topic in TOPICS:
            if topic != "state.config_errors":
                assert state[topic], f"{topic} is empty: every kind must produce an item"
        assert state["state.containers"]["app/web"].container_ip == "172.20.0.1"
        assert state["state.proc_nodes"]["app/web"].nodes == [HOSTNAME, "node2"]
        assert set(state["state.domains"]) == {"exact.lain", "*.lain"}
        assert state["state.config_errors"] == {}

        for key, value in every_kind(2).items():  # every value changed
            client.put(key, value)
        state = wait_exact(view, etcd)
        assert state["state.leaders"]["deployd"].ip == "10.0.3.2"
        assert state["state.vips"]["0.0.0.0:9000"].ports[0].dest == 9002

        late = WatcherView(daemon.run_dir)  # a subscriber that starts late gets the same state
        try:
            late.wait_in_sync(5)
            assert late.items() == view.items() == state
        finally:
            late.close()

        for key in first:
            client.delete(key)
        state = wait_exact(view, etcd)
        assert all(not items for items in state.values())
        health = view.health()
        assert health.connected and health.revision == etcd_revision(etcd)
    finally:
        view.close()
        daemon.close()
        client.close()


def etcd_revision(server: EtcdServer) -> int:
    from tests.support.etcd import current_revision

    client = server.client()
    try:
        return current_revision(client)
    finally:
        client.close()


def test_bad_value_among_good_ones(etcd: EtcdServer, base_dir: str) -> None:
    client = etcd.client()
    bad_key = keys.vip_key("10.0.0.2")
    client.put(keys.vip_key("10.0.0.1"), j({"app": "a", "proc": "p", "ports": [{"src": "80"}]}))
    client.put(bad_key, j({"app": "a", "proc": "p", "ports": [{"src": "80", "proto": "sctp"}]}))
    client.put(keys.vip_key("10.0.0.3"), j({"app": "b", "proc": "p", "ports": [{"src": "81"}]}))
    daemon = start_watcher(base_dir, etcd.endpoint)
    view = WatcherView(daemon.run_dir)
    try:
        view.wait_in_sync()
        wait_exact(view, etcd)
        assert set(view.topic("state.vips") or {}) == {"10.0.0.1", "10.0.0.3"}
        errors = view.topic("state.config_errors") or {}
        assert list(errors) == [bad_key]
        assert "ports[0].proto: unknown protocol 'sctp'" in errors[bad_key].reason
        doc = daemon.ctl_status()
        assert doc["config_errors"] == [{"key": bad_key, "reason": errors[bad_key].reason}]

        # Another bad value with a different problem: a new error, once.
        view.events.clear()
        client.put(bad_key, j({"app": "a", "proc": "p", "ports": [{"src": "99999"}]}))
        wait_for(lambda: "ports[0].src" in (view.topic("state.config_errors") or {}).get(bad_key, Any).reason,
                 5, what="new reason")  # fmt: skip
        client.put(
            keys.vip_key("10.0.0.4"), j({"app": "c", "proc": "p", "ports": []})
        )  # good ones still apply
        wait_exact(view, etcd)
        time.sleep(0.3)
        view.poll(50)
        reported = [e for e in view.events if e.topic == "config.error"]
        assert len(reported) == 1 and reported[0].body.key == bad_key

        client.put(bad_key, j({"app": "a", "proc": "p", "ports": [{"src": "82"}]}))  # fixed
        state = wait_exact(view, etcd)
        assert state["state.config_errors"] == {}
        assert state["state.vips"]["10.0.0.2"].ports[0].src == 82
        wait_for(
            lambda: daemon.ctl_status()["config_errors"] == [], 5, what="status without errors"
        )
        log = daemon.log()
        assert log.count(f"config rejected key={bad_key}") == 2, log[-2000:]
    finally:
        view.close()
        daemon.close()
        client.close()


# every kind, plus keys under our prefixes that are no kind at all
FUZZ_KEYS = one_key_of_each_kind() + [
    keys.VIPS_PREFIX + "garbage-key",
    keys.POD_GROUPS_PREFIX + "deep/er/key",
]
SHAPES: List[Any] = [
    None, [], {}, 0, -1, 1.5, "", "x", True, [None], {"app": None}, {"ports": "80"},
    {"app": "a", "proc": "p", "ports": [{"src": "65536"}]}, {"ips": {"a": 1}}, {"servers": [1]},
    {"Spec": []}, {"Spec": {"Namespace": "a", "Name": "a.b.c"}, "Pods": [{"Containers": [{}]}]},
    ["10.0.0.1", "no"], {"ports": {"tcp": "80"}}, "10.0.0.1:99999",
]  # fmt: skip


def test_fuzz_never_kills_the_watcher(etcd: EtcdServer, base_dir: str) -> None:
    client = etcd.client()
    good = {
        keys.vip_key("10.5.0.1"): j({"app": "a", "proc": "p", "ports": [{"src": "80"}]}),
        keys.domain_key("good.lain"): j({"ips": ["10.5.0.2"]}),
        keys.SWARM_LEADER: "10.5.0.3:2376",
        keys.apps_key("tinydns", "worker", "10.5.0.4", 53): "node1",
    }
    daemon = start_watcher(base_dir, etcd.endpoint)
    view = WatcherView(daemon.run_dir)
    rng = random.Random(42)
    try:
        view.wait_in_sync()
        pid = daemon.pid("watcher")
        for key, value in good.items():
            client.put(key, value)
        for i in range(400):
            key = rng.choice([k for k in FUZZ_KEYS if k not in good])
            roll = rng.random()
            if roll < 0.1:
                client.delete(key)
            elif roll < 0.5:
                client.put(key, bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 80))))
            else:
                client.put(key, j(rng.choice(SHAPES)))
            if i % 100 == 0:
                client.put(key, b"\x00" * (70 * 1024))  # over 64 KiB (pod groups: up to 1 MiB)
        state = wait_exact(view, etcd, timeout=15)
        for key in good:
            assert key not in state["state.config_errors"]
        assert state["state.vips"]["10.5.0.1"].app == "a"
        assert state["state.domains"]["good.lain"].ips == ["10.5.0.2"]
        assert state["state.leaders"]["swarm"].port == 2376
        assert daemon.pid("watcher") == pid, "the watcher restarted"
        assert daemon.workers()["watcher"]["restarts"] == 0
    finally:
        view.close()
        daemon.close()
        client.close()
