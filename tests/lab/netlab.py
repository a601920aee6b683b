"""Two lab nodes, each with a real dockerd and networkd serving the Docker network plugin.

Shared by the container-network tests and ``bench/netdriver.py``. Each node's networkd
listens on ``<node dir>/plugins/networkd.sock`` and its dockerd sees that directory as
``/run/docker/plugins`` (see ``tests.lab.dockerd``), so ``-d networkd`` on each node
reaches that node's networkd. dockerd keeps its iptables (FORWARD policy DROP), as on a
real node. The image ``bb:local`` is busybox from ``docker import``.
"""

import ipaddress
import json
import os
import select
import socket
import struct
import time
from typing import Any, Dict, Iterable, List, Optional, Sequence, Set, Tuple

from tests.lab.dockerd import Dockerd
from tests.lab.lab import Lab, LabNode
from tests.lab.netns import in_netns, ip
from tests.support.dockerapi import DockerApi, UnixConnection

IMAGE = "bb:local"
PREFIX = "/lain/networkd/networks/"
# Answers "<hostname> <line>" to one line on a TCP connection: the cross-host data test.
REPLY_SCRIPT = '#!/bin/sh\nread line\necho "$(hostname) got $line"\n'


class NetLab:
    def __init__(
        self, ttl: float = 2.0, grace: float = 6.0, extra_flags: Optional[Dict[str, Any]] = None
    ) -> None:
        self.lab = Lab(nodes=2, clients=0)
        self.ttl = ttl
        self.grace = grace
        self.extra_flags = dict(extra_flags or {})
        self.dockerds: List[Dockerd] = []
        self.apis: List[DockerApi] = []

    # -- lifecycle ------------------------------------------------------------------------

    def __enter__(self) -> "NetLab":
        self.lab.start()
        try:
            for node in self.nodes:
                dockerd = Dockerd(
                    node,
                    plugins_dir=self.plugins_dir(node),
                    groups=["networkd"],
                    extra_args=["--bridge", "none"],
                )
                self.dockerds.append(dockerd)
                self.apis.append(DockerApi(dockerd.socket))
            for node in self.nodes:
                self.start_networkd(node)
            for node in self.nodes:
                node.daemon.wait_running(timeout=30)
            for dockerd in self.dockerds:
                dockerd.import_busybox(IMAGE, {"/bin/reply": REPLY_SCRIPT})
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        for dockerd in self.dockerds:
            try:
                dockerd.close()
            except Exception:
                pass
        self.lab.close()

    @property
    def nodes(self) -> List[LabNode]:
        return self.lab.nodes

    @staticmethod
    def plugins_dir(node: LabNode) -> str:
        return os.path.join(node.dir, "plugins")

    def plugin_socket(self, node: LabNode) -> str:
        return os.path.join(self.plugins_dir(node), "networkd.sock")

    def start_networkd(self, node: LabNode) -> None:
        index = self.nodes.index(node)
        flags = {
            "libnetwork": True,
            "docker.plugin.socket": self.plugin_socket(node),
            "docker.endpoint": f"unix://{self.dockerds[index].socket}",
            "netplugin.ttl": self.ttl,
            "netplugin.grace": self.grace,
            "dns.replicas": 1,
            **self.extra_flags,
        }
        node.start_networkd(**flags)

    def restart_networkd(self, node: LabNode) -> None:
        self.start_networkd(node)
        node.daemon.wait_running(timeout=30)

    # -- Docker ---------------------------------------------------------------------------

    def docker(self, index: int, *args: str, check: bool = True) -> str:
        return self.dockerds[index].out(*args, check=check)

    def docker_error(self, index: int, *args: str) -> str:
        """Run a docker command that must fail; its error output."""
        result = self.dockerds[index].docker(*args, check=False)
        assert result.returncode != 0, f"docker {' '.join(args)} succeeded: {result.stdout!r}"
        return result.stderr.decode(errors="replace")

    def create_network(
        self, name: str, subnet: str, mode: str, parent: str = "", nodes: Sequence[int] = (0, 1)
    ) -> None:
        args = ["network", "create", "-d", "networkd", "--ipam-driver", "networkd"]
        args += ["--subnet", subnet, "-o", f"mode={mode}"]
        if parent:
            args += ["-o", f"parent={parent}"]
        for index in nodes:
            self.docker(index, *args, name)

    def remove_network(self, name: str, nodes: Sequence[int] = (0, 1)) -> None:
        """``docker network rm`` on each node, retried while Docker still removes the
        containers' endpoints. An endpoint Docker kept after a start failed while the
        plugin was down is disconnected by force first, as an operator would.

        Docker sometimes keeps counting an endpoint after its container is gone: the node
        has no container, a forced disconnect changes nothing, and ``rm`` still says
        "active endpoints" (the count lives apart from the endpoints in Docker's store;
        moby/moby#17217, #42119). Only a dockerd restart recounts: it is done once, with
        what Docker listed and logged printed, and the network removed after it."""
        for index in nodes:
            deadline = time.monotonic() + 20
            phantom_since: Optional[float] = None
            restarted = False
            while True:
                result = self.dockerds[index].docker("network", "rm", name, check=False)
                if result.returncode == 0:
                    break
                if b"active endpoints" in result.stderr:
                    self.disconnect_stale(index, name)
                    if not self.apis[index].all_ids():
                        phantom_since = phantom_since or time.monotonic()
                    else:
                        phantom_since = None
                if phantom_since and time.monotonic() - phantom_since > 2 and not restarted:
                    print(
                        f"node {index + 1}: Docker still counts endpoints on {name} "
                        "with no container left; restarting dockerd to recount\n"
                        + self.network_diagnosis(index, name)
                    )
                    self.dockerds[index].stop()
                    self.dockerds[index].start()
                    restarted = True
                    deadline = time.monotonic() + 20
                    continue
                if time.monotonic() > deadline:
                    raise AssertionError(
                        f"docker network rm {name} on node {index + 1}: {result.stderr!r}\n"
                        + self.network_diagnosis(index, name)
                    )
                time.sleep(0.5)

    def network_diagnosis(self, index: int, network: str) -> str:
        """What Docker lists on ``network`` and what its log says about endpoints."""
        detail = self.apis[index].request("GET", f"/networks/{network}")
        with open(self.dockerds[index].log_path, errors="replace") as f:
            lines = [line for line in f if "level=error" in line or "level=warn" in line]
        return f"containers: {detail.get('Containers')}\ndockerd log:\n" + "".join(lines[-30:])

    def stale_endpoints(self, index: int, network: str) -> List[str]:
        """Endpoint names Docker lists on ``network`` with no running container."""
        detail = self.apis[index].request("GET", f"/networks/{network}")
        running = set(self.apis[index].running())
        return [
            str(info.get("Name"))
            for cid, info in (detail.get("Containers") or {}).items()
            if cid not in running
        ]

    def disconnect_stale(self, index: int, network: str) -> None:
        for endpoint in self.stale_endpoints(index, network):
            self.dockerds[index].docker(
                "network", "disconnect", "-f", network, endpoint, check=False
            )

    def run(self, index: int, network: str, *cmd: str, name: str = "") -> Tuple[str, str]:
        """Start a container; (id, address on ``network``)."""
        api = self.apis[index]
        container_id = api.run(IMAGE, cmd or ("sleep", "100000"), network, name=name)
        return container_id, api.address(container_id, network)

    def clear_containers(self) -> None:
        for api in self.apis:
            api.remove_many(api.all_ids())

    def clear_all(self) -> None:
        """No container and no network of a test left behind (after a failure too)."""
        self.clear_containers()
        problems = []
        for index in range(len(self.dockerds)):
            names = self.docker(index, "network", "ls", "--format", "{{.Name}} {{.Driver}}")
            for line in names.splitlines():
                name, driver = line.split()
                if driver in ("networkd", "macvlan"):
                    try:
                        self.remove_network(name, nodes=(index,))
                    except AssertionError as exc:
                        problems.append(str(exc))
        assert not problems, problems

    # -- observing ------------------------------------------------------------------------

    def etcd_keys(self, prefix: str = PREFIX) -> Dict[str, str]:
        client = self.lab.etcd.client()
        try:
            return {meta.key.decode(): value.decode() for value, meta in client.get_prefix(prefix)}
        finally:
            client.close()

    def allocations(self, net: str) -> Dict[str, Dict[str, Any]]:
        """``ip -> value`` of the network's address keys (``net`` like ``10.50.0.0-16``)."""
        prefix = f"{PREFIX}{net}/addresses/"
        return {k[len(prefix) :]: json.loads(v) for k, v in self.etcd_keys(prefix).items()}

    @staticmethod
    def our_links(node: LabNode) -> List[str]:
        """Links named like a networkd endpoint's (nr/nc/nm/ni + 12 hex digits)."""
        out = ip("-o", "link", "show", netns=node.ns)
        names = [line.split(":")[1].strip().split("@")[0] for line in out.splitlines()]
        return [n for n in names if n[:2] in ("nr", "nc", "nm", "ni") and len(n) == 14]

    @staticmethod
    def our_routes(node: LabNode) -> List[str]:
        return ip("route", "show", "proto", "77", netns=node.ns).strip().splitlines()

    @staticmethod
    def api_get(node: LabNode, path: str) -> str:
        """GET from the node's networkd API (it listens inside the node's namespace)."""
        host, port = str(node.daemon.flags["api.addr"]).rsplit(":", 1)
        with in_netns(node.ns):
            sock = socket.create_connection((host, int(port)), timeout=5)
        with sock:
            sock.sendall(f"GET {path} HTTP/1.0\r\nHost: networkd\r\n\r\n".encode())
            data = b""
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        assert b" 200 " in head.split(b"\r\n")[0], head
        return body.decode()

    def plugin_post(self, node: LabNode, path: str, body: bytes) -> Tuple[int, Dict[str, Any]]:
        """POST straight to the node's plugin socket, as Docker would."""
        conn = UnixConnection(self.plugin_socket(node), timeout=10)
        try:
            conn.request("POST", path, body=body, headers={"Content-Type": "application/json"})
            response = conn.getresponse()
            raw = response.read()
        finally:
            conn.close()
        return response.status, json.loads(raw.decode() or "{}")


