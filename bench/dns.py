"""Benchmark: networkd's DNS replicas against dnsmasq, side by side, same dnsperf settings.

Setup (all real, all on loopback):
- an "origin" dnsmasq on 127.x.y.z:53 holding 2,000 names to forward to;
- networkd (the real daemon: watcher, resolvconf, 2 dns replicas by default) with 2,000
  local names in etcd and resolv.conf pointing at the origin;
- a peer dnsmasq holding the same 2,000 local names (``address=``) and forwarding the
  rest to the origin (``--server``), with a cache.

Runs, each against networkd then dnsmasq with the same dnsperf command:
1. local names: QPS, lost queries, then p99 latency at a fixed rate (dnsperf -v);
2. cached forwarded names (both warmed first): the same;
3. etcd put of a new domain -> first correct answer from networkd, p50/p99 (target 50 ms).

Targets: local-name QPS ratio >= 1.0, cached-forward ratio >= 0.8, zero lost.
Run: ``python -m bench.dns`` (or ``python -m bench``). Needs root, dnsmasq and dnsperf.
"""

import json
import os
import random
import re
import shutil
import socket
import statistics
import subprocess
import tempfile
import time
from typing import Any, Dict, List, Tuple

import dns.message
import dns.query

from bench.stats import percentile, summary_ms, verdict
from tests.support.daemon import Daemon
from tests.support.dnsmasq import Dnsmasq
from tests.support.etcd import EtcdServer

NAMES = 2000
DURATION = int(os.environ.get("BENCH_DNS_SECONDS", "5"))
CLIENTS = int(os.environ.get("BENCH_DNS_CLIENTS", "32"))
OUTSTANDING = 200
LATENCY_RATE = 20000
REPLICAS = int(os.environ.get("BENCH_DNS_REPLICAS", "2"))
ROUNDS = int(os.environ.get("BENCH_DNS_ROUNDS", "3"))


def dnsperf(host: str, port: int, datafile: str, extra: List[str]) -> Dict[str, float]:
    cmd = ["dnsperf", "-s", host, "-p", str(port), "-d", datafile, *extra]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=DURATION * 4 + 60).stdout
    result: Dict[str, float] = {}
    for key, pattern in (
        ("qps", r"Queries per second:\s+([\d.]+)"),
        ("sent", r"Queries sent:\s+(\d+)"),
        ("lost", r"Queries lost:\s+(\d+)"),
        ("avg", r"Average Latency \(s\):\s+([\d.]+)"),
    ):
        match = re.search(pattern, out)
        result[key] = float(match.group(1)) if match else float("nan")
    latencies = [float(m) for m in re.findall(r"^> \S+ .* ([\d.]+)$", out, re.M)]
    if latencies:
        result["p99"] = percentile(latencies, 99)
        result["p50"] = percentile(latencies, 50)
    return result


def throughput(host: str, port: int, datafile: str) -> Dict[str, float]:
    args = ["-l", str(DURATION), "-c", str(CLIENTS), "-q", str(OUTSTANDING), "-t", "2"]
    result = dnsperf(host, port, datafile, args)
    latency = dnsperf(host, port, datafile, ["-l", "3", "-Q", str(LATENCY_RATE), "-c", "4", "-v"])
    result["p99"] = latency.get("p99", float("nan"))
    result["lost"] += latency.get("lost", 0.0)
    result["sent"] += latency.get("sent", 0.0)
    return result


def interleaved(
    host: str, port: int, peer_host: str, peer_port: int, datafile: str
) -> Tuple[Dict[str, float], Dict[str, float]]:
    """ROUNDS alternating runs (networkd, dnsmasq, networkd, ...): median QPS of each, lost
    summed, p99 of the first latency run. Alternating evens out other load on the host."""
    ours: List[Dict[str, float]] = []
    theirs: List[Dict[str, float]] = []
    for _ in range(ROUNDS):
        ours.append(throughput(host, port, datafile))
        theirs.append(throughput(peer_host, peer_port, datafile))
    return combine(ours), combine(theirs)


def combine(runs: List[Dict[str, float]]) -> Dict[str, float]:
    return {
        "qps": statistics.median(r["qps"] for r in runs),
        "lost": sum(r["lost"] for r in runs),
        "p99": statistics.median(r["p99"] for r in runs),
        "runs": len(runs),
    }


def warm(host: str, port: int, datafile: str) -> None:
    dnsperf(host, port, datafile, ["-n", "2", "-c", "4", "-q", "50", "-t", "3"])


def loopback_address() -> str:
    return f"127.{random.randrange(100, 250)}.{random.randrange(1, 250)}.{random.randrange(2, 250)}"


