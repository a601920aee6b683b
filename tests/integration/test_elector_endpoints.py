"""Several etcd endpoints: the endpoint the elector uses dies, another answers.

The lease keeper moves its renewals to the endpoint that answers within about a second,
so the lease (and every lock bound to it) lives on; the elector then restarts to
reconnect its other channels, resuming the same lease: no VIP moves.
"""

import json
import tempfile
import time

from tests.support.daemon import Daemon, wait_for
from tests.support.etcd import EtcdServer, TcpProxy
from tests.support.lain import pod, pod_group

VIP = "10.10.10.10"


def test_the_elector_survives_the_death_of_its_etcd_endpoint(etcd: EtcdServer) -> None:
    first = TcpProxy(("127.0.0.1", etcd.client_port))
    second = TcpProxy(("127.0.0.1", etcd.client_port))
    client = etcd.client()
    client.put(
        "/lain/deployd/pod_groups/web/web.worker.web",
        pod_group("web", "web", [pod(1, "n1", "172.20.0.2")]),
    )
    client.put(
        f"/lain/config/vips/{VIP}",
        json.dumps({"app": "web", "proc": "web", "ports": [{"src": "80"}]}),
    )
    daemon = Daemon(
        tempfile.mkdtemp(),
        etcd_endpoint=f"{first.endpoint},{second.endpoint}",
        workers=("watcher", "elector"),
        hostname="n1",
        flags={"docker.endpoint": ""},
    ).start()
    try:
        daemon.wait_running(["watcher", "elector"], timeout=20)

        def owned() -> bool:
            return [v["state"] for v in daemon.status(0.2)["vips"] if v["ip"] == VIP] == ["OWNER"]

        wait_for(owned, 15, what="VIP owned")
        lock_key = f"/lain/networkd/vips/{VIP}.lock"
        value, meta = client.get(lock_key)
        lease_before = meta.lease_id
        elector_pid = daemon.pid("elector")

        first.cut()  # the endpoint in use dies; the second still answers
        cut_at = time.monotonic()
        daemon.wait_restarted("elector", elector_pid, timeout=15)
        value, meta = client.get(lock_key)
        assert value == b"n1", "the lock never left this node"
        assert meta.lease_id == lease_before, "the lock is still bound to the same lease"
        status = daemon.status(0.5)
        assert status["lease"]["lease_id"] == lease_before
        assert status["lease"]["alive"]
        wait_for(owned, 5, what="VIP still owned after the restart")
        assert time.monotonic() - cut_at < 10
        assert "etcd endpoint switched for the lease" in daemon.log()
    finally:
        daemon.close()
        first.close()
        second.close()