def ping_all(netns: str, addresses: Iterable[str], timeout: float = 10.0) -> Set[str]:
    """ICMP echo to every address from ``netns`` (raw socket, resent every 0.5 s until it
    answers); the addresses that answered."""
    wanted = sorted(set(addresses), key=lambda a: int(ipaddress.IPv4Address(a)))
    with in_netns(netns):
        sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    ident = os.getpid() & 0xFFFF
    answered: Set[str] = set()
    deadline = time.monotonic() + timeout
    try:
        next_send = 0.0
        while len(answered) < len(wanted) and time.monotonic() < deadline:
            now = time.monotonic()
            if now >= next_send:
                next_send = now + 0.5
                for seq, address in enumerate(wanted):
                    if address not in answered:
                        try:
                            sock.sendto(_echo(ident, seq), (address, 0))
                        except OSError:
                            pass
            ready, _, _ = select.select([sock], [], [], 0.05)
            while ready:
                data, source = sock.recvfrom(2048)
                header = (data[0] & 0x0F) * 4
                kind, _code, _sum, rid, _seq = struct.unpack("!BBHHH", data[header : header + 8])
                if kind == 0 and rid == ident:
                    answered.add(source[0])
                ready, _, _ = select.select([sock], [], [], 0)
    finally:
        sock.close()
    return answered


def _echo(ident: int, seq: int) -> bytes:
    payload = b"networkd-lab"
    header = struct.pack("!BBHHH", 8, 0, 0, ident, seq)
    checksum = _checksum(header + payload)
    return struct.pack("!BBHHH", 8, 0, checksum, ident, seq) + payload


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF
