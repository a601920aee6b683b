"""Simulated networkd nodes: the real watcher and elector logic, many per process.

Per node, everything that talks to etcd is networkd's own code, on its own channels:

- the watcher's ``EtcdReader`` (its channel, its watch of every range, its liveness
  probes) feeding the watcher's ``StatePublisher`` (validation, ``ClusterState``) into a
  ``LocalPublisher`` instead of the bus;
- the elector's ``ElectorCore`` (lease keeper, key mirror with its watchdog, controller,
  each on its own channel) fed by the elector worker's ``InputFeed`` from that state;
- a ``Recorder`` in place of the applier: it binds what the elector desires at once,
  echoes ``state.applied`` and ``state.applied_rev`` as the applier would (a released
  VIP's lock is deleted only after that echo) and records every bind and unbind.

When the lease keeper had to switch endpoints, the real elector worker exits and is
started again (resuming its lease); a simulated node does the same with a new core.

``NodeHost`` runs a group of nodes in one process (``host_main``, driven through a pipe);
``HostPool`` starts the processes and asks all of them. A "kill" stops a node's threads
and channels without revoking its lease, as a node that lost power: its keys go when the
lease runs out on the server.
"""

import collections
import logging
import multiprocessing
import os
import queue
import resource
import threading
import time
from dataclasses import dataclass
from typing import Any, Deque, Dict, List, Optional, Sequence, Set, Tuple

from networkd import keys
from networkd.bus.messages import AppliedRevision, AppliedVip
from networkd.config import Config

OUTPUT = "elector-output"  # inbox marker: the controller published new outputs


@dataclass(frozen=True)
class NodeSpec:
    hostname: str
    address: str
    endpoints: Tuple[str, ...]


class LocalTopic:
    """The part of the bus ``StateTopic`` the watcher's publisher uses, kept in memory."""

    def __init__(self) -> None:
        self.items: Dict[str, Any] = {}

    def set(self, key: str, item: Any) -> None:
        self.items[key] = item

    def update(self, sets: Dict[str, Any], deleted: Sequence[str]) -> None:
        self.items.update(sets)
        for key in deleted:
            self.items.pop(key, None)

    def replace(self, items: Dict[str, Any]) -> None:
        self.items = dict(items)

    def send_snapshot(self) -> None:
        pass


class LocalPublisher:
    """Stands in for the watcher's bus publisher: topics exist once first published."""

    def __init__(self) -> None:
        self.topics: Dict[str, LocalTopic] = {}

    def state(self, topic: str) -> LocalTopic:
        return self.topics.setdefault(topic, LocalTopic())

    def event(self, topic: str, message: Any) -> None:
        pass


class Recorder:
    """The applier's part as the elector sees it: what is bound, and the echoed revision."""

    def __init__(self, hostname: str) -> None:
        self.hostname = hostname
        self.epoch = 0.0
        self.version = -1
        self.bound: Set[str] = set()
        self.applied: Optional[Dict[str, AppliedVip]] = None
        self.applied_rev: Optional[AppliedRevision] = None
        self.timeline: List[Tuple[float, str, bool]] = []  # (monotonic time, ip, bound)

    def new_elector(self, epoch: float) -> None:
        """A restarted elector: its revisions start again; the host keeps its addresses."""
        self.epoch = epoch
        self.version = -1

    def apply(self, out: Any) -> bool:
        """Match the host to ``out.desired`` (when the elector is ready); True if changed."""
        if not out.ready or out.version == self.version:
            return False
        self.version = out.version
        want = {item.ip for item in out.desired.values() if item.bind}
        now = time.monotonic()
        for ip in sorted(self.bound - want):
            self.timeline.append((now, ip, False))
        for ip in sorted(want - self.bound):
            self.timeline.append((now, ip, True))
        self.bound = want
        self.applied = {
            key: AppliedVip(ip=item.ip, bound=item.bind, rules=len(item.ports))
            for key, item in out.desired.items()
        }
        self.applied_rev = AppliedRevision(epoch=self.epoch, rev=out.version)
        return True


