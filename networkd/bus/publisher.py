"""The publishing side of the bus: one XPUB socket per worker, state topics and events.

State is published as snapshots plus deltas. XPUB with ``XPUB_VERBOSE`` hands us every
subscription, so a late joiner (or a subscriber that saw a gap and re-subscribed) gets a
fresh snapshot of the topics it asked for. Periodic snapshots repair silent drops.

``poll`` reads at most MAX_SUBSCRIPTIONS_PER_POLL subscription messages per call and
answers each topic once per call, so a subscriber flooding (un)subscriptions cannot keep
the publisher's loop from its other work; the rest waits for the next call.
"""

import logging
import os
import time
from typing import Any, Dict, Iterable, Optional, Sequence, Set

import zmq

from networkd.bus import codec, endpoint_access
from networkd.bus.messages import STATE_TOPICS

log = logging.getLogger("networkd.bus")

SNAPSHOT_INTERVAL = 10.0
HIGH_WATER_MARK = 100_000
MAX_SUBSCRIPTIONS_PER_POLL = 256


def endpoint_dir(run_dir: str, name: str) -> str:
    """The directory owned by publisher ``name``; only its uid may create files in it."""
    return os.path.join(run_dir, "bus", name)


def endpoint_path(run_dir: str, name: str) -> str:
    return os.path.join(endpoint_dir(run_dir, name), "pub.sock")


class StateTopic:
    """Keyed items of one state topic; changes go out as deltas, joins get snapshots."""

    def __init__(self, publisher: "Publisher", topic: str) -> None:
        if topic not in STATE_TOPICS:
            raise KeyError(f"unknown state topic {topic!r}")
        self.topic = topic
        self.item_type = STATE_TOPICS[topic]
        self._publisher = publisher
        self._items: Dict[str, Any] = {}
        # Until its first publication a topic is silent: subscribers must not take "not
        # known yet" for "empty". The first publication is a snapshot, so subscribers that
        # joined earlier get the whole state at once (a delta would find no mirror).
        self.published = False

    def items(self) -> Dict[str, Any]:
        return dict(self._items)

    def get(self, key: str) -> Any:
        return self._items.get(key)

    def set(self, key: str, item: Any) -> None:
        self.update({key: item}, ())

    def delete(self, key: str) -> None:
        self.update({}, (key,))

    def replace(self, items: Dict[str, Any]) -> None:
        """Make the topic hold exactly ``items``; publishes only the differences."""
        gone = [k for k in self._items if k not in items]
        self.update(items, gone)

    def update(self, sets: Dict[str, Any], deleted: Iterable[str]) -> None:
        changed = {}
        for key, item in sets.items():
            if not isinstance(item, self.item_type):
                raise TypeError(
                    f"{self.topic}: expected {self.item_type.__name__}, got {type(item).__name__}"
                )
            if self._items.get(key) != item:
                changed[key] = item
        removed = [k for k in deleted if k in self._items]
        if self.published and not changed and not removed:
            return
        self._items.update(changed)
        for key in removed:
            del self._items[key]
        if not self.published:
            self.send_snapshot()
            return
        self._publisher.send(
            self.topic,
            codec.KIND_DELTA,
            self.item_type.__name__,
            {"set": changed, "deleted": removed},
        )

    def send_snapshot(self) -> None:
        """Publish the whole topic now (also its first publication, even when empty)."""
        self.published = True
        self._publisher.send(self.topic, codec.KIND_SNAPSHOT, self.item_type.__name__, self._items)


