"""A TCP relay from the root namespace's loopback into a lab namespace.

The test process (root namespace) talks to the lab's etcd, which listens only on the lab
bridge inside the hub namespace. The listening socket is created first, in the root
namespace; then the process enters the target namespace, so every outgoing connection is
made inside it. Traffic stays on loopback and inside the lab.

``python -m tests.lab.relay --listen 127.0.0.1:PORT --netns NS --target IP:PORT``
"""

import argparse
import socket
import sys
import threading
from typing import List

from tests.lab.netns import CLONE_NEWNET, NETNS_DIR, _libc
from tests.support.ports import splice


def handle(client: socket.socket, target: str) -> None:
    host, port = target.rsplit(":", 1)
    try:
        upstream = socket.create_connection((host, int(port)), timeout=5)
    except OSError:
        client.close()
        return
    upstream.settimeout(None)
    upstream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    threading.Thread(target=splice, args=(client, upstream), daemon=True).start()
    threading.Thread(target=splice, args=(upstream, client), daemon=True).start()


def main(argv: List[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--listen", required=True)
    parser.add_argument("--netns", required=True)
    parser.add_argument("--target", required=True)
    args = parser.parse_args(argv)
    host, port = args.listen.rsplit(":", 1)
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((host, int(port)))
    listener.listen(128)
    with open(f"{NETNS_DIR}/{args.netns}") as ns:
        if _libc.setns(ns.fileno(), CLONE_NEWNET) != 0:
            print("setns failed", file=sys.stderr)
            return 1
    print("ready", flush=True)
    while True:
        client, _ = listener.accept()
        handle(client, args.target)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
