"""The watcher through etcd outages, partitions, compaction, TLS, failover and auth."""

import json
import os
import shutil
import subprocess
import time
from typing import Any, Iterator

import pytest

from networkd import keys
from networkd.config import Config
from networkd.etcd.client import EtcdConnector
from tests.integration.test_watcher import (
    HOSTNAME,
    WatcherView,
    expected_items,
    make_base_dir,
    start_watcher,
    wait_exact,
)
from tests.support.daemon import wait_for
from tests.support.etcd import EtcdServer, TcpProxy, make_test_ca
from tests.support.ports import free_port


@pytest.fixture
def base_dir() -> Iterator[str]:
    base = make_base_dir()
    try:
        yield base
    finally:
        shutil.rmtree(base, ignore_errors=True)


def vip(app: str, port: int) -> str:
    return json.dumps({"app": app, "proc": "worker", "ports": [{"src": str(port)}]})


def wait_health(view: WatcherView, connected: bool, timeout: float) -> Any:
    return wait_for(
        lambda: (lambda h: h if h is not None and h.connected == connected else None)(
            view.health()
        ),
        timeout,
        what=f"etcd connected={connected}",
    )


def test_etcd_stopped_10s_then_started(etcd: EtcdServer, base_dir: str) -> None:
    client = etcd.client()
    client.put(keys.vip_key("10.0.0.1"), vip("a", 80))
    daemon = start_watcher(base_dir, etcd.endpoint)
    view = WatcherView(daemon.run_dir)
    try:
        view.wait_in_sync()
        wait_exact(view, etcd)
        # changed right before the outage: must be there afterwards
        client.put(keys.vip_key("10.0.0.2"), vip("b", 81))
        client.delete(keys.vip_key("10.0.0.1"))
        client.close()
        etcd.stop()
        stopped = time.monotonic()
        health = wait_health(view, False, 5)
        assert health.last_error
        doc = daemon.ctl_status()
        assert doc["etcd"]["connected"] is False, doc["etcd"]
        time.sleep(max(0.0, 10 - (time.monotonic() - stopped)))
        assert view.health().connected is False
        assert "10.0.0.1" in (view.topic("state.vips") or {}) or "10.0.0.2" in (
            view.topic("state.vips") or {}
        )
        etcd.start()
        started = time.monotonic()
        client = etcd.client()
        client.put(keys.domain_key("after.lain"), json.dumps({"ips": ["10.0.9.9"]}))
        state = wait_exact(view, etcd, timeout=10)
        caught_up = time.monotonic() - started
        assert set(state["state.vips"]) == {"10.0.0.2"}
        assert "after.lain" in state["state.domains"]
        assert wait_health(view, True, 5).revision >= 3
        assert daemon.ctl_status()["etcd"]["connected"] is True
        assert caught_up < 5, f"caught up after {caught_up:.1f}s"
        assert daemon.workers()["watcher"]["restarts"] == 0
    finally:
        view.close()
        daemon.close()
        client.close()


def test_partition_with_compaction_past_the_watch_revision(etcd: EtcdServer, base_dir: str) -> None:
    """Cut off from etcd while keys change and etcd compacts: the state is exact afterwards."""
    proxy = TcpProxy(("127.0.0.1", etcd.client_port))
    client = etcd.client()
    for i in range(1, 6):
        client.put(keys.vip_key(f"10.0.0.{i}"), vip("a", 80 + i))
    daemon = start_watcher(base_dir, proxy.endpoint)
    view = WatcherView(daemon.run_dir)
    try:
        view.wait_in_sync()
        wait_exact(view, etcd)
        proxy.cut()
        wait_health(view, False, 6)
        client.delete(keys.vip_key("10.0.0.1"))
        client.put(keys.vip_key("10.0.0.2"), vip("changed", 90))
        client.put(keys.vip_key("10.0.0.9"), vip("new", 99))
        client.put(keys.domain_key("bad.lain"), b"{not json")
        for i in range(20):  # churn, so the watcher's revision is well behind the compaction
            client.put(keys.domain_key("churn.lain"), json.dumps({"ips": [f"10.1.0.{i}"]}))
        client.delete(keys.domain_key("churn.lain"))
        compacted = etcd.compact()
        assert (view.topic("state.vips") or {})["10.0.0.2"].app == "a"  # still the old state
        proxy.restore()
        state = wait_exact(view, etcd, timeout=10)
        assert set(state["state.vips"]) == {
            "10.0.0.2",
            "10.0.0.3",
            "10.0.0.4",
            "10.0.0.5",
            "10.0.0.9",
        }
        assert state["state.vips"]["10.0.0.2"].app == "changed"
        assert list(state["state.config_errors"]) == [keys.domain_key("bad.lain")]
        # connected again, at a revision past the compaction (an earlier "connected" from
        # the first watch attempt, at the old revision, may still be the latest delivered)
        wait_for(
            lambda: (lambda h: h is not None and h.connected and h.revision >= compacted)(
                view.health()
            ),
            5,
            what="connected past the compaction",
        )
        wait_for(
            lambda: "etcd watch compacted" in daemon.log(), 5, what="compaction noticed in the log"
        )
        # the watch works again after the fresh read
        client.put(keys.vip_key("10.0.0.7"), vip("later", 77))
        wait_exact(view, etcd)
    finally:
        view.close()
        daemon.close()
        client.close()
        proxy.close()


