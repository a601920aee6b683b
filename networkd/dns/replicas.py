"""The forwarder's side of the channel (networkd/dns/channel.py): the replicas connected
to it, and what is queued for each.

Answers for TCP clients leave at once; cache fills and "done" notes every
FLUSH_INTERVAL: under a flood of misses each replica wakes once per interval for many
entries, not once per entry, and still has every new entry within FLUSH_INTERVAL plus a
wake-up (well under the 10 ms the issue allows). A replica that connects gets the whole
cache first (a snapshot), a chunk at a time as its socket has room; one that stops
reading (more than OUTBOX_MAX queued) is dropped, reconnects and starts over.
"""

import logging
import os
import select
import socket
import time
from typing import Any, Callable, Dict, Iterator, List, Optional

from networkd.dns import channel
from networkd.dns.tcp import accepted

log = logging.getLogger("networkd.dns")

FLUSH_INTERVAL = 0.003

# peer, kind, payload, now: what the forwarder does with a replica's message
MessageHandler = Callable[["Peer", str, Any, float], None]


class Peer:
    """A connected replica: its socket and what is queued for it."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.name = "?"
        self.outbox = channel.Outbox(sock)
        self.fills: List[Any] = []  # entries for this replica alone
        self.done: List[int] = []
        self.answers: List[Any] = []
        self.snapshot: Optional[Iterator[bytes]] = None  # messages still to send
        self.writable_wanted = False


class Replicas:
    def __init__(self, path: str, handler: MessageHandler) -> None:
        self.path = path
        self.handler = handler
        self.peers: Dict[int, Peer] = {}
        self.listener: Optional[socket.socket] = None
        self.epoll: Any = None
        self._broadcast: List[Any] = []  # new entries for every replica, encoded once
        self._next_flush = 0.0

    def listen(self) -> None:
        """Bind the socket (before the loop runs, so replicas can connect at once)."""
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        sock.bind(self.path)
        sock.listen(64)
        sock.setblocking(False)
        self.listener = sock

    def close(self) -> None:
        for peer in list(self.peers.values()):
            peer.sock.close()
        self.peers.clear()
        if self.listener is not None:
            self.listener.close()

    def accept(self) -> None:
        assert self.listener is not None
        for sock, _ in accepted(self.listener):
            sock.setblocking(False)
            peer = Peer(sock)
            self.peers[peer.fd] = peer
            self.epoll.register(peer.fd, select.EPOLLIN)

    def drop(self, peer: Peer, reason: str) -> None:
        log.info("dns replica disconnected name=%s reason=%s", peer.name, reason)
        self.peers.pop(peer.fd, None)
        try:
            self.epoll.unregister(peer.fd)
        except OSError:
            pass
        peer.sock.close()

    def event(self, peer: Peer, mask: int) -> None:
        if mask & select.EPOLLOUT:
            self._send(peer)
        if not mask & (select.EPOLLIN | select.EPOLLHUP | select.EPOLLERR):
            return
        messages = channel.receive(peer.sock)
        if messages is None:
            self.drop(peer, "closed")
            return
        now = time.monotonic()
        for data in messages:
            try:
                kind, payload = channel.decode(data)
                self.handler(peer, kind, payload, now)
            except channel.ChannelError as exc:
                self.drop(peer, f"bad message: {exc}")
                return

    # ------------------------------------------------------------------ outgoing

    def broadcast(self, item: Any) -> None:
        """An encoded cache entry for every replica."""
        self._broadcast.append(item)

    def clear(self) -> None:
        """The cache was cleared: nothing of it still to send, and every replica clears."""
        self._broadcast = []
        for peer in self.peers.values():
            peer.fills.clear()
            peer.snapshot = None
            peer.outbox.put(channel.encode("clear", []))

    def flush_in(self, now: float) -> float:
        """Seconds until fills or done notes are due (a poll timeout), or 0.1."""
        if self._broadcast or any(p.done or p.fills for p in self.peers.values()):
            return max(0.0, self._next_flush - now)
        return 0.1

    def flush(self, now: float) -> None:
        """TCP answers now; fills and "done" notes every FLUSH_INTERVAL."""
        due = now >= self._next_flush
        broadcast: List[bytes] = []
        if due:
            self._next_flush = now + FLUSH_INTERVAL
            broadcast = list(channel.chunked("fill", self._broadcast, channel.entry_wire_size))
            self._broadcast = []
        for peer in list(self.peers.values()):
            outbox = peer.outbox
            if peer.answers:
                for message in channel.chunked("answer", peer.answers, lambda a: len(a[1])):
                    outbox.put(message)
                peer.answers = []
            if due:
                for message in broadcast:
                    outbox.put(message)
                if peer.fills:
                    for message in channel.chunked("fill", peer.fills, channel.entry_wire_size):
                        outbox.put(message)
                    peer.fills = []
                if peer.done:
                    outbox.put(channel.encode("done", peer.done))
                    peer.done = []
            if outbox.pending or peer.snapshot is not None:
                self._send(peer)

    def _send(self, peer: Peer) -> None:
        while True:
            if not peer.outbox.flush():
                self.drop(peer, "send failed")
                return
            if peer.outbox.pending or peer.snapshot is None:
                break
            try:
                peer.outbox.put(next(peer.snapshot))
            except StopIteration:
                peer.snapshot = None
                break
        if peer.outbox.stuck:
            self.drop(peer, "not reading")  # it reconnects and gets a snapshot
            return
        want = peer.outbox.pending
        if want != peer.writable_wanted:
            peer.writable_wanted = want
            self.epoll.modify(peer.fd, select.EPOLLIN | (select.EPOLLOUT if want else 0))
