"""The subscribing side of the bus: mirrors of other workers' state topics.

A mirror is rebuilt from the newest snapshot; deltas apply only in sequence. On an epoch
change (the publisher restarted) or a sequence gap the mirror is marked stale and the
subscriber re-subscribes, which makes the publisher send a fresh snapshot.
"""

import logging
import time
from typing import Any, Dict, Iterable, List, Optional, Tuple

import zmq

from networkd.bus import codec
from networkd.bus.publisher import endpoint_path

log = logging.getLogger("networkd.bus")

RESYNC_RETRY = 1.0


class Mirror:
    """One (sender, topic) state as this subscriber knows it."""

    __slots__ = ("epoch", "items", "resync_at", "seq", "synced")

    def __init__(self) -> None:
        self.items: Dict[str, Any] = {}
        self.epoch = 0.0
        self.seq = 0
        self.synced = False
        self.resync_at = 0.0


class Subscriber:
    """Connects to the named publishers and keeps mirrors of the state topics asked for.

    ``sources`` maps a publisher name (``watcher``, ``dns.0``) to topic prefixes. Event
    topics are passed through ``poll()`` without a mirror.
    """

    def __init__(self, context: zmq.Context, run_dir: str, sources: Dict[str, List[str]]) -> None:
        self.run_dir = run_dir
        self._sockets: Dict[str, zmq.Socket] = {}
        self._prefixes: Dict[str, List[str]] = {}
        self._mirrors: Dict[Tuple[str, str], Mirror] = {}
        self._events_seen = 0
        self.poller = zmq.Poller()
        self._extra_key: Tuple[Any, ...] = ()
        self._extra_poller = self.poller
        self._context = context
        for name, prefixes in sources.items():
            self.add_source(name, prefixes)

    def add_source(self, name: str, prefixes: Iterable[str]) -> None:
        if name in self._sockets:
            return
        sock = self._context.socket(zmq.SUB)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.RCVHWM, 100_000)
        sock.setsockopt(zmq.RECONNECT_IVL, 20)
        sock.setsockopt(zmq.RECONNECT_IVL_MAX, 0)  # a restarted publisher is found within 20 ms
        plist = list(prefixes)
        for prefix in plist:
            sock.setsockopt(zmq.SUBSCRIBE, prefix.encode())
        sock.connect(f"ipc://{endpoint_path(self.run_dir, name)}")
        self._sockets[name] = sock
        self._prefixes[name] = plist
        self.poller.register(sock, zmq.POLLIN)

    @property
    def sources(self) -> List[str]:
        return list(self._sockets)

    def state(self, sender: str, topic: str) -> Optional[Dict[str, Any]]:
        """The mirror's items, or None until a snapshot arrived."""
        mirror = self._mirrors.get((sender, topic))
        if mirror is None or not mirror.synced:
            return None
        return mirror.items

    def synced_mirrors(self) -> Dict[Tuple[str, str], Dict[str, Any]]:
        """Every synced mirror's items by (sender, topic): live dicts, for this thread only."""
        return {key: m.items for key, m in self._mirrors.items() if m.synced}

    def synced(self, sender: str, topic: str) -> bool:
        mirror = self._mirrors.get((sender, topic))
        return mirror is not None and mirror.synced

    def sender_synced(self, sender: str) -> bool:
        """True once any state topic of ``sender`` has a snapshot."""
        return any(m.synced for (name, _), m in self._mirrors.items() if name == sender)

    def epoch(self, sender: str, topic: str) -> float:
        mirror = self._mirrors.get((sender, topic))
        return mirror.epoch if mirror else 0.0

    def poll(
        self, timeout_ms: int = 100, extra: Optional[List[Any]] = None
    ) -> List[codec.Envelope]:
        """Wait up to ``timeout_ms`` for messages, apply them, return what was applied."""
        poller = self.poller
        if extra:
            # Callers poll every few ms with the same extra fds: build that poller once.
            key = (tuple(extra), len(self._sockets))
            if key != self._extra_key:
                self._extra_key = key
                self._extra_poller = zmq.Poller()
                for sock in self._sockets.values():
                    self._extra_poller.register(sock, zmq.POLLIN)
                for item in extra:
                    self._extra_poller.register(item, zmq.POLLIN)
            poller = self._extra_poller
        if not self._sockets and not extra:
            time.sleep(timeout_ms / 1000.0)
            return []
        ready = dict(poller.poll(timeout_ms))
        out: List[codec.Envelope] = []
        for name, sock in self._sockets.items():
            if sock not in ready:
                continue
            for _ in range(10_000):
                try:
                    frames = sock.recv_multipart(flags=zmq.NOBLOCK)
                except zmq.Again:
                    break
                try:
                    envelope = codec.decode(frames)
                except codec.CodecError as exc:
                    log.warning("bus message rejected source=%s reason=%s", name, exc)
                    continue
                if envelope.sender != name:
                    log.warning(
                        "bus message rejected source=%s reason=sender is %s", name, envelope.sender
                    )
                    continue
                if self._apply(name, envelope):
                    out.append(envelope)
        self._retry_resyncs()
        return out

    def _apply(self, name: str, env: codec.Envelope) -> bool:
        if env.kind == codec.KIND_EVENT:
            return True
        key = (name, env.topic)
        mirror = self._mirrors.get(key)
        if mirror is None:
            mirror = self._mirrors[key] = Mirror()
        if env.kind == codec.KIND_SNAPSHOT:
            mirror.items = dict(env.body)
            mirror.epoch = env.epoch
            mirror.seq = env.seq
            mirror.synced = True
            return True
        # delta
        if not mirror.synced:
            # A delta for a topic we hold no snapshot of: ask for one (at most once a second).
            if time.monotonic() >= mirror.resync_at:
                self._resync(name, mirror, env.topic)
            return False
        if env.epoch != mirror.epoch:
            log.info("bus publisher restarted source=%s topic=%s", name, env.topic)
            self._resync(name, mirror, env.topic)
            return False
        if env.seq <= mirror.seq:
            return False
        if env.seq != mirror.seq + 1:
            log.info(
                "bus sequence gap source=%s topic=%s have=%d got=%d",
                name,
                env.topic,
                mirror.seq,
                env.seq,
            )
            self._resync(name, mirror, env.topic)
            return False
        mirror.seq = env.seq
        mirror.items.update(env.body["set"])
        for k in env.body["deleted"]:
            mirror.items.pop(k, None)
        return True

    def _resync(self, name: str, mirror: Mirror, topic: str) -> None:
        """Drop the mirror and re-subscribe: the publisher answers with a snapshot."""
        mirror.synced = False
        mirror.resync_at = time.monotonic() + RESYNC_RETRY
        sock = self._sockets[name]
        sock.setsockopt(zmq.UNSUBSCRIBE, topic.encode())
        sock.setsockopt(zmq.SUBSCRIBE, topic.encode())

    def _retry_resyncs(self) -> None:
        now = time.monotonic()
        for (name, topic), mirror in self._mirrors.items():
            if not mirror.synced and mirror.resync_at and now >= mirror.resync_at:
                self._resync(name, mirror, topic)

    def close(self) -> None:
        for sock in self._sockets.values():
            sock.close(0)
        self._sockets.clear()
