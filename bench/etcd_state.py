"""Benchmark: etcd to bus with the watcher worker (real etcd, real daemon, real bus).

1. Propagation: an etcd put until a bus subscriber holds the new state, p50/p99 over
   500 puts (target p99 <= 20 ms), against the same puts seen by a bare etcd3 watch in
   this process (the floor: etcd and gRPC alone).
2. Cold start with 10,000 domain keys and 1,000 VIP keys: time from the daemon's launch
   to a subscriber holding the full snapshot (target <= 2 s), the watcher's own read and
   publish times, and the watcher's RSS.

Run: ``python -m bench.etcd_state`` (or ``python -m bench``). Needs root like the tests.
"""

import json
import os
import queue
import re
import shutil
import statistics
import tempfile
import threading
import time
from typing import Any, Dict, List

import zmq

from networkd import keys
from networkd.bus.subscriber import Subscriber
from tests.support.daemon import Daemon, wait_for
from tests.support.etcd import EtcdServer

PUTS = 500
DOMAINS = 10_000
VIPS = 1_000
TXN_OPS = 100


def percentile(values: List[float], pct: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(pct / 100 * (len(ordered) - 1))))
    return ordered[index]


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


class BusClient:
    def __init__(self, run_dir: str, topics: List[str]) -> None:
        self.context = zmq.Context()
        self.sub = Subscriber(self.context, run_dir, {"watcher": topics})

    def state(self, topic: str) -> Any:
        return self.sub.state("watcher", topic)

    def close(self) -> None:
        self.sub.close()
        self.context.destroy(0)


def make_base() -> str:
    base = tempfile.mkdtemp(prefix="networkd-bench-")
    os.chmod(base, 0o755)
    return base


def bare_watch_latency(server: EtcdServer, count: int) -> List[float]:
    """The floor: put -> event through a plain gRPC watch stream in this process."""
    from etcd3.etcdrpc import rpc_pb2, rpc_pb2_grpc

    client = server.client()
    seen: queue.Queue[float] = queue.Queue()
    requests: queue.Queue[Any] = queue.Queue()
    create = rpc_pb2.WatchCreateRequest(
        key=b"/bench/bare/", range_end=keys.prefix_range_end("/bench/bare/")
    )
    requests.put(rpc_pb2.WatchRequest(create_request=create))
    call = rpc_pb2_grpc.WatchStub(client.channel).Watch(iter(requests.get, None))

    def pump() -> None:
        try:
            for response in call:
                if response.events:
                    seen.put(time.perf_counter())
        except Exception:  # canceled at the end
            pass

    threading.Thread(target=pump, daemon=True).start()
    time.sleep(0.2)  # the watch is created
    samples = []
    for i in range(count):
        started = time.perf_counter()
        client.put("/bench/bare/key", str(i))
        samples.append(seen.get(timeout=5) - started)
    requests.put(None)
    call.cancel()
    client.close()
    return samples


def propagation(server: EtcdServer) -> Dict[str, float]:
    base = make_base()
    daemon = Daemon(base, server.endpoint, workers=("watcher",), hostname="bench1")
    bus = BusClient(daemon.run_dir, ["state.domains", "state.sync"])
    client = server.client()
    try:
        daemon.start()
        wait_for(
            lambda: (bus.sub.poll(20), bus.state("state.domains") is not None)[1],
            20,
            what="watcher in sync",
        )
        samples = []
        key = keys.domain_key("bench.lain")
        for i in range(PUTS):
            ip = f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}"
            started = time.perf_counter()
            client.put(key, json.dumps({"ips": [ip]}))
            while True:
                bus.sub.poll(5)
                entry = (bus.state("state.domains") or {}).get("bench.lain")
                if entry is not None and entry.ips == [ip]:
                    break
                if time.perf_counter() - started > 5:
                    raise RuntimeError(f"put {i} did not arrive within 5 s")
            samples.append(time.perf_counter() - started)
        bare = bare_watch_latency(server, PUTS)
    finally:
        client.close()
        bus.close()
        daemon.close()
        shutil.rmtree(base, ignore_errors=True)
    return {
        "p50_ms": percentile(samples, 50) * 1000,
        "p99_ms": percentile(samples, 99) * 1000,
        "max_ms": max(samples) * 1000,
        "mean_ms": statistics.mean(samples) * 1000,
        "bare_p50_ms": percentile(bare, 50) * 1000,
        "bare_p99_ms": percentile(bare, 99) * 1000,
    }


