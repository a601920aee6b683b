"""The applier worker in a lab node, driven through its bus by stand-ins for the elector and
watcher (``networkd -workers applier``): real netlink, real iptables, real ARP."""

import signal
import time
from typing import Any, Dict, Iterator, List, Tuple

import pytest

from networkd.bus.messages import DesiredVip, LeaseHealth, PortSpec
from tests.lab import Lab, LabNode
from tests.lab.standin import BusStandIn
from tests.support.acl import BASE, acl_items

VIP = "10.77.0.200"
VIP2 = "10.77.0.201"


def vip(
    node: LabNode,
    ip: str = VIP,
    ports=((80, "tcp", 8080), (53, "udp", 8081)),
    cip: str = "",
    bind=True,
):
    return DesiredVip(
        ip=ip,
        app="web",
        proc="web",
        container_ip=cip or node.container_ip,
        ports=[PortSpec(src, proto, dest) for src, proto, dest in ports],
        bind=bind,
    )


def lease(alive: bool = True) -> Dict[str, Any]:
    # valid_until: the same CLOCK_MONOTONIC the applier reads; an hour is "alive for good"
    until = time.monotonic() + 3600 if alive else 0.0
    return {"lease": LeaseHealth(lease_id=7, alive=alive, ttl_s=2.0, valid_until=until)}


def applied(bus: BusStandIn) -> Dict[str, Any]:
    return bus.state("applier", "state.applied") or {}


def start(node: LabNode, **flags: Any) -> Tuple[Any, BusStandIn]:
    daemon = node.start_networkd(workers=["applier"], **flags)
    bus = BusStandIn(daemon.run_dir, ["elector", "watcher"], {"applier": ["state.", "vip."]})
    daemon.wait_running(["applier"])
    return daemon, bus


@pytest.fixture
def lab() -> Iterator[Lab]:
    with Lab(nodes=1, clients=2) as lab:
        yield lab


def test_bind_rules_garp_traffic_and_changes(lab: Lab) -> None:
    node, client = lab.nodes[0], lab.client
    client.route("110.0.0.1/32")
    daemon, bus = start(node)
    try:
        with client.sniffer() as sniffer:
            bus.replace("elector", "state.lease", lease())
            t0 = time.monotonic()
            bus.replace(
                "elector", "state.desired", {VIP: vip(node), "110.0.0.1": vip(node, "110.0.0.1")}
            )
            bus.wait(
                lambda: (
                    applied(bus).get(VIP)
                    and applied(bus)[VIP].bound
                    and applied(bus)[VIP].rules == 4
                )
            )
            assert node.has_address(VIP) and node.has_address("110.0.0.1")
            assert len(node.nat_rules()) == 8
            assert client.tcp(VIP, 80) == "node1 8080"
            assert client.udp(VIP, 53) == "node1 8081"
            assert client.tcp("110.0.0.1", 80) == "node1 8080"
            # GARP: a burst at once, a second burst two seconds later, seen from the client
            first = sniffer.wait_garp(VIP, since=t0, timeout=3)
            assert first.mac == node.mac
            second = sniffer.wait_garp(VIP, since=first.at + 1.5, timeout=4)
            assert 1.7 <= second.at - first.at <= 3.0
            assert len(sniffer.garps(VIP)) >= 4
        assert any(e.ip == VIP for e in bus.events("vip.garp"))

        before_110 = [line for line in node.nat_rules() if "110.0.0.1" in line]
        for ports, cip in (
            (((80, "tcp", 8082),), ""),  # dest changes, UDP port leaves
            (((80, "udp", 8082),), ""),  # proto changes
            (((81, "udp", 8082),), ""),  # src port changes
            (((81, "udp", 8082),), "172.30.1.3"),  # container IP changes
        ):
            bus.replace(
                "elector",
                "state.desired",
                {VIP: vip(node, ports=ports, cip=cip), "110.0.0.1": vip(node, "110.0.0.1")},
            )
            src, proto, dest = ports[0]
            target = f"{cip or node.container_ip}:{dest}"
            match = f'-p {proto} -m {proto} --dport {src} -m comment --comment "web.web"'
            want = [
                f"-A lain-PREROUTING -d {VIP}/32 {match} -j DNAT --to-destination {target}",
                f"-A lain-OUTPUT -d {VIP}/32 -o lo {match} -j DNAT --to-destination {target}",
            ]

            def vip_rules() -> List[str]:
                return sorted(r for r in node.nat_rules() if f" {VIP}/32" in r)

            bus.wait(lambda: vip_rules() == sorted(want), 5, f"rules {want}")  # noqa: B023
            mine = [r for r in node.nat_rules() if f" {VIP}/32" in r]
            assert len(mine) == 2, mine  # exactly one rule per chain for the one port
            assert [line for line in node.nat_rules() if "110.0.0.1" in line] == before_110
        assert client.udp("110.0.0.1", 53) == "node1 8081"

        # port-only mapping on the node's address (0.0.0.0), plus local access through lo
        bus.replace(
            "elector",
            "state.desired",
            {"0.0.0.0:9000": vip(node, "0.0.0.0", ports=((9000, "tcp", 9000),), bind=False)},
        )
        bus.wait(lambda: not node.has_address(VIP) and not node.has_address("110.0.0.1"), 5)
        bus.wait(
            lambda: applied(bus).get("0.0.0.0:9000") and applied(bus)["0.0.0.0:9000"].rules == 2, 5
        )
        # released VIPs' rules linger 2 s after their address went, then they go too
        bus.wait(lambda: VIP not in applied(bus) and "110.0.0.1" not in applied(bus), 5)
        assert client.tcp(node.ip, 9000) == "node1 9000"
        assert (
            node.exec(
                "python3",
                "-c",
                f"import socket; s=socket.create_connection(('{node.ip}', 9000), 2); print(s.recv(64).decode())",
            ).strip()
            == "node1 9000"
        )
        assert [r for r in node.nat_rules() if node.ip in r and "--dport 9000" in r].__len__() == 2
        assert not [r for r in node.nat_rules() if VIP in r or "110.0.0.1" in r]
        bus.replace("elector", "state.desired", {})
        bus.wait(lambda: not node.nat_rules() and applied(bus) == {}, 5)
    finally:
        bus.close()
        daemon.close()


