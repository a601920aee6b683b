"""VIP operations over HTTP: ``GET /v1/vips`` and the writes (add, rm, move).

Served by the api worker on ``-api.addr`` and on a local unix socket,
``<run dir>/state/api/ctl.sock`` (mode 0600, the api's user and root only), which is what
``networkdctl vip ...`` uses. Reads are open. Writes:

- on the unix socket: allowed (the file's permissions are the check);
- on ``-api.addr``: only with ``Authorization: Bearer <token>`` where the token is the
  content of ``-api.token-file`` (compared in constant time); without that flag every
  write is 403.

| method | path | does |
|---|---|---|
| GET | ``/v1/vips`` | every configured floating VIP, its owner, each node's state and check |
| PUT | ``/v1/vips/<key>`` | body: the VIP's JSON value; written after validation |
| DELETE | ``/v1/vips/<key>`` | the value is deleted |
| POST | ``/v1/vips/<ip>/move`` | body (optional): ``{"to": "<node>"}``; a planned move |

The api worker holds no etcd credentials: a write becomes a ``VipCommand`` on the bus and
the elector carries it out (``networkd.election.commands``); its ``CommandResult`` is the
answer (status and message).
"""

import hmac
import itertools
import json
import os
import queue
import threading
from typing import Any, Dict, List, Mapping, Optional, Tuple

from networkd.bus.codec import to_plain
from networkd.bus.messages import CommandResult, VipCommand
from networkd.wakeup import Wakeup

COMMAND_WAIT = 15.0
RESEND_S = 2.0
MAX_BODY = 64 * 1024
Reply = Tuple[int, Dict[str, Any]]


def read_token(path: str) -> str:
    """The API token (surrounding whitespace dropped); "" when no file is configured.

    Raises OSError naming the file when it cannot be read, or ValueError when it is empty:
    a configured but unusable token must stop the worker, not open the API."""
    if not path:
        return ""
    with open(path, encoding="utf-8") as f:
        token = f.read().strip()
    if not token:
        raise ValueError(f"-api.token-file: {path} is empty")
    return token


def authorized(header: Optional[str], token: str) -> bool:
    if not token or not header or not header.startswith("Bearer "):
        return False
    return hmac.compare_digest(header[len("Bearer ") :].strip().encode(), token.encode())


class CommandBridge:
    """HTTP threads ask; the bus thread sends the command and hands back the result.

    Pub/sub drops an event nobody subscribes to yet (an elector that is starting or
    restarting): a command is sent only while the elector subscribes, and sent again every
    RESEND_S until its result comes; the elector answers a repeated id from memory."""

    def __init__(self) -> None:
        self._ids = itertools.count(1)
        self._prefix = f"{os.getpid()}-"
        self._outbox: queue.Queue[VipCommand] = queue.Queue()
        self._waiting: Dict[str, queue.Queue[CommandResult]] = {}
        self._unanswered: Dict[str, Tuple[VipCommand, float]] = {}  # id -> (command, send at)
        self._lock = threading.Lock()
        self.wakeup = Wakeup()  # the bus thread sleeps until a command or a message comes

    def ask(self, command: VipCommand, timeout: float = COMMAND_WAIT) -> CommandResult:
        """From an HTTP thread: send ``command`` (its id is set here), wait for the result."""
        command.id = f"{self._prefix}{next(self._ids)}"
        answer: queue.Queue[CommandResult] = queue.Queue(maxsize=1)
        with self._lock:
            self._waiting[command.id] = answer
        self._outbox.put(command)
        self.wakeup.poke()
        try:
            return answer.get(timeout=timeout)
        except queue.Empty:
            return CommandResult(command.id, False, "the elector did not answer in time", 504)
        finally:
            with self._lock:
                self._waiting.pop(command.id, None)

    def outgoing(self, now: float, listening: bool) -> List[VipCommand]:
        """From the bus thread: the commands to publish now (none while nobody listens)."""
        while True:
            try:
                command = self._outbox.get_nowait()
            except queue.Empty:
                break
            self._unanswered[command.id] = (command, now)
        with self._lock:
            for ident in [i for i in self._unanswered if i not in self._waiting]:
                del self._unanswered[ident]  # the asker gave up
        if not listening:
            return []
        out = []
        for ident, (command, due) in list(self._unanswered.items()):
            if now >= due:
                out.append(command)
                self._unanswered[ident] = (command, now + RESEND_S)
        return out

    @property
    def busy(self) -> bool:
        """Commands to send or resend: the bus thread must keep polling briskly."""
        return bool(self._unanswered) or not self._outbox.empty()

    def answer(self, result: CommandResult) -> None:
        """From the bus thread: a ``command.done`` from the elector."""
        self._unanswered.pop(result.id, None)
        with self._lock:
            waiting = self._waiting.get(result.id)
        if waiting is not None:
            try:
                waiting.put_nowait(result)
            except queue.Full:
                pass


def vips_document(cluster: Optional[Mapping[str, Any]]) -> Reply:
    if cluster is None:
        return 503, {"error": "the elector has not published the VIPs yet"}
    return 200, {"vips": [to_plain(cluster[ip]) for ip in sorted(cluster)]}


def write_request(method: str, path: str, body: bytes, bridge: CommandBridge) -> Optional[Reply]:
    """A write under ``/v1/vips/``; None when the path is not one."""
    parts = path.strip("/").split("/")
    if len(parts) < 3 or parts[:2] != ["v1", "vips"]:
        return None
    key = parts[2]
    if method == "POST" and len(parts) == 4 and parts[3] == "move":
        target = ""
        if body.strip():
            try:
                data = json.loads(body.decode("utf-8"))
            except (UnicodeDecodeError, ValueError) as exc:
                return 400, {"ok": False, "error": f"body: not valid JSON: {exc}"}
            wanted = data.get("to", "") if isinstance(data, dict) else None
            if not isinstance(wanted, str):
                return 400, {"ok": False, "error": 'body: "to" must be a node name'}
            target = wanted
        command = VipCommand(id="", action="move", key=key, to=target)
    elif method == "PUT" and len(parts) == 3:
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            return 400, {"ok": False, "error": "body: not valid UTF-8"}
        command = VipCommand(id="", action="add", key=key, value=text)
    elif method == "DELETE" and len(parts) == 3:
        command = VipCommand(id="", action="rm", key=key)
    else:
        return 405, {"ok": False, "error": f"{method} {path}: not an operation"}
    result = bridge.ask(command)
    reply: Dict[str, Any] = {"ok": result.ok}
    reply["message" if result.ok else "error"] = result.message
    return result.status, reply
