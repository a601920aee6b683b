"""Small socket programs the container-network benchmark runs inside a container's network
namespace (``nsenter -t <pid> -n python3 -m bench.netpeer ...``).

- ``serve PORT``: a TCP echo server (one connection at a time), for round trips;
- ``rtt IP PORT N``: N one-byte round trips over one TCP connection; prints JSON with
  the percentiles in microseconds;
- ``listen PORT``: accepts connections and prints one JSON line per connection with the
  wall-clock time of the accept and the first line received (the container's name).
"""

import json
import os
import socket
import sys
import time
from typing import List


def serve(port: int) -> None:
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("0.0.0.0", port))
    server.listen(16)
    print("ready", flush=True)
    while True:
        conn, _ = server.accept()
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with conn:
            while True:
                data = conn.recv(4096)
                if not data:
                    break
                conn.sendall(data)


def rtt(ip: str, port: int, count: int) -> None:
    sock = socket.create_connection((ip, port), timeout=5)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    for _ in range(50):  # warm up: ARP, caches
        sock.sendall(b"x")
        sock.recv(1)
    samples: List[float] = []
    for _ in range(count):
        start = time.perf_counter()
        sock.sendall(b"x")
        sock.recv(1)
        samples.append((time.perf_counter() - start) * 1e6)
    sock.close()
    samples.sort()
    print(
        json.dumps(
            {
                "p50_us": samples[len(samples) // 2],
                "p99_us": samples[int(len(samples) * 0.99)],
                "mean_us": sum(samples) / len(samples),
            }
        ),
        flush=True,
    )


def listen(port: int) -> None:
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("0.0.0.0", port))
    server.listen(128)
    print("ready", flush=True)
    while True:
        conn, _ = server.accept()
        accepted = time.time()
        conn.settimeout(2)
        try:
            data = conn.recv(256)
        except OSError:
            data = b""
        conn.close()
        print(
            json.dumps({"t": accepted, "name": data.decode(errors="replace").strip()}), flush=True
        )


if __name__ == "__main__":
    if os.environ.get("NETPEER_CPU"):
        os.sched_setaffinity(0, {int(os.environ["NETPEER_CPU"])})
    mode = sys.argv[1]
    if mode == "serve":
        serve(int(sys.argv[2]))
    elif mode == "rtt":
        rtt(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
    else:
        listen(int(sys.argv[2]))