def test_repairs_adopts_and_removes_leftovers(lab: Lab) -> None:
    node = lab.nodes[0]
    node.exec("ip", "addr", "add", "10.77.0.250/32", "dev", "eth0")  # someone else's /32
    daemon, bus = start(node)
    try:
        bus.replace("elector", "state.lease", lease())
        bus.replace("elector", "state.desired", {VIP: vip(node), VIP2: vip(node, VIP2)})
        try:
            bus.wait(
                lambda: (
                    node.has_address(VIP) and node.has_address(VIP2) and len(node.nat_rules()) == 8
                ),
                5,
            )
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{node.addresses()}\n{daemon.log()[-3000:]}") from None

        # outside deletion of the address and of a rule: both come back
        node.exec("ip", "addr", "del", f"{VIP}/32", "dev", "eth0")
        rule = node.nat_rules("lain-PREROUTING")[0].replace("-A ", "-D ", 1).replace('"', "")
        node.exec("sh", "-c", f"iptables -w -t nat {rule}")
        bus.wait(lambda: node.has_address(VIP) and len(node.nat_rules()) == 8, 4, "repair")
        bus.wait(
            lambda: (bus.state("applier", "state.applier") or {})["counters"].repairs >= 2,
            3,
            str(bus.state("applier", "state.applier")) + daemon.log()[-1500:],
        )

        with node.monitor_addresses() as monitor:
            # restart of the applier alone, then SIGKILL of the whole daemon and a new one:
            # the addresses are adopted, never removed and re-added
            pid = daemon.pid("applier")
            import os

            os.kill(pid, signal.SIGTERM)
            bus.wait(lambda: daemon.pid("applier") != pid, 10, "applier restarted")
            bus.close()
            daemon.kill()
            # a restarted applier waits for the elector's snapshot before removing anything
            daemon, bus = start(node)
            time.sleep(1.5)
            assert node.has_address(VIP) and node.has_address(VIP2) and len(node.nat_rules()) == 8
            # the elector now owns only VIP: VIP2 (recorded as ours) is a leftover
            bus.replace("elector", "state.lease", lease())
            bus.replace("elector", "state.desired", {VIP: vip(node)})
            bus.wait(
                lambda: not node.has_address(VIP2), 5, "leftover removed" + daemon.log()[-2500:]
            )
            bus.wait(lambda: len(node.nat_rules()) == 4, 5)
            time.sleep(0.3)
            assert monitor.deleted(VIP) == [] and monitor.added(VIP) == []
            assert monitor.deleted(VIP2)
        assert node.has_address("10.77.0.250")  # not a VIP of ours: untouched

        # a configured VIP (watcher state.vips) left on the interface is removed too
        from networkd.bus.messages import VipConfig

        node.exec("ip", "addr", "add", "10.77.0.202/32", "dev", "eth0")
        bus.replace(
            "watcher",
            "state.vips",
            {"10.77.0.202": VipConfig("10.77.0.202", "a", "p", [PortSpec(80)])},
        )
        bus.wait(lambda: not node.has_address("10.77.0.202"), 5)

        # final stop: rules, chains and addresses go
        daemon.stop()
        assert not node.has_address(VIP)
        assert "lain-" not in node.exec("iptables", "-w", "-t", "nat", "-S")
        assert node.has_address("10.77.0.250")
    finally:
        bus.close()
        daemon.close()


