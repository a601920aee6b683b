"""A replica's TCP clients: accepting under limits, two-byte length framing, buffered sends.

No client can take the service from the others:
- at most ``per_source`` connections from one address (more are closed at once);
- when ``max_conns`` are open, a new connection evicts the longest idle one (one with
  nothing in flight), and is refused only when every connection is busy;
- a connection idle ``idle`` seconds, or open ``lifetime`` seconds, is closed;
- memory per connection is bounded: at most MAX_INBUF bytes of queries are held, and a
  client that does not read its answers stops being read once ``max_out`` bytes wait
  for it.

Every send goes through ``send``, which frames only what fits (answers are built to fit
65,535 bytes; ``cut_to_fit`` guards the rest) and never raises.
"""

import logging
import select
import socket
import time
from typing import Any, Callable, Dict, Iterator, NamedTuple, Tuple

from networkd.dns import wire
from networkd.dns.answers import cut_to_fit

log = logging.getLogger("networkd.dns")


def accepted(listener: socket.socket, most: int = 64) -> Iterator[Tuple[socket.socket, Any]]:
    """Connections waiting on a non-blocking listening socket, at most ``most``."""
    for _ in range(most):
        try:
            yield listener.accept()
        except BlockingIOError:
            return
        except OSError as exc:
            log.warning("dns accept failed reason=%s", exc)
            return


class TcpLimits(NamedTuple):
    max_conns: int = 128
    per_source: int = 16
    idle: float = 10.0
    lifetime: float = 120.0
    max_out: int = 128 << 10
    max_inflight: int = 32


# Input held per connection: a whole largest message and one more read. With the output
# bound (max_out plus one 64 KiB answer) a replica's TCP buffers stay under
# max_conns x (MAX_INBUF + max_out + 64 KiB): 40 MiB with the defaults.
MAX_INBUF = 2 * (2 + 65535)
READ_SIZE = 65536


class TcpConn:
    __slots__ = (
        "closed",
        "created",
        "fd",
        "inbuf",
        "inflight",
        "last_active",
        "mask",
        "outbuf",
        "paused",
        "peer",
        "sock",
        "source",
    )

    def __init__(self, sock: socket.socket, peer: Any, now: float) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.peer = peer
        self.source = str(peer[0]) if isinstance(peer, tuple) and peer else "?"
        self.inbuf = bytearray()
        self.outbuf = bytearray()
        self.created = now
        self.last_active = now
        self.inflight = 0
        self.paused = False
        self.closed = False
        self.mask = select.EPOLLIN


# conn, query bytes, now -> the answer, or None when it will come later (forwarded)
QueryHandler = Callable[[TcpConn, bytes, float], Any]


