"""Elector across several real networkd processes ("nodes") on one real etcd.

No netns here: these tests look at the locks in etcd and the elector's published state.
The address/rule side is covered by the lab tests.
"""

import json
import os
import signal
import time

from tests.integration.elector_cluster import Cluster, timed

NODES = ["n1", "n2", "n3"]
VIP = "10.5.0.1"


def bound(c, name):
    """The floating VIPs in a node's published desired set."""
    return {k for k, v in (c.desired(name) or {}).items() if v.bind}


def lease_of(c, name):
    return (c.mirror(name, "state.lease") or {}).get("lease")


def others(name):
    return [n for n in NODES if n != name]


def test_one_owner_then_failover_on_node_death_within_ttl(cluster):
    cluster.place("web", "worker", NODES)
    cluster.put_vip(VIP)
    cluster.start(NODES)
    owner = cluster.wait(lambda: cluster.holder(VIP), 5, "a VIP owner")
    assert len(cluster.locks()) == 1
    # Every node reports the same owner; exactly one says OWNER.
    states = {}
    for n in NODES:
        status = cluster.wait(lambda n=n: (cluster.mirror(n, "state.vip_status") or {}).get(VIP), 5)
        states[n] = status
        assert status.owner == owner
    assert sorted(s.state for s in states.values()) == ["OWNER", "STANDBY", "STANDBY"]
    desired = cluster.desired(owner)
    assert desired[VIP].bind and desired[VIP].container_ip.startswith("172.20.")
    assert all(VIP not in (cluster.desired(n) or {}) for n in others(owner))
    # Node death: the lock moves once the lease expires (TTL 2 s, +0.5 s etcd expiry tick).
    cluster.kill(owner)
    took = timed(lambda: cluster.holder(VIP) not in (None, owner), 4.0)
    new_owner = cluster.holder(VIP)
    assert new_owner in others(owner)
    assert took <= 3.0, took
    print(f"failover after node death: {took:.2f}s")
    cluster.wait(lambda: VIP in (cluster.desired(new_owner) or {}), 2)


def test_sigterm_hands_over_at_once_and_leadership_moves(cluster):
    cluster.place("web", "worker", NODES)
    cluster.put_vip(VIP)
    cluster.start(NODES)
    owner = cluster.wait(lambda: cluster.holder(VIP), 5)
    leader = cluster.wait(lambda: cluster.leader(), 5)
    start = time.monotonic()
    cluster.nodes[owner].stop()
    took = timed(lambda: cluster.holder(VIP) not in (None, owner), 3.0)
    total = time.monotonic() - start
    assert total < 1.5, total  # released by the stopping owner, not expired
    print(f"planned handover: lock moved {took:.3f}s after the stop began")
    if leader == owner:
        assert cluster.wait(lambda: cluster.leader() not in (None, owner), 1.5)
    else:
        assert cluster.leader() == leader


def test_leadership_moves_within_ttl_when_leader_dies(cluster):
    cluster.place("web", "worker", NODES)
    cluster.start(NODES)
    leader = cluster.wait(lambda: cluster.leader(), 5)
    info = cluster.wait(lambda: (cluster.mirror(leader, "state.leader") or {}).get("leader"), 5)
    assert info.hostname == leader and info.is_self
    cluster.kill(leader)
    took = timed(lambda: cluster.leader() not in (None, leader), 4.0)
    assert took <= 3.0, took
    print(f"leader failover after death: {took:.2f}s")


def test_release_on_excluded_container_gone_and_config_deleted(cluster):
    cluster.place("web", "worker", NODES)
    cluster.put_vip(VIP)
    cluster.start(NODES)
    owner = cluster.wait(lambda: cluster.holder(VIP), 5)
    # Excluded: the owner releases and another node takes it.
    cluster.put_vip(VIP, excluded=[owner])
    took = timed(lambda: cluster.holder(VIP) not in (None, owner), 3.0)
    assert took < 2.0, took
    cluster.wait(lambda: VIP not in (cluster.desired(owner) or {}), 2)
    status = cluster.wait(lambda: (cluster.mirror(owner, "state.vip_status") or {}).get(VIP), 2)
    cluster.wait(lambda: cluster.mirror(owner, "state.vip_status")[VIP].state == "EXCLUDED", 2)
    second = cluster.holder(VIP)
    # The owner's container leaves pod_groups: released, taken by the third node.
    remaining = [n for n in NODES if n != second]
    cluster.place("web", "worker", remaining)
    took = timed(lambda: cluster.holder(VIP) not in (None, second), 3.0)
    third = cluster.holder(VIP)
    assert third in remaining and third != owner  # owner is still excluded
    status = cluster.wait(lambda: cluster.mirror(second, "state.vip_status")[VIP], 2)
    cluster.wait(lambda: cluster.mirror(second, "state.vip_status")[VIP].state == "INELIGIBLE", 2)
    assert status is not None
    # Config deleted: the lock goes and no one takes it.
    cluster.client.delete(f"/lain/config/vips/{VIP}")
    cluster.wait(lambda: cluster.holder(VIP) is None, 3)
    cluster.wait(lambda: VIP not in (cluster.desired(third) or {}), 2)
    time.sleep(0.5)
    assert cluster.locks() == {}