class Publisher:
    """One worker's endpoint. Call ``poll()`` often: it answers subscriptions.

    ``allowed_groups``: None, every local user may connect; a sequence (even empty), only
    root and those groups (a root publisher; ``endpoint_access``)."""

    def __init__(
        self,
        context: zmq.Context,
        run_dir: str,
        sender: str,
        epoch: Optional[float] = None,
        snapshot_interval: float = SNAPSHOT_INTERVAL,
        allowed_groups: Optional[Sequence[int]] = None,
    ) -> None:
        self.sender = sender
        self.epoch = time.time() if epoch is None else epoch
        self.path = endpoint_path(run_dir, sender)
        self.subscribed: Set[str] = set()  # prefixes someone subscribes to now
        self._topics: Dict[str, StateTopic] = {}
        self._seq: Dict[str, int] = {}
        self._snapshot_interval = snapshot_interval
        self._next_snapshot = time.monotonic() + snapshot_interval
        self.socket = context.socket(zmq.XPUB)
        self.socket.setsockopt(zmq.XPUB_VERBOSE, 1)
        self.socket.setsockopt(zmq.SNDHWM, HIGH_WATER_MARK)
        self.socket.setsockopt(zmq.LINGER, 0)
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        # A unix socket needs write permission to connect. A root publisher binds it for
        # root alone, then opens it to the groups that subscribe (endpoint_access); others
        # are open to every uid. Impersonation is prevented by the directory, which only
        # this worker's uid may write.
        restricted = allowed_groups is not None and os.geteuid() == 0
        old_umask = os.umask(0o177 if restricted else 0o111)
        try:
            self.socket.bind(f"ipc://{self.path}")
        finally:
            os.umask(old_umask)
        if restricted and allowed_groups is not None:
            endpoint_access.restrict(self.path, list(allowed_groups))

    def state(self, topic: str) -> StateTopic:
        existing = self._topics.get(topic)
        if existing is None:
            existing = self._topics[topic] = StateTopic(self, topic)
        return existing

    def event(self, topic: str, message: Any) -> None:
        self.send(topic, codec.KIND_EVENT, type(message).__name__, message)

    def send(self, topic: str, kind: str, type_name: str, body: Any) -> None:
        if kind != codec.KIND_SNAPSHOT:
            self._seq[topic] = self._seq.get(topic, 0) + 1
        seq = self._seq.get(topic, 0)
        frames = codec.encode(topic, self.sender, self.epoch, seq, kind, type_name, body)
        try:
            self.socket.send_multipart(frames, flags=zmq.NOBLOCK)
        except zmq.Again:
            # A slow subscriber: it will see the sequence gap and re-subscribe.
            log.debug("bus send dropped topic=%s", topic)

    def poll(self, timeout_ms: int = 0) -> int:
        """Answer new subscriptions with snapshots and send the periodic snapshots.

        Returns how many subscription messages it read (at most MAX_SUBSCRIPTIONS_PER_POLL).
        """
        wanted: Set[str] = set()
        if timeout_ms:
            self.socket.poll(timeout_ms)
        read = 0
        while read < MAX_SUBSCRIPTIONS_PER_POLL:
            try:
                frame = self.socket.recv(flags=zmq.NOBLOCK)
            except zmq.Again:
                break
            read += 1
            prefix = frame[1:].decode(errors="replace")
            if frame[:1] == b"\x01":
                wanted.add(prefix)
                self.subscribed.add(prefix)
            elif frame[:1] == b"\x00":  # XPUB reports it when the last subscriber left
                self.subscribed.discard(prefix)
        if wanted:
            for topic in self._topics.values():
                if topic.published and any(topic.topic.startswith(prefix) for prefix in wanted):
                    topic.send_snapshot()
        now = time.monotonic()
        if now >= self._next_snapshot:
            self._next_snapshot = now + self._snapshot_interval
            for topic in self._topics.values():
                if topic.published:
                    topic.send_snapshot()
        return read

    def has_subscriber(self, topic: str) -> bool:
        """Whether someone subscribed to a prefix of ``topic`` (an event sent now is
        delivered; one sent before the subscription arrived is lost, pub/sub's nature)."""
        return any(topic.startswith(prefix) for prefix in self.subscribed)

    def close(self) -> None:
        self.socket.close(0)
