"""One probe of a VIP's local container: TCP connect, HTTP GET, or a local command.

Each returns ``(ok, detail)`` and never raises; ``detail`` says what was seen in a few
words (``connect refused``, ``status 500``, ``exit 2: <first line of output>``). Commands
run without a shell, as the checker's unprivileged user, with a timeout, their output
capped; they come only from the node's own check files (``networkd.health.local_checks``).
"""

import socket
import subprocess
import time
from typing import Dict, List, Optional, Sequence, Tuple

OUTPUT_MAX = 4096
HTTP_HEAD_MAX = 8192


def tcp_probe(host: str, port: int, timeout: float) -> Tuple[bool, str]:
    """Can a TCP connection to host:port be made within ``timeout``?"""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect((host, port))
    except socket.timeout:
        return False, f"connect timed out after {timeout:g}s"
    except OSError as exc:
        return False, f"connect failed: {exc.strerror or exc}"
    finally:
        sock.close()
    return True, "connected"


def parse_status(head: bytes) -> int:
    """The status code of an HTTP response head, 0 when it is not one."""
    line = head.split(b"\r\n", 1)[0].split(b"\n", 1)[0]
    parts = line.split()
    if len(parts) >= 2 and parts[0].startswith(b"HTTP/") and parts[1].isdigit():
        code = int(parts[1])
        if 100 <= code <= 599:
            return code
    return 0


def http_probe(
    host: str, port: int, path: str, expect: Sequence[int], timeout: float
) -> Tuple[bool, str]:
    """``GET path`` over HTTP/1.0; ok when the status is one of ``expect``."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    deadline = time.monotonic() + timeout
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        sock.connect((host, port))
        name = f"[{host}]" if ":" in host else host
        request = f"GET {path} HTTP/1.0\r\nHost: {name}:{port}\r\nUser-Agent: networkd\r\n\r\n"
        sock.sendall(request.encode("ascii", errors="replace"))
        head = b""
        while b"\r\n" not in head and len(head) < HTTP_HEAD_MAX:
            sock.settimeout(max(0.01, deadline - time.monotonic()))
            chunk = sock.recv(HTTP_HEAD_MAX)
            if not chunk:
                break
            head += chunk
    except socket.timeout:
        return False, f"no answer within {timeout:g}s"
    except OSError as exc:
        return False, f"request failed: {exc.strerror or exc}"
    finally:
        sock.close()
    code = parse_status(head)
    if not code:
        return False, "not an HTTP response"
    return code in expect, f"status {code}"


def exec_probe(
    command: List[str], timeout: float, env: Optional[Dict[str, str]] = None
) -> Tuple[bool, str]:
    """Run ``command`` (no shell); ok when it exits 0 within ``timeout``. ``env`` is added to
    a minimal environment (PATH only): the check learns its VIP and target from it."""
    environment = {"PATH": "/usr/local/bin:/usr/bin:/bin", **(env or {})}
    try:
        proc = subprocess.Popen(
            command,
            env=environment,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            close_fds=True,
            start_new_session=True,  # a timeout kills its whole group, helpers included
        )
    except OSError as exc:
        return False, f"cannot run {command[0]}: {exc.strerror or exc}"
    try:
        output, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_group(proc)
        return False, f"timed out after {timeout:g}s"
    first = (output or b"")[:OUTPUT_MAX].decode("utf-8", errors="replace").strip()
    first = first.splitlines()[0] if first else ""
    if proc.returncode == 0:
        return True, "exit 0"
    return False, f"exit {proc.returncode}" + (f": {first[:200]}" if first else "")


def kill_group(proc: "subprocess.Popen[bytes]") -> None:
    import os
    import signal

    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        proc.kill()
    try:
        proc.communicate(timeout=1.0)
    except subprocess.TimeoutExpired:
        pass
