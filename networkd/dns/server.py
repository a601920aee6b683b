"""One DNS replica's event loop: UDP and TCP on sockets it is given, epoll, no threads
on the common path.

Hot path (UDP): ``recvfrom`` -> look the query's bytes after the ID up in a memo of
finished answers -> prepend the ID -> ``sendto``. The memo holds answers for local names
(cleared whenever the zone changes) and, in a second memo cleared every second,
answers served from the forwarding cache (so TTLs still count down). A memo miss takes
the slow path: parse, look up the zone (precomputed answer records), the cache, or
forward upstream.

Data updates come from another thread (the worker's bus loop) through ``set_zone`` and
``set_forwarding``: each replaces an immutable object with one assignment.
"""

import heapq
import logging
import os
import queue
import random
import select
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from networkd.dns import wire
from networkd.dns.cache import ForwardCache, patched_body
from networkd.dns.forward import Address, Forwarding, Health
from networkd.dns.mmsg import BatchedUdp
from networkd.dns.records import Record
from networkd.dns.zone import Zone

log = logging.getLogger("networkd.dns")

MEMO_MAX = 65536
UDP_BATCH = 256
# recvmmsg/sendmmsg batching (networkd.dns.mmsg); NETWORKD_DNS_MMSG=0 turns it off.
USE_MMSG = os.environ.get("NETWORKD_DNS_MMSG", "1") != "0"
TCP_MAX_CONNS = 1024
TCP_MAX_OUT = 1 << 20
TCP_MAX_INFLIGHT = 64
PENDING_MAX = 20000
# Upper bounds (seconds) of the forward-latency histogram, Prometheus style.
LATENCY_BOUNDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)

HEADER = wire.HEADER
U16 = wire.U16


class Stats:
    """Counters of one replica (read by the worker thread; ints are updated atomically)."""

    def __init__(self) -> None:
        self.queries = 0
        self.rcodes = [0] * 16
        self.cache_hits = 0
        self.forwarded = 0
        self.upstream_failures = 0
        self.latency = [0] * (len(LATENCY_BOUNDS) + 1)  # per bucket; the last is +Inf
        self.latency_sum = 0.0

    def rcode_counts(self) -> Dict[str, int]:
        out = {}
        for code, count in enumerate(self.rcodes):
            if count:
                out[wire.RCODE_NAMES.get(code, str(code))] = count
        return out

    def observe_latency(self, seconds: float) -> None:
        self.latency_sum += seconds
        for index, bound in enumerate(LATENCY_BOUNDS):
            if seconds <= bound:
                self.latency[index] += 1
                return
        self.latency[-1] += 1

    def latency_histogram(self) -> Dict[str, int]:
        """Cumulative counts keyed by upper bound ("0.001" ... "+Inf"), as Prometheus wants."""
        out: Dict[str, int] = {}
        total = 0
        for bound, count in zip([*map(repr, LATENCY_BOUNDS), "+Inf"], self.latency):
            total += count
            out[bound] = total
        return out


class TcpConn:
    __slots__ = ("closed", "fd", "inbuf", "inflight", "last_active", "outbuf", "peer", "sock")

    def __init__(self, sock: socket.socket, peer: Any, now: float) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.peer = peer
        self.inbuf = bytearray()
        self.outbuf = bytearray()
        self.last_active = now
        self.inflight = 0
        self.closed = False


Client = Union[Tuple[Any, ...], TcpConn]


class Pending:
    """A forwarded query waiting for an upstream."""

    __slots__ = (
        "client",
        "client_id",
        "done",
        "final_deadline",
        "index",
        "key",
        "query",
        "rest",
        "servers",
        "started",
        "tcp",
    )

    def __init__(
        self,
        query: wire.Query,
        rest: bytes,
        client: Client,
        servers: List[Address],
        key: bytes,
        now: float,
        final_deadline: float,
    ) -> None:
        self.query = query
        self.rest = rest  # the client's query after its ID: flags, question, OPT kept
        self.client = client
        self.client_id = query.id
        self.servers = servers
        self.index = -1
        self.key = key
        self.started = now
        self.final_deadline = final_deadline
        self.done = False
        self.tcp = isinstance(client, TcpConn)