def row(label: str, ours: Dict[str, float], theirs: Dict[str, float], target: float) -> None:
    ratio = ours["qps"] / theirs["qps"] if theirs["qps"] else float("nan")
    print(
        f"{label:<22} networkd {ours['qps']:>9.0f} qps lost={ours['lost']:.0f} "
        f"p99={ours['p99'] * 1000:.2f}ms | dnsmasq {theirs['qps']:>9.0f} qps "
        f"lost={theirs['lost']:.0f} p99={theirs['p99'] * 1000:.2f}ms | ratio {ratio:.2f} "
        f"(target >= {target}) {verdict(ratio >= target and ours['lost'] == 0)}",
        flush=True,
    )


def put_latency(etcd: EtcdServer, host: str, port: int, count: int = 100) -> List[float]:
    client = etcd.client()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.settimeout(0.002)
    results = []
    try:
        for i in range(count):
            name = f"put{i}-{random.randrange(1 << 30)}.lat.lain"
            ip = f"10.99.{i // 250}.{i % 250 + 1}"
            query = dns.message.make_query(name, "A")
            start = time.monotonic()
            client.put(f"/lain/config/domains/{name}", json.dumps({"ips": [ip], "type": ""}))
            while time.monotonic() - start < 2.0:
                try:
                    reply = dns.query.udp(query, host, port=port, timeout=0.005)
                except Exception:
                    continue
                if reply.answer and reply.answer[0][0].to_text() == ip:
                    break
            results.append(time.monotonic() - start)
    finally:
        sock.close()
        client.close()
    return results


def main() -> None:
    for tool in ("dnsperf", "dnsmasq"):
        if shutil.which(tool) is None:
            raise RuntimeError(f"{tool} not installed: run scripts/setup.sh")
    base = tempfile.mkdtemp(prefix="bench-dns-")
    local_file = os.path.join(base, "local.txt")
    fwd_file = os.path.join(base, "fwd.txt")
    local = {f"host{i}.bench.lain": f"10.1.{i // 250}.{i % 250 + 1}" for i in range(NAMES)}
    forwarded = {f"fwd{i}.bench.example": f"10.2.{i // 250}.{i % 250 + 1}" for i in range(NAMES)}
    with open(local_file, "w") as f:
        f.writelines(f"{name} A\n" for name in local)
    with open(fwd_file, "w") as f:
        f.writelines(f"{name} A\n" for name in forwarded)

    etcd = EtcdServer().start()
    origin = Dnsmasq(
        forwarded, host=loopback_address(), port=53, local_ttl=3600, log_queries=False
    ).start()
    peer = Dnsmasq(
        local, local_ttl=600, extra_args=[f"--server={origin.host}#53"], log_queries=False
    ).start()
    daemon = None
    try:
        client = etcd.client()
        for name, ip in local.items():
            client.put(f"/lain/config/domains/{name}", json.dumps({"ips": [ip], "type": ""}))
        client.close()
        with open(os.path.join(base, "resolv.conf"), "w") as f:
            f.write(f"nameserver {origin.host}\n")
        flags: Dict[str, Any] = {
            "dns.replicas": REPLICAS,
            "resolv.conf": os.path.join(base, "resolv.conf"),
        }
        daemon = Daemon(
            os.path.join(base, "d"),
            etcd.endpoint,
            workers=("watcher", "resolvconf", "dns"),
            **flags,
        )
        daemon.start()
        names = ["watcher", "resolvconf"] + [f"dns.{i}" for i in range(REPLICAS)]
        daemon.wait_running(names, timeout=60)
        host, port = daemon.dns_addr
        deadline = time.monotonic() + 30
        probe = dns.message.make_query(f"host{NAMES - 1}.bench.lain", "A")
        while time.monotonic() < deadline:
            try:
                if dns.query.udp(probe, host, port=port, timeout=0.5).answer:
                    break
            except Exception:
                pass
            time.sleep(0.1)
        print(
            f"dns: {NAMES} names, {REPLICAS} replicas, dnsperf -c {CLIENTS} -q {OUTSTANDING} "
            f"-l {DURATION}, {ROUNDS} alternating rounds (median); p99 at {LATENCY_RATE} qps; "
            f"{os.cpu_count()} cores"
        )
        results: Dict[str, Tuple[Dict[str, float], Dict[str, float]]] = {}
        for label, datafile, target in (
            ("local names", local_file, 1.0),
            ("cached forwarded", fwd_file, 0.8),
        ):
            warm(host, port, datafile)
            warm(peer.host, peer.port, datafile)
            ours, theirs = interleaved(host, port, peer.host, peer.port, datafile)
            results[label] = (ours, theirs)
            row(label, ours, theirs, target)
        lat = put_latency(etcd, host, port)
        p99 = percentile(lat, 99)
        print(
            f"etcd put -> first correct answer: {summary_ms(lat)} (target p99 <= 50 ms) "
            f"{verdict(p99 <= 0.05)}"
        )
    finally:
        if daemon is not None:
            daemon.close()
        peer.close()
        origin.close()
        etcd.close()
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
