"""Respawn latency: SIGKILL of a worker -> its replacement's first bus message.

The real daemon runs; the worker killed is the resolv.conf keeper, which publishes its
state as soon as it starts. Target p99 <= 300 ms over 50 trials.
"""

import os
import signal
import tempfile
import time
from typing import List

import zmq

from bench.stats import percentile, summary_ms, verdict
from networkd.bus.view import BusView
from tests.support.daemon import Daemon

TRIALS = 50
WORKER = "resolvconf"


def main() -> None:
    base = tempfile.mkdtemp(prefix="networkd-bench-respawn-")
    daemon = Daemon(base, workers=(WORKER, "api")).start()
    context = zmq.Context()
    try:
        daemon.wait_running([WORKER])
        view = BusView(context, daemon.run_dir, ["state."])
        latencies: List[float] = []
        for _ in range(TRIALS):
            pid = daemon.pid(WORKER)
            deadline = time.monotonic() + 1.0
            while time.monotonic() < deadline:  # let the subscription settle
                view.poll(20)
            epoch = view.subscriber.epoch(WORKER, "state.upstreams")
            killed = time.monotonic()
            os.kill(pid, signal.SIGKILL)
            seen = None
            while seen is None and time.monotonic() - killed < 5:
                for env in view.poll(5):
                    if env.sender == WORKER and env.epoch != epoch:
                        seen = time.monotonic()
                        break
            if seen is None:
                print("  a replacement sent nothing within 5 s")
                continue
            latencies.append(seen - killed)
        view.close()
        p99 = percentile(latencies, 99) * 1000
        print(f"respawn ({WORKER}, SIGKILL -> first bus message): {summary_ms(latencies)}")
        print(f"  target p99 <= 300 ms: {verdict(p99 <= 300)}")
    finally:
        context.destroy(0)
        daemon.close()
