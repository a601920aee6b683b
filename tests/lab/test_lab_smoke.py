"""The lab itself: topology, etcd from every node, container servers, link cuts, sniffing,
and a cleanup that leaves no namespace behind (even when the test body fails)."""

import socket
import time

import pytest

from tests.lab import Lab
from tests.lab.agent import NsAgent
from tests.lab.netns import in_netns, list_netns

pytestmark = pytest.mark.lab


def connect_from(ns: str, host: str, port: int, timeout: float = 1.0) -> bool:
    with in_netns(ns):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect((host, port))
        return True
    except OSError:
        return False
    finally:
        sock.close()


def test_lab_topology_and_cleanup() -> None:
    lab = Lab(nodes=2, clients=2)
    prefix = lab.prefix
    with pytest.raises(RuntimeError, match="boom"), lab:
        assert {
            f"{prefix}-hub",
            f"{prefix}-n1",
            f"{prefix}-n2",
            f"{prefix}-c1",
            f"{prefix}-cl1",
        } <= set(list_netns())
        # etcd: from the test process (relay) and from inside every node
        client = lab.etcd.client()
        client.put("/lab/x", "1")
        assert client.get("/lab/x")[0] == b"1"
        for node in lab.nodes:
            assert connect_from(node.ns, lab.etcd.host, lab.etcd.client_port)
            # the node reaches its container's server; the client reaches the node
            reply = node.exec(
                "python3",
                "-c",
                f"import socket; print(socket.create_connection(('{node.container_ip}', 8080), 2).recv(64).decode())",
            )
            assert reply.strip() == f"{node.name} 8080"
            assert (
                connect_from(lab.client.ns, node.ip, 9, timeout=1.0) is False
            )  # refused, but routed
        # cutting a link isolates the node from the LAN and from etcd
        node = lab.nodes[0]
        node.exec("ip", "addr", "add", "10.77.0.230/32", "dev", "eth0")
        with node.monitor_addresses() as monitor:
            node.exec("ip", "addr", "del", "10.77.0.230/32", "dev", "eth0")
            time.sleep(0.2)
            assert monitor.deleted("10.77.0.230")
        node.cut_link()
        assert not connect_from(node.ns, lab.etcd.host, lab.etcd.client_port, timeout=0.5)
        node.restore_link()
        assert connect_from(node.ns, lab.etcd.host, lab.etcd.client_port, timeout=2.0)
        # GARP sent by a node (the applier's Announcer) is sniffed in the client namespace
        with lab.client.sniffer() as sniffer:
            with NsAgent(node.ns) as agent:
                assert agent.call("tests.lab.nsops:announce", "eth0", "10.77.0.231") == 3
            seen = sniffer.wait_garp("10.77.0.231", timeout=2, mac=node.mac)
            assert seen.kind == "arp"
        raise RuntimeError("boom")  # a failing test body still cleans up
    assert not [name for name in list_netns() if name.startswith(prefix)]
