"""The DNS listening sockets, created by the root supervisor and kept across restarts.

One UDP and one TCP socket, shared by every replica (each replica holds a copy of the
same file descriptions and reads them in its own epoll loop), plus the UDP socket in the
forwarder, which only sends answers on it. Why one shared pair and not SO_REUSEPORT
sockets per replica (docs/ARCHITECTURE.md, "DNS sockets"):

- balance: the kernel hands each datagram to whichever replica asks first, so a few
  busy client sockets spread over every replica; SO_REUSEPORT hashes each client
  socket to one replica for good (and CentOS 7's kernel has no reuseport BPF to fix it);
- restarts and failures: a replica that is killed, restarting or FATAL simply stops
  reading; the others drain the socket, so no client is ever hashed to a socket that
  nobody reads.
"""

import logging
import socket
from typing import Tuple

log = logging.getLogger("networkd.dns")

UDP_BUFFER = 8 << 20
TCP_BACKLOG = 1024

# SO_RCVBUFFORCE/SO_SNDBUFFORCE (root only) lift the rmem_max/wmem_max caps.
SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)
SO_SNDBUFFORCE = getattr(socket, "SO_SNDBUFFORCE", 32)


def _family(host: str) -> int:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def _set_buffer(sock: socket.socket, force: int, plain: int, size: int) -> None:
    try:
        sock.setsockopt(socket.SOL_SOCKET, force, size)
    except OSError:
        try:
            sock.setsockopt(socket.SOL_SOCKET, plain, size)
        except OSError as exc:
            log.warning("socket buffer not set size=%d reason=%s", size, exc)


def create_listener(host: str, port: int) -> Tuple[socket.socket, socket.socket]:
    """The (udp, tcp) pair every replica shares, bound to host:port.

    Raises OSError (e.g. the port is taken by another program) after closing what it
    opened. The sockets are inheritable so they can be handed to worker processes."""
    family = _family(host)
    udp = socket.socket(family, socket.SOCK_DGRAM)
    tcp = socket.socket(family, socket.SOCK_STREAM)
    try:
        if family == socket.AF_INET6:
            udp.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            tcp.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        _set_buffer(udp, SO_RCVBUFFORCE, socket.SO_RCVBUF, UDP_BUFFER)
        _set_buffer(udp, SO_SNDBUFFORCE, socket.SO_SNDBUF, UDP_BUFFER)
        udp.bind((host, port))
        tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        tcp.bind((host, udp.getsockname()[1]))
        tcp.listen(TCP_BACKLOG)
    except OSError:
        udp.close()
        tcp.close()
        raise
    for sock in (udp, tcp):
        sock.set_inheritable(True)
        sock.setblocking(False)
    return udp, tcp
