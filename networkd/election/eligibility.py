"""Is this node eligible for a VIP? Pure logic, plus the optional Docker running-check.

A node is eligible for VIP ``X`` when it runs ``app.proc`` (a container of the proc on
this node, per the watcher's ``state.containers``), its hostname is not in
``excluded_nodes``, when a Docker socket is configured and present, Docker says that
container is running (the Go daemon's check), and, when the VIP has a health check, the
check passes here (the checker's ``state.health``).
"""

import json
import logging
import os
import re
import socket
import time
from typing import Callable, Dict, Optional, Tuple

from networkd.bus.messages import LocalContainer, VipConfig

log = logging.getLogger("networkd.elector")

OWNER = "OWNER"
STANDBY = "STANDBY"
INELIGIBLE = "INELIGIBLE"
EXCLUDED = "EXCLUDED"
FAILING = "FAILING"  # runs the proc, but the VIP's health check does not pass here
ELIGIBLE = "ELIGIBLE"  # internal: eligible, ownership not decided here

# container_id -> True (running), False (not running), None (unknown: do not block)
RunningCheck = Callable[[str], Optional[bool]]


def proc_key(app: str, proc: str) -> str:
    return f"{app}/{proc}"


def local_eligibility(
    vip: VipConfig,
    hostname: str,
    containers: Dict[str, LocalContainer],
    running: Optional[RunningCheck] = None,
    health: Optional[str] = None,
) -> Tuple[str, Optional[LocalContainer]]:
    """(ELIGIBLE | INELIGIBLE | EXCLUDED | FAILING, the local container when eligible).

    ``health``: the verdict of the VIP's health check here (PASSING, FAILING, UNKNOWN), or
    None when the VIP has no check. Anything but PASSING makes the node FAILING."""
    if hostname in vip.excluded_nodes:
        return EXCLUDED, None
    container = containers.get(proc_key(vip.app, vip.proc))
    if container is None:
        return INELIGIBLE, None
    if running is not None and running(container.container_id) is False:
        return INELIGIBLE, None
    if health is not None and health != "PASSING":
        return FAILING, None
    return ELIGIBLE, container


_CONTAINER_ID = re.compile(r"^[0-9a-fA-F]{1,64}$")


class DockerCheck:
    """``GET /containers/<id>/json`` over the Docker unix socket, cached per container.

    Returns None (unknown) when the socket is absent or unusable, so a node without
    Docker access is not made ineligible by this optional check.
    """

    def __init__(self, endpoint: str, timeout: float = 0.5, cache_s: float = 5.0) -> None:
        self.path = endpoint[len("unix://") :] if endpoint.startswith("unix://") else ""
        self.timeout = timeout
        self.cache_s = cache_s
        self._cache: Dict[str, Tuple[float, Optional[bool]]] = {}
        self._warned = False
        # Whether the last query got an answer: an unusable socket (the unprivileged
        # elector without the docker group) needs no periodic re-check by the elector.
        self.answering = False

    @property
    def enabled(self) -> bool:
        return bool(self.path) and os.path.exists(self.path)

    def __call__(self, container_id: str) -> Optional[bool]:
        if not self.enabled:
            return None
        if not _CONTAINER_ID.match(container_id or ""):
            return False
        now = time.monotonic()
        cached = self._cache.get(container_id)
        if cached is not None and now - cached[0] < self.cache_s:
            return cached[1]
        result = self._query(container_id)
        self._cache[container_id] = (now, result)
        if len(self._cache) > 1024:
            self._cache.clear()
        return result

    def _query(self, container_id: str) -> Optional[bool]:
        try:
            status, body = unix_http_get(
                self.path, f"/containers/{container_id}/json", self.timeout
            )
        except OSError as exc:
            self.answering = False
            if not self._warned:
                self._warned = True
                log.warning("docker check unavailable socket=%s reason=%s", self.path, exc)
            return None
        self.answering = True
        if status == 404:
            return False
        if status != 200:
            return None
        try:
            state = json.loads(body.decode("utf-8", errors="replace")).get("State") or {}
            return bool(state.get("Running"))
        except (ValueError, AttributeError):
            return None


def unix_http_get(path: str, url: str, timeout: float) -> Tuple[int, bytes]:
    """A minimal HTTP/1.0 GET over a unix socket: (status, body)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(path)
        sock.sendall(f"GET {url} HTTP/1.0\r\nHost: docker\r\n\r\n".encode())
        chunks = []
        total = 0
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
            if total > 4 * 1024 * 1024:
                break
    finally:
        sock.close()
    data = b"".join(chunks)
    head, _, body = data.partition(b"\r\n\r\n")
    status_line = head.split(b"\r\n", 1)[0].split()
    if len(status_line) < 2 or not status_line[1].isdigit():
        raise OSError("docker: malformed HTTP response")
    return int(status_line[1]), body
