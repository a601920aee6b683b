"""Benchmark: what N networkd nodes cost a 3-member etcd cluster, and how fast they converge.

N simulated nodes (``tests/support/simnode.py``: each runs networkd's real watcher reader
and cluster state, and its real elector core with lease keeper, key mirror and lock
transactions; a recorder stands in for the applier) against a real 3-member etcd cluster
on loopback. The workload (``tests/support/simworkload.py``): 4 VIPs per 10 nodes, a
quarter of them on a 4-node webrouter, deployd-shaped pod groups (n/2 apps).

Per N it prints, from etcd's own /metrics (summed over the members):
- steady state: requests/s by kind (keep-alives, watch messages, probe reads, writes) and
  bytes/s; writes must be zero;
- pod_groups changes (redeploys of VIP apps): watch events etcd sent, bytes, and the time
  from the put until each node's elector had the new state (p50/p99/max over nodes x
  changes);
- owner kills (the node with the most VIPs, then a single-VIP owner): time from the kill
  until each of its VIPs is bound on another node;
- the etcd leader killed: VIP moves, the longest time a VIP had no bound holder, leases
  lost, elector restarts;
- per node: RSS (process RSS / nodes) and CPU (process CPU / nodes / s) in steady state,
  and etcd's own CPU.

Then a fit per figure (growth exponent from the log-log slope, linear fit) and the
forecast for 500 and 1,000 nodes.

``python -m bench scale`` (sizes from ``NETWORKD_SCALE_SIZES``, default 25,50,75,100,200;
``NETWORKD_SCALE_KEEP=1`` keeps the node hosts' logs, ``NETWORKD_SIM_LOG=info`` makes
them verbose, ``NETWORKD_SCALE_START_RATE`` sets the node starts per second over all
processes, default 4 per second per process).
"""

import math
import os
import shutil
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Set, Tuple

from bench.stats import percentile
from networkd import keys
from tests.support.etcd import EtcdCluster, Metrics
from tests.support.simnode import HostPool
from tests.support.simworkload import Workload, node_name

SIZES = (25, 50, 75, 100, 200)
PER_HOST = 25
START_GAP = 0.25  # seconds between two node starts in one host (4 hosts: 16 nodes/s)
# NETWORKD_SCALE_START_RATE: node starts per second over all hosts instead (each start
# wakes every started node's elector: the simulation's start costs O(N) per start on the
# machine's two cores, where a real node's costs its own CPU)
START_RATE = float(os.environ.get("NETWORKD_SCALE_START_RATE", "0") or 0)
TTL = 2.0
STEADY_S = 20.0
CHANGES = 5
OWNER_KILLS = 2
LEADER_OBSERVE_S = 12.0
TICKS = os.sysconf("SC_CLK_TCK")

# gRPC methods of etcd, by what networkd uses them for
KEEPALIVE = ("LeaseKeepAlive",)
WATCH = ("Watch",)
READS = ("Range",)
WRITES = ("Txn", "Put", "DeleteRange", "LeaseGrant", "LeaseRevoke")


def _sum(metrics: Sequence[Metrics]) -> Metrics:
    total: Metrics = {}
    for member in metrics:
        for key, value in member.items():
            total[key] = total.get(key, 0.0) + value
    return total


def _counted(a: Dict[int, Metrics], b: Dict[int, Metrics]) -> Tuple[Metrics, Metrics]:
    """Sums over the members alive at both moments (a killed member's counters are gone)."""
    both = sorted(set(a) & set(b))
    return _sum([a[i] for i in both]), _sum([b[i] for i in both])


def by_method(metrics: Metrics, name: str) -> Dict[str, float]:
    out: Dict[str, float] = {}
    for (metric, labels), value in metrics.items():
        if metric == name:
            method = dict(labels).get("grpc_method", "")
            out[method] = out.get(method, 0.0) + value
    return out


def scalar(metrics: Metrics, name: str) -> float:
    return sum(v for (metric, _labels), v in metrics.items() if metric == name)