class LocalView:
    """The subscriber the elector's ``read_inputs`` reads: watcher and applier state."""

    def __init__(self, watcher: LocalPublisher, recorder: Recorder) -> None:
        self.watcher = watcher
        self.recorder = recorder

    def state(self, sender: str, topic: str) -> Optional[Dict[str, Any]]:
        if sender == "watcher":
            found = self.watcher.topics.get(topic)
            return found.items if found is not None else None
        if topic == "state.applied":
            return self.recorder.applied
        if topic == "state.applied_rev" and self.recorder.applied_rev is not None:
            return {"rev": self.recorder.applied_rev}
        return None


class DeliveryQueue(queue.Queue):
    """The node's inbox, noting when the watcher's reader handed over each batch of watch
    events (its thread, as etcd's response arrived): etcd's delivery, before the node's
    own processing, which in the simulation waits for the other nodes of its process."""

    def __init__(self) -> None:
        super().__init__()
        self.delivered: Deque[Tuple[float, int]] = collections.deque(maxlen=20000)

    def put(self, item: Any, block: bool = True, timeout: Optional[float] = None) -> None:
        revision = getattr(item, "revision", None)
        if revision is not None and hasattr(item, "changes"):
            self.delivered.append((time.monotonic(), int(revision)))
        super().put(item, block, timeout)


class SimNode:
    """One simulated node: watcher reader + cluster state, elector core, recorder."""

    def __init__(self, spec: NodeSpec, state_dir: str, ttl: float) -> None:
        from networkd.etcd.client import EtcdConnector
        from networkd.etcd.reader import PROBE_TIMEOUT, EtcdReader
        from networkd.workers.watcher import StatePublisher

        self.spec = spec
        self.hostname = spec.hostname
        self.config = Config(
            etcd_endpoints=spec.endpoints,
            hostname=spec.hostname,
            net_address=spec.address,
            vip_ttl=ttl,
            docker_endpoint="",
        )
        self.lease_path = os.path.join(state_dir, spec.hostname, "lease")
        self.inbox = DeliveryQueue()
        self.watcher = LocalPublisher()
        self.publisher = StatePublisher(self.watcher, spec.hostname)
        self.recorder = Recorder(spec.hostname)
        self.view = LocalView(self.watcher, self.recorder)
        self.reader = EtcdReader(
            EtcdConnector(self.config, connect_timeout=PROBE_TIMEOUT), self.inbox
        )
        self.core: Any = None
        self.feed: Any = None
        self.events = 0  # watch events this node's watcher received
        self.elector_restarts = 0
        self.killed = False
        # (monotonic time, watcher revision) once each batch of events reached the elector
        self.applied_at: Deque[Tuple[float, int]] = collections.deque(maxlen=20000)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"sim-{spec.hostname}", daemon=True)

    def start(self) -> None:
        self.reader.start()
        self._new_core()
        self._thread.start()

    def _new_core(self) -> None:
        from networkd.election.core import ElectorCore
        from networkd.election.etcdconn import connect
        from networkd.workers.elector import InputFeed

        config = self.config
        core = ElectorCore(
            config,
            self.hostname,
            self.spec.address,
            self.lease_path,
            connect=lambda timeout: connect(config, timeout),
            on_output=lambda: self.inbox.put(OUTPUT),
        )
        core.start()
        epoch = time.time()
        self.recorder.new_elector(epoch)
        self.core = core
        self.feed = InputFeed(self.view, core, epoch, applier_expected=True)
        self.feed.feed()

    def _run(self) -> None:
        from networkd.etcd.reader import Events, Snapshot

        while not self._stop.is_set():
            try:
                batch = [self.inbox.get(timeout=0.5)]
            except queue.Empty:
                batch = []
            while True:
                try:
                    batch.append(self.inbox.get_nowait())
                except queue.Empty:
                    break
            if self._stop.is_set():
                return
            messages = [m for m in batch if m is not OUTPUT]
            events = [m for m in messages if isinstance(m, Events)]
            changed = any(isinstance(m, (Events, Snapshot)) for m in messages)
            if messages:
                self.publisher.handle(messages)
                self.events += sum(len(m.changes) for m in events)
            if OUTPUT in batch and self.recorder.apply(self.core.outputs()):
                changed = True
            if changed:
                self.feed.feed()
            if any(isinstance(m, (Events, Snapshot)) for m in messages):
                # a full read after a reconnect applies a change as well as its event would
                self.applied_at.append((time.monotonic(), self.publisher.revision))
            if self.core.keeper.switched_endpoint:
                # What the elector worker does: exit, be restarted, resume the lease.
                self.core.stop()
                self.elector_restarts += 1
                self._new_core()

    def ready(self) -> bool:
        return self.core is not None and bool(self.core.outputs().ready)

    def reached(self, revision: int) -> Optional[float]:
        """When this node's elector first had the watcher state of ``revision``."""
        for at, rev in list(self.applied_at):
            if rev >= revision:
                return at
        return None

    def delivered(self, revision: int) -> Optional[float]:
        """When this node's watcher first received the events of ``revision``."""
        for at, rev in list(self.inbox.delivered):
            if rev >= revision:
                return at
        return None

    def kill(self) -> None:
        """Power loss: no more renewals or requests; the lease runs out on the server."""
        self.killed = True
        self._stop.set()
        self.core.keeper.stop()
        self.core.stop()
        self.reader.stop()
        self._thread.join(5.0)


