"""The DNS listening sockets, created by the root supervisor and kept across replica
restarts: one UDP and one TCP socket per replica, all bound to the same address with
SO_REUSEPORT, so the kernel spreads queries over the replicas and keeps those of a
restarting replica queued in its socket until it is back.
"""

import logging
import socket
from typing import List, Tuple

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


def create_listeners(
    host: str, port: int, replicas: int
) -> List[Tuple[socket.socket, socket.socket]]:
    """One (udp, tcp) pair per replica, bound to host:port with SO_REUSEPORT.

    Raises OSError (e.g. the port is taken by another program) after closing what it
    opened. The sockets are inheritable so they can be handed to replica processes."""
    if replicas < 1:
        raise ValueError(f"replicas must be at least 1, got {replicas}")
    family = _family(host)
    pairs: List[Tuple[socket.socket, socket.socket]] = []
    try:
        for _ in range(replicas):
            udp = socket.socket(family, socket.SOCK_DGRAM)
            try:
                udp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                if family == socket.AF_INET6:
                    udp.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
                _set_buffer(udp, SO_RCVBUFFORCE, socket.SO_RCVBUF, UDP_BUFFER)
                _set_buffer(udp, SO_SNDBUFFORCE, socket.SO_SNDBUF, UDP_BUFFER)
                udp.bind((host, port))
            except OSError:
                udp.close()
                raise
            tcp = socket.socket(family, socket.SOCK_STREAM)
            try:
                tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                if family == socket.AF_INET6:
                    tcp.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
                tcp.bind((host, port))
                tcp.listen(TCP_BACKLOG)
            except OSError:
                udp.close()
                tcp.close()
                raise
            for sock in (udp, tcp):
                sock.set_inheritable(True)
            pairs.append((udp, tcp))
            if port == 0:
                port = udp.getsockname()[1]
    except OSError:
        for udp, tcp in pairs:
            udp.close()
            tcp.close()
        raise
    return pairs
