"""A tiny HTTP server for health-check tests: answers every GET with one status code.

``python -m tests.lab.httpstatus --port 8090 --status 500`` (prints ``ready``). The status
can be changed while it runs by writing a number into ``--status-file``.
"""

import argparse
import socket
import sys
import threading
from typing import List


def serve(port: int, status: int, status_file: str) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("0.0.0.0", port))
    sock.listen(64)
    print("ready", flush=True)
    while True:
        conn, _ = sock.accept()
        threading.Thread(target=answer, args=(conn, status, status_file), daemon=True).start()


def answer(conn: socket.socket, status: int, status_file: str) -> None:
    code = status
    if status_file:
        try:
            with open(status_file) as f:
                code = int(f.read().strip() or status)
        except (OSError, ValueError):
            pass
    try:
        conn.settimeout(2.0)
        conn.recv(4096)
        body = f"status {code}\n".encode()
        conn.sendall(f"HTTP/1.0 {code} X\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)
    except OSError:
        pass
    finally:
        conn.close()


def main(argv: List[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--status", type=int, default=200)
    parser.add_argument("--status-file", default="")
    args = parser.parse_args(argv)
    serve(args.port, args.status, args.status_file)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
