"""A replica's end of the channel to the forwarder (networkd/dns/channel.py).

Queries the replica cannot answer are "handed" to the forwarder and remembered until the
forwarder says it answered them (``done``, or the ``answer`` for a TCP client). When the
forwarder goes away (killed, restarting) the link reconnects every RECONNECT seconds and
hands every remembered query over again, so the forwarder's restart costs clients
latency, not answers; a query still unanswered ``deadline`` seconds after it was handed
(no forwarder came back in time) gets SERVFAIL from the replica itself.

``fill`` messages keep the replica's copy of the node's cache; on reconnecting to a new
forwarder the replica sends its copy back (``restore``), so the cache survives the
forwarder's restart too.
"""

import logging
import os
import socket
import time
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

from networkd.dns import channel
from networkd.dns.cache import ForwardCache
from networkd.dns.stats import ReplicaStats

log = logging.getLogger("networkd.dns")

RECONNECT = 0.05
MAX_HANDED = 8192

Client = Any  # a UDP address tuple, or the replica's TcpConn


class Handed:
    __slots__ = ("client", "data", "tcp", "when")

    def __init__(self, client: Client, data: bytes, tcp: bool, when: float) -> None:
        self.client = client
        self.data = data
        self.tcp = tcp
        self.when = when


class ForwarderLink:
    def __init__(
        self,
        path: str,
        name: str,
        cache: ForwardCache,
        stats: ReplicaStats,
        deadline: float = 5.0,
    ) -> None:
        self.path = path
        self.name = name
        self.cache = cache
        self.stats = stats
        self.deadline = deadline
        self.sock: Optional[socket.socket] = None
        self.outbox: Optional[channel.Outbox] = None
        self.synced = False
        self.handed: Dict[int, Handed] = {}
        self._asks: List[List[Any]] = []
        self._restore: Optional[Iterator[bytes]] = None  # cache copy still to send back
        self._seq = 0
        self._next_connect = 0.0
        # set by the server: answer a TCP client; fail a client (SERVFAIL); clear memos
        self.on_tcp_answer: Callable[[Client, bytes], None] = lambda client, answer: None
        self.on_fail: Callable[[Client, bytes, bool], None] = lambda client, data, tcp: None
        self.on_clear: Callable[[], None] = lambda: None

    @property
    def connected(self) -> bool:
        return self.sock is not None

    @property
    def has_asks(self) -> bool:
        return bool(self._asks)

    def fileno(self) -> int:
        return self.sock.fileno() if self.sock is not None else -1

    # ------------------------------------------------------------------ connection

    def connect(self, now: float) -> Optional[int]:
        """Try to connect (at most every RECONNECT s); the new fd to watch, or None.

        Nothing is sent here: the hello, the queries still handed and the cache copy are
        queued for the next ``flush``, which the caller runs once it watches the fd. (A
        send here could fail, a forwarder killed just after accepting, and leave the
        caller an fd that is already closed.)"""
        if self.sock is not None or now < self._next_connect:
            return None
        self._next_connect = now + RECONNECT
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            sock.connect(self.path)
        except OSError:
            sock.close()
            return None
        sock.setblocking(False)
        self.sock = sock
        self.outbox = channel.Outbox(sock)
        self.synced = False
        self.outbox.put(channel.encode("hello", [self.name, os.getpid()]))
        restore = (channel.encode_entry(k, e) for k, e in self.cache.items())
        self._restore = channel.chunked("restore", restore, channel.entry_wire_size)
        self._asks = [self._ask_item(seq, h) for seq, h in self.handed.items()]
        log.info("dns forwarder connected name=%s handed=%d", self.name, len(self.handed))
        return sock.fileno()

    def disconnect(self, reason: str) -> None:
        if self.sock is None:
            return
        log.info("dns forwarder disconnected name=%s reason=%s", self.name, reason)
        self.sock.close()
        self.sock = None
        self.outbox = None
        self._asks = []
        self._restore = None

    # ------------------------------------------------------------------ queries out

    @staticmethod
    def _ask_item(seq: int, handed: Handed) -> List[Any]:
        addr = None if handed.tcp else list(handed.client)
        return [seq, addr, handed.data]

    def ask(self, client: Client, data: bytes, tcp: bool, now: float) -> None:
        """Hand a query over (sent by the next ``flush``)."""
        if len(self.handed) >= MAX_HANDED:
            self.on_fail(client, data, tcp)
            return
        self._seq = (self._seq + 1) & 0x7FFFFFFF
        handed = Handed(client, data, tcp, now)
        self.handed[self._seq] = handed
        self.stats.forwarded += 1
        if self.sock is not None:
            self._asks.append(self._ask_item(self._seq, handed))

    def flush(self) -> bool:
        """Send the asks gathered so far, then (a chunk at a time, as room allows) the
        cache copy for a new forwarder; True when something is left to send."""
        outbox = self.outbox
        if outbox is None:
            return False
        if self._asks:
            for message in channel.chunked("ask", self._asks, lambda item: len(item[2])):
                outbox.put(message)
            self._asks = []
        while True:
            if not outbox.flush():
                self.disconnect("send failed")
                return False
            if outbox.pending or self._restore is None:
                return outbox.pending
            try:
                outbox.put(next(self._restore))
            except StopIteration:
                self._restore = None
                return False

    # ------------------------------------------------------------------ messages in

    def readable(self) -> None:
        if self.sock is None:
            return
        messages = channel.receive(self.sock)
        if messages is None:
            self.disconnect("closed")
            return
        now = time.monotonic()
        for data in messages:
            try:
                kind, payload = channel.decode(data)
                self._message(kind, payload, now)
            except channel.ChannelError as exc:
                self.disconnect(f"bad message: {exc}")
                return

    def _message(self, kind: str, payload: Any, now: float) -> None:
        if kind == "fill":
            for item in payload:
                key, entry = channel.decode_entry(item)
                self.cache.merge(key, entry, now)
        elif kind == "done":
            for seq in payload:
                self._finished(seq, now)
        elif kind == "answer":
            for item in payload:
                seq, answer = _answer_item(item)
                handed = self._finished(seq, now)
                if handed is not None and handed.tcp:
                    self.on_tcp_answer(handed.client, answer)
        elif kind == "clear":
            self.cache.clear()
            self.on_clear()
        elif kind == "synced":
            self.synced = True
            log.info("dns cache synced name=%s entries=%d", self.name, len(self.cache))
        else:
            raise channel.ChannelError(f"{kind} is not for a replica")

    def _finished(self, seq: Any, now: float) -> Optional[Handed]:
        handed = self.handed.pop(seq, None) if isinstance(seq, int) else None
        if handed is not None:
            self.stats.latency.observe(now - handed.when)
        return handed

    def expire(self, now: float) -> None:
        """Queries handed over ``deadline`` seconds ago and still unanswered (no forwarder
        was there to answer them): SERVFAIL from here."""
        limit = now - self.deadline
        old = []
        for seq, handed in self.handed.items():  # in the order they were handed
            if handed.when >= limit:
                break
            old.append(seq)
        for seq in old:
            handed = self.handed.pop(seq)
            self.stats.forwarder_failures += 1
            self.on_fail(handed.client, handed.data, handed.tcp)


def _answer_item(item: Any) -> Tuple[int, bytes]:
    if not (isinstance(item, list) and len(item) == 2 and isinstance(item[1], bytes)):
        raise channel.ChannelError("answer item is not [seq, bytes]")
    return item[0], item[1]