def test_etcd_replaced_by_another_cluster(etcd: EtcdServer, base_dir: str) -> None:
    """A restore from backup or a rebuilt cluster: other cluster id, older revision."""
    proxy = TcpProxy(("127.0.0.1", etcd.client_port))
    client = etcd.client()
    for i in range(30):
        client.put(keys.domain_key("old.lain"), json.dumps({"ips": [f"10.5.0.{i}"]}))
    client.put(keys.vip_key("10.0.0.1"), vip("old", 80))
    daemon = start_watcher(base_dir, proxy.endpoint)
    view = WatcherView(daemon.run_dir)
    other = EtcdServer().start()
    other_client = other.client()
    try:
        view.wait_in_sync()
        wait_exact(view, etcd)
        other_client.put(keys.vip_key("10.0.0.2"), vip("new", 81))
        proxy.target = ("127.0.0.1", other.client_port)
        proxy.cut()
        proxy.restore()
        state = wait_exact(view, other, timeout=10)
        assert set(state["state.vips"]) == {"10.0.0.2"}
        assert state["state.domains"] == {}
        wait_for(lambda: "etcd cluster changed" in daemon.log(), 5, what="cluster change noticed")
    finally:
        view.close()
        daemon.close()
        client.close()
        other_client.close()
        other.close()
        proxy.close()


def test_tls_with_a_test_ca(base_dir: str) -> None:
    ca = make_test_ca(os.path.join(base_dir, "tls"))
    server = EtcdServer(tls=ca).start()
    client = server.client()
    flags = {"etcd.cacert": ca.ca_cert, "etcd.cert": ca.client_cert, "etcd.key": ca.client_key}
    daemon = start_watcher(base_dir, server.endpoint, **flags)
    view = WatcherView(daemon.run_dir)
    try:
        assert server.endpoint.startswith("https://")
        client.put(keys.domain_key("tls.lain"), json.dumps({"ips": ["10.2.0.1"]}))
        view.wait_in_sync()
        state = wait_exact(view, server)
        assert state["state.domains"]["tls.lain"].ips == ["10.2.0.1"]
        assert view.health().endpoint == server.endpoint
    finally:
        view.close()
        daemon.close()
        client.close()
        server.close()


def test_tls_without_client_certificate_is_refused(base_dir: str) -> None:
    ca = make_test_ca(os.path.join(base_dir, "tls"))
    server = EtcdServer(tls=ca).start()
    daemon = start_watcher(base_dir, server.endpoint, **{"etcd.cacert": ca.ca_cert})
    view = WatcherView(daemon.run_dir)
    try:
        time.sleep(2)
        health = view.health()
        assert health is not None and not health.connected and health.last_error
        assert not view.in_sync()
        assert daemon.workers()["watcher"]["state"] == "RUNNING"
    finally:
        view.close()
        daemon.close()
        server.close()


def test_two_endpoints_with_the_first_dead(etcd: EtcdServer, base_dir: str) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    client = etcd.client()
    client.put(keys.SWARM_LEADER, "10.3.0.1:2376")
    daemon = start_watcher(base_dir, f"{dead},{etcd.endpoint}")
    view = WatcherView(daemon.run_dir)
    try:
        view.wait_in_sync(10)
        state = wait_exact(view, etcd)
        assert state["state.leaders"]["swarm"].ip == "10.3.0.1"
        health = wait_health(view, True, 5)
        assert health.endpoint == etcd.endpoint
        client.put(keys.SWARM_LEADER, "10.3.0.2:2376")
        wait_exact(view, etcd)
    finally:
        view.close()
        daemon.close()
        client.close()


def etcdctl(endpoint: str, *args: str) -> None:
    subprocess.run(
        ["etcdctl", "--endpoints", endpoint, *args],
        check=True,
        capture_output=True,
        env={**os.environ, "ETCDCTL_API": "3"},
        timeout=15,
    )


def test_user_and_password(etcd: EtcdServer, base_dir: str) -> None:
    etcdctl(etcd.endpoint, "user", "add", "root:rootpw", "--interactive=false")
    etcdctl(etcd.endpoint, "user", "add", "networkd:s3cret", "--interactive=false")
    etcdctl(etcd.endpoint, "role", "add", "reader")
    etcdctl(etcd.endpoint, "role", "grant-permission", "reader", "--prefix=true", "read", "/lain/")
    etcdctl(etcd.endpoint, "user", "grant-role", "networkd", "reader")
    etcdctl(etcd.endpoint, "auth", "enable")
    admin_config = Config(etcd_endpoints=(etcd.endpoint,), etcd_user="root", etcd_password="rootpw")

    def admin() -> Any:
        return EtcdConnector(admin_config).connect()

    client = admin()
    client.put(keys.domain_key("auth.lain"), json.dumps({"ips": ["10.4.0.1"]}))
    daemon = start_watcher(
        base_dir, etcd.endpoint, **{"etcd.user": "networkd", "etcd.password": "s3cret"}
    )
    view = WatcherView(daemon.run_dir)
    try:
        view.wait_in_sync(10)
        client.put(keys.domain_key("auth2.lain"), json.dumps({"ips": ["10.4.0.2"]}))
        want = expected_items(etcd, client_factory=admin, hostname=HOSTNAME)
        wait_for(lambda: view.items() == want, 10, what="state under auth")
        assert set(want["state.domains"]) == {"auth.lain", "auth2.lain"}
    finally:
        view.close()
        daemon.close()
        client.close()