def fill(server: EtcdServer) -> None:
    client = server.client()
    ops = []
    for i in range(DOMAINS):
        value = json.dumps({"ips": [f"10.{(i >> 8) & 255}.{i & 255}.1"], "type": ""})
        ops.append(client.transactions.put(keys.domain_key(f"app{i}.bench.lain"), value))
    for i in range(VIPS):
        value = json.dumps(
            {"app": f"app{i}", "proc": "web", "ports": [{"src": "80", "dest": "8080"}]}
        )
        ops.append(client.transactions.put(keys.vip_key(f"10.200.{i >> 8}.{i & 255}"), value))
    for start in range(0, len(ops), TXN_OPS):
        client.transaction(compare=[], success=ops[start : start + TXN_OPS], failure=[])
    client.close()


def cold_start(server: EtcdServer) -> Dict[str, float]:
    fill(server)
    base = make_base()
    daemon = Daemon(base, server.endpoint, workers=("watcher",), hostname="bench1")
    bus = BusClient(daemon.run_dir, ["state.domains", "state.vips", "state.sync"])
    try:
        started = time.perf_counter()
        daemon.start()

        def full() -> bool:
            bus.sub.poll(10)
            domains = bus.state("state.domains")
            vips = bus.state("state.vips")
            return (
                domains is not None
                and vips is not None
                and len(domains) >= DOMAINS
                and len(vips) >= VIPS
            )

        wait_for(full, 30, interval=0.0, what="full snapshot")
        elapsed = time.perf_counter() - started
        log_line = wait_for(
            lambda: re.search(r"watcher in sync .*", daemon.log()), 5, what="sync log line"
        )
        read_ms = float(re.search(r"read_ms=([\d.]+)", log_line.group(0)).group(1))  # type: ignore[union-attr]
        publish_ms = float(re.search(r"publish_ms=([\d.]+)", log_line.group(0)).group(1))  # type: ignore[union-attr]
        rss = rss_kib(daemon.pid("watcher"))
    finally:
        bus.close()
        daemon.close()
        shutil.rmtree(base, ignore_errors=True)
    return {
        "first_snapshot_s": elapsed,
        "read_ms": read_ms,
        "publish_ms": publish_ms,
        "rss_mib": rss / 1024,
    }


def main() -> None:
    server = EtcdServer().start()
    try:
        prop = propagation(server)
        cold = cold_start(server)
    finally:
        server.close()
    print("etcd_state: watcher propagation, etcd put -> bus subscriber state")
    print(
        f"  puts={PUTS} p50={prop['p50_ms']:.2f}ms p99={prop['p99_ms']:.2f}ms max={prop['max_ms']:.2f}ms"
        f" (target p99 <= 20ms: {'ok' if prop['p99_ms'] <= 20 else 'MISSED'})"
    )
    print(
        f"  bare etcd3 watch in-process: p50={prop['bare_p50_ms']:.2f}ms p99={prop['bare_p99_ms']:.2f}ms;"
        f" ratio watcher/bare p50={prop['p50_ms'] / max(prop['bare_p50_ms'], 1e-6):.2f}"
        f" p99={prop['p99_ms'] / max(prop['bare_p99_ms'], 1e-6):.2f}"
    )
    print(f"etcd_state: cold start with {DOMAINS} domains and {VIPS} VIPs")
    print(
        f"  daemon launch -> subscriber has the full snapshot: {cold['first_snapshot_s']:.2f}s"
        f" (target <= 2s: {'ok' if cold['first_snapshot_s'] <= 2 else 'MISSED'})"
    )
    print(
        f"  watcher range read {cold['read_ms']:.0f}ms, validate+publish {cold['publish_ms']:.0f}ms"
    )
    print(f"  watcher RSS {cold['rss_mib']:.1f} MiB")


if __name__ == "__main__":
    main()
