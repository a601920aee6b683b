"""What an idle node costs: CPU of the whole daemon (every worker) with nothing changing,
per process, beside dnsmasq idle on the same machine in the same window.

networkd starts against a one-member etcd with no VIP and no domain; after it settles,
each process's user + system time over ``NETWORKD_BENCH_IDLE_SECONDS`` (default 30) is
divided by the wall time. What remains when nothing happens: etcd's gRPC threads, the
probes that detect a dead etcd peer (the watcher's and the elector's mirror, issue 15),
lease renewals (every TTL/4), the supervisor's 100 ms timer tick and resolv.conf checks
(every 0.2 s). Run: ``python -m bench idle``.
"""

import os
import shutil
import tempfile
import time
from typing import Dict, List, Tuple

from tests.support.daemon import Daemon
from tests.support.dnsmasq import Dnsmasq
from tests.support.etcd import EtcdServer

SECONDS = float(os.environ.get("NETWORKD_BENCH_IDLE_SECONDS", "30"))
SETTLE = 10.0
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def titled(prefix: str) -> Dict[int, str]:
    """pid -> process title, for the processes whose title starts with ``prefix``."""
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                title = f.read().split(b"\0")[0].decode(errors="replace")
        except OSError:
            continue
        if title.startswith(prefix):
            found[int(entry)] = title.split(" -")[0]
    return found


def measure(pids: Dict[int, str], seconds: float) -> Tuple[List[Tuple[str, float]], float]:
    before = {pid: cpu_seconds(pid) for pid in pids}
    started = time.monotonic()
    time.sleep(seconds)
    elapsed = time.monotonic() - started
    rows = [(pids[p], (cpu_seconds(p) - before[p]) / elapsed * 100) for p in pids]
    return sorted(rows), sum(r[1] for r in rows)


def main() -> None:
    base = tempfile.mkdtemp(prefix="networkd-bench-idle-")
    etcd = EtcdServer(os.path.join(base, "etcd"))
    daemon = Daemon(os.path.join(base, "node"), etcd_endpoint=etcd.endpoint, workers=())
    peer = Dnsmasq(log_queries=False)
    try:
        daemon.start()
        daemon.wait_running(timeout=30)
        peer.start()
        assert peer.proc is not None
        time.sleep(SETTLE)
        pids = titled("networkd: ")
        pids[peer.proc.pid] = "dnsmasq (peer)"
        rows, _ = measure(pids, SECONDS)
        ours = sum(share for name, share in rows if name.startswith("networkd"))
        print(f"idle CPU over {SECONDS:.0f} s, % of one core ({os.cpu_count()} cores):")
        for name, share in rows:
            print(f"  {name:<28} {share:5.2f} %")
        print(f"  networkd, every process      {ours:5.2f} %  (dnsmasq alone: "
              f"{dict(rows).get('dnsmasq (peer)', 0.0):.2f} %)")  # fmt: skip
    finally:
        peer.close()
        daemon.close()
        etcd.close()
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
