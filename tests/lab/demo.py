"""``make demo``: three networkd nodes, one floating VIP, a client, and a failover.

Builds the netns lab (nothing outside its own namespaces is touched), writes a pod group
and a VIP into the lab's etcd, starts networkd on every node, shows who owns the VIP and
what the client gets, then stops the owner and shows the handover.
"""

import json
import sys
import time

from tests.lab import Lab

VIP = "10.77.0.200"
WORKERS = ["watcher", "elector", "applier"]


def main() -> int:
    with Lab(nodes=3, clients=1) as lab:
        print(f"lab up: nodes {[n.name for n in lab.nodes]}, etcd {lab.etcd.endpoint}")
        pods = [
            {
                "InstanceNo": i + 1,
                "Containers": [
                    {
                        "Id": f"c{node.index}",
                        "NodeName": node.name,
                        "NodeIp": node.ip,
                        "ContainerIp": node.container_ip,
                        "ContainerPort": 8080,
                    }
                ],
            }
            for i, node in enumerate(lab.nodes)
        ]
        etcd = lab.etcd.client()
        etcd.put(
            "/lain/deployd/pod_groups/web/web.web.worker",
            json.dumps({"Spec": {"Namespace": "web", "Name": "web.web.worker"}, "Pods": pods}),
        )
        etcd.put(
            f"/lain/config/vips/{VIP}",
            json.dumps({"app": "web", "proc": "worker", "ports": [{"src": "80", "dest": "8080"}]}),
        )
        for node in lab.nodes:
            node.start_networkd(workers=WORKERS, docker_endpoint="")
        for node in lab.nodes:
            node.daemon.wait_running(WORKERS, timeout=30)
        owners = lab.wait(lambda: lab.owners(VIP), 20, "an owner")
        print(
            f"VIP {VIP} owned by {owners}; client -> {VIP}:80 answers {lab.client.tcp(VIP, 80)!r}"
        )
        owner = lab.node(owners[0])
        print(f"nat rules on {owner.name}:")
        for line in owner.nat_rules():
            print("   ", line)
        with lab.client.sniffer() as sniffer:
            t0 = time.monotonic()
            print(f"stopping networkd on {owner.name} (SIGTERM: planned handover)")
            owner.stop_networkd()
            new = lab.wait(
                lambda: [n for n in lab.owners(VIP) if n != owner.name], 20, "a new owner"
            )
            garp = sniffer.wait_garp(VIP, since=t0, timeout=10)
            print(
                f"new owner {new} after {garp.at - t0:.2f}s (first GARP); client gets {lab.client.tcp(VIP, 80)!r}"
            )
        print("cleaning up")
    return 0


if __name__ == "__main__":
    sys.exit(main())
