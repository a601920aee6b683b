"""A multi-node networkd lab in network namespaces, with a real etcd and real traffic.

Topology (every address lives only inside namespaces the lab creates)::

    hub ns:    bridge br0 10.77.0.254/24 (etcd listens here)
    node i:    eth0 10.77.0.(10+i)/24 on br0; docker0 172.30.i.1/24 to its container
    container: eth0 172.30.i.2/24, default via 172.30.i.1, a TCP/UDP server answering
               "<node name> <port>" on ``container_ports``
    client j:  eth0 10.77.0.(100+j)/24 on br0

The test process reaches etcd through a relay on its own loopback (``lab.etcd.client()``);
nodes use ``lab.etcd.endpoint``. Names carry a random suffix so parallel labs never
collide. ``close()`` always runs: context manager, atexit, and a sweep of labs whose
creator died.
"""

import atexit
import ipaddress
import os
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence

from tests.lab.netns import add_netns, del_netns, in_netns, ip, list_netns, ns_exec, run, sysctl
from tests.support.etcd import EtcdServer
from tests.support.ports import free_port

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PYTHON = sys.executable
PREFIX = "nwl"
SUBNET = "10.77.0"
HUB_IP = f"{SUBNET}.254"
SUBNET6 = "fd00:77::"  # Lab(ipv6=True): the bridge's IPv6 subnet, /64
HUB_IP6 = f"{SUBNET6}fe"
DEFAULT_CONTAINER_PORTS = (80, 8080, 8081, 8082, 9000)
ETH_P_ALL = 0x0003
ETH_P_ARP = 0x0806
_labs: "List[Lab]" = []


def _child_env() -> Dict[str, str]:
    return dict(os.environ, PYTHONPATH=REPO)


def _wait_ready(proc: "subprocess.Popen[bytes]", what: str, timeout: float = 10.0) -> None:
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    line = proc.stdout.readline() if ready else b""
    if line.strip() != b"ready":
        proc.kill()
        raise RuntimeError(f"{what} did not start: {line!r}")


def _kill(proc: "Optional[subprocess.Popen[Any]]") -> None:
    if proc is None or proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        proc.kill()
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        pass


class LabEtcd(EtcdServer):
    """etcd on the lab bridge (hub namespace), reached from the test through a relay."""

    def __init__(self, hub_ns: str, data_dir: str) -> None:
        super().__init__(host=HUB_IP, netns=hub_ns, data_dir=data_dir)
        self.relay_port = free_port()
        self.relay: Optional[subprocess.Popen[bytes]] = None

    def start(self, timeout: float = 15.0) -> "LabEtcd":
        if self.relay is None or self.relay.poll() is not None:
            self.relay = subprocess.Popen(
                [
                    PYTHON, "-m", "tests.lab.relay",
                    "--listen", f"127.0.0.1:{self.relay_port}",
                    "--netns", str(self.netns),
                    "--target", f"{HUB_IP}:{self.client_port}",
                ],
                stdout=subprocess.PIPE, cwd=REPO, env=_child_env(), start_new_session=True,
            )  # fmt: skip
            _wait_ready(self.relay, "etcd relay")
        super().start(timeout)
        return self

    def client(self, timeout: float = 5.0) -> Any:
        import etcd3

        return etcd3.client(host="127.0.0.1", port=self.relay_port, timeout=timeout)

    def close(self) -> None:
        super().close()
        _kill(self.relay)
        self.relay = None


@dataclass
class GarpSeen:
    """One announcement seen by a sniffer: ARP (sender IP) or IPv6 NA (target)."""

    at: float  # time.monotonic() in the test process
    kind: str  # "arp" or "na"
    ip: str
    mac: str
    op: int = 0
    gratuitous: bool = False


