"""Docker's Engine API over its unix socket, for tests that start many containers at once.

The docker CLI costs a process per call; starting a hundred containers concurrently is
done here through the API (create + start), the same requests the CLI sends.
"""

import http.client
import json
import socket
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Dict, List, Optional, Sequence, Tuple


class UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float = 120.0) -> None:
        super().__init__("docker", timeout=timeout)
        self.path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self.path)
        self.sock = sock


class DockerApiError(RuntimeError):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status
        self.message = message


class DockerApi:
    def __init__(self, socket_path: str) -> None:
        self.socket_path = socket_path
        self._local = threading.local()

    def _conn(self) -> UnixConnection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = UnixConnection(self.socket_path)
        return conn  # type: ignore[no-any-return]

    def request(self, method: str, path: str, body: Optional[Dict[str, Any]] = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": "application/json"} if data is not None else {}
        for attempt in (1, 2):
            conn = self._conn()
            try:
                conn.request(method, path, body=data, headers=headers)
                response = conn.getresponse()
                raw = response.read()
                break
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                self._local.conn = None
                # A kept-alive connection to a dockerd that restarted: the request was
                # never read; send it once more on a new connection.
                stale = isinstance(exc, (BrokenPipeError, http.client.RemoteDisconnected))
                if attempt == 2 or not stale:
                    raise
        text = raw.decode(errors="replace")
        if response.status >= 300:
            try:
                message = json.loads(text).get("message", text)
            except ValueError:
                message = text
            raise DockerApiError(response.status, message)
        return json.loads(text) if text.strip() else None

    def run(
        self,
        image: str,
        cmd: Sequence[str],
        network: str = "",
        name: str = "",
        ip: str = "",
    ) -> str:
        """Create and start a container; its ID."""
        body: Dict[str, Any] = {"Image": image, "Cmd": list(cmd), "HostConfig": {}}
        if network:
            body["HostConfig"]["NetworkMode"] = network
            if ip:
                body["NetworkingConfig"] = {
                    "EndpointsConfig": {network: {"IPAMConfig": {"IPv4Address": ip}}}
                }
        path = "/containers/create" + (f"?name={name}" if name else "")
        container_id = str(self.request("POST", path, body)["Id"])
        self.request("POST", f"/containers/{container_id}/start")
        return container_id

    def run_many(
        self, count: int, image: str, cmd: Sequence[str], network: str, workers: int = 50
    ) -> List[Tuple[Optional[str], str]]:
        """Start ``count`` containers concurrently: [(id or None, error)] in order."""

        def one(_: int) -> Tuple[Optional[str], str]:
            try:
                return self.run(image, cmd, network), ""
            except (DockerApiError, OSError) as exc:
                return None, str(exc)

        with ThreadPoolExecutor(max_workers=workers) as pool:
            return list(pool.map(one, range(count)))

    def connect_many(self, network: str, ids: Sequence[str], workers: int = 50) -> List[str]:
        """Attach running containers to another network at once; errors, if any."""

        def one(container_id: str) -> str:
            try:
                self.request("POST", f"/networks/{network}/connect", {"Container": container_id})
                return ""
            except (DockerApiError, OSError) as exc:
                return str(exc)

        with ThreadPoolExecutor(max_workers=workers) as pool:
            return [e for e in pool.map(one, ids) if e]

    def inspect(self, container_id: str) -> Dict[str, Any]:
        return self.request("GET", f"/containers/{container_id}/json")  # type: ignore[no-any-return]

    def address(self, container_id: str, network: str) -> str:
        networks = self.inspect(container_id)["NetworkSettings"]["Networks"]
        return str((networks.get(network) or {}).get("IPAddress") or "")

    def running(self) -> List[str]:
        return [c["Id"] for c in self.request("GET", "/containers/json")]

    def all_ids(self) -> List[str]:
        return [c["Id"] for c in self.request("GET", "/containers/json?all=1")]

    def remove(self, container_id: str) -> None:
        try:
            self.request("DELETE", f"/containers/{container_id}?force=1")
        except DockerApiError as exc:
            if exc.status != 404:
                raise

    def remove_many(self, ids: Sequence[str], workers: int = 20) -> None:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            list(pool.map(self.remove, ids))
