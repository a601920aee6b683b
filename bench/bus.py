"""Bus benchmark: publish->receive latency at 1,000 msg/s, and the rate one publisher
sustains to three subscribers. Publisher and subscribers are separate processes on real
ipc sockets, as the workers are."""

import multiprocessing
import os
import tempfile
import time
from typing import Any, List

from bench.stats import percentile, summary_ms, verdict

LATENCY_RATE = 1000
LATENCY_SECONDS = 3.0
THROUGHPUT_MESSAGES = 60_000


def _publisher(run_dir: str, rate: float, count: int, ready: Any, go: Any) -> None:
    import zmq

    from networkd.bus.messages import DomainEntry
    from networkd.bus.publisher import Publisher

    ctx = zmq.Context()
    pub = Publisher(ctx, run_dir, "watcher")
    topic = pub.state("state.domains")
    topic.replace({})  # the first publication (a snapshot); what follows are deltas
    ready.set()
    go.wait()
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline:  # let subscribers join
        pub.poll(10)
    interval = 1.0 / rate if rate else 0.0
    next_send = time.monotonic()
    for i in range(count):
        if interval:
            delay = next_send - time.monotonic()
            if delay > 0:
                time.sleep(delay)  # pace without spinning: the subscriber needs the CPU
            next_send += interval
        topic.set(
            f"n{i % 500}",
            DomainEntry(f"n{i % 500}", [f"10.0.{i % 250}.{i % 200}"], str(time.time())),
        )
        if i % 64 == 0:
            pub.poll()
    end = time.monotonic() + 1.0
    while time.monotonic() < end:
        pub.poll(10)
    pub.close()
    ctx.destroy(0)


def _subscriber(run_dir: str, count: int, results: Any, ready: Any) -> None:
    import zmq

    from networkd.bus.subscriber import Subscriber

    ctx = zmq.Context()
    sub = Subscriber(ctx, run_dir, {"watcher": ["state.domains"]})
    ready.set()
    latencies: List[float] = []
    received = 0
    first = last = 0.0
    deadline = time.monotonic() + 60
    while received < count and time.monotonic() < deadline:
        for env in sub.poll(100):
            if env.kind != "delta":
                continue
            now = time.time()
            for item in env.body["set"].values():
                latencies.append(now - float(item.type))
            received += 1
            last = time.monotonic()
            first = first or last
    results.put((received, last - first, latencies))
    sub.close()
    ctx.destroy(0)


def run(rate: float, count: int, subscribers: int) -> List[Any]:
    mp = multiprocessing.get_context("spawn")
    run_dir = tempfile.mkdtemp(prefix="networkd-bench-bus-")
    results = mp.Queue()
    pub_ready, go = mp.Event(), mp.Event()
    subs_ready = [mp.Event() for _ in range(subscribers)]
    pub = mp.Process(target=_publisher, args=(run_dir, rate, count, pub_ready, go))
    pub.start()
    pub_ready.wait(10)
    procs = [
        mp.Process(target=_subscriber, args=(run_dir, count, results, ev)) for ev in subs_ready
    ]
    for p in procs:
        p.start()
    for ev in subs_ready:
        ev.wait(10)
    go.set()
    out = [results.get(timeout=120) for _ in procs]
    for p in procs + [pub]:
        p.join(10)
    os.system(f"rm -rf {run_dir}")
    return out


def main() -> None:
    count = int(LATENCY_RATE * LATENCY_SECONDS)
    [(received, _, latencies)] = run(LATENCY_RATE, count, 1)
    p99 = percentile(latencies, 99) * 1000
    print(
        f"bus latency at {LATENCY_RATE} msg/s: {summary_ms(latencies)} received={received}/{count}"
    )
    print(f"  target p99 <= 2 ms: {verdict(p99 <= 2.0)}")
    results = run(0, THROUGHPUT_MESSAGES, 3)
    rates = [received / elapsed if elapsed else 0.0 for received, elapsed, _ in results]
    lost = sum(THROUGHPUT_MESSAGES - r for r, _, _ in results)
    print(
        f"bus throughput, 1 publisher -> 3 subscribers: {min(rates):,.0f} msg/s sustained "
        f"(per subscriber {', '.join(f'{r:,.0f}' for r in rates)}), lost={lost}"
    )