class NodeHost:
    """The nodes of one process, and the answers to the pool's questions."""

    def __init__(
        self, specs: Sequence[NodeSpec], state_dir: str, ttl: float, start_gap: float = 0.0
    ) -> None:
        self.nodes = {spec.hostname: SimNode(spec, state_dir, ttl) for spec in specs}
        self.start_gap = start_gap

    def start(self) -> None:
        """Start the nodes ``start_gap`` seconds apart (a cluster's nodes do not all boot in
        the same second, and a simultaneous cold start of every node would measure this
        machine's two cores rather than networkd)."""
        for i, node in enumerate(self.nodes.values()):
            if i and self.start_gap:
                time.sleep(self.start_gap)
            node.start()

    def status(self) -> Dict[str, Dict[str, Any]]:
        return {
            name: {
                "ready": node.ready(),
                "killed": node.killed,
                "bound": sorted(node.recorder.bound),
                "events": node.events,
                "steps": node.core.steps if node.core is not None else 0,
                "restarts": node.elector_restarts,
            }
            for name, node in self.nodes.items()
        }

    def inspect(self, hostname: str) -> Dict[str, Any]:
        """{hostname: its controller state} for a bench's diagnosis; {} when the node is
        another host's."""
        if hostname not in self.nodes or self.nodes[hostname].core is None:
            return {}
        core = self.nodes[hostname].core
        now = time.monotonic()
        mirror = core.mirror
        locks = {
            key: (entry.value, entry.lease)
            for key, entry in mirror.snapshot(keys.VIP_LOCKS_PREFIX).items()
        }
        return {
            hostname: {
                "lease": core.keeper.lease_id,
                "mirror_revision": mirror.revision,
                "mirror_synced": mirror.synced,
                "mirror_disconnects": mirror.disconnects,
                "mirror_resyncs": mirror.resyncs,
                "locks_seen": locks,
                "desired_bind": sorted(core._desired_bind),
                "alive": core.keeper.alive(),
                "mirror_connected": core.mirror.connected,
                "settling": core.settling(now),
                "unsettled": sorted(core._presence_changed),  # presence came or went lately
                "presence": len(core._presence),
                "steps": core.steps,
                "releasing": sorted(core._releasing),
                "giveaway_blocked": sorted(core._giveaway_blocked),
                "bound": sorted(self.nodes[hostname].recorder.bound),
            }
        }

    def reached(self, revision: int) -> Dict[str, Optional[float]]:
        return {name: n.reached(revision) for name, n in self.nodes.items() if not n.killed}

    def delivered(self, revision: int) -> Dict[str, Optional[float]]:
        return {name: n.delivered(revision) for name, n in self.nodes.items() if not n.killed}

    def readers(self, hostnames: Sequence[str]) -> Dict[str, Dict[str, Any]]:
        """The watcher readers of ``hostnames`` (those of this host), for a diagnosis."""
        out: Dict[str, Dict[str, Any]] = {}
        for name in hostnames:
            node = self.nodes.get(name)
            if node is None:
                continue
            reader = node.reader
            out[name] = {
                "connected": reader._connected,
                "revision": reader.revision,
                "published": node.publisher.revision,
                "full_reads": reader.full_reads,
                "alive": reader.is_alive(),
                "inbox": node.inbox.qsize(),
            }
        return out

    def timeline(self, since: float) -> Dict[str, List[Tuple[float, str, bool]]]:
        return {
            name: [entry for entry in node.recorder.timeline if entry[0] >= since]
            for name, node in self.nodes.items()
        }

    def kill(self, hostname: str) -> bool:
        node = self.nodes.get(hostname)
        if node is None or node.killed:
            return False
        node.kill()
        return True

    def usage(self) -> Dict[str, float]:
        ru = resource.getrusage(resource.RUSAGE_SELF)
        return {
            "cpu_s": ru.ru_utime + ru.ru_stime,
            "rss_kib": float(_rss_kib(os.getpid())),
            "threads": float(threading.active_count()),
            "nodes": float(sum(1 for n in self.nodes.values() if not n.killed)),
        }

    def stop(self) -> None:
        for node in self.nodes.values():
            if not node.killed:
                node.kill()


