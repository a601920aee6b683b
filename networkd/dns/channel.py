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


def _uint(value: Any, limit: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= limit:
        raise ChannelError(f"bad number {value!r}")
    return value


def decode_entry(item: Any) -> Tuple[bytes, CacheEntry]:
    """A cache entry from a message; ChannelError unless every field is sane."""
    if not isinstance(item, list) or len(item) != 9:
        raise ChannelError("entry is not a list of 9")
    key, rcode, flags, counts, body, ends, ttls, stored_at, expires_at = item
    if not all(isinstance(v, bytes) for v in (key, body, ttls)) or not 5 < len(key) <= MAX_KEY:
        raise ChannelError("entry key, body or ttls are not bytes")
    if not (isinstance(counts, list) and len(counts) == 3 and isinstance(ends, list)):
        raise ChannelError("entry counts or ends malformed")
    if len(ends) != 2 or len(ttls) % TTL_FIELD.size:
        raise ChannelError("entry ends or ttls malformed")
    size = len(body)
    answer_end, authority_end = (_uint(e, size) for e in ends)
    offsets = [offset for offset, _ttl in TTL_FIELD.iter_unpack(ttls)]
    if (
        answer_end > authority_end
        or offsets != sorted(offsets)
        or any(o > size - 4 for o in offsets)
    ):
        raise ChannelError("entry TTL offsets out of order or past the body")
    if not all(isinstance(t, float) for t in (stored_at, expires_at)):
        raise ChannelError("entry times are not floats")
    entry = CacheEntry(
        _uint(rcode, 15),
        _uint(flags, 0xFFFF),
        (_uint(counts[0], 0xFFFF), _uint(counts[1], 0xFFFF), _uint(counts[2], 0xFFFF)),
        body,
        (answer_end, authority_end),
        ttls,
        stored_at,
        expires_at,
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