class TcpConnections:
    """Accepted connections of one replica, driven by its epoll loop."""

    def __init__(
        self, listener: socket.socket, epoll: Any, handler: QueryHandler, limits: TcpLimits
    ) -> None:
        self.listener = listener
        self.epoll = epoll
        self.handler = handler
        self.limits = limits
        self.conns: Dict[int, TcpConn] = {}
        self.per_source: Dict[str, int] = {}
        self.refused = 0
        self.evicted = 0

    def accept(self) -> None:
        for sock, peer in accepted(self.listener):
            self._admit(sock, peer, time.monotonic())

    def _admit(self, sock: socket.socket, peer: Any, now: float) -> None:
        source = str(peer[0]) if isinstance(peer, tuple) and peer else "?"
        if self.per_source.get(source, 0) >= self.limits.per_source:
            self._reap_closed(source)
        if self.per_source.get(source, 0) >= self.limits.per_source:
            self.refused += 1
            sock.close()
            return
        if len(self.conns) >= self.limits.max_conns and not self._evict_idle():
            self.refused += 1
            sock.close()
            return
        sock.setblocking(False)
        conn = TcpConn(sock, peer, now)
        self.conns[conn.fd] = conn
        self.per_source[source] = self.per_source.get(source, 0) + 1
        self.epoll.register(conn.fd, select.EPOLLIN)

    def _reap_closed(self, source: str) -> None:
        """Read this source's connections before refusing it: those its client already
        closed (EOF not read yet) go, so the cap counts live connections only."""
        for conn in [c for c in self.conns.values() if c.source == source]:
            for _ in range(4):
                if conn.closed or not self._read(conn):
                    break

    def _evict_idle(self) -> bool:
        idle = [c for c in self.conns.values() if not c.inflight and not c.outbuf]
        if not idle:
            return False
        self.evicted += 1
        self.close(min(idle, key=lambda c: c.last_active))
        return True

    def close(self, conn: TcpConn) -> None:
        if conn.closed:
            return
        conn.closed = True
        self.conns.pop(conn.fd, None)
        left = self.per_source.get(conn.source, 1) - 1
        if left > 0:
            self.per_source[conn.source] = left
        else:
            self.per_source.pop(conn.source, None)
        try:
            self.epoll.unregister(conn.fd)
        except (OSError, ValueError):
            pass
        conn.sock.close()

    def close_all(self) -> None:
        for conn in list(self.conns.values()):
            self.close(conn)

    def event(self, conn: TcpConn, mask: int) -> None:
        if mask & select.EPOLLOUT:
            self._flush(conn)
        if conn.closed or not mask & (select.EPOLLIN | select.EPOLLHUP | select.EPOLLERR):
            return
        self._read(conn)

    def _read(self, conn: TcpConn) -> bool:
        """Read one chunk and answer what it completes; False when nothing was there
        (or the connection already holds MAX_INBUF unanswered bytes)."""
        if len(conn.inbuf) >= MAX_INBUF:
            return False
        try:
            chunk = conn.sock.recv(READ_SIZE)
        except BlockingIOError:
            return False
        except OSError:
            self.close(conn)
            return False
        if not chunk:
            self.close(conn)
            return False
        now = time.monotonic()
        conn.last_active = now
        conn.inbuf += chunk
        self._messages(conn, now)
        return True

    def _messages(self, conn: TcpConn, now: float) -> None:
        buf = conn.inbuf
        while len(buf) >= 2 and not conn.closed and not conn.paused:
            length = (buf[0] << 8) | buf[1]
            if len(buf) < 2 + length:
                return
            data = bytes(buf[2 : 2 + length])
            del buf[: 2 + length]
            if conn.inflight >= self.limits.max_inflight:
                self._pause(conn)
                buf[:0] = wire.U16.pack(length) + data  # read it again once answers left
                return
            answer = self.handler(conn, data, now)
            if answer is not None:
                self.send(conn, answer)

    def send(self, conn: TcpConn, answer: bytes) -> None:
        """Frame and send one answer (never raises); a stuck reader stops being read."""
        if conn.closed:
            return
        answer = cut_to_fit(answer)
        conn.outbuf += wire.U16.pack(len(answer)) + answer
        self._flush(conn)
        if not conn.closed and len(conn.outbuf) > self.limits.max_out:
            self._pause(conn)

    def answered(self, conn: TcpConn, answer: bytes) -> None:
        """A forwarded query's answer arrived: one less in flight, maybe read again."""
        conn.inflight -= 1
        self.send(conn, answer)
        if conn.paused and len(conn.outbuf) <= self.limits.max_out:
            self._resume(conn)

    def _pause(self, conn: TcpConn) -> None:
        conn.paused = True
        self._watch(conn)

    def _resume(self, conn: TcpConn) -> None:
        if conn.inflight >= self.limits.max_inflight:
            return
        conn.paused = False
        self._watch(conn)
        self._messages(conn, time.monotonic())

    def _watch(self, conn: TcpConn) -> None:
        want = (0 if conn.paused else select.EPOLLIN) | (select.EPOLLOUT if conn.outbuf else 0)
        if want == conn.mask:
            return
        conn.mask = want
        try:
            self.epoll.modify(conn.fd, want)
        except OSError:
            pass

    def _flush(self, conn: TcpConn) -> None:
        if conn.closed:
            return
        try:
            sent = conn.sock.send(conn.outbuf) if conn.outbuf else 0
        except BlockingIOError:
            sent = 0
        except OSError:
            self.close(conn)
            return
        del conn.outbuf[:sent]
        conn.last_active = time.monotonic()
        if conn.paused and not conn.outbuf and conn.inflight < self.limits.max_inflight:
            self._resume(conn)
        else:
            self._watch(conn)

    def expire(self, now: float) -> None:
        """Close connections past their lifetime, and idle ones with nothing in flight."""
        limits = self.limits
        for conn in list(self.conns.values()):
            idle = now - conn.last_active > limits.idle and not conn.inflight and not conn.outbuf
            if idle or now - conn.created > limits.lifetime:
                self.close(conn)