def _rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def host_main(
    conn: Any,
    specs: List[NodeSpec],
    state_dir: str,
    ttl: float,
    log_path: str,
    start_gap: float = 0.0,
) -> None:
    """A node-host process: start the nodes, then answer commands until ``stop``."""
    level = logging.INFO if os.environ.get("NETWORKD_SIM_LOG") == "info" else logging.WARNING
    logging.basicConfig(
        filename=log_path, level=level, format="%(asctime)s %(threadName)s %(message)s"
    )
    host = NodeHost(specs, state_dir, ttl, start_gap)
    host.start()
    conn.send(("started", len(specs)))
    while True:
        command, args = conn.recv()
        if command == "stop":
            host.stop()
            conn.send(("stopped", None))
            return
        try:
            conn.send(("ok", getattr(host, command)(*args)))
        except Exception as exc:  # report, keep serving
            conn.send(("error", repr(exc)))


class HostPool:
    """Node-host processes (spawned: gRPC does not survive fork), asked all at once."""

    def __init__(
        self,
        specs: Sequence[NodeSpec],
        per_host: int,
        state_dir: str,
        ttl: float,
        log_dir: str,
        start_gap: float = 0.0,
    ) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.procs: List[Any] = []
        self.conns: List[Any] = []
        self.owner: Dict[str, int] = {}
        groups = [list(specs[i : i + per_host]) for i in range(0, len(specs), per_host)]
        for index, group in enumerate(groups):
            parent, child = ctx.Pipe()
            log_path = os.path.join(log_dir, f"host{index}.log")
            proc = ctx.Process(
                target=host_main,
                args=(child, group, state_dir, ttl, log_path, start_gap),
                name=f"simhost{index}",
                daemon=True,
            )
            proc.start()
            self.procs.append(proc)
            self.conns.append(parent)
            for spec in group:
                self.owner[spec.hostname] = index
        for conn in self.conns:
            if not conn.poll(120 + per_host * start_gap):
                raise RuntimeError("a node host did not start its nodes in time")
            conn.recv()

    @property
    def pids(self) -> List[int]:
        return [p.pid for p in self.procs]

    def ask(self, command: str, *args: Any) -> List[Any]:
        """Every host's answer to ``command(*args)``."""
        for conn in self.conns:
            conn.send((command, args))
        answers = []
        for conn in self.conns:
            kind, value = conn.recv()
            if kind == "error":
                raise RuntimeError(f"node host failed {command}: {value}")
            answers.append(value)
        return answers

    def merged(self, command: str, *args: Any) -> Dict[str, Any]:
        out: Dict[str, Any] = {}
        for answer in self.ask(command, *args):
            out.update(answer)
        return out

    def kill(self, hostname: str) -> None:
        conn = self.conns[self.owner[hostname]]
        conn.send(("kill", (hostname,)))
        kind, value = conn.recv()
        if kind == "error":
            raise RuntimeError(f"kill {hostname}: {value}")

    def close(self) -> None:
        for conn in self.conns:
            try:
                conn.send(("stop", ()))
            except OSError:
                pass
        for conn, proc in zip(self.conns, self.procs):
            if conn.poll(30):
                try:
                    conn.recv()
                except EOFError:
                    pass
            proc.join(5)
            if proc.is_alive():
                proc.kill()
                proc.join(5)