def test_duplicate_claim_and_fencing(lab: Lab) -> None:
    node, client = lab.nodes[0], lab.client
    daemon, bus = start(node)
    try:
        bus.replace("elector", "state.lease", lease())
        bus.replace("elector", "state.desired", {VIP: vip(node)})
        bus.wait(lambda: applied(bus).get(VIP) and applied(bus)[VIP].bound, 5)
        with client.sniffer() as sniffer:
            t0 = time.monotonic()
            client.send_garp(VIP, mac="02:00:00:77:77:77")
            claim = bus.wait(lambda: bus.events("vip.duplicate"), 3)[0]
            assert claim.ip == VIP and claim.mac == "02:00:00:77:77:77" and not claim.yielded
            again = sniffer.wait_garp(
                VIP, since=t0, timeout=2, mac=node.mac
            )  # a live owner re-announces
            assert again.mac == node.mac
        assert node.has_address(VIP)

        # lease lost (hold): keep the address, stop announcing, yield at the first claim
        bus.replace("elector", "state.lease", lease(False))
        time.sleep(0.3)
        assert node.has_address(VIP)
        client.send_garp(VIP, mac="02:00:00:77:77:78")
        bus.wait(lambda: len(bus.events("vip.duplicate")) >= 2, 3)
        assert bus.events("vip.duplicate")[-1].yielded
        bus.wait(lambda: not node.has_address(VIP) and not node.nat_rules(), 3)
        bus.wait(lambda: applied(bus).get(VIP) and not applied(bus)[VIP].bound, 3)
        # the lease is back and the elector still wants it: bound again
        bus.replace("elector", "state.lease", lease(True))
        bus.wait(lambda: node.has_address(VIP), 3)
        assert (bus.state("applier", "state.applier") or {})["counters"].duplicate_claims >= 2
    finally:
        bus.close()
        daemon.close()

    # strict: the address goes as soon as the lease is not alive
    daemon, bus = start(node, **{"vip.fencing": "strict"})
    try:
        bus.replace("elector", "state.lease", lease())
        bus.replace("elector", "state.desired", {VIP: vip(node)})
        bus.wait(lambda: node.has_address(VIP), 5)
        bus.replace("elector", "state.lease", lease(False))
        bus.wait(lambda: not node.has_address(VIP), 3)
    finally:
        bus.close()
        daemon.close()


def send_na(client: Any, ip: str, mac: str) -> None:
    """An unsolicited neighbour advertisement for ``ip`` naming ``mac`` (a claim), from a
    client namespace, through a raw ICMPv6 socket as a node would send it."""
    import socket

    from networkd.net.garp import build_unsolicited_na
    from tests.lab.netns import in_netns

    with in_netns(client.ns):
        sock = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
        index = socket.if_nametoindex("eth0")
    try:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 255)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, index)
        sock.sendto(build_unsolicited_na(mac, ip), ("ff02::1", 0, 0, index))
    finally:
        sock.close()


def test_probes_and_ipv6_claims_without_a_live_lease(lab: Lab) -> None:
    node, client = lab.nodes[0], lab.client
    vip6 = "fd00:77::200"
    daemon, bus = start(node)
    try:
        bus.replace("elector", "state.lease", lease())
        bus.replace(
            "elector", "state.desired", {VIP: vip(node), vip6: vip(node, vip6, ports=(), cip="")}
        )
        bus.wait(lambda: node.has_address(VIP) and node.has_address(vip6), 5)
        with client.sniffer() as sniffer:
            # hold without a live lease: silent, but asking who else has the VIP (ARP probes)
            bus.replace("elector", "state.lease", lease(False))
            t0 = time.monotonic()

            def probes_since(t: float) -> List[Any]:
                return [
                    s
                    for s in list(sniffer.seen)
                    if s.at >= t and s.kind == "arp" and s.ip == "0.0.0.0"
                ]

            # the cadence, counted from the first probe (how soon the lease news reaches
            # the applier on a busy machine is not what this asserts)
            first = bus.wait(lambda: probes_since(t0), 3, "first ARP probe")[0].at
            time.sleep(1.1)
            probes = probes_since(first)
            assert len(probes) >= 4, probes  # every 200 ms: 6 in 1.1 s
            assert not sniffer.garps(VIP, since=t0)
        # an IPv6 VIP yields to another node's neighbour advertisement
        send_na(client, vip6, "02:00:00:77:77:7a")
        bus.wait(lambda: not node.has_address(vip6), 3, "yield to the NA")
        claims = bus.wait(lambda: [c for c in bus.events("vip.duplicate") if c.ip == vip6], 2)
        assert claims[-1].yielded and claims[-1].mac == "02:00:00:77:77:7a"
        assert node.has_address(VIP)  # the other VIP was not claimed: kept
        # a live lease: an IPv6 claim is answered by a new announcement instead
        bus.replace("elector", "state.lease", lease(True))
        bus.wait(lambda: node.has_address(vip6), 3, "bound again with a live lease")
        with client.sniffer() as sniffer:
            t1 = time.monotonic()
            send_na(client, vip6, "02:00:00:77:77:7b")
            again = sniffer.wait_garp(vip6, since=t1, timeout=2, mac=node.mac)
            assert again.kind == "na"
        assert node.has_address(vip6)
    finally:
        bus.close()
        daemon.close()


