"""Fault injection on a running 3-node lab, phase by phase, with clients watching.

Every node runs the whole daemon (watcher, elector, applier, resolvconf, two DNS replicas,
api) against a real etcd; 4 VIPs are spread over the nodes. During every phase a client
opens a TCP connection to each VIP every 50 ms, every node's DNS is queried 100 times a
second for a cluster name, and every address change on every node is followed through
``ip monitor``. Per phase it prints: VIP moves, seconds with two holders of an address,
the longest stretch a VIP had no holder, refused/timed-out client connections, and DNS
queries lost (no answer within 1 s) out of those sent.

Phases: steady state; SIGKILL of every worker kind in turn; SIGKILL of a whole daemon and
a restart; an etcd stall (SIGSTOP 5 s); an etcd restart; etcd compaction; the owner of a
VIP cut off for 8 s and healed (its VIPs move: that is the expected failover, and the cut
node keeps its addresses under ``hold`` while nobody can reach it, so two holders count
from the heal). About three minutes.

``python -m bench chaos``
"""

import json
import os
import signal
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Dict, List, Tuple

from tests.lab.lab import Lab, LabNode
from tests.lab.netns import in_netns
from tests.lab.observe import AddressTimeline, TcpProber

VIPS = [f"10.77.0.{200 + i}" for i in range(4)]
NAME = "chaos.lain"
DNS_QPS = 100
KILLED = ["elector", "applier", "watcher", "resolvconf", "dns.0", "dns.1", "api"]


def query(name: str, qid: int) -> bytes:
    labels = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"
    return (
        qid.to_bytes(2, "big") + b"\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00" + labels + b"\0\1\0\1"
    )


class DnsLoad:
    """``DNS_QPS`` queries a second to one node's DNS (inside its namespace)."""

    def __init__(self, node: LabNode) -> None:
        self.node = node  # a restarted daemon listens on its own port: read it each time
        with in_netns(node.ns):
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.settimeout(0.01)
        self.sent: Dict[int, float] = {}  # qid -> sent at
        self.answered: Dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        qid = 0
        next_at = time.monotonic()
        while not self._stop.is_set():
            now = time.monotonic()
            if now >= next_at:
                next_at += 1.0 / DNS_QPS
                qid = (qid + 1) % 65536
                self.sent[qid] = now
                try:
                    self.sock.sendto(query(NAME, qid), self.node.daemon.dns_addr)
                except OSError:
                    pass
            try:
                data = self.sock.recv(512)
            except (socket.timeout, OSError):
                continue
            if len(data) >= 2:
                answered = int.from_bytes(data[:2], "big")
                if answered in self.sent:
                    self.answered[answered] = time.monotonic()

    def lost(self, start: float, end: float) -> Tuple[int, int]:
        """(lost, sent) among the queries sent in [start, end)."""
        sent = [(q, t) for q, t in list(self.sent.items()) if start <= t < end]
        lost = sum(1 for q, t in sent if q not in self.answered or self.answered[q] - t > 1.0)
        return lost, len(sent)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


@dataclass
class Phase:
    name: str
    start: float
    end: float = 0.0
    notes: List[str] = field(default_factory=list)
    # Two holders count from here: while a node is cut off it keeps its addresses under
    # ``hold`` and nobody can reach it, so only what happens after the heal is an overlap.
    overlap_from: float = 0.0


def vip_value() -> str:
    return json.dumps(
        {"app": "web", "proc": "worker", "ports": [{"src": "80", "proto": "tcp", "dest": "80"}]}
    )


def lock_owner(etcd, vip: str) -> str:  # type: ignore[no-untyped-def]
    value = etcd.get(f"/lain/networkd/vips/{vip}.lock")[0]
    return value.decode() if value else ""


