"""The watcher worker: etcd (SPEC section 1) in, typed and validated cluster state out.

An ``EtcdReader`` thread reads and watches etcd and queues what it sees; this process's
main thread owns the bus sockets, drains the queue in batches, applies them to the pure
``ClusterState`` and publishes the differences:

- ``state.vips``, ``state.domains``, ``state.domain_servers``, ``state.containers`` (this
  node's), ``state.proc_nodes``, ``state.leaders``, ``state.acl``, ``state.streamrouter``,
  ``state.apps``: created at the first full read, so a subscriber never mistakes "not read
  yet" for "empty";
- ``state.config_errors`` plus the event ``config.error`` once per new rejection;
- ``state.etcd`` (connection health) and ``state.sync`` (in sync after the first read),
  published from the start.
"""

import logging
import queue
import time
from typing import Any, List, Optional

from networkd.bus.messages import ConfigError, EtcdHealth, WatcherSync
from networkd.etcd import state as cluster
from networkd.etcd.client import EtcdConnector
from networkd.etcd.reader import PROBE_TIMEOUT, EtcdReader, Events, Health, Snapshot
from networkd.wakeup import Wakeup

log = logging.getLogger("networkd.watcher")

DRAIN_WAIT = 0.05  # seconds drain() waits for the first message when asked to wait
IDLE_POLL_MS = 1000  # the loop sleeps until etcd news, a subscriber or a stop wakes it
DRAIN_BUDGET = 0.05  # seconds of queue draining per batch, to keep the bus answered
DRAIN_MAX = 5000  # messages per batch


class StatePublisher:
    """Applies reader messages to the cluster state and publishes what changed."""

    def __init__(self, pub: Any, hostname: str) -> None:
        self.pub = pub
        self.state = cluster.ClusterState(hostname)
        self.in_sync = False
        self.revision = 0
        self.health = EtcdHealth(connected=False, revision=0, last_error="", endpoint="")
        self.pub.state("state.etcd").set("etcd", self.health)
        self.pub.state("state.sync").set("sync", WatcherSync(in_sync=False, revision=0))
        self.batches = 0

    def handle(self, messages: List[Any]) -> None:
        """One batch: consecutive events are applied as one change set."""
        pending: List[Any] = []
        health: Optional[Health] = None
        for message in messages:
            if isinstance(message, Events):
                pending.extend(message.changes)
                self.revision = max(self.revision, message.revision)
            elif isinstance(message, Snapshot):
                self._apply_events(pending)
                pending = []
                self._apply_snapshot(message)
            elif isinstance(message, Health):
                health = message
        self._apply_events(pending)
        if health is not None or self.health.revision != self.revision:
            self._publish_health(health)
        self.batches += 1

    def _apply_events(self, changes: List[Any]) -> None:
        if not changes:
            return
        delta = self.state.apply(changes)
        if self.in_sync:
            self._publish(delta)

    def _apply_snapshot(self, snapshot: Snapshot) -> None:
        started = time.monotonic()
        delta = self.state.replace_all(snapshot.pairs)
        self.revision = snapshot.revision
        if not self.in_sync:
            # First full read: create the state topics and send them whole.
            for topic in cluster.TOPICS:
                handle = self.pub.state(topic)
                handle.replace(self.state.items[topic])
                handle.send_snapshot()
            self._report_errors(delta)
            self.in_sync = True
            self.pub.state("state.sync").set(
                "sync", WatcherSync(in_sync=True, revision=snapshot.revision)
            )
            log.info(
                "watcher in sync revision=%d keys=%d read_ms=%.1f publish_ms=%.1f errors=%d",
                snapshot.revision,
                self.state.keys_read(),
                snapshot.elapsed * 1000,
                (time.monotonic() - started) * 1000,
                len(self.state.errors),
            )
            return
        self._publish(delta)
        self.pub.state("state.sync").set(
            "sync", WatcherSync(in_sync=True, revision=snapshot.revision)
        )
        log.info(
            "watcher resynced revision=%d changed_topics=%d", snapshot.revision, len(delta.changes)
        )

    def _publish(self, delta: cluster.Delta) -> None:
        for topic in cluster.TOPICS:
            if topic in delta.changes:
                self.pub.state(topic).update(delta.sets(topic), delta.deleted(topic))
        self._report_errors(delta)

    def _report_errors(self, delta: cluster.Delta) -> None:
        for error in delta.new_errors:
            log.warning("config rejected key=%s reason=%s", error.key, error.reason)
            self.pub.event("config.error", ConfigError(key=error.key, reason=error.reason))
        for key in delta.cleared_errors:
            log.info("config error cleared key=%s", key)

    def _publish_health(self, health: Optional[Health]) -> None:
        current = self.health
        if health is not None:
            current = EtcdHealth(
                connected=health.connected,
                revision=self.revision,
                last_error=health.error or current.last_error,
                endpoint=health.endpoint or current.endpoint,
            )
        else:
            current = EtcdHealth(
                current.connected, self.revision, current.last_error, current.endpoint
            )
        if current != self.health:
            self.health = current
            self.pub.state("state.etcd").set("etcd", current)


def drain(source: "queue.Queue[Any]", wait: float = DRAIN_WAIT) -> List[Any]:
    """Messages from the reader: waits up to ``wait`` for the first, then takes what is there."""
    try:
        first = source.get(timeout=wait)
    except queue.Empty:
        return []
    out = [first]
    deadline = time.monotonic() + DRAIN_BUDGET
    while len(out) < DRAIN_MAX and time.monotonic() < deadline:
        try:
            out.append(source.get_nowait())
        except queue.Empty:
            break
    return out


class WakingQueue(queue.Queue):  # type: ignore[type-arg]  # (3.8: no Queue[Any] base)
    """The reader's queue: each ``put`` also makes ``wakeup`` readable, so the main thread
    sleeps in one poll on its bus socket and this."""

    def __init__(self, wakeup: Wakeup) -> None:
        super().__init__()
        self.wakeup = wakeup

    def put(self, item: Any, block: bool = True, timeout: Optional[float] = None) -> None:
        super().put(item, block, timeout)
        self.wakeup.poke()


def main(ctx: Any) -> int:
    import zmq

    pub = ctx.publisher()
    publisher = StatePublisher(pub, ctx.hostname)
    wakeup = Wakeup()
    inbox = WakingQueue(wakeup)
    poller = zmq.Poller()
    for item in (pub.socket, wakeup.rfd, ctx.stop_wakeup.rfd):
        poller.register(item, zmq.POLLIN)
    reader = EtcdReader(EtcdConnector(ctx.config, connect_timeout=PROBE_TIMEOUT), inbox)
    log.info(
        "watcher starting hostname=%s endpoints=%s",
        ctx.hostname,
        ",".join(ctx.config.etcd_endpoints),
    )
    reader.start()
    try:
        while not ctx.stopping:
            # Drain the pipe before the queue: a message put after this poke stays
            # announced by the next one.
            poller.poll(0 if inbox.qsize() else IDLE_POLL_MS)
            wakeup.drain()
            messages = drain(inbox, wait=0.0)
            if messages:
                publisher.handle(messages)
            pub.poll()
    finally:
        reader.stop()
        pub.close()
        wakeup.close()
    log.info("watcher stopped final=%s", ctx.final)
    return 0
