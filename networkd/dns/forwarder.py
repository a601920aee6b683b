"""The node's DNS forwarder: one cache, every upstream query, for all replicas.

Replicas hand it the queries they cannot answer (networkd/dns/channel.py; its side of
the channel is networkd/dns/replicas.py). For each one
it answers from its cache or joins an identical query already in flight, else asks the
upstreams itself (networkd/dns/upstream.py: fresh random source port and CSPRNG ID per
query, strict reply matching). Answers to UDP clients leave straight from here, on the
shared listening socket (which it never reads), so a replica that dies after handing a
query over loses nothing; TCP clients' answers go back to their replica. Every answer
worth caching is sent to every replica as a ``fill``, and a replica that connects gets
the whole cache first, so all replicas answer the same names with the same TTLs.

One epoll loop in one thread; upstream TCP exchanges run in a small thread pool and
come back through a queue.
"""

import heapq
import itertools
import logging
import os
import queue
import select
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from networkd.dns import channel, wire
from networkd.dns.answers import cached_answer, limit_for
from networkd.dns.cache import SERVFAIL_TTL, CacheEntry, ForwardCache, failure_entry
from networkd.dns.fill import BadAnswer, fill_from_answer
from networkd.dns.forward import Address, Forwarding, Health
from networkd.dns.replicas import Peer, Replicas
from networkd.dns.stats import ForwarderStats
from networkd.dns.upstream import (
    QueryIds,
    open_udp,
    randomize_case,
    reply_matches,
    tcp_exchange,
)

log = logging.getLogger("networkd.dns")

MAX_FETCHES = 4096  # upstream questions in flight (each holds a socket)
MAX_WAITERS = 1024  # clients waiting on one question
TCP_THREADS = 8
RESTORE_WINDOW = 5.0  # seconds after start during which replicas may restore the cache


class Waiter:
    """A client waiting for an answer: the replica that asked, and how to answer."""

    __slots__ = ("addr", "peer", "query", "seq")

    def __init__(self, peer: "Peer", seq: int, addr: Optional[Tuple[Any, ...]], query: wire.Query):
        self.peer = peer
        self.seq = seq
        self.addr = addr  # None: a TCP client, answered through its replica
        self.query = query


class Fetch:
    """One question in flight upstream, with every client waiting for it."""

    __slots__ = (
        "attempts",
        "deadline",
        "done",
        "index",
        "key",
        "merge_key",
        "question",
        "rest",
        "servers",
        "started",
        "tcp",
        "waiters",
    )

    def __init__(self, key: bytes, merge_key: bytes, rest: bytes, question: bytes) -> None:
        self.key = key
        self.merge_key = merge_key
        self.rest = rest  # the query after the ID, as sent upstream
        self.question = question  # as sent upstream (0x20 case included)
        self.servers: List[Address] = []
        self.index = -1
        self.attempts: List[Tuple[Optional[socket.socket], Address, int]] = []
        self.waiters: List[Waiter] = []
        self.started = 0.0
        self.deadline = 0.0
        self.tcp = False
        self.done = False


def upstream_query(q: wire.Query, data: bytes, case_randomize: bool) -> Tuple[bytes, bytes]:
    """(query after the ID, question) as sent upstream: the client's flags, question and
    EDNS options (one OPT: ours, when the client sent none, so answers come whole)."""
    rest = data[2:]
    question = q.question
    if case_randomize:
        question = randomize_case(q.qname) + q.question[-4:]
        rest = rest[:10] + question + rest[10 + len(question) :]
    if q.edns is None:
        arcount = wire.U16.unpack_from(rest, 8)[0] + 1
        rest = rest[:8] + wire.U16.pack(arcount) + rest[10:] + wire.opt_record(wire.OUR_UDP_SIZE, 0)
    return rest, question


