"""keepalived (Debian's package) on lab nodes: the peer networkd's VIP failover is measured
against (bench/failover.py) and the harness test that keeps it working
(tests/lab/test_keepalived_harness.py).

One keepalived per lab node, run in the node's namespace with ``ip netns exec``, VRRP
subsystem only (``-P``), in the foreground (``-n``), logging to a file in the node's
directory; its pid files live there too, so several keepalived on one machine never meet
(another engineer's, a distribution's service). VRRP goes over the node's ``eth0`` on the
lab bridge by multicast (224.0.0.18; the bridge floods link-local multicast), and the
virtual address is bound as ``VIP/32`` on ``eth0``, as networkd binds its VIPs.

Clients reach the node's container through the VIP as they do with networkd: a DNAT rule
``-d VIP/32 -p tcp --dport P -m addrtype --dst-type LOCAL -j DNAT --to CIP:P``, installed
once on every node. ``--dst-type LOCAL`` makes the static rule apply exactly while
keepalived has the address bound on that node, so the data path equals networkd's (rules
only on the holder) without notify scripts: a packet that reaches a node which no longer
holds the VIP (a client's stale ARP entry) is routed on, not answered by that node.

The configuration is the one operators of a no-preference pair write: every node starts
``BACKUP`` with ``nopreempt`` (a node coming back does not take the address back, like
networkd) and distinct priorities (100, 90, 80, ...: the highest backup wins a takeover
without a tie). Timers are keepalived's defaults (VRRPv2, ``advert_int 1``: a dead master
is noticed after 3 x 1 s + skew, about 3.6 s) or sub-second ones (VRRPv3, ``advert_int
0.1``). The optional ``track_script`` probes the local container's port with a TCP connect
(bash's ``/dev/tcp``, as many keepalived deployments do) as the unprivileged ``nobody``.
"""

import os
import signal
import subprocess
from dataclasses import dataclass
from typing import List, Optional, Sequence

from tests.lab.lab import LabNode
from tests.lab.netns import ip

KEEPALIVED = "/usr/sbin/keepalived"
MULTICAST_GROUP = "224.0.0.18"


@dataclass(frozen=True)
class TrackScript:
    """keepalived's ``vrrp_script``: a TCP connect to the node's container on ``port``.
    Without ``weight`` a failing script puts the instance in FAULT (it releases the
    address with a priority-0 advertisement); with a negative weight it lowers the
    priority instead."""

    port: int
    interval: float = 1.0
    timeout: float = 1.0
    fall: int = 3
    rise: int = 2
    weight: int = 0


@dataclass(frozen=True)
class VrrpSetup:
    """One VRRP instance for ``vip`` on every node that runs this setup."""

    vip: str
    router_id: int = 51
    advert_int: float = 1.0
    version: int = 2
    check: Optional[TrackScript] = None
    label: str = "defaults"

    def __post_init__(self) -> None:
        if self.version == 2 and self.advert_int != int(self.advert_int):
            raise ValueError("VRRPv2 advertises whole seconds: use version 3 below 1 s")


DEFAULTS = "defaults"
TUNED = "advert_int 0.1"


def defaults(vip: str, check: Optional[TrackScript] = None) -> VrrpSetup:
    """keepalived as installed: VRRPv2, one advertisement a second."""
    return VrrpSetup(vip=vip, check=check, label=DEFAULTS)


def tuned(vip: str, check: Optional[TrackScript] = None) -> VrrpSetup:
    """Sub-second timers: VRRPv3 with ten advertisements a second."""
    return VrrpSetup(vip=vip, advert_int=0.1, version=3, check=check, label=TUNED)


def priority_of(index: int) -> int:
    """Node 1 gets 100, node 2 90, ...: distinct, so skew times differ between backups."""
    return max(1, 110 - 10 * index)


def _seconds(value: float) -> str:
    return f"{value:g}"


def render_config(
    setup: VrrpSetup,
    node_name: str,
    interface: str,
    priority: int,
    check_path: str = "",
) -> str:
    """keepalived.conf for one node (pure: the harness writes it, a unit test reads it)."""
    lines: List[str] = [
        "global_defs {",
        f"    router_id {node_name}",
        f"    vrrp_version {setup.version}",
        "    script_user nobody",
        "}",
    ]
    check = setup.check
    if check is not None:
        if not check_path:
            raise ValueError("a track_script needs the path of its check")
        lines += [
            "vrrp_script container_check {",
            f"    script {check_path}",
            f"    interval {_seconds(check.interval)}",
            f"    timeout {_seconds(check.timeout)}",
            f"    fall {check.fall}",
            f"    rise {check.rise}",
        ]
        if check.weight:
            lines.append(f"    weight {check.weight}")
        lines.append("}")
    lines += [
        "vrrp_instance lab {",
        "    state BACKUP",
        "    nopreempt",
        f"    interface {interface}",
        f"    virtual_router_id {setup.router_id}",
        f"    priority {priority}",
        f"    advert_int {_seconds(setup.advert_int)}",
        "    virtual_ipaddress {",
        f"        {setup.vip}/32 dev {interface}",
        "    }",
    ]
    if check is not None:
        lines += ["    track_script {", "        container_check", "    }"]
    lines.append("}")
    return "\n".join(lines) + "\n"