def run(lab: Lab) -> None:
    etcd = lab.etcd.client()
    etcd.put("/lain/deployd/pod_groups/web/web.web.worker", lab.pod_group(lab.nodes))
    etcd.put(f"/lain/config/domains/{NAME}", json.dumps({"ips": ["10.77.0.77"], "type": ""}))
    for ip in VIPS:
        etcd.put(f"/lain/config/vips/{ip}", vip_value())
    for node in lab.nodes:
        node.start_networkd(docker_endpoint="")
    for node in lab.nodes:
        node.daemon.wait_running(timeout=30)
    lab.wait(lambda: all(len(lab.owners(ip)) == 1 for ip in VIPS), 20, "VIPs owned")
    time.sleep(3.0)
    timeline = AddressTimeline(lab.nodes, VIPS)
    probers = [TcpProber(lab.client, ip, 80, interval=0.05, timeout=1.0) for ip in VIPS]
    loads = [DnsLoad(n) for n in lab.nodes]
    phases: List[Phase] = []

    def phase(name: str) -> Phase:
        if phases:
            phases[-1].end = time.monotonic()
        item = Phase(name, time.monotonic())
        phases.append(item)
        return item

    try:
        phase("steady state 10 s")
        time.sleep(10)

        current = phase("SIGKILL of each worker kind, on every node")
        for worker in KILLED:
            for node in lab.nodes:
                pid = node.daemon.pid(worker)
                if pid:
                    os.kill(pid, signal.SIGKILL)
                time.sleep(0.25)
            time.sleep(0.5)
        current.notes.append(f"{len(KILLED) * len(lab.nodes)} kills")
        time.sleep(3)

        phase("SIGKILL of a whole daemon, restarted")
        victim = lab.node(lock_owner(etcd, VIPS[0]) or lab.nodes[0].name)
        victim.kill_networkd()
        victim.start_networkd(docker_endpoint="")
        victim.daemon.wait_running(timeout=30)
        time.sleep(4)

        phase("etcd stall (SIGSTOP) 5 s")
        lab.etcd.pause()
        time.sleep(5)
        lab.etcd.resume()
        time.sleep(6)

        phase("etcd restart")
        lab.etcd.restart()
        etcd = lab.etcd.client()
        time.sleep(6)

        phase("etcd compaction under watch")
        for i in range(20):
            etcd.put("/lain/config/domains/churn.lain", json.dumps({"ips": [f"10.9.0.{i}"]}))
        lab.etcd.compact()
        time.sleep(4)

        current = phase("owner link cut 8 s, healed (its VIPs fail over)")
        victim = lab.node(lock_owner(etcd, VIPS[0]) or lab.nodes[0].name)
        held = [ip for ip in VIPS if victim.has_address(ip)]
        current.notes.append(f"{victim.name} held {len(held)} VIPs")
        victim.cut_link()
        time.sleep(8)
        victim.restore_link()
        current.overlap_from = time.monotonic()
        current.notes.append("two holders counted from the heal")
        time.sleep(5)
        phases[-1].end = time.monotonic()
    finally:
        for prober in probers:
            prober.close()
        for load in loads:
            load.close()
        timeline.close()
        etcd.close()

    print(f"  {'phase':<52} {'moves':>5} {'2-holder s':>10} {'no-owner s':>10} "
          f"{'refused':>7} {'t/o':>5} {'DNS lost/sent':>14}")  # fmt: skip
    for item in phases:
        moves = sum(_moves_between(timeline, ip, item.start, item.end) for ip in VIPS)
        since = max(item.start, item.overlap_from)
        two = sum(timeline.two_holder_seconds(ip, since, item.end) for ip in VIPS)
        none = max(_longest_empty(timeline, ip, item.start, item.end) for ip in VIPS)
        outcomes = [o for p in probers for o in p.outcomes if item.start <= o.at < item.end]
        refused = sum(1 for o in outcomes if o.result == "refused")
        timeouts = sum(1 for o in outcomes if o.result == "timeout")
        lost = [load.lost(item.start, item.end) for load in loads]
        dns = f"{sum(x for x, _ in lost)}/{sum(y for _, y in lost)}"
        notes = f"  ({'; '.join(item.notes)})" if item.notes else ""
        print(f"  {item.name:<52} {moves:>5} {two:>10.3f} {none:>10.3f} "
              f"{refused:>7} {timeouts:>5} {dns:>14}{notes}")  # fmt: skip


def _moves_between(timeline: AddressTimeline, ip: str, start: float, end: float) -> int:
    last = ""
    moves = 0
    for at, holders in timeline.spans(ip):
        if at > end:
            break
        if len(holders) == 1:
            (holder,) = holders
            if last and holder != last and at >= start:
                moves += 1
            last = holder
    return moves


def _clip(timeline: AddressTimeline, ip: str, start: float, end: float):  # type: ignore[no-untyped-def]
    spans = timeline.spans(ip) + [(time.monotonic(), set())]
    for (a, holders), (b, _) in zip(spans, spans[1:]):
        lo, hi = max(a, start), min(b, end)
        if hi > lo:
            yield lo, hi, holders


def _longest_empty(timeline: AddressTimeline, ip: str, start: float, end: float) -> float:
    return max([hi - lo for lo, hi, h in _clip(timeline, ip, start, end) if not h] or [0.0])


def main() -> None:
    with Lab(nodes=3, clients=1) as lab:
        run(lab)


if __name__ == "__main__":
    main()
