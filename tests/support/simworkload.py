"""The etcd content of a simulated LAIN cluster of ``n`` nodes (scale benchmark and test).

- 4 VIPs per 10 nodes (at least 2). A quarter of them belong to ``webrouter/worker``,
  which runs on 4 nodes (2 below 10 nodes): those nodes hold several VIPs each, so a
  dead one hands over several at once. Every other VIP belongs to an app of its own that
  runs 3 instances (fewer on a tiny cluster).
- Apps without a VIP up to n/2 apps in all, 2 instances each; deployd-shaped pod groups
  (``tests.support.lain.deployd_pod_group``, 3-4 KiB each).
- n/4 domain keys.

Each node lists the etcd endpoints starting at a different one (node i at i mod 3), so
the cluster's connections spread over the members as an operator would configure them.
"""

import json
from dataclasses import dataclass, field
from typing import Any, List, Sequence, Tuple

from networkd import keys
from tests.support.lain import deployd_pod_group
from tests.support.simnode import NodeSpec

WEBROUTER = "webrouter"


def node_name(index: int) -> str:
    return f"node{index:04d}"


def node_address(index: int) -> str:
    return f"10.64.{index // 250}.{index % 250 + 1}"


def vip_ip(index: int) -> str:
    return f"10.200.{index // 250}.{index % 250 + 1}"


@dataclass
class App:
    name: str
    proc: str
    nodes: List[int]
    version: int = 1
    vips: List[str] = field(default_factory=list)

    @property
    def key(self) -> str:
        return keys.pod_group_key(self.name, f"{self.name}.worker.{self.proc}")

    def value(self) -> str:
        placements = [
            (
                node_name(i),
                node_address(i),
                f"172.{16 + i // 250}.{i % 250}.{self.version % 250 + 2}",
            )
            for i in self.nodes
        ]
        return deployd_pod_group(self.name, self.proc, placements, self.version)


class Workload:
    def __init__(self, n: int, endpoints: Sequence[str]) -> None:
        self.n = n
        self.endpoints = list(endpoints)
        self.vip_count = max(2, round(0.4 * n))
        self.apps: List[App] = []
        web_nodes = 4 if n >= 10 else 2
        web_vips = max(1, self.vip_count // 4)
        self.apps.append(App(WEBROUTER, "worker", list(range(web_nodes))))
        vip_index = 0
        for _ in range(web_vips):
            self.apps[0].vips.append(vip_ip(vip_index))
            vip_index += 1
        instances = min(3, n)
        slot = web_nodes
        k = 0
        while vip_index < self.vip_count:
            nodes = [(slot + j) % n for j in range(instances)]
            slot += instances
            app = App(f"app{k:04d}", "web", nodes, vips=[vip_ip(vip_index)])
            self.apps.append(app)
            vip_index += 1
            k += 1
        while len(self.apps) < n // 2:
            nodes = [(slot + j) % n for j in range(min(2, n))]
            slot += 2
            self.apps.append(App(f"svc{k:04d}", "worker", nodes))
            k += 1
        self.domains = [f"d{i:04d}.lain" for i in range(n // 4)]

    @property
    def vips(self) -> List[str]:
        return [ip for app in self.apps for ip in app.vips]

    def vip_app(self, ip: str) -> App:
        return next(app for app in self.apps if ip in app.vips)

    def specs(self) -> List[NodeSpec]:
        count = len(self.endpoints)
        out = []
        for i in range(self.n):
            start = i % count
            rotated = tuple(self.endpoints[start:] + self.endpoints[:start])
            out.append(NodeSpec(node_name(i), node_address(i), rotated))
        return out

    def pairs(self) -> List[Tuple[str, str]]:
        out: List[Tuple[str, str]] = []
        for app in self.apps:
            out.append((app.key, app.value()))
            for ip in app.vips:
                value = {
                    "app": app.name,
                    "proc": app.proc,
                    "ports": [{"src": "80", "proto": "tcp", "dest": "8080"}],
                }
                out.append((keys.vip_key(ip), json.dumps(value)))
        for i, name in enumerate(self.domains):
            out.append(
                (
                    keys.domain_key(name),
                    json.dumps({"ips": [f"10.99.{i // 250}.{i % 250 + 1}"], "type": ""}),
                )
            )
        return out

    def load(self, client: Any, batch: int = 64) -> None:
        """Write every key (transactions of ``batch`` puts)."""
        ops = [client.transactions.put(k, v) for k, v in self.pairs()]
        for start in range(0, len(ops), batch):
            client.transaction(compare=[], success=ops[start : start + batch], failure=[])

    def redeploy(self, app: App) -> Tuple[str, str]:
        """A new version of ``app`` on the same nodes (new container IDs and IPs): the
        pod group key and its new value."""
        app.version += 1
        return app.key, app.value()
