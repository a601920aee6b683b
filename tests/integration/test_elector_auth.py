"""etcd with users: an elector started while etcd is down waits for it, never goes FATAL."""

import os
import subprocess
import tempfile
import time

from tests.support.daemon import Daemon, wait_for
from tests.support.etcd import EtcdServer


def etcdctl(endpoint: str, *args: str) -> None:
    subprocess.run(
        ["etcdctl", "--endpoints", endpoint, *args],
        check=True,
        capture_output=True,
        env={**os.environ, "ETCDCTL_API": "3"},
        timeout=15,
    )


def test_an_elector_with_credentials_waits_for_etcd(etcd: EtcdServer) -> None:
    etcdctl(etcd.endpoint, "user", "add", "root:rootpw", "--interactive=false")
    etcdctl(etcd.endpoint, "user", "add", "networkd:s3cret", "--interactive=false")
    etcdctl(etcd.endpoint, "role", "add", "networkd")
    etcdctl(
        etcd.endpoint,
        "role",
        "grant-permission",
        "networkd",
        "--prefix=true",
        "readwrite",
        "/lain/",
    )
    etcdctl(etcd.endpoint, "user", "grant-role", "networkd", "networkd")
    etcdctl(etcd.endpoint, "auth", "enable")
    etcd.stop()
    daemon = Daemon(
        tempfile.mkdtemp(),
        etcd_endpoint=etcd.endpoint,
        workers=("watcher", "elector"),
        flags={"etcd.user": "networkd", "etcd.password": "s3cret", "docker.endpoint": ""},
    ).start()
    try:
        time.sleep(6)  # longer than five quick failed starts would take
        workers = daemon.workers()
        assert workers["elector"]["state"] == "RUNNING", workers
        assert workers["elector"]["restarts"] == 0, workers
        assert "etcd authentication waits for etcd" in daemon.log()
        etcd.start()
        wait_for(lambda: (daemon.status(0.2)["lease"] or {}).get("alive"), 20, what="lease granted")
        assert daemon.workers()["elector"]["restarts"] == 0
    finally:
        daemon.close()
