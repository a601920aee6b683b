"""The unix socket between the replicas and the forwarder: messages and their checks.

``SOCK_SEQPACKET`` in the forwarder's state directory (mode 0700, the DNS user's): the
kernel keeps message boundaries and only the DNS user can connect. Each message is a
msgpack array ``[kind, payload]``, at most MAX_MESSAGE bytes (the default socket buffer
of an unprivileged process holds two); ``decode`` checks every shape.

replica -> forwarder
    ``hello``   [name, pid]: sent on connect; answered with ``fill`` snapshots, ``synced``
    ``ask``     [[seq, addr or nil, query bytes], ...]: queries to resolve; addr is the
                UDP client (the forwarder answers it directly on the shared listening
                socket), nil for a TCP client (the answer comes back as ``answer``)
    ``restore`` [entry, ...]: the replica's cache copy, sent to a forwarder that has just
                started (its own cache died with its predecessor)
forwarder -> replica
    ``fill``    [entry, ...]: new cache entries, for every replica
    ``clear``   []: the forwarding table changed, drop the cache
    ``done``    [seq, ...]: UDP queries answered
    ``answer``  [[seq, answer bytes], ...]: answers for TCP clients
    ``synced``  [pid]: the snapshot is complete
"""

import collections
import os
import socket
from typing import Any, Deque, Iterable, Iterator, List, Optional, Tuple

import msgpack

from networkd.dns.cache import MAX_KEY, TTL_FIELD, CacheEntry

MAX_MESSAGE = 96 << 10
RECV_BUFFER = 256 << 10
OUTBOX_MAX = 32 << 20  # bytes queued for one peer before it counts as stuck
KINDS = ("hello", "ask", "restore", "fill", "clear", "done", "answer", "synced")


class ChannelError(ValueError):
    """A message that is not what the protocol says; the connection is dropped."""


def socket_path(run_dir: str) -> str:
    return os.path.join(run_dir, "state", "dns-forwarder", "forwarder.sock")


def encode(kind: str, payload: Any) -> bytes:
    return msgpack.packb([kind, payload], use_bin_type=True)


def decode(data: bytes) -> Tuple[str, Any]:
    try:
        message = msgpack.unpackb(data, raw=False, use_list=True, strict_map_key=True)
    except Exception as exc:
        raise ChannelError(f"not msgpack: {exc}") from None
    if not (isinstance(message, list) and len(message) == 2 and message[0] in KINDS):
        raise ChannelError("not a [kind, payload] message")
    kind, payload = message
    if kind != "clear" and not isinstance(payload, list):
        raise ChannelError(f"{kind}: payload is not a list")
    return kind, payload


def encode_entry(key: bytes, entry: CacheEntry) -> List[Any]:
    return [
        key,
        entry.rcode,
        entry.flags,
        list(entry.counts),
        entry.body,
        list(entry.ends),
        entry.ttls,
        entry.stored_at,
        entry.expires_at,
    ]


def decode_entry(item: Any) -> Tuple[bytes, CacheEntry]:
    """A cache entry from a message; ChannelError unless every field is sane.

    Runs for every entry in every replica: plain type and range tests, no helpers."""
    try:
        key, rcode, flags, counts, body, ends, ttls, stored_at, expires_at = item
        an, ns, ar = counts
        answer_end, authority_end = ends
    except (TypeError, ValueError):
        raise ChannelError("entry is not [key, rcode, flags, counts, body, ends, ttls, t, t]")
    if type(key) is not bytes or type(body) is not bytes or type(ttls) is not bytes:
        raise ChannelError("entry key, body or ttls are not bytes")
    if type(stored_at) is not float or type(expires_at) is not float:
        raise ChannelError("entry times are not floats")
    numbers = (rcode, flags, an, ns, ar, answer_end, authority_end)
    if any(type(n) is not int for n in numbers):
        raise ChannelError("entry numbers are not integers")
    size = len(body)
    if not (
        5 < len(key) <= MAX_KEY
        and 0 <= rcode <= 15
        and 0 <= flags <= 0xFFFF
        and 0 <= an <= 0xFFFF
        and 0 <= ns <= 0xFFFF
        and 0 <= ar <= 0xFFFF
        and 0 <= answer_end <= authority_end <= size
        and len(ttls) % TTL_FIELD.size == 0
    ):
        raise ChannelError("entry field out of range")
    previous = -1
    for offset, _ttl in TTL_FIELD.iter_unpack(ttls):
        if offset <= previous or offset > size - 4:
            raise ChannelError("entry TTL offsets out of order or past the body")
        previous = offset
    entry = CacheEntry(
        rcode, flags, (an, ns, ar), body, (answer_end, authority_end), ttls, stored_at, expires_at
    )
    return key, entry


def chunked(kind: str, items: Iterable[Any], size_of: Any) -> Iterator[bytes]:
    """Messages of ``kind`` carrying ``items``, each under MAX_MESSAGE."""
    batch: List[Any] = []
    total = 0
    for item in items:
        size = size_of(item) + 64
        if batch and total + size > MAX_MESSAGE - 256:
            yield encode(kind, batch)
            batch, total = [], 0
        batch.append(item)
        total += size
    if batch:
        yield encode(kind, batch)


def entry_wire_size(item: List[Any]) -> int:
    return len(item[0]) + len(item[4]) + len(item[6])


class Outbox:
    """Messages for one non-blocking SEQPACKET socket, sent in order as room allows."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.queue: Deque[bytes] = collections.deque()
        self.bytes = 0

    def put(self, message: bytes) -> None:
        self.queue.append(message)
        self.bytes += len(message)

    def flush(self) -> bool:
        """Send what fits; False when the peer is gone. ``pending`` tells if any is left."""
        queue = self.queue
        while queue:
            try:
                self.sock.send(queue[0])
            except BlockingIOError:
                return True
            except OSError:
                return False
            self.bytes -= len(queue.popleft())
        return True

    @property
    def pending(self) -> bool:
        return bool(self.queue)

    @property
    def stuck(self) -> bool:
        return self.bytes > OUTBOX_MAX


def receive(sock: socket.socket, most: int = 64) -> Optional[List[bytes]]:
    """Up to ``most`` waiting messages (the loop comes back for more, so a snapshot never
    starves the UDP path); None when the peer has gone."""
    out: List[bytes] = []
    while len(out) < most:
        try:
            data = sock.recv(RECV_BUFFER)
        except BlockingIOError:
            return out
        except OSError:
            return out or None
        if not data:
            return out or None  # the messages before the end first; None next time
        out.append(data)
    return out
