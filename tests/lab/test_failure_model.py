"""DESIGN's failure model on the whole daemon: SIGKILL any worker, repeatedly.

One node of the lab runs every worker, owns a VIP and serves DNS under a steady query
load. Each worker is killed in turn (some several times): it comes back RUNNING with a new
pid, the tap sees its exit and start, nothing else restarts, the VIP address is never
removed, no DNAT rule is duplicated, and no DNS query is lost except what
docs/ARCHITECTURE.md allows: a killed replica may lose the one batch it holds (at most
BATCH queries, received just before the kill); every other kill loses nothing.
"""

import json
import os
import random
import select
import signal
import socket
import struct
import threading
import time
from typing import Dict, Iterator, List, Set, Tuple

import pytest

from networkd.dns.mmsg import BATCH
from tests.lab.lab import Lab, LabNode
from tests.lab.netns import in_netns
from tests.support.daemon import wait_for
from tests.support.dnswire import a_query

pytestmark = pytest.mark.lab

VIP = "10.77.0.200"
NAME = "svc.lain"
NAME_IP = "10.1.2.3"


class QueryLoad:
    """Sends one A query every ``interval`` from inside the node; records every answer."""

    def __init__(self, netns: str, server: Tuple[str, int], interval: float = 0.01) -> None:
        with in_netns(netns):
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.server = server
        self.interval = interval
        self.sent: Dict[int, float] = {}
        self.answered: Set[int] = set()
        self.wrong: List[int] = []
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._send, daemon=True),
            threading.Thread(target=self._recv, daemon=True),
        ]
        for t in self._threads:
            t.start()

    def _send(self) -> None:
        qid = 0
        while not self._stop.is_set():
            qid = (qid + 1) % 65536
            self.sent[qid] = time.monotonic()
            self.sock.sendto(a_query(qid, NAME), self.server)
            time.sleep(self.interval)

    def _recv(self) -> None:
        while not self._stop.is_set() or len(self.answered) < len(self.sent):
            ready, _, _ = select.select([self.sock], [], [], 0.2)
            if not ready:
                if self._stop.is_set():
                    return
                continue
            data = self.sock.recv(4096)
            qid = struct.unpack("!H", data[:2])[0]
            self.answered.add(qid)
            if socket.inet_aton(NAME_IP) not in data:
                self.wrong.append(qid)

    def stop(self, grace: float = 5.0) -> None:
        self._stop.set()
        self._threads[0].join(2)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and len(self.answered) < len(self.sent):
            time.sleep(0.05)
        self._threads[1].join(grace)
        self.sock.close()

    def lost(self) -> List[int]:
        return sorted(set(self.sent) - self.answered)

    def lost_per_kill(self, kills: List[Tuple[str, float]]) -> Dict[str, int]:
        """Each lost query charged to the first kill after it was sent, or to "none"."""
        out: Dict[str, int] = {}
        for qid in self.lost():
            sent_at = self.sent[qid]
            after = [f"{n}@{k:.3f}" for n, k in kills if k >= sent_at]
            key = after[0] if after else "none"
            out[key] = out.get(key, 0) + 1
        return out


@pytest.fixture
def node() -> Iterator[LabNode]:
    with Lab(nodes=1, clients=1) as lab:
        node = lab.nodes[0]
        client = lab.etcd.client()
        client.put("/lain/deployd/pod_groups/web/web.web.worker", lab.pod_group([node]))
        ports = [{"src": "80", "proto": "tcp", "dest": "80"}]
        client.put(
            f"/lain/config/vips/{VIP}", json.dumps({"app": "web", "proc": "worker", "ports": ports})
        )
        client.put(f"/lain/config/domains/{NAME}", json.dumps({"ips": [NAME_IP], "type": ""}))
        node.start_networkd(docker_endpoint="")
        node.daemon.wait_running(timeout=30)
        wait_for(lambda: node.has_address(VIP), 15, what="VIP bound")
        yield node


def test_sigkill_each_worker_repeatedly_moves_nothing_and_loses_at_most_a_batch(
    node: LabNode,
) -> None:
    daemon = node.daemon
    dns_server = daemon.dns_addr
    lab_client = node.lab.client
    wait_for(lambda: lab_client.who(VIP, 80) == node.name, 10, what="VIP answers through DNAT")
    rules_before = [r for r in node.nat_rules() if VIP in r]
    assert len(rules_before) == 2, rules_before  # lain-PREROUTING and lain-OUTPUT, one port
    tap = daemon.tap(["worker."])
    monitor = node.monitor_addresses()
    load = QueryLoad(node.ns, dns_server)
    try:
        time.sleep(0.5)
        workers = daemon.wait_running()
        order = list(workers) + ["elector", "applier", "dns.0", "elector", "applier"]
        rng = random.Random(4)
        kills: List[Tuple[str, float]] = []
        for name in order:
            before = daemon.wait_running()
            victim = before[name]["pid"]
            os.kill(victim, signal.SIGKILL)
            kills.append((name, time.monotonic()))
            after = daemon.wait_restarted(name, victim)
            for other, info in before.items():
                if other != name:
                    assert after[other]["pid"] == info["pid"], f"killing {name} restarted {other}"
            exits = [
                e
                for e in tap.envelopes
                if e.topic == f"worker.{name}.exit" and e.body.pid == victim
            ]
            assert exits and exits[-1].body.signal == "SIGKILL"
            assert any(
                e.body.pid == after[name]["pid"]
                for e in tap.envelopes
                if e.topic == f"worker.{name}.start"
            )
            time.sleep(rng.uniform(0.1, 0.4))
            assert node.has_address(VIP), f"VIP gone after killing {name}"
        time.sleep(1.5)  # a reconcile pass after the last restart
    finally:
        load.stop()
        monitor.close()
        tap.close()
    assert monitor.deleted(VIP) == [], "the VIP address was removed during worker restarts"
    assert [r for r in node.nat_rules() if VIP in r] == rules_before, (
        "DNAT rules changed or duplicated"
    )
    assert lab_client.who(VIP, 80) == node.name
    status = daemon.status(0.5)
    assert [v["state"] for v in status["vips"] if v["ip"] == VIP] == ["OWNER"]
    assert len(load.sent) > 500
    lost = load.lost_per_kill(kills)
    print(f"DNS: {len(load.sent)} queries, lost per kill {lost or 'none'}")
    assert all(key.startswith("dns.") and count <= BATCH for key, count in lost.items()), lost
    assert load.wrong == []
