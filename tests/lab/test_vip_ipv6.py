"""IPv6 VIPs have what IPv4 ones have: DNAT through ip6tables, failover announced with
neighbour advertisements, a partitioned owner yielding to the new owner's NA, and
port-only keys ``[v6]:port`` (netns lab with IPv6 on the bridge and to the containers)."""

import json
import time
from typing import Any

import pytest

from tests.lab.lab import Lab

pytestmark = pytest.mark.lab

WORKERS = ["watcher", "elector", "applier"]
VIP6 = "fd00:77::200"


def value(app: str = "web6") -> str:
    return json.dumps(
        {"app": app, "proc": "worker", "ports": [{"src": "80", "proto": "tcp", "dest": "80"}]}
    )


def lock_owner(etcd: Any) -> str:
    found = etcd.get(f"/lain/networkd/vips/{VIP6}.lock")[0]
    return found.decode() if found else ""


@pytest.fixture
def lab():
    with Lab(nodes=3, clients=1, ipv6=True) as lab:
        yield lab


def test_ipv6_vip_dnat_failover_yield_and_port_only(lab: Lab) -> None:
    etcd = lab.etcd.client()
    etcd.put(
        "/lain/deployd/pod_groups/web6/web6.web6.worker",
        lab.pod_group(lab.nodes, app="web6", ipv6=True),
    )
    etcd.put(f"/lain/config/vips/{VIP6}", value())
    for node in lab.nodes:
        node.start_networkd(workers=WORKERS, docker_endpoint="")
    for node in lab.nodes:
        node.daemon.wait_running(WORKERS, timeout=20)
    owner = lab.node(lab.wait(lambda: lock_owner(etcd), 15, "an IPv6 owner"))
    client = lab.client
    # DNAT through ip6tables, reached over IPv6 from the client
    lab.wait(lambda: client.try_tcp(VIP6, 80) == f"{owner.name} 80", 10, "served over IPv6")
    rules = owner.exec("ip6tables", "-w", "-t", "nat", "-S", "lain-PREROUTING")
    assert f"-d {VIP6}/128" in rules and f"--to-destination [{owner.container_ip6}]:80" in rules

    # link cut: another node announces (unsolicited NA) within the IPv4 bounds
    with client.sniffer() as sniffer:
        cut = time.monotonic()
        owner.cut_link()
        seen = sniffer.wait_garp(VIP6, since=cut, timeout=5)
        failover = seen.at - cut
        successor = next(n for n in lab.nodes if n.mac == seen.mac)
        assert seen.kind == "na" and successor is not owner
        print(f"IPv6 hard failover (link cut -> first NA of the new owner): {failover:.2f}s")
        assert failover <= 3.0, failover
        lab.wait(lambda: client.try_tcp(VIP6, 80, 0.3) == f"{successor.name} 80", 3)
        # healed: the old owner learns at once that another node has the VIP (NS probe ->
        # NA) and gives the address up
        healed = time.monotonic()
        owner.restore_link()
        lab.wait(lambda: not owner.has_address(VIP6), 2, "the healed IPv6 owner yields")
        print(f"healed IPv6 owner yielded after {time.monotonic() - healed:.3f}s")
    assert lab.owners(VIP6) == [successor.name]

    # a partitioned owner (cut from etcd, not from the LAN) yields to the new owner's NA
    successor.partition_etcd()
    try:
        lab.wait(lambda: lock_owner(etcd) not in ("", successor.name), 8, "lock moves")
        lab.wait(lambda: not successor.has_address(VIP6), 3, "the partitioned owner yields")
        third = lock_owner(etcd)
        lab.wait(lambda: client.try_tcp(VIP6, 80, 0.3) == f"{third} 80", 3)
    finally:
        successor.heal_etcd()

    # a port-only key on a node's IPv6 address: DNAT on every node running the proc
    node = lab.nodes[0]
    etcd.put(f"/lain/config/vips/[{node.ip6}]:9000", json.dumps(
        {"app": "web6", "proc": "worker", "ports": [{"dest": "9000"}]}
    ))  # fmt: skip
    lab.wait(lambda: client.try_tcp(node.ip6, 9000, 0.5) == f"{node.name} 9000", 10,
             "port-only mapping on [v6]:port")  # fmt: skip


def test_one_node_serves_ipv4_and_ipv6_vips() -> None:
    """A node holding an IPv4 and an IPv6 VIP gets the DNAT rules of both (iptables 1.8
    finds DNAT for one address family per process: the applier makes the IPv6 rules in its
    helper process, networkd/net/nat_helper.py) and serves both from the client."""
    vip4 = "10.77.0.210"
    with Lab(nodes=1, clients=1, ipv6=True) as lab:
        etcd = lab.etcd.client()
        etcd.put(
            "/lain/deployd/pod_groups/web6/web6.web6.worker",
            lab.pod_group(lab.nodes, app="web6", ipv6=True),
        )
        etcd.put("/lain/deployd/pod_groups/web/web.web.worker", lab.pod_group(lab.nodes))
        etcd.put(f"/lain/config/vips/{vip4}", value("web"))
        etcd.put(f"/lain/config/vips/{VIP6}", value())
        node = lab.nodes[0]
        node.start_networkd(workers=WORKERS, docker_endpoint="")
        node.daemon.wait_running(WORKERS, timeout=20)
        client = lab.client
        lab.wait(lambda: client.try_tcp(vip4, 80) == f"{node.name} 80", 15, "served over IPv4")
        lab.wait(lambda: client.try_tcp(VIP6, 80) == f"{node.name} 80", 15, "served over IPv6")
        rules4 = node.exec("iptables", "-w", "-t", "nat", "-S", "lain-PREROUTING")
        rules6 = node.exec("ip6tables", "-w", "-t", "nat", "-S", "lain-PREROUTING")
        assert f"-d {vip4}/32" in rules4 and f"-d {VIP6}/128" in rules6
        assert "nat apply failed" not in node.daemon.log()
        assert node.stop_networkd() == 0  # the final stop removes both families' chains
        assert "lain-PREROUTING" not in node.exec("iptables", "-w", "-t", "nat", "-S")
        assert "lain-PREROUTING" not in node.exec("ip6tables", "-w", "-t", "nat", "-S")
        etcd.close()