def input_rules(node: LabNode):
    return node.exec("iptables", "-w", "-S", "INPUT").splitlines()


def acl_rules(node: LabNode):
    return node.exec("iptables", "-w", "-S", "lain-ACL", check=False).splitlines()[1:]


def test_acl(lab: Lab) -> None:
    node = lab.nodes[0]
    inside, outside = lab.clients
    import subprocess

    from tests.lab.lab import PYTHON, REPO, _child_env, _kill, _wait_ready

    server = subprocess.Popen(
        [
            "ip",
            "netns",
            "exec",
            node.ns,
            PYTHON,
            "-m",
            "tests.lab.servers",
            "--name",
            "host",
            "--ports",
            "7000,7001",
        ],
        stdout=subprocess.PIPE,
        cwd=REPO,
        env=_child_env(),
        start_new_session=True,
    )
    _wait_ready(server, "node server")
    daemon, bus = start(node, acl=True)
    try:
        assert inside.tcp(node.ip, 7000) == "host 7000"
        time.sleep(1.2)
        assert input_rules(node) == ["-P INPUT ACCEPT"]  # nothing before the whitelist is known
        bus.replace("watcher", "state.acl", acl_items([inside.ip]))
        bus.wait(lambda: input_rules(node)[0] == "-P INPUT DROP", 5)
        assert input_rules(node)[1:] == [
            '-A INPUT -m comment --comment "networkd acl, input policy before: ACCEPT" -j lain-ACL'
        ]
        assert acl_rules(node) == [*BASE, f"-A lain-ACL -s {inside.ip}/32 -j lain-ENTRY"]
        assert inside.tcp(node.ip, 7000) == "host 7000"
        assert outside.try_tcp(node.ip, 7000, timeout=0.5) is None  # dropped

        # whitelist changes replace the rules
        bus.replace(
            "watcher",
            "state.acl",
            acl_items([outside.ip], ex={"udp": ["7001"]}, inp={inside.ip: {"tcp": ["7001"]}}),
        )
        bus.wait(lambda: f"-A lain-ACL -s {outside.ip}/32 -j lain-ENTRY" in acl_rules(node), 5)
        rules = acl_rules(node)
        assert f"-A lain-ACL -s {inside.ip}/32 -j lain-ENTRY" not in rules
        assert f"-A lain-ACL -s {inside.ip}/32 -j lain-INPUT" in rules
        assert "-A lain-ACL -p udp -m multiport --dports 7001 -j lain-ENTRY" in rules
        assert outside.tcp(node.ip, 7000) == "host 7000"
        assert inside.try_tcp(node.ip, 7000, timeout=0.5) is None
        assert inside.tcp(node.ip, 7001) == "host 7001"  # per-source port
        assert inside.udp(node.ip, 7001) == "host 7001"  # external port for everyone

        # a restart of the applier leaves no duplicate
        import os

        before = input_rules(node), acl_rules(node)
        pid = daemon.pid("applier")
        os.kill(pid, signal.SIGTERM)
        bus.wait(lambda: daemon.pid("applier") != pid, 10)
        time.sleep(1.5)
        assert (input_rules(node), acl_rules(node)) == before
        assert len(node.exec("iptables", "-w", "-S", "lain-ENTRY").splitlines()) == 2

        # final stop: policy ACCEPT, chains gone
        bus.close()
        daemon.stop()
        assert input_rules(node) == ["-P INPUT ACCEPT"]
        assert "lain-" not in node.exec("iptables", "-w", "-S")
        assert "lain-" not in node.exec("ip6tables", "-w", "-S")
        assert node.exec("ip6tables", "-w", "-S", "INPUT").splitlines() == ["-P INPUT ACCEPT"]
        assert inside.tcp(node.ip, 7000) == "host 7000"
    finally:
        bus.close()
        daemon.close()
        _kill(server)
