"""The supervisor's control socket: one JSON request line, one JSON answer line.

``<run dir>/control.sock`` is root-only (0600). Requests: ``{"cmd": "status"}``,
``{"cmd": "restart", "worker": "api"}``. Used by ``networkdctl restart``.
"""

import json
import os
import socket
from typing import Any, Callable, Dict

Handler = Callable[[Dict[str, Any]], Dict[str, Any]]
MAX_REQUEST = 4096


def socket_path(run_dir: str) -> str:
    return os.path.join(run_dir, "control.sock")


class ControlServer:
    def __init__(self, run_dir: str, handler: Handler) -> None:
        self.path = socket_path(run_dir)
        self.handler = handler
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        old = os.umask(0o177)
        try:
            self.sock.bind(self.path)
        finally:
            os.umask(old)
        self.sock.listen(16)
        self.sock.setblocking(False)

    def fileno(self) -> int:
        return self.sock.fileno()

    def serve_ready(self) -> None:
        """Answer the connections waiting now (requests are tiny; a 1 s limit each)."""
        while True:
            try:
                conn, _ = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            with conn:
                conn.settimeout(1.0)
                try:
                    data = b""
                    while b"\n" not in data and len(data) < MAX_REQUEST:
                        chunk = conn.recv(MAX_REQUEST)
                        if not chunk:
                            break
                        data += chunk
                    try:
                        request = json.loads(data.decode() or "{}")
                        if not isinstance(request, dict):
                            raise ValueError("request is not an object")
                        answer = self.handler(request)
                    except ValueError as exc:
                        answer = {"ok": False, "error": f"bad request: {exc}"}
                    conn.sendall(json.dumps(answer).encode() + b"\n")
                except OSError:
                    continue

    def close(self) -> None:
        self.sock.close()
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass


def request(run_dir: str, payload: Dict[str, Any], timeout: float = 5.0) -> Dict[str, Any]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(socket_path(run_dir))
        sock.sendall(json.dumps(payload).encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    answer = json.loads(data.decode())
    if not isinstance(answer, dict):
        raise ValueError("control answer is not an object")
    return answer