def proc_cpu_s(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICKS


def proc_rss_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


@dataclass
class Moment:
    at: float
    members: Dict[int, Metrics]
    host_cpu: float
    etcd_cpu: float


def moment(cluster: EtcdCluster, pool: HostPool) -> Moment:
    usage = pool.ask("usage")
    return Moment(
        at=time.monotonic(),
        members=cluster.metrics(),
        host_cpu=sum(u["cpu_s"] for u in usage),
        etcd_cpu=sum(proc_cpu_s(pid) for pid in cluster.pids()),
    )


def delta(a: Moment, b: Moment, name: str) -> Dict[str, float]:
    """Per gRPC method, how much counter ``name`` grew from ``a`` to ``b``."""
    ma, mb = _counted(a.members, b.members)
    before = by_method(ma, name)
    after = by_method(mb, name)
    return {k: after.get(k, 0.0) - before.get(k, 0.0) for k in after}


def grew(a: Moment, b: Moment, name: str) -> float:
    ma, mb = _counted(a.members, b.members)
    return scalar(mb, name) - scalar(ma, name)


def pick(counts: Dict[str, float], methods: Sequence[str]) -> float:
    return sum(counts.get(m, 0.0) for m in methods)


@dataclass
class Result:
    n: int
    hosts: int = 0
    converge_s: float = 0.0
    steady: Dict[str, float] = field(default_factory=dict)
    change: Dict[str, float] = field(default_factory=dict)
    change_delays: List[float] = field(default_factory=list)
    delivery_delays: List[float] = field(default_factory=list)
    kill_delays: List[float] = field(default_factory=list)
    kill_vips: List[int] = field(default_factory=list)
    leader: Dict[str, float] = field(default_factory=dict)
    notes: List[str] = field(default_factory=list)
    steady_writes: Dict[str, float] = field(default_factory=dict)  # method -> count


class Run:
    """One N: cluster, workload, node hosts, measurements."""

    def __init__(
        self,
        n: int,
        steady_s: float = STEADY_S,
        changes: int = CHANGES,
        owner_kills: int = OWNER_KILLS,
        leader_observe_s: float = LEADER_OBSERVE_S,
    ) -> None:
        self.n = n
        self.steady_s = steady_s
        self.change_count = changes
        self.owner_kill_count = owner_kills
        self.leader_observe_s = leader_observe_s
        self.result = Result(n)
        self.base = tempfile.mkdtemp(prefix="networkd-scale-")
        self.killed: Set[str] = set()
        self.pool: Optional[HostPool] = None
        self.cluster = EtcdCluster()
        try:
            self.cluster.start()
            self.client = self.cluster.client()
            self.workload = Workload(n, self.cluster.endpoints)
            self.workload.load(self.client)
            state_dir = os.path.join(self.base, "state")
            started = time.monotonic()
            hosts = math.ceil(n / PER_HOST)
            gap = hosts / START_RATE if START_RATE > 0 else START_GAP
            self.pool = HostPool(self.workload.specs(), PER_HOST, state_dir, TTL, self.base, gap)
            self.result.hosts = len(self.pool.procs)
            self.result.converge_s = self.converge(started, timeout=60 + n * 1.0)
        except BaseException:
            self.close()
            raise

    @property
    def hosts(self) -> HostPool:
        assert self.pool is not None
        return self.pool

    def close(self) -> None:
        try:
            if self.pool is not None:
                self.pool.close()
            client = getattr(self, "client", None)
            if client is not None:
                client.close()
        finally:
            self.cluster.close()
        if os.environ.get("NETWORKD_SCALE_KEEP"):
            print(f"scale: N={self.n} node-host logs kept in {self.base}")
        else:
            shutil.rmtree(self.base, ignore_errors=True)

    # -- convergence ---------------------------------------------------------------------

    def holders(self) -> Dict[str, List[str]]:
        out: Dict[str, List[str]] = {ip: [] for ip in self.workload.vips}
        for name, st in self.hosts.merged("status").items():
            if st["killed"]:
                continue
            for ip in st["bound"]:
                out.setdefault(ip, []).append(name)
        return out

    def spread(self, holders: Dict[str, List[str]]) -> bool:
        """No live node holds more than ceil(VIPs of a proc / its live nodes)."""
        for app in self.workload.apps:
            if not app.vips:
                continue
            nodes = [n for n in app.nodes if node_name(n) not in self.killed]
            share = -(-len(app.vips) // max(1, len(nodes)))
            counts: Dict[str, int] = {}
            for ip in app.vips:
                for name in holders.get(ip, []):
                    counts[name] = counts.get(name, 0) + 1
            if counts and max(counts.values()) > share:
                return False
        return True

    def converge(self, since: float, timeout: float, quiet: float = 3.0) -> float:
        """Seconds until every node is ready, every VIP bound once, ownership spread, and
        nothing moved for ``quiet`` seconds (counted from ``since``, the quiet period
        excluded)."""
        deadline = time.monotonic() + timeout
        last: Optional[Dict[str, List[str]]] = None
        stable_since = time.monotonic()
        while time.monotonic() < deadline:
            status = self.hosts.merged("status")
            ready = all(st["ready"] for st in status.values() if not st["killed"])
            holders = self.holders()
            once = all(len(v) == 1 for v in holders.values())
            if holders != last or not (ready and once and self.spread(holders)):
                last = holders
                stable_since = time.monotonic()
            elif time.monotonic() - stable_since >= quiet:
                return stable_since - since
            time.sleep(0.25)
        raise RuntimeError(
            f"N={self.n}: no convergence within {timeout:.0f}s: {last}; {self.diagnose(last or {})}"
        )

    def diagnose(self, holders: Dict[str, List[str]]) -> str:
        """For each VIP not bound exactly once (or of a proc not spread): who holds its lock
        in etcd, and what the nodes that bind it, or could, think (their controller state)."""
        lines = []
        asked: Set[str] = set()
        spread = self.spread(holders)
        for app in self.workload.apps:
            for ip in app.vips:
                names = holders.get(ip, [])
                if len(names) == 1 and spread:
                    continue
                value, _meta = self.client.get(keys.vip_lock(ip))
                owner = value.decode(errors="replace") if value is not None else None
                lines.append(f"{ip}: bound on {names}, lock {owner}")
                alive = [node_name(n) for n in app.nodes if node_name(n) not in self.killed]
                asked.update(names if names else alive)
                if not spread:
                    asked.update(alive)
        for name in sorted(asked):
            lines.append(f"{name}: {self.hosts.merged('inspect', name).get(name)}")
        return "\n".join(lines)

    # -- steady state --------------------------------------------------------------------

    def steady(self) -> None:
        a = moment(self.cluster, self.hosts)
        time.sleep(self.steady_s)
        b = moment(self.cluster, self.hosts)
        span = b.at - a.at
        received = delta(a, b, "grpc_server_msg_received_total")
        started = delta(a, b, "grpc_server_started_total")
        sent_bytes = grew(a, b, "etcd_network_client_grpc_sent_bytes_total")
        recv_bytes = grew(a, b, "etcd_network_client_grpc_received_bytes_total")
        committed = grew(a, b, "etcd_server_proposals_committed_total")
        usage = self.hosts.ask("usage")
        nodes = sum(u["nodes"] for u in usage)
        total = sum(received.values())
        self.result.steady_writes = {m: received[m] for m in WRITES if received.get(m)}
        expired = grew(a, b, "etcd_debugging_server_lease_expired_total")
        self.result.steady = {
            "req_s": total / span,
            "keepalive_s": pick(received, KEEPALIVE) / span,
            "keepalive_streams_s": pick(started, KEEPALIVE) / span,
            "watch_msgs_s": pick(received, WATCH) / span,
            "reads_s": pick(received, READS) / span,
            "writes_s": pick(received, WRITES) / span,
            "other_s": (total - pick(received, KEEPALIVE + WATCH + READS + WRITES)) / span,
            "raft_commits_s": committed / 3 / span,  # every member commits each entry
            "sent_bps": sent_bytes / span,
            "recv_bps": recv_bytes / span,
            "etcd_cpu": (b.etcd_cpu - a.etcd_cpu) / span,
            "etcd_rss_mib": sum(proc_rss_kib(p) for p in self.cluster.pids()) / 1024,
            "node_cpu_pct": (b.host_cpu - a.host_cpu) / span / nodes * 100,
            "node_rss_mib": sum(u["rss_kib"] for u in usage) / 1024 / nodes,
            "threads_per_node": sum(u["threads"] for u in usage) / nodes,
            "leases_expired": expired,
        }

    # -- pod_groups changes --------------------------------------------------------------

    def changes(self) -> None:
        apps = [a for a in self.workload.apps if a.vips and a.name != "webrouter"]
        a = moment(self.cluster, self.hosts)
        delays: List[float] = []
        delivered: List[float] = []
        events_before = sum(st["events"] for st in self.hosts.merged("status").values())
        for i in range(self.change_count):
            key, value = self.workload.redeploy(apps[i % len(apps)])
            started = time.monotonic()
            revision = int(self.client.put(key, value).header.revision)
            deadline = started + 10.0
            while True:
                reached = self.hosts.merged("reached", revision)
                if all(t is not None for t in reached.values()):
                    break
                if time.monotonic() > deadline:
                    missing = sorted(k for k, t in reached.items() if t is None)
                    readers = self.hosts.merged("readers", missing[:5])
                    raise RuntimeError(
                        f"pod_groups change (revision {revision}) not applied by "
                        f"{len(missing)} nodes, e.g. {readers}"
                    )
                time.sleep(0.05)
            delays.extend(t - started for t in reached.values() if t is not None)
            got = self.hosts.merged("delivered", revision)
            delivered.extend(t - started for t in got.values() if t is not None)
            time.sleep(1.0)
        b = moment(self.cluster, self.hosts)
        span = b.at - a.at
        steady = self.result.steady
        sent = grew(a, b, "etcd_network_client_grpc_sent_bytes_total")
        events = grew(a, b, "etcd_debugging_mvcc_events_total")
        received = sum(st["events"] for st in self.hosts.merged("status").values()) - events_before
        self.result.change_delays = delays
        self.result.delivery_delays = delivered
        self.result.change = {
            "value_bytes": float(len(value)),
            "events_sent": events / self.change_count,
            "events_received": received / self.change_count,
            "bytes_sent": max(0.0, sent - steady["sent_bps"] * span) / self.change_count,
        }

    # -- owner kills ---------------------------------------------------------------------

    def owner_kills(self) -> None:
        for round_ in range(self.owner_kill_count):
            status = self.hosts.merged("status")
            alive = {k: v for k, v in status.items() if not v["killed"]}
            if round_ == 0:
                victim = max(alive, key=lambda k: (len(alive[k]["bound"]), k))
            else:
                singles = [k for k, v in alive.items() if len(v["bound"]) == 1]
                victim = (
                    sorted(singles)[0]
                    if singles
                    else max(alive, key=lambda k: len(alive[k]["bound"]))
                )
            lost = list(alive[victim]["bound"])
            started = time.monotonic()
            self.hosts.kill(victim)
            self.killed.add(victim)
            taken: Dict[str, float] = {}
            deadline = started + 20.0
            while len(taken) < len(lost) and time.monotonic() < deadline:
                for name, entries in self.hosts.merged("timeline", started).items():
                    for at, ip, bound in entries:
                        if bound and ip in lost and name != victim and ip not in taken:
                            taken[ip] = at
                time.sleep(0.05)
            if len(taken) < len(lost):
                self.result.notes.append(
                    f"kill {victim}: {len(lost) - len(taken)} VIPs without owner after 20 s"
                )
            self.result.kill_delays.extend(t - started for t in taken.values())
            self.result.kill_vips.append(len(lost))
            self.converge(time.monotonic(), timeout=60)

    # -- etcd leader kill ----------------------------------------------------------------

    def leader_kill(self) -> None:
        before = self.holders()
        status = self.hosts.merged("status")
        restarts_before = sum(st["restarts"] for st in status.values())
        a = moment(self.cluster, self.hosts)
        leader = self.cluster.wait_leader()
        started = time.monotonic()
        self.cluster.kill(leader)
        time.sleep(self.leader_observe_s)
        timeline = self.hosts.merged("timeline", started)
        b = moment(self.cluster, self.hosts)
        status = self.hosts.merged("status")
        moves, gap = moves_and_gap(before, timeline, started, time.monotonic())
        expired = grew(a, b, "etcd_debugging_server_lease_expired_total")
        self.result.leader = {
            "moves": float(moves),
            "no_owner_s": gap,
            "leases_expired": expired,
            "elector_restarts": float(
                sum(st["restarts"] for st in status.values()) - restarts_before
            ),
        }


def moves_and_gap(
    before: Dict[str, List[str]],
    timeline: Dict[str, List[Tuple[float, str, bool]]],
    start: float,
    end: float,
) -> Tuple[int, float]:
    """VIP moves (binds on a node other than the holder at ``start``) and the longest
    time any VIP had no bound holder, from the recorders' timelines."""
    events = sorted(
        (at, ip, node, bound) for node, entries in timeline.items() for at, ip, bound in entries
    )
    holders = {ip: set(nodes) for ip, nodes in before.items()}
    first = {ip: (nodes[0] if nodes else "") for ip, nodes in before.items()}
    empty_since: Dict[str, float] = {ip: start for ip, nodes in holders.items() if not nodes}
    moves = 0
    longest = 0.0
    for at, ip, node, bound in events:
        current = holders.setdefault(ip, set())
        if bound:
            if node != first.get(ip, ""):
                moves += 1
            if not current and ip in empty_since:
                longest = max(longest, at - empty_since.pop(ip))
            current.add(node)
        else:
            current.discard(node)
            if not current:
                empty_since[ip] = at
    for since in empty_since.values():
        longest = max(longest, end - since)
    return moves, longest


def measure(n: int) -> Result:
    run = Run(n)
    try:
        run.steady()
        run.changes()
        run.owner_kills()
        run.leader_kill()
    finally:
        run.close()
    return run.result


# -- report ----------------------------------------------------------------------------


def fit(ns: Sequence[int], values: Sequence[float]) -> Tuple[float, float, float]:
    """(log-log slope, linear a, linear b) of ``values`` over ``ns``: value ~ a*N + b."""
    pairs = [(n, v) for n, v in zip(ns, values) if v > 0]
    slope = float("nan")
    if len(pairs) >= 2:
        xs = [math.log(n) for n, _ in pairs]
        ys = [math.log(v) for _, v in pairs]
        mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
        sxx = sum((x - mx) ** 2 for x in xs)
        slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx if sxx else float("nan")
    mx = sum(ns) / len(ns)
    my = sum(values) / len(values)
    sxx = sum((x - mx) ** 2 for x in ns)
    a = sum((x - mx) * (y - my) for x, y in zip(ns, values)) / sxx if sxx else 0.0
    return slope, a, my - a * mx


ROWS: List[Tuple[str, str, str]] = [
    # (label, source, format)
    ("etcd requests/s (all)", "steady.req_s", "{:.0f}"),
    ("  keep-alives/s", "steady.keepalive_s", "{:.0f}"),
    ("  watch messages/s (progress requests)", "steady.watch_msgs_s", "{:.0f}"),
    ("  probe reads/s (Range)", "steady.reads_s", "{:.0f}"),
    ("  writes/s (Txn, Put, Delete, lease grant/revoke)", "steady.writes_s", "{:.2f}"),
    ("  other/s", "steady.other_s", "{:.2f}"),
    ("raft commits/s", "steady.raft_commits_s", "{:.2f}"),
    (
        "etcd sent KiB/s",
        "steady.sent_bps",
        "{:.0f}",
    ),
    ("etcd received KiB/s", "steady.recv_bps", "{:.0f}"),
    ("etcd CPU (cores, 3 members)", "steady.etcd_cpu", "{:.2f}"),
    ("etcd RSS MiB (3 members)", "steady.etcd_rss_mib", "{:.0f}"),
    ("node CPU % of a core", "steady.node_cpu_pct", "{:.2f}"),
    ("node RSS MiB (process RSS / nodes)", "steady.node_rss_mib", "{:.1f}"),
    ("pod_groups change: watch events sent", "change.events_sent", "{:.0f}"),
    ("pod_groups change: KiB sent by etcd", "change.bytes_sent", "{:.0f}"),
    ("pod_groups change -> node p50 ms", "change_p50", "{:.0f}"),
    ("pod_groups change -> node p99 ms", "change_p99", "{:.0f}"),
    ("pod_groups change -> node max ms", "change_max", "{:.0f}"),
    ("  of which etcd -> node's watcher p50 ms", "delivery_p50", "{:.0f}"),
    ("  of which etcd -> node's watcher p99 ms", "delivery_p99", "{:.0f}"),
    ("owner killed -> new owner p50 s", "kill_p50", "{:.2f}"),
    ("owner killed -> new owner p99 s", "kill_p99", "{:.2f}"),
    ("owner killed -> new owner max s", "kill_max", "{:.2f}"),
    ("etcd leader killed: VIP moves", "leader.moves", "{:.0f}"),
    ("etcd leader killed: longest no-owner s", "leader.no_owner_s", "{:.2f}"),
    ("etcd leader killed: leases expired", "leader.leases_expired", "{:.0f}"),
    ("etcd leader killed: elector restarts", "leader.elector_restarts", "{:.0f}"),
]


def value_of(result: Result, source: str) -> float:
    if source.startswith("delivery_"):
        pct = {"p50": 50, "p99": 99, "max": 100}[source.split("_")[1]]
        delays = result.delivery_delays
        return percentile(delays, pct) * 1000 if delays else float("nan")
    if source.startswith("change_"):
        pct = {"p50": 50, "p99": 99, "max": 100}[source.split("_")[1]]
        return percentile(result.change_delays, pct) * 1000
    if source.startswith("kill_"):
        pct = {"p50": 50, "p99": 99, "max": 100}[source.split("_")[1]]
        return percentile(result.kill_delays, pct) if result.kill_delays else float("nan")
    section, name = source.split(".")
    value = getattr(result, section).get(name, float("nan"))
    if name.endswith("bps") or name == "bytes_sent":
        value /= 1024
    return float(value)


GROWS = {"steady.req_s", "steady.keepalive_s", "steady.watch_msgs_s", "steady.reads_s",
         "steady.sent_bps", "steady.recv_bps", "steady.etcd_cpu", "steady.node_cpu_pct",
         "steady.node_rss_mib", "change.events_sent", "change.bytes_sent", "change_p99",
         "delivery_p99", "kill_max"}  # fmt: skip


FLAT_BELOW = 0.5  # a growth exponent below this is noise around a constant


def report(results: Sequence[Result]) -> None:
    ns = [r.n for r in results]
    head = f"{'N':<52}" + "".join(f"{n:>9}" for n in ns)
    print(head)
    for label, source, fmt in ROWS:
        cells = "".join(f"{fmt.format(value_of(r, source)):>9}" for r in results)
        print(f"{label:<52}{cells}")
    for r in results:
        print(
            f"N={r.n}: {r.hosts} processes, converged in {r.converge_s:.1f}s,"
            f" {r.steady.get('threads_per_node', 0):.1f} threads/node,"
            f" keep-alive streams/s {r.steady.get('keepalive_streams_s', 0):.0f},"
            f" change value {r.change.get('value_bytes', 0) / 1024:.1f} KiB,"
            f" events received by nodes per change {r.change.get('events_received', 0):.0f},"
            f" VIPs per killed owner {r.kill_vips}, pod_groups samples {len(r.change_delays)},"
            f" kill samples {len(r.kill_delays)}"
        )
        if r.steady_writes:
            print(
                f"  steady-state writes by method {r.steady_writes},"
                f" leases expired meanwhile {r.steady.get('leases_expired', 0):.0f}"
            )
        for note in r.notes:
            print(f"  note: {note}")
    if len(results) < 2:
        return
    print(
        "fit (growth exponent from the log-log slope; linear fit a*N+b) and forecast"
        f" (exponent < {FLAT_BELOW}: taken as flat, the largest measured value):"
    )
    for label, source, fmt in ROWS:
        if source not in GROWS:
            continue
        values = [value_of(r, source) for r in results]
        if any(math.isnan(v) for v in values):
            continue
        slope, a, b = fit(ns, values)
        if slope < FLAT_BELOW:
            forecast = f"flat: {fmt.format(max(values))}"
        else:
            forecast = "  ".join(f"N={m}: {fmt.format(a * m + b)}" for m in (500, 1000))
        print(f"  {label.strip():<50} ~N^{slope:.2f}  a={a:.4g} b={b:.4g}  {forecast}")


def sizes() -> List[int]:
    text = os.environ.get("NETWORKD_SCALE_SIZES", "")
    return [int(x) for x in text.split(",") if x.strip()] or list(SIZES)


def main() -> None:
    results = []
    for n in sizes():
        started = time.monotonic()
        try:
            results.append(measure(n))
        except Exception as exc:  # print what was measured so far
            print(f"scale: N={n} failed: {exc!r}")
            traceback.print_exc()  # where: the phase it failed in
            break
        print(f"scale: N={n} measured in {time.monotonic() - started:.0f}s", flush=True)
    report(results)


if __name__ == "__main__":
    main()