class DnsServer:
    """Serves DNS on a UDP and a TCP listening socket until ``stop()``."""

    def __init__(
        self,
        udp: socket.socket,
        tcp: Optional[socket.socket] = None,
        *,
        upstream_timeout: float = 1.0,
        forward_deadline: float = 4.0,
        tcp_idle: float = 10.0,
        cache_size: int = 20000,
        servfail_ttl: float = 1.0,
    ) -> None:
        self.udp = udp
        self.tcp = tcp
        self.upstream_timeout = upstream_timeout
        self.forward_deadline = forward_deadline
        self.tcp_idle = tcp_idle
        self.servfail_ttl = servfail_ttl
        self.stats = Stats()
        self.cache = ForwardCache(cache_size)
        self.health = Health()
        self._zone = Zone({}, {}, 0)
        own = self._own_addresses()
        self._own = own
        self._forwarding = Forwarding(own=own)
        self._seen_forwarding = self._forwarding
        self._memo: Dict[bytes, bytes] = {}
        self._memo_version = -1
        self._batched: Optional[BatchedUdp] = None
        if USE_MMSG:
            try:
                self._batched = BatchedUdp(udp)
            except OSError as exc:
                log.info("dns batched udp unavailable reason=%s", exc)
        self._fmemo: Dict[bytes, bytes] = {}
        self._fmemo_second = -1
        self._pending: Dict[int, Tuple[Pending, Address]] = {}
        self._timeouts: List[Tuple[float, int, int, int]] = []
        self._upstream_socks: Dict[int, socket.socket] = {}
        self._conns: Dict[int, TcpConn] = {}
        self._stop = threading.Event()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._results: queue.Queue[Tuple[Pending, Address, Optional[bytes]]] = queue.Queue()
        self._executor: Optional[ThreadPoolExecutor] = None
        self._epoll: Optional[Any] = None
        self._rng = random.Random(os.urandom(16))
        self._next_timer = 0.0

    # ------------------------------------------------------------------ updates (any thread)

    def _own_addresses(self) -> List[Address]:
        out: List[Address] = []
        try:
            name = self.udp.getsockname()
        except OSError:
            return out
        host, port = str(name[0]), int(name[1])
        out.append((host, port))
        if host in ("0.0.0.0", "::"):
            out += [("127.0.0.1", port), ("::1", port)]
        return out

    def set_zone(self, zone: Zone) -> None:
        self._zone = zone

    @property
    def zone(self) -> Zone:
        return self._zone

    def set_forwarding(
        self, upstreams: Sequence[str], domain_servers: Optional[Mapping[str, Sequence[str]]] = None
    ) -> None:
        self._forwarding = Forwarding(upstreams, domain_servers, own=self._own)

    @property
    def forwarding(self) -> Forwarding:
        return self._forwarding

    def stop(self) -> None:
        self._stop.set()
        self._wake()

    def _wake(self) -> None:
        try:
            self._wake_w.send(b"x")
        except OSError:
            pass

    # ------------------------------------------------------------------ loop

    def serve_forever(self) -> None:
        self.udp.setblocking(False)
        ep = select.epoll()
        self._epoll = ep
        ep.register(self.udp.fileno(), select.EPOLLIN)
        if self.tcp is not None:
            self.tcp.setblocking(False)
            ep.register(self.tcp.fileno(), select.EPOLLIN)
        ep.register(self._wake_r.fileno(), select.EPOLLIN)
        udp_fd = self.udp.fileno()
        tcp_fd = self.tcp.fileno() if self.tcp is not None else -1
        wake_fd = self._wake_r.fileno()
        poll = ep.poll
        try:
            while not self._stop.is_set():
                events = poll(0.1)
                for fd, mask in events:
                    if fd == udp_fd:
                        self._drain_udp()
                    elif fd == tcp_fd:
                        self._accept()
                    elif fd == wake_fd:
                        self._drain_wake()
                    elif fd in self._upstream_socks:
                        self._drain_upstream(self._upstream_socks[fd])
                    else:
                        conn = self._conns.get(fd)
                        if conn is not None:
                            self._conn_event(conn, mask)
                now = time.monotonic()
                if now >= self._next_timer:
                    self._timers(now)
        finally:
            self._shutdown()

    def _shutdown(self) -> None:
        for conn in list(self._conns.values()):
            self._close_conn(conn)
        for sock in self._upstream_socks.values():
            sock.close()
        self._upstream_socks.clear()
        if self._executor is not None:
            self._executor.shutdown(wait=False)
        if self._epoll is not None:
            self._epoll.close()
            self._epoll = None

    def _timers(self, now: float) -> None:
        self._next_timer = now + 0.05
        heap = self._timeouts
        pending = self._pending
        while heap and heap[0][0] <= now:
            _deadline, qid, serial, cleanup = heapq.heappop(heap)
            found = pending.get(qid)
            if found is None or id(found[0]) != serial:
                continue
            p, server = found
            if cleanup or p.done:
                del pending[qid]
                continue
            # this server is late: keep listening to it until the final deadline, but
            # ask the next one now
            heapq.heappush(heap, (p.final_deadline, qid, serial, 1))
            self.stats.upstream_failures += 1
            self.health.failed(server, now)
            if p.servers[p.index] == server:
                self._next_server(p, now)
        if self.tcp_idle > 0:
            limit = now - self.tcp_idle
            for conn in [c for c in self._conns.values() if c.last_active < limit]:
                if conn.inflight == 0:
                    self._close_conn(conn)

    def _drain_wake(self) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except OSError:
            pass
        while True:
            try:
                p, server, data = self._results.get_nowait()
            except queue.Empty:
                break
            if p.done:
                continue
            now = time.monotonic()
            if data is None:
                self.stats.upstream_failures += 1
                self._next_server(p, now)
            else:
                self._upstream_answer(p, server, data, now, via_tcp=True)

    # ------------------------------------------------------------------ UDP

    def _drain_udp(self) -> None:
        zone = self._zone
        if zone.version != self._memo_version:
            self._memo.clear()
            self._memo_version = zone.version
        now = time.monotonic()
        second = int(now)
        if second != self._fmemo_second or self._forwarding is not self._seen_forwarding:
            if self._forwarding.domain_servers != self._seen_forwarding.domain_servers:
                self.cache.clear()
            self._seen_forwarding = self._forwarding
            self._fmemo.clear()
            self._fmemo_second = second
        if self._batched is not None:
            self._drain_udp_batched(self._batched, zone, now)
            return
        recvfrom = self.udp.recvfrom
        sendto = self.udp.sendto
        memo_get = self._memo.get
        fmemo_get = self._fmemo.get
        rcodes = self.stats.rcodes
        count = 0
        try:
            while count < UDP_BATCH:
                try:
                    data, addr = recvfrom(4096)
                except BlockingIOError:
                    break
                count += 1
                if self._zone is not zone:  # updated by the bus thread meanwhile
                    zone = self._zone
                    self._memo.clear()
                    self._memo_version = zone.version
                key = data[2:]
                answer = memo_get(key)
                if answer is None:
                    answer = fmemo_get(key)
                    if answer is None:
                        self._slow_udp(data, addr, zone, now)
                        continue
                try:
                    sendto(data[:2] + answer, addr)
                except OSError:
                    pass
                rcodes[answer[1] & 15] += 1
        except OSError as exc:
            log.warning("udp receive failed reason=%s", exc)
        finally:
            self.stats.queries += count

    def _drain_udp_batched(self, batched: BatchedUdp, zone: Zone, now: float) -> None:
        """The same hot path with one recvmmsg and one sendmmsg per batch of queries."""
        memo_get = self._memo.get
        fmemo_get = self._fmemo.get
        rcodes = self.stats.rcodes
        count = 0
        try:
            while count < UDP_BATCH:
                got = batched.receive()
                if not got:
                    break
                if self._zone is not zone:  # updated by the bus thread meanwhile
                    zone = self._zone
                    self._memo.clear()
                    self._memo_version = zone.version
                answers = []
                for slot, data in got:
                    key = data[2:]
                    answer = memo_get(key)
                    if answer is None:
                        answer = fmemo_get(key)
                        if answer is None:
                            self._slow_udp(data, batched.address(slot), zone, now)
                            continue
                    answers.append((slot, data[:2] + answer))
                    rcodes[answer[1] & 15] += 1
                count += len(got)
                self.stats.queries += len(got)  # counted before the answers leave
                batched.reply(answers)
        except OSError as exc:
            log.warning("udp receive failed reason=%s", exc)

    def _send_udp(self, data: bytes, addr: Any) -> None:
        try:
            self.udp.sendto(data, addr)
        except OSError as exc:
            log.debug("udp send failed to=%s reason=%s", addr, exc)
        self.stats.rcodes[data[3] & 15] += 1

    def _slow_udp(self, data: bytes, addr: Any, zone: Zone, now: float) -> None:
        try:
            answer, memo = self._answer(data, addr, zone, now, tcp=False)
        except Exception:  # never let one packet stop the replica
            log.exception("query failed from=%s", addr)
            answer, memo = wire.error_response(data, wire.RCODE_SERVFAIL), 0
        if answer is None:
            return
        if memo == 1:
            if len(self._memo) >= MEMO_MAX:
                self._memo.clear()
            self._memo[data[2:]] = answer[2:]
        elif memo == 2:
            if len(self._fmemo) >= MEMO_MAX:
                self._fmemo.clear()
            self._fmemo[data[2:]] = answer[2:]
        self._send_udp(answer, addr)

    # ------------------------------------------------------------------ answers

    def _answer(
        self, data: bytes, client: Client, zone: Zone, now: float, tcp: bool
    ) -> Tuple[Optional[bytes], int]:
        """(answer or None, memo kind: 0 none, 1 local, 2 cache). None: no answer now."""
        try:
            q = wire.parse_query(data)
        except wire.Ignore:
            return None, 0
        except wire.FormatError:
            return wire.error_response(data, wire.RCODE_FORMERR), 0
        if q.flags & wire.OPCODE_MASK:
            return wire.error_response(data, wire.RCODE_NOTIMP), 0
        if q.edns is not None and q.edns.version != 0:
            flags = wire.response_flags(q.flags, 0)
            opt = wire.opt_record(wire.OUR_UDP_SIZE, q.edns.flags, ext_rcode=1)  # BADVERS
            return HEADER.pack(q.id, flags, 1, 0, 0, 1) + q.question + opt, 0
        if q.qclass == wire.CLASS_IN:
            record = zone.lookup(q.lname)
            if record is not None:
                return self._local_answer(q, record, tcp), 1
        key = q.lname + q.question[-4:]
        entry = self.cache.get(key, now)
        if entry is not None:
            self.stats.cache_hits += 1
            return self._cached_answer(q, entry, now, tcp), 2
        self._forward(q, data[2:], client, key, now)
        return None, 0

    def _local_answer(self, q: wire.Query, record: Record, tcp: bool) -> bytes:
        rrs, count, size = record.answer(q.qtype)
        flags = wire.response_flags(q.flags, wire.RCODE_NOERROR, aa=True)
        opt = b"" if q.edns is None else wire.opt_record(wire.OUR_UDP_SIZE, q.edns.flags)
        if not tcp:
            room = q.max_udp - 12 - len(q.question) - len(opt)
            if len(rrs) > room:
                count = max(0, room // size)
                rrs = rrs[: count * size]
                flags |= wire.FLAG_TC
        return HEADER.pack(q.id, flags, 1, count, 0, 1 if opt else 0) + q.question + rrs + opt

    def _opt_for(self, q: wire.Query) -> bytes:
        return b"" if q.edns is None else wire.opt_record(wire.OUR_UDP_SIZE, q.edns.flags)

    def _cached_answer(self, q: wire.Query, entry: Any, now: float, tcp: bool) -> bytes:
        opt = self._opt_for(q)
        flags = wire.response_flags(q.flags, entry.rcode)
        if entry.flags & wire.FLAG_AD and (
            q.flags & wire.FLAG_AD or (q.edns is not None and q.edns.flags & wire.EDNS_DO)
        ):
            flags |= wire.FLAG_AD
        an, ns, ar = entry.counts
        body = patched_body(entry, now)
        answer = HEADER.pack(q.id, flags, 1, an, ns, ar + (1 if opt else 0)) + q.question
        answer += body + opt
        if not tcp and len(answer) > q.max_udp:
            return self._truncated(q, flags, opt)
        return answer

    def _truncated(self, q: wire.Query, flags: int, opt: bytes) -> bytes:
        flags |= wire.FLAG_TC
        return HEADER.pack(q.id, flags, 1, 0, 0, 1 if opt else 0) + q.question + opt

    def _servfail(self, q: wire.Query) -> bytes:
        opt = self._opt_for(q)
        flags = wire.response_flags(q.flags, wire.RCODE_SERVFAIL)
        return HEADER.pack(q.id, flags, 1, 0, 0, 1 if opt else 0) + q.question + opt

    # ------------------------------------------------------------------ forwarding

    def _forward(self, q: wire.Query, rest: bytes, client: Client, key: bytes, now: float) -> None:
        servers = self.health.order(self._forwarding.servers_for(q.lname), now)
        if not servers or len(self._pending) >= PENDING_MAX:
            self._reply(client, self._servfail(q))
            return
        self.stats.forwarded += 1
        p = Pending(q, rest, client, servers, key, now, now + self.forward_deadline)
        if isinstance(client, TcpConn):
            client.inflight += 1
        self._next_server(p, now)

    def _next_server(self, p: Pending, now: float) -> None:
        p.index += 1
        if p.index >= len(p.servers) or now >= p.final_deadline:
            self._finish_failed(p, now)
            return
        server = p.servers[p.index]
        sock = self._upstream_sock(server)
        if sock is None:
            self._next_server(p, now)
            return
        qid = self._rng.randrange(0x10000)
        while qid in self._pending:
            qid = self._rng.randrange(0x10000)
        try:
            sock.sendto(U16.pack(qid) + p.rest, server)
        except OSError as exc:
            log.debug("upstream send failed server=%s reason=%s", server, exc)
            self.stats.upstream_failures += 1
            self.health.failed(server, now)
            self._next_server(p, now)
            return
        self._pending[qid] = (p, server)
        deadline = min(now + self.upstream_timeout, p.final_deadline)
        heapq.heappush(self._timeouts, (deadline, qid, id(p), 0))
        if deadline < self._next_timer:
            self._next_timer = deadline

    def _finish_failed(self, p: Pending, now: float) -> None:
        if p.done:
            return
        p.done = True
        self.cache.store_failure(p.key, now, self.servfail_ttl)
        self._complete(p, self._servfail(p.query), now)

    def _complete(self, p: Pending, answer: bytes, now: float) -> None:
        p.done = True
        self.stats.observe_latency(now - p.started)
        client = p.client
        if isinstance(client, TcpConn):
            client.inflight -= 1
        self._reply(client, answer)

    def _reply(self, client: Client, answer: bytes) -> None:
        if isinstance(client, TcpConn):
            self.stats.rcodes[answer[3] & 15] += 1
            self._tcp_send(client, answer)
        else:
            self._send_udp(answer, client)

    def _upstream_sock(self, server: Address) -> Optional[socket.socket]:
        family = socket.AF_INET6 if ":" in server[0] else socket.AF_INET
        for sock in self._upstream_socks.values():
            if sock.family == family:
                return sock
        try:
            sock = socket.socket(family, socket.SOCK_DGRAM)
            sock.setblocking(False)
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 21)
            except OSError:
                pass
        except OSError as exc:
            log.warning("upstream socket failed family=%s reason=%s", family, exc)
            return None
        self._upstream_socks[sock.fileno()] = sock
        if self._epoll is not None:
            self._epoll.register(sock.fileno(), select.EPOLLIN)
        return sock

    def _drain_upstream(self, sock: socket.socket) -> None:
        for _ in range(UDP_BATCH):
            try:
                data, addr = sock.recvfrom(65535)
            except BlockingIOError:
                return
            except OSError as exc:
                log.debug("upstream receive failed reason=%s", exc)
                return
            if len(data) < 12:
                continue
            found = self._pending.get(U16.unpack_from(data)[0])
            if found is None:
                continue
            p, server = found
            if (str(addr[0]), int(addr[1])) != server:
                continue  # not from the server we asked: ignore (spoofing)
            try:
                self._upstream_answer(p, server, data, time.monotonic(), via_tcp=False)
            except Exception:
                log.exception("upstream answer failed server=%s", server)

    def _upstream_answer(
        self, p: Pending, server: Address, data: bytes, now: float, via_tcp: bool
    ) -> None:
        q = p.query
        qlen = len(q.question)
        if (
            len(data) < 12 + qlen
            or not data[2] & 0x80
            or data[4:6] != b"\x00\x01"
            or data[12 : 12 + qlen] != q.question
        ):
            return  # not an answer to our question
        if not via_tcp:
            self._pending.pop(U16.unpack_from(data)[0], None)
        if p.done:
            return
        self.health.ok(server)
        rcode = data[3] & 0xF
        if rcode == wire.RCODE_SERVFAIL:
            self.stats.upstream_failures += 1
            self._next_server(p, now)
            return
        if data[2] & 0x02 and p.tcp and not via_tcp:
            self._fetch_tcp(p, server)  # truncated over UDP: ask the same server over TCP
            return
        answer = U16.pack(p.client_id) + data[2:]
        if not p.tcp and len(answer) > q.max_udp:
            flags = U16.unpack_from(data, 2)[0]
            answer = self._truncated(q, flags, self._opt_for(q))
        try:
            scan = wire.scan_response(data, qlen)
        except wire.FormatError as exc:
            log.debug("upstream answer not cached server=%s reason=%s", server, exc)
        else:
            self.cache.store(p.key, scan, now)
        self._complete(p, answer, now)

    def _fetch_tcp(self, p: Pending, server: Address) -> None:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=4, thread_name_prefix="dns-tcp")
        timeout = max(0.1, p.final_deadline - time.monotonic())
        message = U16.pack(self._rng.randrange(0x10000)) + p.rest

        def fetch() -> None:
            data: Optional[bytes] = None
            try:
                data = tcp_exchange(server, message, timeout)
            except (OSError, ValueError) as exc:
                log.debug("upstream tcp failed server=%s reason=%s", server, exc)
            self._results.put((p, server, data))
            self._wake()

        self._executor.submit(fetch)

    # ------------------------------------------------------------------ TCP

    def _accept(self) -> None:
        assert self.tcp is not None
        for _ in range(64):
            try:
                sock, peer = self.tcp.accept()
            except BlockingIOError:
                return
            except OSError as exc:
                log.warning("tcp accept failed reason=%s", exc)
                return
            if len(self._conns) >= TCP_MAX_CONNS:
                sock.close()
                continue
            sock.setblocking(False)
            conn = TcpConn(sock, peer, time.monotonic())
            self._conns[conn.fd] = conn
            if self._epoll is not None:
                self._epoll.register(conn.fd, select.EPOLLIN)

    def _close_conn(self, conn: TcpConn) -> None:
        if conn.closed:
            return
        conn.closed = True
        self._conns.pop(conn.fd, None)
        if self._epoll is not None:
            try:
                self._epoll.unregister(conn.fd)
            except OSError:
                pass
        conn.sock.close()

    def _conn_event(self, conn: TcpConn, mask: int) -> None:
        if mask & select.EPOLLOUT:
            self._flush(conn)
        if mask & (select.EPOLLIN | select.EPOLLHUP | select.EPOLLERR) and not conn.closed:
            try:
                chunk = conn.sock.recv(65536)
            except BlockingIOError:
                return
            except OSError:
                self._close_conn(conn)
                return
            if not chunk:
                self._close_conn(conn)
                return
            now = time.monotonic()
            conn.last_active = now
            conn.inbuf += chunk
            self._tcp_messages(conn, now)

    def _tcp_messages(self, conn: TcpConn, now: float) -> None:
        buf = conn.inbuf
        zone = self._zone
        while len(buf) >= 2 and not conn.closed:
            length = (buf[0] << 8) | buf[1]
            if len(buf) < 2 + length:
                return
            data = bytes(buf[2 : 2 + length])
            del buf[: 2 + length]
            self.stats.queries += 1
            if conn.inflight >= TCP_MAX_INFLIGHT:
                answer = wire.error_response(data, wire.RCODE_SERVFAIL)
            else:
                try:
                    answer, _memo = self._answer(data, conn, zone, now, tcp=True)
                except Exception:
                    log.exception("query failed from=%s", conn.peer)
                    answer = wire.error_response(data, wire.RCODE_SERVFAIL)
            if answer is not None:
                self.stats.rcodes[answer[3] & 15] += 1
                self._tcp_send(conn, answer)

    def _tcp_send(self, conn: TcpConn, answer: bytes) -> None:
        if conn.closed:
            return
        conn.outbuf += U16.pack(len(answer)) + answer
        if len(conn.outbuf) > TCP_MAX_OUT:
            self._close_conn(conn)
            return
        self._flush(conn)

    def _flush(self, conn: TcpConn) -> None:
        if conn.closed:
            return
        try:
            sent = conn.sock.send(conn.outbuf) if conn.outbuf else 0
        except BlockingIOError:
            sent = 0
        except OSError:
            self._close_conn(conn)
            return
        del conn.outbuf[:sent]
        conn.last_active = time.monotonic()
        if self._epoll is not None:
            want = select.EPOLLIN | (select.EPOLLOUT if conn.outbuf else 0)
            try:
                self._epoll.modify(conn.fd, want)
            except OSError:
                pass


def tcp_exchange(server: Address, message: bytes, timeout: float) -> bytes:
    """One query over TCP (blocking, for the rare truncated-upstream case)."""
    family = socket.AF_INET6 if ":" in server[0] else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(server)
        sock.sendall(U16.pack(len(message)) + message)
        head = _recv_exact(sock, 2)
        data = _recv_exact(sock, U16.unpack(head)[0])
    # the caller matches the question; restore nothing else
    return data


def _recv_exact(sock: socket.socket, size: int) -> bytes:
    buf = bytearray()
    while len(buf) < size:
        chunk = sock.recv(size - len(buf))
        if not chunk:
            raise ValueError("connection closed mid-message")
        buf += chunk
    return bytes(buf)


def run_in_thread(server: DnsServer, name: str = "dns-server") -> threading.Thread:
    """Start ``server.serve_forever`` in a daemon thread (tests, the worker)."""
    thread = threading.Thread(target=server.serve_forever, name=name, daemon=True)
    thread.start()
    return thread
