"""Free loopback ports for test servers, and the splice loop of the test TCP relays."""

import socket
from typing import List


def free_ports(count: int, host: str = "127.0.0.1") -> List[int]:
    """Ports free on ``host`` right now (all bound at once, so they are distinct)."""
    socks = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((host, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def free_port(host: str = "127.0.0.1") -> int:
    return free_ports(1, host)[0]


def splice(src: socket.socket, dst: socket.socket) -> None:
    """Copy ``src`` to ``dst`` until either side ends, then shut both down and close them."""
    try:
        while True:
            data = src.recv(65536)
            if not data:
                break
            dst.sendall(data)
    except OSError:
        pass
    finally:
        shut_both(src, dst)


def shut_both(src: socket.socket, dst: socket.socket) -> None:
    """The end of a relayed connection: both sides shut down and closed."""
    for sock in (src, dst):
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        sock.close()
