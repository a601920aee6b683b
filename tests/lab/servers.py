"""The lab's "container" server: answers TCP and UDP on each port with ``<name> <port>``.

Run inside a container namespace: ``python -m tests.lab.servers --name node1 --ports 8080,9000``.
Prints ``ready`` once every socket is listening.
"""

import argparse
import selectors
import socket
import sys
from typing import List


def listener(kind: int, port: int) -> socket.socket:
    """A dual-stack socket on ``port`` (IPv4 only where the namespace has no IPv6)."""
    try:
        sock = socket.socket(socket.AF_INET6, kind)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        address: tuple = ("::", port)
    except OSError:
        sock = socket.socket(socket.AF_INET, kind)
        address = ("0.0.0.0", port)
    if kind == socket.SOCK_STREAM:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(address)
    if kind == socket.SOCK_STREAM:
        sock.listen(128)
    sock.setblocking(False)
    return sock


def serve(name: str, ports: List[int]) -> None:
    sel = selectors.DefaultSelector()
    for port in ports:
        sel.register(listener(socket.SOCK_STREAM, port), selectors.EVENT_READ, ("tcp", port))
        sel.register(listener(socket.SOCK_DGRAM, port), selectors.EVENT_READ, ("udp", port))
    print("ready", flush=True)
    while True:
        for key, _ in sel.select():
            kind, port = key.data
            sock = key.fileobj
            assert isinstance(sock, socket.socket)
            reply = f"{name} {port}\n".encode()
            try:
                if kind == "tcp":
                    conn, _ = sock.accept()
                    conn.settimeout(1.0)
                    try:
                        conn.sendall(reply)
                    finally:
                        conn.close()
                else:
                    _, peer = sock.recvfrom(2048)
                    sock.sendto(reply, peer)
            except OSError:
                continue


def main(argv: List[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--name", required=True)
    parser.add_argument("--ports", required=True)
    args = parser.parse_args(argv)
    serve(args.name, [int(p) for p in args.ports.split(",") if p])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
