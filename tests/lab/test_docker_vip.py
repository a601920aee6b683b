"""A real Docker container behind a VIP.

dockerd runs inside a lab node's network namespace (entered with nsenter, so the cgroup
mounts stay visible), with a busybox image made by ``docker import`` from the
busybox-static binary: no registry. The container serves HTTP; deployd's pod group names
it; networkd binds the VIP, DNATs to the container and, through the Docker socket, notices
when the container stops and releases the VIP.
"""

import json
from typing import Iterator, Tuple

import pytest

from tests.lab.dockerd import Dockerd
from tests.lab.lab import Lab, LabNode
from tests.support.daemon import wait_for

pytestmark = pytest.mark.lab

VIP = "10.77.0.220"
BRIDGE_IP = "172.31.77.1"
PAGE = "hello from a docker container\n"


def start_dockerd(node: LabNode) -> Dockerd:
    """dockerd with its default bridge on a pre-made dkbr0 (the lab's docker0 is taken)."""
    node.exec("ip", "link", "add", "dkbr0", "type", "bridge")
    node.exec("ip", "addr", "add", f"{BRIDGE_IP}/24", "dev", "dkbr0")
    node.exec("ip", "link", "set", "dkbr0", "up")
    # the elector (user networkd) reads container states through the socket
    return Dockerd(node, groups=["networkd"], extra_args=["--bridge", "dkbr0"])


def run_httpd(dockerd: Dockerd, name: str, tag: str) -> Tuple[str, str]:
    """Start the web container; (container id, container IP)."""
    container_id = dockerd.out(
        "run", "-d", "--name", name, tag, "/bin/busybox", "httpd", "-f", "-p", "80", "-h", "/www"
    )
    ip = dockerd.out("inspect", "-f", "{{.NetworkSettings.IPAddress}}", name)
    return container_id, ip


@pytest.fixture
def lab() -> Iterator[Lab]:
    with Lab(nodes=1, clients=1) as lab:
        yield lab


def test_a_real_docker_container_behind_a_vip(lab: Lab) -> None:
    node = lab.nodes[0]
    dockerd = start_dockerd(node)
    try:
        dockerd.import_busybox("busybox-httpd:local", {"/www/index.html": PAGE})
        container_id, container_ip = run_httpd(dockerd, "web", "busybox-httpd:local")
        assert container_ip.startswith("172.31.77.")
        pod = {
            "InstanceNo": 1,
            "Containers": [
                {
                    "Id": container_id,
                    "NodeName": node.name,
                    "NodeIp": node.ip,
                    "ContainerIp": container_ip,
                    "ContainerPort": 80,
                }
            ],
        }
        etcd = lab.etcd.client()
        etcd.put(
            "/lain/deployd/pod_groups/web/web.web.web",
            json.dumps({"Spec": {"Namespace": "web", "Name": "web.web.web"}, "Pods": [pod]}),
        )
        etcd.put(
            f"/lain/config/vips/{VIP}",
            json.dumps(
                {
                    "app": "web",
                    "proc": "web",
                    "ports": [{"src": "8080", "proto": "tcp", "dest": "80"}],
                }
            ),
        )
        node.start_networkd(docker_endpoint=f"unix://{dockerd.socket}")
        node.daemon.wait_running(timeout=30)
        wait_for(lambda: node.has_address(VIP), 15, what="VIP bound")

        # client -> VIP:8080 -> DNAT -> container:80 (busybox httpd)
        reply = wait_for(lambda: http_get(lab, VIP, 8080), 10, what="HTTP through the VIP")
        assert "200 OK" in reply and PAGE.strip() in reply

        # Docker says the container stopped: the node is no longer eligible; VIP released.
        dockerd.docker("stop", "-t", "1", "web")
        wait_for(
            lambda: not node.has_address(VIP), 20, what="VIP released after the container stopped"
        )
        status = node.daemon.status(0.5)
        assert [v["state"] for v in status["vips"] if v["ip"] == VIP] == ["INELIGIBLE"]
        # the rules linger 2 s after the address (docs/applier.md), then go
        wait_for(lambda: not [r for r in node.nat_rules() if VIP in r], 10, what="rules removed")

        # ... and taken again once it runs again.
        dockerd.docker("start", "web")
        wait_for(lambda: node.has_address(VIP), 20, what="VIP bound again")
        assert PAGE.strip() in wait_for(lambda: http_get(lab, VIP, 8080), 10, what="HTTP again")
    finally:
        if node.daemon is not None:
            node.daemon.close()
        dockerd.close()


def http_get(lab: Lab, ip: str, port: int) -> str:
    """GET /index.html from the client namespace; "" when nothing answers."""
    sock = lab.client.socket()
    sock.settimeout(1.0)
    try:
        sock.connect((ip, port))
        sock.sendall(b"GET /index.html HTTP/1.0\r\nHost: web\r\n\r\n")
        data = b""
        while True:
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
        return data.decode(errors="replace")
    except OSError:
        return ""
    finally:
        sock.close()
