"""Floating VIPs end to end in the netns lab: watcher + elector + applier on every node.

Real etcd on the lab bridge, real addresses, DNAT rules, GARP and client traffic.
"""

import json
import threading
import time
from typing import Any, Dict, List

import pytest

from tests.lab.lab import Lab, LabNode

pytestmark = pytest.mark.lab

VIP = "10.77.0.200"
WORKERS = ["watcher", "elector", "applier"]


def pod_group(lab: Lab, nodes: List[LabNode], app: str = "web", proc: str = "worker") -> str:
    return lab.pod_group(nodes, app, proc)


def vip_value(excluded: Any = (), app: str = "web") -> str:
    ports = [
        {"src": "80", "proto": "tcp", "dest": "80"},
        {"src": "9000", "proto": "udp", "dest": "9000"},
    ]
    return json.dumps(
        {"app": app, "proc": "worker", "ports": ports, "excluded_nodes": list(excluded)}
    )


def place(lab: Lab, client: Any, nodes: List[LabNode]) -> None:
    client.put("/lain/deployd/pod_groups/web/web.web.worker", pod_group(lab, nodes))


def start_all(lab: Lab, nodes: List[LabNode], **flags: Any) -> None:
    for node in nodes:
        node.start_networkd(workers=WORKERS, docker_endpoint="", **flags)
    for node in nodes:
        node.daemon.wait_running(WORKERS, timeout=20)


class OwnerWatch:
    """Samples who holds an address every few ms; remembers any moment with two holders."""

    def __init__(self, lab: Lab, vip: str) -> None:
        self.lab = lab
        self.vip = vip
        self.samples: List[Any] = []
        self.max_holders = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            owners = self.lab.owners(self.vip)
            self.samples.append((time.monotonic(), owners))
            self.max_holders = max(self.max_holders, len(owners))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)


def _pid_changed(node: LabNode, worker: str, pid: int) -> Any:
    return lambda: node.daemon.pid(worker) != pid


@pytest.fixture
def lab():
    with Lab(nodes=3, clients=1) as lab:
        yield lab


def test_one_owner_traffic_restarts_handover_and_link_cut(lab: Lab) -> None:
    etcd = lab.etcd.client()
    place(lab, etcd, lab.nodes)
    etcd.put(f"/lain/config/vips/{VIP}", vip_value())
    start_all(lab, lab.nodes)
    owner_name = lab.wait(lambda: lab.owners(VIP) if len(lab.owners(VIP)) == 1 else None, 10)[0]
    owner = lab.node(owner_name)
    assert etcd.get(f"/lain/networkd/vips/{VIP}.lock")[0].decode() == owner_name
    client = lab.client
    lab.wait(lambda: client.try_tcp(VIP, 80) == f"{owner_name} 80", 5)
    assert client.udp(VIP, 9000) == f"{owner_name} 9000"
    assert any(f"-d {VIP}/32" in r and "--to-destination 172.30." in r for r in owner.nat_rules())
    for other in lab.nodes:
        if other is not owner:
            assert not other.has_address(VIP)
            assert not [r for r in other.nat_rules() if VIP in r]

    # SIGKILL of the elector, then the applier, then the whole networkd: nothing moves.
    lock_before = etcd.get(f"/lain/networkd/vips/{VIP}.lock")[1].lease_id
    with owner.monitor_addresses() as monitor:
        for worker in ("elector", "applier"):
            pid = owner.daemon.pid(worker)
            owner.exec("kill", "-9", str(pid))
            lab.wait(_pid_changed(owner, worker, pid), 10)
            owner.daemon.wait_running(WORKERS, timeout=15)
            assert monitor.deleted(VIP) == [], (worker, owner.daemon.log()[-4000:])
        owner.kill_networkd()
        owner.start_networkd(workers=WORKERS, docker_endpoint="")
        owner.daemon.wait_running(WORKERS, timeout=20)
        time.sleep(1.0)
        assert monitor.deleted(VIP) == [], owner.daemon.log()[-4000:]
    assert lab.owners(VIP) == [owner_name]
    assert etcd.get(f"/lain/networkd/vips/{VIP}.lock")[1].lease_id == lock_before
    assert client.tcp(VIP, 80) == f"{owner_name} 80"

    # Planned handover (SIGTERM): never two holders, short client-visible gap.
    watch = OwnerWatch(lab, VIP)
    stop_at = time.monotonic()
    owner.stop_networkd()
    new_name = lab.wait(lambda: [n for n in lab.owners(VIP) if n != owner_name], 5)[0]
    took = time.monotonic() - stop_at
    watch.close()
    assert watch.max_holders <= 1, [s for s in watch.samples if len(s[1]) > 1][:3]
    assert not owner.has_address(VIP) and not [r for r in owner.nat_rules() if VIP in r]
    lab.wait(lambda: client.try_tcp(VIP, 80, timeout=0.3) == f"{new_name} 80", 5)
    print(f"planned handover: new owner bound {took:.3f}s after SIGTERM")

    # Node death (link cut): another node owns and answers within the target.
    owner.start_networkd(workers=WORKERS, docker_endpoint="")
    owner.daemon.wait_running(WORKERS, timeout=20)
    victim = lab.node(new_name)
    with client.sniffer() as sniffer:
        cut_at = time.monotonic()
        victim.cut_link()
        seen = sniffer.wait_garp(VIP, since=cut_at, timeout=5)
        failover = seen.at - cut_at
        successor = [n for n in lab.nodes if n.mac == seen.mac]
        assert successor and successor[0] is not victim
        print(f"hard failover (link cut -> first GARP of the new owner): {failover:.2f}s")
        assert failover <= 3.0, failover
        lab.wait(lambda: client.try_tcp(VIP, 80, timeout=0.3) == f"{successor[0].name} 80", 3)
    # The cut node comes back: it sees the lock is another's and gives the address up.
    victim.restore_link()
    lab.wait(lambda: lab.owners(VIP) == [successor[0].name], 10)


def test_release_takeover_and_spreading(lab: Lab) -> None:
    etcd = lab.etcd.client()
    place(lab, etcd, lab.nodes)
    etcd.put(f"/lain/config/vips/{VIP}", vip_value())
    start_all(lab, lab.nodes)
    first = lab.wait(lambda: lab.owners(VIP) if len(lab.owners(VIP)) == 1 else None, 10)[0]
    # excluded_nodes: release (address and rules gone) and takeover.
    etcd.put(f"/lain/config/vips/{VIP}", vip_value(excluded=[first]))
    second = lab.wait(lambda: [n for n in lab.owners(VIP) if n != first], 5)[0]
    lab.wait(lambda: lab.owners(VIP) == [second], 3)
    # the released VIP's rules linger 2 s after its address (applier.md), then go
    lab.wait(lambda: not [r for r in lab.node(first).nat_rules() if VIP in r], 4)
    # The owner's container leaves pod_groups.
    place(lab, etcd, [n for n in lab.nodes if n.name != second])
    third = lab.wait(lambda: [n for n in lab.owners(VIP) if n not in (first, second)], 5)[0]
    lab.wait(lambda: lab.owners(VIP) == [third], 3)
    lab.wait(lambda: not [r for r in lab.node(second).nat_rules() if VIP in r], 4)
    # Config deleted: released everywhere.
    etcd.delete(f"/lain/config/vips/{VIP}")
    lab.wait(lambda: lab.owners(VIP) == [], 5)
    lab.wait(lambda: not [r for r in lab.node(third).nat_rules() if VIP in r], 3)

    # 10 VIPs on 3 nodes, plus a bad one next to them: at most 4 per node.
    place(lab, etcd, lab.nodes)
    vips = [f"10.77.0.{200 + i}" for i in range(10)]
    for ip in vips:
        etcd.put(f"/lain/config/vips/{ip}", vip_value())
    etcd.put("/lain/config/vips/10.77.0.230", "{broken")

    def spread() -> Dict[str, int]:
        counts = {n.name: sum(1 for ip in vips if n.has_address(ip)) for n in lab.nodes}
        settled = sum(counts.values()) == 10 and max(counts.values()) <= 4
        if settled and all(len(lab.owners(ip)) == 1 for ip in vips):
            return counts
        return {}

    counts = lab.wait(spread, 20, "10 VIPs bound once each, at most 4 per node")
    print(f"10 VIPs over 3 nodes: {counts}")
    status = lab.nodes[0].daemon.ctl_status()
    errors = {e["key"] for e in status.get("config_errors", [])}
    assert "/lain/config/vips/10.77.0.230" in errors, status.get("config_errors")
    states = {v["ip"]: v["state"] for v in status["vips"]}
    assert set(states) >= set(vips)