def test_restarts_move_nothing_and_write_nothing(cluster):
    cluster.place("web", "worker", NODES[:2])
    cluster.put_vip(VIP)
    cluster.start(NODES[:2])
    owner = cluster.wait(lambda: cluster.holder(VIP), 5)
    time.sleep(0.5)
    before = cluster.locks()[VIP]
    revision = cluster.revision()
    node = cluster.nodes[owner]
    # 1. SIGKILL of the elector worker: the supervisor restarts it; it resumes the lease.
    pid = node.pid("elector")
    os.kill(pid, signal.SIGKILL)
    cluster.wait(
        lambda: (
            node.pid("elector") != pid
            and node.workers()["elector"]["state"] in ("STARTING", "RUNNING")
        ),
        10,
    )
    cluster.wait(lambda: VIP in (cluster.desired(owner) or {}), 5)
    # SIGKILL of the watcher: while it resyncs the elector keeps what it had.
    pid = node.pid("watcher")
    os.kill(pid, signal.SIGKILL)
    cluster.wait(lambda: node.pid("watcher") != pid, 10)
    node.wait_running(["watcher", "elector"], timeout=15)
    assert VIP in (cluster.desired(owner) or {})
    # 2. SIGKILL of the whole networkd, restarted at once.
    cluster.kill(owner)
    cluster.restart(owner)
    node.wait_running(["watcher", "elector"], timeout=15)
    cluster.wait(lambda: VIP in (cluster.desired(owner) or {}), 5)
    # 3. A restart request (TERM to the worker) touches nothing either.
    pid = node.pid("elector")
    os.kill(pid, signal.SIGTERM)
    cluster.wait(lambda: node.pid("elector") != pid, 10)
    cluster.wait(lambda: VIP in (cluster.desired(owner) or {}), 5)
    assert cluster.locks()[VIP] == before  # same holder, same lease
    assert cluster.revision() == revision  # not one write to etcd


def test_ten_vips_three_nodes_spread_at_most_four_each(cluster):
    cluster.place("web", "worker", NODES)
    ips = [f"10.6.0.{i}" for i in range(1, 11)]
    for ip in ips:
        cluster.put_vip(ip)
    cluster.start(NODES)

    def settled():
        locks = cluster.locks()
        if len(locks) != len(ips):
            return None
        counts = {n: sum(1 for h, _ in locks.values() if h == n) for n in NODES}
        return counts if max(counts.values()) <= 4 else None

    counts = cluster.wait(settled, 15, "10 VIPs spread with at most 4 per node")
    assert sum(counts.values()) == 10
    # And it stays settled (no flapping).
    revision = cluster.revision()
    time.sleep(2)
    assert settled() and cluster.revision() == revision


def test_bad_vip_next_to_good_ones(cluster):
    cluster.place("web", "worker", NODES[:2])
    cluster.put_vip("10.7.0.1")
    cluster.client.put("/lain/config/vips/10.7.0.2", "{not json")
    cluster.client.put(
        "/lain/config/vips/999.1.1.1", json.dumps({"app": "web", "proc": "worker", "ports": []})
    )
    cluster.put_vip("10.7.0.3")
    cluster.start(NODES[:2])
    cluster.wait(lambda: set(cluster.locks()) == {"10.7.0.1", "10.7.0.3"}, 5)


def test_hold_keeps_vip_when_etcd_stops_strict_drops_it_before_expiry(etcd, tmp_path):
    c = Cluster(etcd, str(tmp_path))
    try:
        c.place("web", "worker", ["n1", "n2"])
        c.put_vip("10.8.0.1")
        c.put_vip("10.8.0.2")
        c.start(["n1"], **{"vip.fencing": "hold"})
        c.start(["n2"], **{"vip.fencing": "strict"})
        c.wait(lambda: len(c.locks()) == 2, 5)
        c.wait(
            lambda: all(any(v.bind for v in (c.desired(n) or {}).values()) for n in ("n1", "n2")),
            10,
        )
        hold_vips = bound(c, "n1")
        strict_vips = bound(c, "n2")
        assert hold_vips and strict_vips
        etcd.stop()
        stopped = time.monotonic()
        took = timed(lambda: not bound(c, "n2"), 3.0)
        assert took < 2.0, took  # dropped before the lease could expire (TTL 2 s)
        lease = lease_of(c, "n1")
        c.wait(lambda: not lease_of(c, "n1").alive, 3)
        time.sleep(max(0.0, 3.0 - (time.monotonic() - stopped)))
        assert bound(c, "n1") == hold_vips  # hold: kept
        assert lease is not None
        etcd.start()
        c.client = etcd.client()
        c.wait(lambda: bound(c, "n2") == strict_vips, 10)
        assert bound(c, "n1") == hold_vips
        c.wait(lambda: lease_of(c, "n1").alive, 5)
        c.wait(lambda: len(c.locks()) == 2, 5)
    finally:
        c.close()
