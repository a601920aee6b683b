"""Upstream queries that an off-path attacker cannot predict (RFC 5452).

- Source port: every UDP query gets a fresh socket, connected to the server, on a port
  the kernel picks at random from its ephemeral range; the connected socket also makes
  the kernel drop datagrams from any other address or port.
- ID: 16 bits from the OS CSPRNG (``secrets``), never one of the last RECENT_IDS used, so
  IDs do not repeat in practice either (costs under 0.05 bits of the 16).
- Question: optional 0x20 letter-case randomisation (``-dns.case-randomize``): an answer
  must echo the exact spelling, about one more bit of entropy per letter.
- Matching: a reply counts only with our ID, QR set, one question equal to ours, from the
  address and port we asked; anything else is ignored and counted.

TCP (for TCP clients and for UDP answers with TC set) uses one fresh connection per
query, from a small thread pool: rare, and simpler blocking than in the event loop.
"""

import collections
import secrets
import socket
from typing import Deque, List, Set, Tuple

from networkd.dns import wire

Address = Tuple[str, int]

RECENT_IDS = 4096
UDP_RECEIVE_BUFFER = 1 << 16


class QueryIds:
    """Random 16-bit query IDs that do not repeat among the last RECENT_IDS.

    The OS CSPRNG is read 4 KiB at a time (one getrandom() per 2,048 IDs, not per ID)."""

    def __init__(self, recent: int = RECENT_IDS) -> None:
        self._order: Deque[int] = collections.deque()
        self._used: Set[int] = set()
        self._recent = recent
        self._pool: List[int] = []

    def _random16(self) -> int:
        if not self._pool:
            noise = secrets.token_bytes(4096)
            self._pool = [noise[i] << 8 | noise[i + 1] for i in range(0, len(noise), 2)]
        return self._pool.pop()

    def next(self) -> int:
        while True:
            qid = self._random16()
            if qid not in self._used:
                break
        self._used.add(qid)
        self._order.append(qid)
        if len(self._order) > self._recent:
            self._used.discard(self._order.popleft())
        return qid


def randomize_case(qname: bytes) -> bytes:
    """0x20: each ASCII letter of a wire name in random case (label lengths untouched)."""
    noise = secrets.token_bytes(len(qname))
    out = bytearray(qname)
    pos = 0
    while pos < len(out) and out[pos]:
        end = pos + 1 + out[pos]
        for index in range(pos + 1, end):
            char = out[index] | 0x20
            if 0x61 <= char <= 0x7A:
                out[index] = char ^ (noise[index] & 0x20)
        pos = end
    return bytes(out)


def reply_matches(data: bytes, qid: int, question: bytes, exact_case: bool) -> bool:
    """Our ID, a response, opcode QUERY, exactly our question (case too with 0x20)."""
    end = 12 + len(question)
    if len(data) < end or wire.U16.unpack_from(data)[0] != qid:
        return False
    if not data[2] & 0x80 or data[2] & 0x78 or data[4:6] != b"\x00\x01":
        return False
    echoed = data[12:end]
    return echoed == question if exact_case else echoed.lower() == question.lower()


def family_of(server: Address) -> int:
    return socket.AF_INET6 if ":" in server[0] else socket.AF_INET


def open_udp(server: Address) -> socket.socket:
    """A fresh non-blocking UDP socket connected to ``server`` (random source port)."""
    sock = socket.socket(family_of(server), socket.SOCK_DGRAM | socket.SOCK_NONBLOCK)
    try:
        sock.connect(server)
    except OSError:
        sock.close()
        raise
    return sock


def tcp_exchange(server: Address, message: bytes, timeout: float) -> bytes:
    """One query over a fresh TCP connection; the answer's bytes (blocking)."""
    with socket.socket(family_of(server), socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(server)
        sock.sendall(wire.U16.pack(len(message)) + message)
        size = wire.U16.unpack(_recv_exact(sock, 2))[0]
        return _recv_exact(sock, size)


def _recv_exact(sock: socket.socket, size: int) -> bytes:
    buf = bytearray()
    while len(buf) < size:
        chunk = sock.recv(size - len(buf))
        if not chunk:
            raise ConnectionError("connection closed mid-message")
        buf += chunk
    return bytes(buf)