def render_check(container_ip: str, port: int) -> str:
    """The track_script: exit 0 when a TCP connection to the container's port opens."""
    return f"#!/bin/bash\nexec 3<>/dev/tcp/{container_ip}/{port}\n"


class Keepalived:
    """keepalived in one lab node; ``stop()`` is what an operator's ``systemctl stop`` does
    (SIGTERM: a priority-0 advertisement, the address removed)."""

    def __init__(self, node: LabNode, setup: VrrpSetup, priority: int = 0) -> None:
        self.node = node
        self.setup = setup
        self.priority = priority or priority_of(node.index)
        self.dir = os.path.join(node.dir, "keepalived")
        self.conf = os.path.join(self.dir, "keepalived.conf")
        self.check = os.path.join(self.dir, "check.sh")
        self.log_path = os.path.join(self.dir, "keepalived.log")
        self.proc: Optional[subprocess.Popen[bytes]] = None

    def write_files(self) -> None:
        os.makedirs(self.dir, exist_ok=True)
        os.chmod(self.dir, 0o755)  # the check runs as nobody
        if self.setup.check is not None:
            with open(self.check, "w") as f:
                f.write(render_check(self.node.container_ip, self.setup.check.port))
            os.chmod(self.check, 0o755)
        with open(self.conf, "w") as f:
            f.write(
                render_config(
                    self.setup,
                    self.node.name,
                    self.node.interface,
                    self.priority,
                    self.check if self.setup.check is not None else "",
                )
            )

    def command(self) -> List[str]:
        return [
            "ip", "netns", "exec", self.node.ns, KEEPALIVED,
            "--vrrp", "--dont-fork", "--log-console", "--log-detail", "--no-syslog",
            "--use-file", self.conf,
            "--pid", os.path.join(self.dir, "keepalived.pid"),
            "--vrrp_pid", os.path.join(self.dir, "vrrp.pid"),
        ]  # fmt: skip

    def start(self) -> "Keepalived":
        if self.running():
            raise RuntimeError(f"keepalived already runs on {self.node.name}")
        self.write_files()
        with open(self.log_path, "ab") as log:
            # ``ip netns exec`` execs keepalived: the pid is keepalived's parent process.
            self.proc = subprocess.Popen(
                self.command(),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        return self

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 10.0) -> int:
        """SIGTERM and wait: the VRRP child sends priority 0 and removes the address."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return -9

    def kill(self) -> None:
        """SIGKILL of keepalived and its VRRP child (the address stays, as after a crash)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(5)

    def log(self) -> str:
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode(errors="replace")
        except OSError:
            return ""


def dnat_rule(vip: str, port: int, container_ip: str) -> List[str]:
    """The nat PREROUTING rule that sends ``vip:port`` to the container while ``vip`` is
    local (bound by keepalived on this node)."""
    return [
        "PREROUTING", "-d", f"{vip}/32", "-p", "tcp", "--dport", str(port),
        "-m", "addrtype", "--dst-type", "LOCAL",
        "-j", "DNAT", "--to-destination", f"{container_ip}:{port}",
    ]  # fmt: skip


class KeepalivedCluster:
    """The same VRRP setup on several lab nodes, with the DNAT rules of ``ports``;
    ``close()`` stops every keepalived and removes the rules."""

    def __init__(self, nodes: List[LabNode], setup: VrrpSetup, ports: Sequence[int] = ()) -> None:
        self.setup = setup
        self.ports = list(ports)
        self.members = [Keepalived(node, setup) for node in nodes]

    def start(self) -> "KeepalivedCluster":
        for member in self.members:
            for port in self.ports:
                rule = dnat_rule(self.setup.vip, port, member.node.container_ip)
                member.node.iptables("-A", *rule, table="nat")
        for member in self.members:
            member.start()
        return self

    def member(self, name: str) -> Keepalived:
        for member in self.members:
            if member.node.name == name:
                return member
        raise KeyError(name)

    def close(self) -> None:
        for member in self.members:
            member.stop()
        for member in self.members:
            node = member.node
            # an address left by a killed keepalived would confuse the next measurement
            ip(
                "addr",
                "del",
                f"{self.setup.vip}/32",
                "dev",
                node.interface,
                netns=node.ns,
                check=False,
            )
            for port in self.ports:
                rule = dnat_rule(self.setup.vip, port, node.container_ip)
                node.exec("iptables", "-w", "-t", "nat", "-D", *rule, check=False)

    def __enter__(self) -> "KeepalivedCluster":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