class Forwarder:
    def __init__(
        self,
        reply_sock: socket.socket,
        path: str,
        *,
        cache_bytes: int = 64 << 20,
        upstream_timeout: float = 1.0,
        forward_deadline: float = 4.0,
        servfail_ttl: float = SERVFAIL_TTL,
        case_randomize: bool = False,
        own: Sequence[Address] = (),
    ) -> None:
        self.reply_sock = reply_sock  # the shared listening UDP socket: sent on, never read
        self.upstream_timeout = upstream_timeout
        self.forward_deadline = forward_deadline
        self.servfail_ttl = servfail_ttl
        self.case_randomize = case_randomize
        self.cache = ForwardCache(cache_bytes)
        self.stats = ForwarderStats()
        self.health = Health()
        self._own = list(own)
        self._forwarding = Forwarding(own=self._own)
        self._applied_forwarding = self._forwarding
        self._ids = QueryIds()
        self._fetches: Dict[bytes, Fetch] = {}
        self._sockets: Dict[int, Tuple[Fetch, int]] = {}  # upstream fd -> (fetch, attempt)
        self._timeouts: List[Tuple[float, int, Fetch, int]] = []
        self._tie = itertools.count()
        self.replicas = Replicas(path, self._peer_message)
        self._results: queue.Queue[Tuple[Fetch, int, Optional[bytes]]] = queue.Queue()
        self._executor: Optional[ThreadPoolExecutor] = None
        self._stop = threading.Event()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._epoll: Any = None
        self.started_at = time.monotonic()

    # ------------------------------------------------------------------ any thread

    def set_forwarding(
        self, upstreams: Sequence[str], domain_servers: Optional[Mapping[str, Sequence[str]]] = None
    ) -> None:
        self._forwarding = Forwarding(upstreams, domain_servers, own=self._own)
        self._wake()

    @property
    def forwarding(self) -> Forwarding:
        return self._forwarding

    @property
    def in_flight(self) -> int:
        return len(self._fetches)

    def stop(self) -> None:
        self._stop.set()
        self._wake()

    def _wake(self) -> None:
        try:
            self._wake_w.send(b"x")
        except OSError:
            pass

    # ------------------------------------------------------------------ loop

    def listen(self) -> None:
        """Bind the replicas' socket (before serve_forever, so replicas can connect)."""
        self.replicas.listen()

    def serve_forever(self) -> None:
        replicas = self.replicas
        if replicas.listener is None:
            replicas.listen()
        assert replicas.listener is not None
        ep = self._epoll = replicas.epoll = select.epoll()
        listener_fd = replicas.listener.fileno()
        wake_fd = self._wake_r.fileno()
        ep.register(listener_fd, select.EPOLLIN)
        ep.register(wake_fd, select.EPOLLIN)
        peers = replicas.peers
        try:
            while not self._stop.is_set():
                now = time.monotonic()
                timeout = replicas.flush_in(now)
                if self._timeouts:
                    timeout = min(timeout, max(0.0, self._timeouts[0][0] - now))
                for fd, mask in ep.poll(timeout):
                    if fd in self._sockets:
                        self._upstream_readable(fd)
                    elif fd in peers:
                        replicas.event(peers[fd], mask)
                    elif fd == listener_fd:
                        replicas.accept()
                    elif fd == wake_fd:
                        self._drain_wake()
                now = time.monotonic()
                self._expire(now)
                replicas.flush(now)
        finally:
            self._shutdown()

    def _shutdown(self) -> None:
        for fetch in list(self._fetches.values()):
            self._close_attempts(fetch)
        self.replicas.close()
        if self._executor is not None:
            self._executor.shutdown(wait=False)
        if self._epoll is not None:
            self._epoll.close()

    def _drain_wake(self) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except OSError:
            pass
        if self._forwarding is not self._applied_forwarding:
            if self._forwarding.domain_servers != self._applied_forwarding.domain_servers:
                self._clear_cache()
            self._applied_forwarding = self._forwarding
        now = time.monotonic()
        while True:
            try:
                fetch, attempt, data = self._results.get_nowait()
            except queue.Empty:
                return
            if not fetch.done:
                self._tcp_result(fetch, attempt, data, now)

    def _clear_cache(self) -> None:
        """Domain servers changed: answers cached from the old ones may be wrong now."""
        self.cache.clear()
        self.replicas.clear()

    # ------------------------------------------------------------------ replicas

    def _peer_message(self, peer: Peer, kind: str, payload: Any, now: float) -> None:
        if kind == "ask":
            for item in payload:
                self._ask(peer, item, now)
        elif kind == "hello":
            peer.name = str(payload[0]) if payload else "?"
            log.info("dns replica connected name=%s cached=%d", peer.name, len(self.cache))
            peer.snapshot = self._snapshot()
        elif kind == "restore":
            if now - self.started_at < RESTORE_WINDOW:
                for item in payload:
                    key, entry = channel.decode_entry(item)
                    self.cache.merge(key, entry, now)
        else:
            raise channel.ChannelError(f"{kind} is not for the forwarder")

    def _snapshot(self) -> Any:
        now = time.monotonic()
        entries = (
            channel.encode_entry(key, entry)
            for key, entry in self.cache.items()
            if entry.expires_at > now
        )
        yield from channel.chunked("fill", entries, channel.entry_wire_size)
        yield channel.encode("synced", [os.getpid()])

    # ------------------------------------------------------------------ questions

    def _ask(self, peer: Peer, item: Any, now: float) -> None:
        if not (isinstance(item, list) and len(item) == 3 and isinstance(item[0], int)):
            raise channel.ChannelError("ask item is not [seq, addr, query]")
        seq, addr, data = item
        if addr is not None:
            if not (
                isinstance(addr, list)
                and len(addr) in (2, 4)
                and isinstance(addr[0], str)
                and all(type(n) is int for n in addr[1:])
            ):
                raise channel.ChannelError("ask address malformed")
            addr = tuple(addr)
        if not isinstance(data, bytes):
            raise channel.ChannelError("ask query is not bytes")
        try:
            q = wire.parse_query(data)
        except (wire.FormatError, wire.Ignore) as exc:
            raise channel.ChannelError(f"ask query does not parse: {exc}") from None
        self.stats.requests += 1
        waiter = Waiter(peer, seq, addr, q)
        try:
            self._resolve(waiter, data, now)
        except Exception:  # a bug must cost this query, not the forwarder
            log.exception("dns query failed name=%r", q.qname)
            self._answer(waiter, failure_entry(now, 0.0), now)

    def _resolve(self, waiter: Waiter, data: bytes, now: float) -> None:
        q = waiter.query
        key = q.cache_key()
        entry = self.cache.get(key, now)
        if entry is not None:
            self.stats.cache_hits += 1
            waiter.peer.fills.append(channel.encode_entry(key, entry))  # it lacked this one
            self._answer(waiter, entry, now)
            return
        tcp = waiter.addr is None
        merge_key = key + (b"T" if tcp else b"U")
        fetch = self._fetches.get(merge_key)
        if fetch is not None and len(fetch.waiters) < MAX_WAITERS:
            self.stats.merged += 1
            fetch.waiters.append(waiter)
            return
        servers = self.health.order(self._forwarding.servers_for(q.lname), now)
        if not servers or fetch is not None or len(self._fetches) >= MAX_FETCHES:
            self._answer(waiter, failure_entry(now, 0.0), now)
            return
        rest, question = upstream_query(q, data, self.case_randomize)
        fetch = Fetch(key, merge_key, rest, question)
        fetch.servers = servers
        fetch.started = now
        fetch.deadline = now + self.forward_deadline
        fetch.tcp = tcp
        fetch.waiters.append(waiter)
        self._fetches[merge_key] = fetch
        self._next_server(fetch, now)

    def _answer(self, waiter: Waiter, entry: CacheEntry, now: float) -> None:
        q = waiter.query
        answer = cached_answer(q, entry, now, limit_for(q, waiter.addr is None))
        if waiter.addr is None:
            waiter.peer.answers.append([waiter.seq, answer])
            return
        try:
            self.reply_sock.sendto(answer, waiter.addr)
        except OSError as exc:
            log.debug("dns answer not sent to=%s reason=%s", waiter.addr, exc)
        waiter.peer.done.append(waiter.seq)

    # ------------------------------------------------------------------ upstream

    def _next_server(self, fetch: Fetch, now: float) -> None:
        while not fetch.done:
            fetch.index += 1
            if fetch.index >= len(fetch.servers) or now >= fetch.deadline:
                self._fail(fetch, now)
                return
            server = fetch.servers[fetch.index]
            if self._send(fetch, server, now, tcp=fetch.tcp):
                return
            self.stats.upstream_failures += 1
            self.health.failed(server, now)

    def _send(self, fetch: Fetch, server: Address, now: float, tcp: bool) -> bool:
        qid = self._ids.next()
        attempt = len(fetch.attempts)
        self.stats.upstream_queries += 1
        if tcp:
            self.stats.upstream_tcp += 1
            fetch.attempts.append((None, server, qid))
            self._submit_tcp(fetch, attempt, server, qid, now)
        else:
            try:
                sock = open_udp(server)
                sock.send(wire.U16.pack(qid) + fetch.rest)
            except OSError as exc:
                log.debug("dns upstream send failed server=%s reason=%s", server, exc)
                return False
            fetch.attempts.append((sock, server, qid))
            self._sockets[sock.fileno()] = (fetch, attempt)
            self._epoll.register(sock.fileno(), select.EPOLLIN)
        deadline = min(now + self.upstream_timeout, fetch.deadline)
        heapq.heappush(self._timeouts, (deadline, next(self._tie), fetch, attempt))
        return True

    def _submit_tcp(
        self, fetch: Fetch, attempt: int, server: Address, qid: int, now: float
    ) -> None:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(TCP_THREADS, thread_name_prefix="dns-tcp")
        message = wire.U16.pack(qid) + fetch.rest
        timeout = max(0.1, fetch.deadline - now)

        def exchange() -> None:
            data: Optional[bytes] = None
            try:
                data = tcp_exchange(server, message, timeout)
            except (OSError, ValueError) as exc:
                log.debug("dns upstream tcp failed server=%s reason=%s", server, exc)
            self._results.put((fetch, attempt, data))
            self._wake()

        self._executor.submit(exchange)

    def _upstream_readable(self, fd: int) -> None:
        fetch, attempt = self._sockets[fd]
        sock, server, qid = fetch.attempts[attempt]
        assert sock is not None
        now = time.monotonic()
        for _ in range(8):
            try:
                data, source = sock.recvfrom(65535)
            except BlockingIOError:
                return
            except OSError as exc:  # e.g. ICMP port unreachable: this server is not there
                log.debug("dns upstream receive failed server=%s reason=%s", server, exc)
                self._attempt_failed(fetch, attempt, now)
                return
            if (str(source[0]), int(source[1])) != server or not reply_matches(
                data, qid, fetch.question, self.case_randomize
            ):
                self.stats.rejected_replies += 1
                continue
            self._reply_guarded(fetch, attempt, data, now)
            return

    def _reply_guarded(
        self, fetch: Fetch, attempt: int, data: bytes, now: float, via_tcp: bool = False
    ) -> None:
        """``_reply``, with whatever an answer could still break in our code costing that
        attempt (the next server is asked), never the forwarder."""
        try:
            self._reply(fetch, attempt, data, now, via_tcp)
        except Exception:
            log.exception("dns upstream answer failed server=%s", fetch.attempts[attempt][1])
            if not fetch.done:
                self._attempt_failed(fetch, attempt, now)

    def _tcp_result(self, fetch: Fetch, attempt: int, data: Optional[bytes], now: float) -> None:
        _sock, _server, qid = fetch.attempts[attempt]
        if data is None:
            self._attempt_failed(fetch, attempt, now)
        elif not reply_matches(data, qid, fetch.question, self.case_randomize):
            self.stats.rejected_replies += 1
            self._attempt_failed(fetch, attempt, now)
        else:
            self._reply_guarded(fetch, attempt, data, now, via_tcp=True)

    def _attempt_failed(self, fetch: Fetch, attempt: int, now: float, down: bool = True) -> None:
        """This attempt is over; the latest one failing moves on to the next server.
        ``down``: the server itself failed (not just this name), try it last for a while."""
        self.stats.upstream_failures += 1
        if down:
            self.health.failed(fetch.attempts[attempt][1], now)
        self._close_attempt(fetch, attempt)
        if attempt == len(fetch.attempts) - 1 and not fetch.done:
            self._next_server(fetch, now)

    def _reply(
        self, fetch: Fetch, attempt: int, data: bytes, now: float, via_tcp: bool = False
    ) -> None:
        server = fetch.attempts[attempt][1]
        self.health.ok(server)
        if data[3] & 0xF == wire.RCODE_SERVFAIL:
            self._attempt_failed(fetch, attempt, now, down=False)
            return
        if data[2] & 0x02 and not via_tcp:  # truncated: the same server, over TCP
            self._close_attempt(fetch, attempt)
            self._send(fetch, server, now, tcp=True)
            return
        try:
            fill = fill_from_answer(data, len(fetch.question), now)
        except BadAnswer as exc:
            log.info("dns upstream answer unusable server=%s reason=%s", server, exc)
            self._attempt_failed(fetch, attempt, now)
            return
        if fill.cacheable:
            self._store(fetch.key, fill.entry)
        self._finish(fetch, fill.entry, now)

    def _store(self, key: bytes, entry: CacheEntry) -> None:
        if self.cache.put(key, entry):
            self.replicas.broadcast(channel.encode_entry(key, entry))

    def _fail(self, fetch: Fetch, now: float) -> None:
        self.stats.servfails += 1
        entry = failure_entry(now, self.servfail_ttl)
        self._store(fetch.key, entry)
        self._finish(fetch, entry, now)

    def _finish(self, fetch: Fetch, entry: CacheEntry, now: float) -> None:
        fetch.done = True
        self._fetches.pop(fetch.merge_key, None)
        self._close_attempts(fetch)
        self.stats.latency.observe(now - fetch.started)
        for waiter in fetch.waiters:
            self._answer(waiter, entry, now)

    def _close_attempt(self, fetch: Fetch, attempt: int) -> None:
        sock, server, qid = fetch.attempts[attempt]
        if sock is not None:
            self._sockets.pop(sock.fileno(), None)
            sock.close()  # closing also takes it out of the epoll set
            fetch.attempts[attempt] = (None, server, qid)

    def _close_attempts(self, fetch: Fetch) -> None:
        for attempt in range(len(fetch.attempts)):
            self._close_attempt(fetch, attempt)

    def _expire(self, now: float) -> None:
        heap = self._timeouts
        while heap and heap[0][0] <= now:
            _deadline, _tie, fetch, attempt = heapq.heappop(heap)
            if fetch.done:
                continue
            if now >= fetch.deadline:
                self._fail(fetch, now)
            elif attempt == len(fetch.attempts) - 1:
                # the latest server is late: ask the next one, still listening to this one
                self.stats.upstream_failures += 1
                self.health.failed(fetch.attempts[attempt][1], now)
                self._next_server(fetch, now)
