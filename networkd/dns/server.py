"""One DNS replica's event loop: the shared UDP and TCP sockets, epoll, one thread.

Hot path (UDP): ``recvmmsg`` a batch -> for each query, look the bytes after its ID up
in a memo of finished answers (networkd/dns/memo.py: local names until the zone changes,
cached names until a TTL counts down, one dict for both) -> prepend the ID -> one
``sendmmsg`` for the batch. A memo miss takes the slow path: parse (networkd/dns/wire.py), the zone, the replica's
copy of the node's cache (networkd/dns/cache.py, filled by the forwarder), else hand the
query to the forwarder (networkd/dns/replica_link.py). A batch is answered, and its
handed queries sent, before the next batch is read: a replica killed at any instant
loses at most the one batch it holds.

TCP clients (networkd/dns/tcp.py) go through the same lookups; their forwarded queries
come back from the forwarder through the link.

The zone comes from another thread (the worker's bus loop) through ``set_zone``, which
replaces an immutable object with one assignment.
"""

import logging
import os
import select
import socket
import threading
import time
from typing import Any, Optional, Tuple, Union

from networkd.dns import answers, wire
from networkd.dns.cache import ForwardCache, exact_until
from networkd.dns.memo import Memo
from networkd.dns.mmsg import BatchedUdp, PlainUdp
from networkd.dns.replica_link import ForwarderLink
from networkd.dns.stats import ReplicaStats
from networkd.dns.tcp import TcpConn, TcpConnections, TcpLimits
from networkd.dns.zone import Zone

log = logging.getLogger("networkd.dns")

UDP_BATCHES = 16  # batches per wake-up before looking at the other sockets
TIMER_SECONDS = 0.05  # timer granularity while timers matter (see _timers_matter)
IDLE_SECONDS = 1.0  # otherwise the loop sleeps until a packet, a connection or a stop
# recvmmsg/sendmmsg batching (networkd.dns.mmsg); NETWORKD_DNS_MMSG=0 turns it off.
USE_MMSG = os.environ.get("NETWORKD_DNS_MMSG", "1") != "0"

EPOLLEXCLUSIVE = getattr(select, "EPOLLEXCLUSIVE", 1 << 28)

Client = Union[Tuple[Any, ...], TcpConn]
LOCAL, CACHED, HANDED = 1, 2, 3  # how a query was answered (HANDED: by the forwarder)


def register_shared(ep: Any, fd: int) -> None:
    """Watch a listening socket every replica shares, woken alone when a packet or a
    connection comes (EPOLLEXCLUSIVE, Linux 4.5): without it every idle replica wakes
    for every datagram and all but one find nothing, which at moderate rates cost more
    CPU than the queries (docs/ARCHITECTURE.md, "DNS sockets"). Plain EPOLLIN where the
    kernel lacks it (CentOS 7's 3.10)."""
    try:
        ep.register(fd, select.EPOLLIN | EPOLLEXCLUSIVE)
    except OSError:
        ep.register(fd, select.EPOLLIN)


