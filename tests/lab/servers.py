"""The lab's "container" server: answers TCP and UDP on each port with ``<name> <port>``.

Run inside a container namespace: ``python -m tests.lab.servers --name node1 --ports 8080,9000``.
Prints ``ready`` once every socket is listening.
"""

import argparse
import selectors
import socket
import sys
from typing import List


def serve(name: str, ports: List[int]) -> None:
    sel = selectors.DefaultSelector()
    for port in ports:
        tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        tcp.bind(("0.0.0.0", port))
        tcp.listen(128)
        tcp.setblocking(False)
        sel.register(tcp, selectors.EVENT_READ, ("tcp", port))
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        udp.bind(("0.0.0.0", port))
        udp.setblocking(False)
        sel.register(udp, selectors.EVENT_READ, ("udp", port))
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