class Sniffer:
    """Reads ARP and ICMPv6 NA on a client's eth0 in a thread of the test process."""

    def __init__(self, netns: str, interface: str = "eth0") -> None:
        with in_netns(netns):
            self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
            self.sock.bind((interface, ETH_P_ALL))
        self.sock.settimeout(0.1)
        self.seen: List[GarpSeen] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                frame = self.sock.recv(2048)
            except socket.timeout:
                continue
            except OSError:
                return
            now = time.monotonic()
            item = parse_announcement(frame, now)
            if item is not None:
                self.seen.append(item)

    def garps(
        self, ip: Optional[str] = None, since: float = 0.0, mac: Optional[str] = None
    ) -> List[GarpSeen]:
        """Gratuitous ARPs (sender IP = target IP) and NAs, optionally for one IP / one MAC."""
        return [
            s
            for s in list(self.seen)
            if s.gratuitous
            and (ip is None or s.ip == ip)
            and s.at >= since
            and (mac is None or s.mac == mac)
        ]

    def wait_garp(
        self, ip: str, since: float = 0.0, timeout: float = 5.0, mac: Optional[str] = None
    ) -> GarpSeen:
        """The first announcement of ``ip`` at or after ``since`` (optionally from ``mac``)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.garps(ip, since, mac)
            if found:
                return found[0]
            time.sleep(0.01)
        raise AssertionError(
            f"no gratuitous ARP for {ip} within {timeout}s; seen {self.seen[-10:]}"
        )

    def clear(self) -> None:
        self.seen.clear()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()

    def __enter__(self) -> "Sniffer":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def parse_announcement(frame: bytes, now: float) -> Optional[GarpSeen]:
    if len(frame) < 42:
        return None
    (ethertype,) = struct.unpack("!H", frame[12:14])
    if ethertype == ETH_P_ARP:
        body = frame[14:42]
        op = struct.unpack("!H", body[6:8])[0]
        mac = ":".join(f"{b:02x}" for b in body[8:14])
        sender = str(ipaddress.IPv4Address(body[14:18]))
        target = str(ipaddress.IPv4Address(body[24:28]))
        return GarpSeen(now, "arp", sender, mac, op, gratuitous=sender == target)
    if ethertype == 0x86DD and len(frame) >= 14 + 40 + 24 and frame[14 + 6] == 58:
        icmp = frame[54:]
        if icmp[0] == 136:
            target6 = str(ipaddress.IPv6Address(icmp[8:24]))
            mac = ":".join(f"{b:02x}" for b in frame[6:12])
            return GarpSeen(now, "na", target6, mac, 136, gratuitous=True)
    return None


class LabClient:
    """A client namespace on the bridge: sends traffic from outside the nodes."""

    def __init__(self, lab: "Lab", index: int) -> None:
        self.lab = lab
        self.index = index
        self.ns = f"{lab.prefix}-cl{index}"
        self.ip = f"{SUBNET}.{100 + index}"
        self.ip6 = f"{SUBNET6}{100 + index:x}"
        self.port = f"cl{index}"  # its port on the bridge (hub namespace)

    def socket(self, family: int = socket.AF_INET, kind: int = socket.SOCK_STREAM) -> socket.socket:
        with in_netns(self.ns):
            return socket.socket(family, kind)

    def tcp(self, ip: str, port: int, timeout: float = 1.0) -> str:
        """Connect to ip:port and return the reply (``"node1 8080"``); raises OSError."""
        sock = self.socket(socket.AF_INET6 if ":" in ip else socket.AF_INET)
        sock.settimeout(timeout)
        try:
            sock.connect((ip, port))
            data = b""
            while not data.endswith(b"\n"):
                chunk = sock.recv(256)
                if not chunk:
                    break
                data += chunk
            return data.decode().strip()
        finally:
            sock.close()

    def udp(self, ip: str, port: int, timeout: float = 1.0) -> str:
        sock = self.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.settimeout(timeout)
        try:
            sock.sendto(b"hello", (ip, port))
            data, _ = sock.recvfrom(256)
            return data.decode().strip()
        finally:
            sock.close()

    def try_tcp(self, ip: str, port: int, timeout: float = 1.0) -> Optional[str]:
        try:
            return self.tcp(ip, port, timeout)
        except OSError:
            return None

    def try_udp(self, ip: str, port: int, timeout: float = 1.0) -> Optional[str]:
        try:
            return self.udp(ip, port, timeout)
        except OSError:
            return None

    def who(self, ip: str, port: int, timeout: float = 1.0) -> Optional[str]:
        """The node name answering at ip:port over TCP, or None."""
        reply = self.try_tcp(ip, port, timeout)
        return reply.split()[0] if reply else None

    def sniffer(self) -> Sniffer:
        return Sniffer(self.ns)

    def send_garp(self, ip: str, mac: str = "02:00:00:77:77:77", op: int = 1) -> None:
        """Announce ``ip`` from this client with a forged MAC (a duplicate claim)."""
        from networkd.net.garp import build_garp

        with in_netns(self.ns):
            sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ARP))
        try:
            sock.bind(("eth0", ETH_P_ARP))
            sock.send(build_garp(mac, ip, op))
        finally:
            sock.close()

    def route(self, cidr: str) -> None:
        """Make ``cidr`` reachable on-link (VIPs outside the lab subnet)."""
        ip("route", "replace", cidr, "dev", "eth0", netns=self.ns)

    def arp_flush(self) -> None:
        ip("neigh", "flush", "dev", "eth0", netns=self.ns, check=False)

    def neighbour_mac(self, addr: str) -> Optional[str]:
        out = ip("neigh", "show", addr, "dev", "eth0", netns=self.ns, check=False)
        parts = out.split()
        return parts[parts.index("lladdr") + 1] if "lladdr" in parts else None


class LabNode:
    """A node namespace with its container and, once started, its networkd."""

    def __init__(self, lab: "Lab", index: int) -> None:
        self.lab = lab
        self.index = index
        self.name = f"node{index}"
        self.ns = f"{lab.prefix}-n{index}"
        self.container_ns = f"{lab.prefix}-c{index}"
        self.ip = f"{SUBNET}.{10 + index}"
        self.interface = "eth0"
        self.port = f"n{index}"  # its port on the bridge (hub namespace)
        self.container_ip = f"172.30.{index}.2"
        self.gateway_ip = f"172.30.{index}.1"
        self.ip6 = f"{SUBNET6}{10 + index:x}"  # Lab(ipv6=True)
        self.container_ip6 = f"fd00:30:{index}::2"
        self.gateway_ip6 = f"fd00:30:{index}::1"
        self.dir = os.path.join(lab.dir, self.name)
        self.server: Optional[subprocess.Popen[bytes]] = None
        self.daemon: Any = None
        self.mac = ""

    # -- the container's server ----------------------------------------------------------

    def start_server(self) -> None:
        """The container's TCP/UDP server on the lab's container ports (``<name> <port>``)."""
        ports = ",".join(str(p) for p in self.lab.container_ports)
        self.server = self.run_in_container(
            "tests.lab.servers", "--name", self.name, "--ports", ports
        )

    def stop_server(self) -> None:
        """The service dies, the container stays (still listed in deployd's pod groups)."""
        _kill(self.server)
        self.server = None

    def run_in_container(self, module: str, *args: str) -> "subprocess.Popen[bytes]":
        """``python -m module args`` in the container namespace; returns once it prints
        ``ready`` (killed with the lab)."""
        proc = subprocess.Popen(
            ["ip", "netns", "exec", self.container_ns, PYTHON, "-m", module, *args],
            stdout=subprocess.PIPE, cwd=REPO, env=_child_env(), start_new_session=True,
        )  # fmt: skip
        _wait_ready(proc, f"{module} in the container of {self.name}")
        return proc

    # -- networkd ------------------------------------------------------------------------

    def start_networkd(
        self, workers: Sequence[str] = (), extra_args: Optional[List[str]] = None, **flags: Any
    ) -> Any:
        """Start networkd in this node (a tests.support.daemon.Daemon). ``workers`` limits the
        workers (default: all); flags as ``vip_garp_refresh=5`` or ``**{"vip.ttl": 2}``."""
        from tests.support.daemon import Daemon

        if (
            self.daemon is not None
            and self.daemon.proc is not None
            and self.daemon.proc.poll() is None
        ):
            raise RuntimeError(f"networkd already runs on {self.name}")
        named = {k.replace("_", "."): v for k, v in flags.items()}
        named.setdefault("net.address", self.ip)
        named.setdefault("net.interface", self.interface)
        if not workers:
            named["workers"] = ""
        self.daemon = Daemon(
            self.dir,
            self.lab.etcd.endpoint,
            workers=list(workers),
            netns=self.ns,
            hostname=self.name,
            extra_args=extra_args,
            flags=named,
        )
        # one run dir per node across restarts, as /run/networkd on a real node
        run_dir = os.path.join(self.dir, "run")
        try:
            os.rmdir(self.daemon.run_dir)  # the Daemon's own temporary one, unused
        except OSError:
            pass
        os.makedirs(run_dir, exist_ok=True)
        os.chmod(run_dir, 0o755)
        self.daemon.run_dir = run_dir
        self.daemon.flags["run.dir"] = run_dir
        os.chmod(self.dir, 0o755)
        self.daemon.start()
        return self.daemon

    def stop_networkd(self, timeout: float = 20.0) -> int:
        """SIGTERM the supervisor (a graceful stop: VIPs released) and wait."""
        if self.daemon is None:
            return 0
        code = int(self.daemon.stop(timeout))
        return code

    def kill_networkd(self) -> None:
        if self.daemon is not None:
            self.daemon.kill()

    # -- link and etcd -------------------------------------------------------------------

    def cut_link(self) -> None:
        """Pull the node's cable: its bridge port goes down (node death for everyone else)."""
        ip("link", "set", self.port, "down", netns=self.lab.hub_ns)

    def restore_link(self) -> None:
        ip("link", "set", self.port, "up", netns=self.lab.hub_ns)

    def partition_etcd(self) -> None:
        """Drop this node's traffic to etcd only (the LAN still works)."""
        port = str(self.lab.etcd.client_port)
        ns_exec(
            self.lab.hub_ns,
            "iptables",
            "-I",
            "INPUT",
            "-s",
            self.ip,
            "-p",
            "tcp",
            "--dport",
            port,
            "-j",
            "DROP",
        )

    def heal_etcd(self) -> None:
        port = str(self.lab.etcd.client_port)
        rule = ["INPUT", "-s", self.ip, "-p", "tcp", "--dport", port, "-j", "DROP"]
        ns_exec(self.lab.hub_ns, "iptables", "-D", *rule, check=False)

    def refuse_service(self, port: int, refuse: bool = True) -> None:
        """The container's server stops answering TCP ``port`` (connections are reset) while
        its process keeps running, as a hung or broken service; ``refuse=False`` undoes it."""
        rule = ["INPUT", "-p", "tcp", "--dport", str(port), "-j", "REJECT"]
        rule += ["--reject-with", "tcp-reset"]
        ns_exec(self.container_ns, "iptables", "-w", "-I" if refuse else "-D", *rule, check=refuse)

    # -- observing -----------------------------------------------------------------------

    def exec(self, *cmd: str, check: bool = True) -> str:
        return ns_exec(self.ns, *cmd, check=check)

    def addresses(self, interface: str = "") -> List[str]:
        """``ip/prefix`` strings on the interface (default: eth0)."""
        out = ip("-o", "addr", "show", "dev", interface or self.interface, netns=self.ns)
        found = []
        for line in out.splitlines():
            parts = line.split()
            if len(parts) > 3 and parts[2] in ("inet", "inet6"):
                found.append(parts[3])
        return found

    def has_address(self, vip: str) -> bool:
        prefix = 32 if ":" not in vip else 128
        return f"{vip}/{prefix}" in self.addresses()

    def iptables(self, *args: str, table: str = "filter") -> str:
        return self.exec("iptables", "-w", "-t", table, *args)

    def nat_rules(self, chain: str = "") -> List[str]:
        """``iptables -t nat -S`` lines of a chain (default: both lain chains)."""
        chains = [chain] if chain else ["lain-PREROUTING", "lain-OUTPUT"]
        lines: List[str] = []
        for name in chains:
            out = self.exec("iptables", "-w", "-t", "nat", "-S", name, check=False)
            lines += [line for line in out.splitlines() if line.startswith("-A ")]
        return lines

    def monitor_addresses(self) -> "AddressMonitor":
        return AddressMonitor(self.ns)

    def cleanup_network_state(self) -> None:
        """Remove what a test left on the node's host side (addresses /32, our chains, ACL)."""
        for addr in self.addresses():
            if addr.endswith("/32") or addr.endswith("/128"):
                ip("addr", "del", addr, "dev", self.interface, netns=self.ns, check=False)
        script = (
            "for t in iptables ip6tables; do $t -w -P INPUT ACCEPT; $t -w -F INPUT; "
            "for c in lain-ACL lain-ENTRY lain-INPUT; do $t -w -F $c; done; "
            "for c in lain-ACL lain-ENTRY lain-INPUT; do $t -w -X $c; done; done; "
            "iptables -w -t nat -F PREROUTING; iptables -w -t nat -F OUTPUT; "
            "for c in lain-PREROUTING lain-OUTPUT; do "
            "iptables -w -t nat -F $c; iptables -w -t nat -X $c; done"
        )
        ns_exec(self.ns, "sh", "-c", script + " 2>/dev/null; true")


class AddressMonitor:
    """``ip monitor address`` in a namespace; records every line (to catch a remove+re-add)."""

    def __init__(self, netns: str) -> None:
        self.proc = subprocess.Popen(
            ["ip", "-n", netns, "-o", "monitor", "address"],
            stdout=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        self.lines: List[str] = []
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()
        time.sleep(0.1)  # let ip subscribe before the test acts

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip())

    def deleted(self, vip: str) -> List[str]:
        return [line for line in self.lines if line.startswith("Deleted") and f" {vip}/" in line]

    def added(self, vip: str) -> List[str]:
        return [
            line for line in self.lines if not line.startswith("Deleted") and f" {vip}/" in line
        ]

    def close(self) -> None:
        _kill(self.proc)

    def __enter__(self) -> "AddressMonitor":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class Lab:
    """``with Lab(nodes=3) as lab:`` -> ``lab.nodes[i]``, ``lab.clients[j]``, ``lab.etcd``."""

    def __init__(
        self,
        nodes: int = 3,
        clients: int = 1,
        container_ports: Sequence[int] = DEFAULT_CONTAINER_PORTS,
        etcd: bool = True,
        ipv6: bool = False,
    ) -> None:
        if nodes > 80 or clients > 100:
            raise ValueError("the lab subnet holds at most 80 nodes and 100 clients")
        self.suffix = uuid.uuid4().hex[:6]
        self.prefix = f"{PREFIX}{self.suffix}"
        self.hub_ns = f"{self.prefix}-hub"
        self.dir = tempfile.mkdtemp(prefix=f"networkd-lab-{self.suffix}-")
        os.chmod(self.dir, 0o755)
        self.container_ports = list(container_ports)
        self.ipv6 = ipv6
        self.nodes = [LabNode(self, i) for i in range(1, nodes + 1)]
        self.clients = [LabClient(self, j) for j in range(clients)]
        self.with_etcd = etcd
        self.etcd: Any = None
        self._closed = False
        self._owner_file = os.path.join(tempfile.gettempdir(), f"networkd-lab-{self.suffix}.owner")

    @property
    def client(self) -> LabClient:
        return self.clients[0]

    def node(self, name: str) -> LabNode:
        for node in self.nodes:
            if node.name == name:
                return node
        raise KeyError(name)

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> "Lab":
        sweep_stale_labs()
        _labs.append(self)
        with open(self._owner_file, "w") as f:
            f.write(str(os.getpid()))
        try:
            self._build()
        except BaseException:
            self.close()
            raise
        return self

    def _build(self) -> None:
        add_netns(self.hub_ns)
        ip("link", "add", "br0", "type", "bridge", netns=self.hub_ns)
        ip(
            "link",
            "set",
            "br0",
            "type",
            "bridge",
            "forward_delay",
            "0",
            netns=self.hub_ns,
            check=False,
        )
        ip("addr", "add", f"{HUB_IP}/24", "dev", "br0", netns=self.hub_ns)
        if self.ipv6:
            self._address6(self.hub_ns, "br0", HUB_IP6, 64)
        ip("link", "set", "br0", "up", netns=self.hub_ns)
        for node in self.nodes:
            self._build_node(node)
        for client in self.clients:
            self._build_client(client)
        if self.with_etcd:
            os.makedirs(os.path.join(self.dir, "etcd"), exist_ok=True)
            self.etcd = LabEtcd(self.hub_ns, os.path.join(self.dir, "etcd"))
            self.etcd.start()

    def _attach(self, ns: str, port: str, address: str) -> None:
        ip(
            "link",
            "add",
            port,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            ns,
            netns=self.hub_ns,
        )
        ip("link", "set", port, "master", "br0", "up", netns=self.hub_ns)
        ip("addr", "add", f"{address}/24", "dev", "eth0", netns=ns)
        ip("link", "set", "eth0", "up", netns=ns)

    def _build_node(self, node: LabNode) -> None:
        os.makedirs(node.dir, exist_ok=True)
        os.chmod(node.dir, 0o755)
        add_netns(node.ns)
        self._attach(node.ns, node.port, node.ip)
        sysctl(node.ns, "net.ipv4.ip_forward", "1")
        add_netns(node.container_ns)
        ip(
            "link",
            "add",
            "docker0",
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            node.container_ns,
            netns=node.ns,
        )
        ip("addr", "add", f"{node.gateway_ip}/24", "dev", "docker0", netns=node.ns)
        ip("link", "set", "docker0", "up", netns=node.ns)
        ip("addr", "add", f"{node.container_ip}/24", "dev", "eth0", netns=node.container_ns)
        ip("link", "set", "eth0", "up", netns=node.container_ns)
        ip("route", "add", "default", "via", node.gateway_ip, netns=node.container_ns)
        if self.ipv6:
            self._build_node6(node)
        out = ip("-o", "link", "show", "eth0", netns=node.ns)
        node.mac = out.split("link/ether", 1)[1].split()[0]
        node.start_server()

    def _build_client(self, client: LabClient) -> None:
        add_netns(client.ns)
        self._attach(client.ns, client.port, client.ip)
        if self.ipv6:
            self._address6(client.ns, "eth0", client.ip6, 64)

    @staticmethod
    def _address6(ns: str, dev: str, address: str, plen: int) -> None:
        """An IPv6 address usable at once (no duplicate address detection wait)."""
        ip("addr", "add", f"{address}/{plen}", "dev", dev, "nodad", netns=ns)

    def _build_node6(self, node: "LabNode") -> None:
        """IPv6 on the bridge and to the container (``Lab(ipv6=True)``); the container
        server listens on both families."""
        sysctl(node.ns, "net.ipv6.conf.all.forwarding", "1")
        self._address6(node.ns, "eth0", node.ip6, 64)
        self._address6(node.ns, "docker0", node.gateway_ip6, 64)
        self._address6(node.container_ns, "eth0", node.container_ip6, 64)
        ip("-6", "route", "add", "default", "via", node.gateway_ip6, netns=node.container_ns)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for node in self.nodes:
            if node.daemon is not None:
                try:
                    node.daemon.close()
                except Exception:
                    pass
            _kill(node.server)
        if self.etcd is not None:
            try:
                self.etcd.close()
            except Exception:
                pass
        for name in list_netns():
            if name.startswith(self.prefix):
                kill_netns_processes(name)
                del_netns(name)
        shutil.rmtree(self.dir, ignore_errors=True)
        try:
            os.unlink(self._owner_file)
        except FileNotFoundError:
            pass
        if self in _labs:
            _labs.remove(self)

    def __enter__(self) -> "Lab":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- helpers -------------------------------------------------------------------------

    def wait(self, predicate: Callable[[], Any], timeout: float = 10.0, what: str = "") -> Any:
        from tests.support.daemon import wait_for

        return wait_for(predicate, timeout, what=what)

    def client_ping(self, address: str, client: int = 0) -> str:
        """``ping -c 1`` from a client namespace; returns ping's output."""
        return ns_exec(self.clients[client].ns, "ping", "-c", "1", "-W", "1", address, check=False)

    @staticmethod
    def pod_group(
        nodes: Sequence["LabNode"], app: str = "web", proc: str = "worker", ipv6: bool = False
    ) -> str:
        """deployd's pod group with one container of app.proc on each of ``nodes`` (with
        ``ipv6``, the containers' IPv6 addresses: what an IPv6 VIP's DNAT points to)."""
        from tests.support.lain import pod, pod_group

        pods = [
            pod(
                i + 1, n.name, n.container_ip6 if ipv6 else n.container_ip, n.ip, f"c{n.index}{app}"
            )
            for i, n in enumerate(nodes)
        ]
        return pod_group(app, proc, pods, kind=app)

    def run_networkd(
        self,
        nodes: Sequence["LabNode"],
        workers: Sequence[str],
        placed: Optional[Sequence["LabNode"]] = None,
        **flags: Any,
    ) -> Any:
        """Place web.worker on ``placed`` (default: ``nodes``), start networkd with
        ``workers`` on ``nodes`` and wait until they run; returns an etcd client."""
        etcd = self.etcd.client()
        etcd.put(
            "/lain/deployd/pod_groups/web/web.web.worker",
            self.pod_group(list(nodes if placed is None else placed)),
        )
        for node in nodes:
            node.start_networkd(workers=workers, docker_endpoint="", **flags)
        for node in nodes:
            node.daemon.wait_running(workers, timeout=20)
        return etcd

    def owners(self, vip: str) -> List[str]:
        """Names of the nodes that hold ``vip`` on eth0 right now."""
        return [node.name for node in self.nodes if node.has_address(vip)]


def kill_netns_processes(name: str) -> None:
    out = run(["ip", "netns", "pids", name], check=False).stdout
    for pid in out.split():
        try:
            os.kill(int(pid), signal.SIGKILL)
        except (ProcessLookupError, ValueError):
            pass


def sweep_stale_labs() -> None:
    """Delete namespaces of labs whose creating process is gone (a killed test run)."""
    seen = set()
    for name in list_netns():
        if not name.startswith(PREFIX) or "-" not in name:
            continue
        suffix = name.split("-", 1)[0][len(PREFIX) :]
        if suffix in seen:
            continue
        owner_file = os.path.join(tempfile.gettempdir(), f"networkd-lab-{suffix}.owner")
        try:
            with open(owner_file) as f:
                pid = int(f.read().strip() or 0)
        except (OSError, ValueError):
            pid = 0
        if pid and os.path.exists(f"/proc/{pid}"):
            continue
        seen.add(suffix)
        for other in list_netns():
            if other.startswith(f"{PREFIX}{suffix}-"):
                kill_netns_processes(other)
                del_netns(other)
        try:
            os.unlink(owner_file)
        except OSError:
            pass


@atexit.register
def _close_all() -> None:
    for lab in list(_labs):
        lab.close()