class DnsServer:
    """Serves DNS on the shared listening sockets until ``stop()``."""

    def __init__(
        self,
        udp: socket.socket,
        tcp: Optional[socket.socket] = None,
        forwarder_path: str = "",
        *,
        name: str = "dns",
        cache_bytes: int = 64 << 20,
        forward_deadline: float = 5.0,
        tcp_limits: Optional[TcpLimits] = None,
    ) -> None:
        self.udp = udp
        self.tcp_listener = tcp
        self.name = name
        self.stats = ReplicaStats()
        self.cache = ForwardCache(cache_bytes)
        self.link = ForwarderLink(forwarder_path, name, self.cache, self.stats, forward_deadline)
        self.link.on_tcp_answer = self._tcp_answered
        self.link.on_fail = self._servfail
        self.link.on_clear = self._clear_cached_memo
        self.tcp_limits = tcp_limits or TcpLimits()
        self.tcp: Optional[TcpConnections] = None
        self._zone = Zone({}, {}, 0)
        self._memo = Memo()
        self._memo_version = -1
        self._udp_io: Union[BatchedUdp, PlainUdp] = PlainUdp(udp)
        if USE_MMSG:
            try:
                self._udp_io = BatchedUdp(udp)
            except OSError as exc:
                log.info("dns batched udp unavailable reason=%s", exc)
        self._stop = threading.Event()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._epoll: Any = None
        self._link_fd = -1
        self._link_mask = 0
        self._next_timer = 0.0

    # ------------------------------------------------------------------ any thread

    def set_zone(self, zone: Zone) -> None:
        self._zone = zone

    @property
    def zone(self) -> Zone:
        return self._zone

    def stop(self) -> None:
        self._stop.set()
        try:
            self._wake_w.send(b"x")
        except OSError:
            pass

    # ------------------------------------------------------------------ loop

    def serve_forever(self) -> None:
        self.udp.setblocking(False)
        ep = self._epoll = select.epoll()
        udp_fd = self.udp.fileno()
        register_shared(ep, udp_fd)
        tcp_fd = -1
        if self.tcp_listener is not None:
            self.tcp_listener.setblocking(False)
            tcp_fd = self.tcp_listener.fileno()
            register_shared(ep, tcp_fd)
            self.tcp = TcpConnections(self.tcp_listener, ep, self._tcp_query, self.tcp_limits)
        ep.register(self._wake_r.fileno(), select.EPOLLIN)
        conns = self.tcp.conns if self.tcp is not None else {}
        try:
            while not self._stop.is_set():
                timeout = TIMER_SECONDS if self._timers_matter() else IDLE_SECONDS
                for fd, mask in ep.poll(timeout):
                    if fd == udp_fd:
                        self._drain_udp()
                    elif fd == self._link_fd:
                        self._link_event(mask)
                    elif fd in conns:
                        assert self.tcp is not None
                        self.tcp.event(conns[fd], mask)
                    elif fd == tcp_fd:
                        assert self.tcp is not None
                        self.tcp.accept()
                now = time.monotonic()
                if now >= self._next_timer:
                    self._timers(now)
        finally:
            self._shutdown()

    def _shutdown(self) -> None:
        if self.tcp is not None:
            self.tcp.close_all()
        self.link.disconnect("stopping")
        if self._epoll is not None:
            self._epoll.close()
            self._epoll = None

    def _timers_matter(self) -> bool:
        """Reconnecting to the forwarder, queries handed to it, or TCP clients to expire."""
        return (
            not self.link.connected
            or bool(self.link.handed)
            or (self.tcp is not None and bool(self.tcp.conns))
        )

    def _timers(self, now: float) -> None:
        self._next_timer = now + TIMER_SECONDS
        self.link.expire(now)  # first: a query past its deadline is not handed over again
        fd = self.link.connect(now)
        if fd is not None:
            self._link_fd = fd
            self._link_mask = select.EPOLLIN | select.EPOLLOUT
            self._epoll.register(fd, self._link_mask)
        self._flush_link()  # sends the hello and the handed queries, or notices it failed
        if self.tcp is not None:
            self.tcp.expire(now)

    def _link_event(self, mask: int) -> None:
        if mask & (select.EPOLLIN | select.EPOLLHUP | select.EPOLLERR):
            self.link.readable()
        self._flush_link()

    def _flush_link(self) -> None:
        """Send what the link holds; watch for room only while something waits."""
        if self._link_fd < 0:
            return
        if not self.link.connected:
            self._link_fd = -1  # the socket is closed, which took it out of epoll
            return
        pending = self.link.flush()
        if not self.link.connected:
            self._link_fd = -1
            return
        mask = select.EPOLLIN | (select.EPOLLOUT if pending else 0)
        if mask != self._link_mask:
            self._link_mask = mask
            self._epoll.modify(self._link_fd, mask)

    def _clear_cached_memo(self) -> None:
        self._memo.clear_timed()

    # ------------------------------------------------------------------ UDP

    def _refresh_memo(self, zone: Zone, now: float) -> None:
        memo = self._memo
        if zone.version != self._memo_version:
            memo.clear()  # cached answers too: a name that became local must not be served
            self._memo_version = zone.version
        elif now >= memo.next_expiry:
            memo.expire(now)

    def _drain_udp(self) -> None:
        """Up to UDP_BATCHES batches: each received, answered and handed over in turn."""
        io = self._udp_io
        link = self.link
        memo_get = self._memo.answers.get
        stale_pop = self._memo.stale.pop
        rcodes = self.stats.rcodes
        batch = io.batch
        for _ in range(UDP_BATCHES):
            try:
                got = io.receive()
            except OSError as exc:
                log.warning("dns udp receive failed reason=%s", exc)
                return
            if not got:
                return
            zone = self._zone
            now = time.monotonic()
            self._refresh_memo(zone, now)
            replies = []
            for slot, data in got:
                key = data[2:]
                answer = memo_get(key)
                if answer is None:
                    query = stale_pop(key, None)
                    full = None if query is None else self._rebuild(data, query, now)
                    if full is None:
                        full = self._slow_udp(data, io, slot, zone, now)
                    if full is not None:
                        replies.append((slot, full))
                        rcodes[full[3] & 15] += 1
                    continue
                replies.append((slot, data[:2] + answer))
                rcodes[answer[1] & 15] += 1
            self.stats.queries += len(got)  # counted before the answers leave
            io.reply(replies)
            if link.has_asks:
                self._flush_link()
            if len(got) < batch:
                return  # it found the socket empty: epoll says when the next one comes

    def _slow_udp(
        self, data: bytes, io: Union[BatchedUdp, PlainUdp], slot: int, zone: Zone, now: float
    ) -> Optional[bytes]:
        try:
            answer, how, until, query = self._answer(data, zone, now, tcp=False)
            if how == HANDED:  # the client's address is only needed here (a ctypes read)
                self.link.ask(io.address(slot), data, False, now)
        except Exception:  # never let one packet stop the replica
            log.exception("dns query failed from=%s", io.address(slot))
            return None
        if answer is not None:
            if how == LOCAL:
                self._memo.put(data[2:], answer[2:])
            elif how == CACHED and until > now:
                self._memo.put(data[2:], answer[2:], until, query)
        return answer

    def _rebuild(self, data: bytes, q: wire.Query, now: float) -> Optional[bytes]:
        """A cached name's answer again, from the query parsed when it was last built
        (the same bytes after the ID, the same zone: ``Memo.stale``); None when the cache
        no longer holds it (then the slow path decides). The bytes are what the slow
        path would build, but for the ID."""
        try:
            hit = self._from_cache(q, now, answers.limit_for(q, False))
        except Exception:
            log.exception("dns rebuild failed")
            return None
        if hit is None:
            return None
        answer, until = hit
        if until > now:
            self._memo.put(data[2:], answer[2:], until, q)
        return data[:2] + answer[2:]

    def _from_cache(self, q: wire.Query, now: float, limit: int) -> Optional[Tuple[bytes, float]]:
        """(the answer from the replica's cache copy, until when it is exact), or None."""
        entry = self.cache.get(q.cache_key(), now)
        if entry is None:
            return None
        self.stats.cache_hits += 1
        return answers.cached_answer(q, entry, now, limit), exact_until(entry, now)

    # ------------------------------------------------------------------ answers

    def _answer(
        self, data: bytes, zone: Zone, now: float, tcp: bool
    ) -> Tuple[Optional[bytes], int, float, Optional[wire.Query]]:
        """(answer or None, how, until when a CACHED answer is exact, the parsed query).
        None: no answer (ignored, or HANDED: the caller hands it to the forwarder)."""
        try:
            q = wire.parse_query(data)
        except wire.Ignore:
            return None, 0, 0.0, None
        except wire.FormatError:
            return answers.formerr_answer(data), 0, 0.0, None
        if q.flags & wire.OPCODE_MASK:
            return answers.error_answer(q, wire.RCODE_NOTIMP), 0, 0.0, q
        if q.edns is not None and q.edns.version != 0:
            return answers.error_answer(q, wire.RCODE_BADVERS), 0, 0.0, q
        if q.qtype in wire.ZONE_TRANSFERS:
            return answers.error_answer(q, wire.RCODE_REFUSED), 0, 0.0, q
        limit = answers.limit_for(q, tcp)
        if q.qclass == wire.CLASS_IN:
            record = zone.lookup(q.lname)
            if record is not None:
                return answers.local_answer(q, record, limit), LOCAL, 0.0, q
        hit = self._from_cache(q, now, limit)
        if hit is not None:
            return hit[0], CACHED, hit[1], q
        return None, HANDED, 0.0, q

    def _servfail(self, client: Any, data: bytes, tcp: bool) -> None:
        """No forwarder answered in time: SERVFAIL from here."""
        try:
            answer = answers.error_answer(wire.parse_query(data), wire.RCODE_SERVFAIL)
        except (wire.FormatError, wire.Ignore):
            return
        self.stats.rcodes[wire.RCODE_SERVFAIL] += 1
        if tcp:
            self._tcp_answered(client, answer)
            return
        try:
            self.udp.sendto(answer, client)
        except OSError as exc:
            log.debug("dns udp send failed to=%s reason=%s", client, exc)

    # ------------------------------------------------------------------ TCP

    def _tcp_query(self, conn: TcpConn, data: bytes, now: float) -> Optional[bytes]:
        self.stats.queries += 1
        try:
            answer, how, _, _ = self._answer(data, self._zone, now, tcp=True)
            if how == HANDED:
                self.link.ask(conn, data, True, now)
        except Exception:
            log.exception("dns query failed from=%s", conn.peer)
            return None
        if answer is None:
            if how == HANDED:
                conn.inflight += 1
                self._flush_link()
            return None
        self.stats.rcodes[answer[3] & 15] += 1
        return answer

    def _tcp_answered(self, conn: Any, answer: bytes) -> None:
        if self.tcp is not None and isinstance(conn, TcpConn):
            self.stats.rcodes[answer[3] & 15] += 1
            self.tcp.answered(conn, answer)
