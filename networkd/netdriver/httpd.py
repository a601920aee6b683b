"""The plugin's HTTP side: HTTP/1.1 on the unix socket Docker talks to.

Runs in the unprivileged ``netplugin`` worker, on the listening socket the supervisor
made. Each request is parsed and validated by ``protocol`` and either answered at once or
forwarded as a typed request to the netstore (``forward``); one thread per connection, so
that Docker's concurrent container starts wait on the netstore, not on each other.
"""

import json
import logging
import socket
import socketserver
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any, Callable, Dict, Tuple

from networkd.netdriver import messages as m
from networkd.netdriver import protocol
from networkd.netdriver.channel import ChannelError

log = logging.getLogger("networkd.netplugin")

Forward = Callable[[Any], m.Reply]


class PluginServer(socketserver.ThreadingMixIn, HTTPServer):
    daemon_threads = True
    address_family = socket.AF_UNIX

    def __init__(self, listener: socket.socket, forward: Forward) -> None:
        super().__init__("", PluginHandler, bind_and_activate=False)  # type: ignore[arg-type]
        self.socket.close()
        self.socket = listener
        self.forward = forward
        self.lock = threading.Lock()
        self.counts: Dict[str, int] = {}

    def count(self, what: str) -> None:
        with self.lock:
            self.counts[what] = self.counts.get(what, 0) + 1


class PluginHandler(BaseHTTPRequestHandler):
    server: PluginServer
    protocol_version = "HTTP/1.1"

    def address_string(self) -> str:
        return "docker"

    def do_POST(self) -> None:
        path = self.path.split("?", 1)[0]
        length = self.headers.get("Content-Length") or "0"
        if not length.isdigit() or int(length) > protocol.MAX_BODY:
            self.reply(400, protocol.error_body(f"bad Content-Length {length!r}"))
            return
        body = self.rfile.read(int(length))
        status, answer = handle(path, body, self.server.forward)
        self.server.count(f"{protocol.method_name(path)} {status}")
        self.reply(status, answer)

    def do_GET(self) -> None:
        self.reply(405, protocol.error_body("plugin methods are POST requests"))

    def reply(self, status: int, answer: Dict[str, Any]) -> None:
        data = json.dumps(answer).encode()
        self.send_response(status)
        self.send_header("Content-Type", protocol.CONTENT_TYPE)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # requests are logged by handle()


def handle(path: str, body: bytes, forward: Forward) -> Tuple[int, Dict[str, Any]]:
    """(HTTP status, JSON answer) for one plugin request."""
    method = protocol.method_name(path)
    try:
        parsed = protocol.parse(path, body)
    except protocol.ProtocolError as exc:
        if not isinstance(exc, protocol.NotFound):
            log.info("plugin request refused method=%s reason=%s", method, exc)
        return exc.status, protocol.error_body(str(exc))
    if isinstance(parsed, dict):
        return 200, parsed
    try:
        reply = forward(parsed)
    except ChannelError as exc:
        log.warning("plugin request failed method=%s reason=%s", method, exc)
        return 200, protocol.error_body(f"networkd netstore unavailable: {exc}")
    if reply.error:
        log.info("plugin request refused method=%s reason=%s", method, reply.error)
    else:
        log.debug("plugin request done method=%s", method)
    return 200, protocol.answer(parsed, reply)