def test_etcd_outage_hold_keeps_strict_drops_then_both_recover(lab: Lab) -> None:
    etcd = lab.etcd.client()
    hold, strict = lab.nodes[0], lab.nodes[1]
    place(lab, etcd, [hold, strict])
    vip_hold, vip_strict = "10.77.0.210", "10.77.0.211"
    etcd.put(f"/lain/config/vips/{vip_hold}", vip_value(excluded=[strict.name]))
    etcd.put(f"/lain/config/vips/{vip_strict}", vip_value(excluded=[hold.name]))
    hold.start_networkd(workers=WORKERS, docker_endpoint="", vip_fencing="hold")
    strict.start_networkd(workers=WORKERS, docker_endpoint="", vip_fencing="strict")
    for node in (hold, strict):
        node.daemon.wait_running(WORKERS, timeout=20)
    lab.wait(lambda: hold.has_address(vip_hold) and strict.has_address(vip_strict), 10)
    etcd.close()
    lab.etcd.stop()
    stopped = time.monotonic()
    lab.wait(lambda: not strict.has_address(vip_strict), 3)
    dropped = time.monotonic() - stopped
    assert dropped < 2.0, dropped  # before the 2 s lease could expire
    time.sleep(3.0)
    assert hold.has_address(vip_hold)  # hold: survives a full etcd outage
    lab.etcd.start()
    lab.wait(lambda: strict.has_address(vip_strict), 10)
    assert hold.has_address(vip_hold)
    print(f"strict dropped its VIP {dropped:.2f}s after etcd stopped")


def test_owner_cut_from_etcd_but_not_lan_yields_to_the_new_owner(lab: Lab) -> None:
    etcd = lab.etcd.client()
    nodes = lab.nodes[:2]
    place(lab, etcd, nodes)
    etcd.put(f"/lain/config/vips/{VIP}", vip_value())
    start_all(lab, nodes)
    owner_name = lab.wait(lambda: lab.owners(VIP) if len(lab.owners(VIP)) == 1 else None, 10)[0]
    owner = lab.node(owner_name)
    other = next(n for n in nodes if n is not owner)
    owner.partition_etcd()
    try:
        # The lease expires on the server, the other node takes the lock and announces;
        # the old owner (hold, lease not alive) yields at that announcement.
        lab.wait(lambda: other.has_address(VIP), 6, "the new owner binds")
        lab.wait(lambda: not owner.has_address(VIP), 3, "the old owner yields")
        lab.wait(lambda: lab.client.try_tcp(VIP, 80, timeout=0.3) == f"{other.name} 80", 3)
    finally:
        owner.heal_etcd()
    # Reconnected: it sees the lock is another's and stays off.
    time.sleep(3)
    assert lab.owners(VIP) == [other.name]
    assert etcd.get(f"/lain/networkd/vips/{VIP}.lock")[0].decode() == other.name
