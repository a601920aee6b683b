"""The api worker: HTTP on -api.addr with the status document, DNS config and metrics.

The bus is read in the main thread; HTTP requests are served by threads that only read
what the main thread replaces whole (no locks needed): the status document, rendered on
every pass, and a read-only copy of the mirrors (``BusView.frozen``), taken when the bus
brought something new, from which ``/metrics``, ``/v1/dns/config`` and ``/v1/networks``
render. The live mirrors change under ``poll()`` and are never handed to another thread.
"""

import json
import os
import socketserver
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Dict, Tuple

from networkd import status
from networkd.bus.messages import CommandResult
from networkd.bus.view import BusView, FrozenView
from networkd.netdriver.view import networks_document
from networkd.vip_api import (
    MAX_BODY,
    CommandBridge,
    authorized,
    read_token,
    vips_document,
    write_request,
)
from networkd.workers.base import EXIT_ERROR, EXIT_FATAL, WorkerContext

Route = Callable[[], Tuple[str, bytes]]
CTL_SOCKET = "ctl.sock"
BUSY_POLL_MS = 50  # while VIP commands wait to be sent or answered
IDLE_POLL_MS = 1000  # otherwise: bus messages, commands and stops wake the loop anyway


class Api:
    """What both servers answer with: GET routes, and the VIP writes through the bridge."""

    def __init__(self, routes: Dict[str, Route], bridge: CommandBridge, token: str) -> None:
        self.routes = routes
        self.bridge = bridge
        self.token = token


class ApiServer(ThreadingHTTPServer):
    """``-api.addr``: writes need the bearer token."""

    daemon_threads = True
    allow_reuse_address = True
    trusted = False

    def __init__(self, address: Tuple[str, int], api: Api) -> None:
        self.api = api
        super().__init__(address, ApiHandler)


class LocalApiServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    """``<run dir>/state/api/ctl.sock`` (0600): ``networkdctl``; its permissions are the
    check, so writes need no token here."""

    daemon_threads = True
    trusted = True

    def __init__(self, path: str, api: Api) -> None:
        self.api = api
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        old = os.umask(0o177)
        try:
            super().__init__(path, ApiHandler)
        finally:
            os.umask(old)


class ApiHandler(BaseHTTPRequestHandler):
    server: Any  # ApiServer or LocalApiServer
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        route = self.server.api.routes.get(path)
        if route is None:
            self.reply(404, "text/plain; charset=utf-8", b"not found\n")
            return
        content_type, body = route()
        self.reply(200, content_type, body)

    def write(self) -> None:
        path = self.path.split("?", 1)[0]
        if not path.startswith("/v1/vips/"):
            self.reply(405, "text/plain; charset=utf-8", b"method not allowed\n", allow="GET")
            return
        api = self.server.api
        if not self.server.trusted and not authorized(self.headers.get("Authorization"), api.token):
            why = (
                "writes need a bearer token" if api.token else "writes are off: no -api.token-file"
            )
            self.reply_json(403, {"ok": False, "error": why})
            return
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            self.reply_json(413, {"ok": False, "error": f"body larger than {MAX_BODY} bytes"})
            return
        body = self.rfile.read(length) if length > 0 else b""
        answer = write_request(self.command, path, body, api.bridge)
        if answer is None:
            self.reply(404, "text/plain; charset=utf-8", b"not found\n")
            return
        self.reply_json(*answer)

    do_POST = do_PUT = do_DELETE = write

    def not_allowed(self) -> None:
        self.reply(405, "text/plain; charset=utf-8", b"method not allowed\n", allow="GET")

    do_PATCH = do_HEAD = not_allowed

    def reply_json(self, code: int, doc: Dict[str, Any]) -> None:
        self.reply(code, "application/json", json.dumps(doc, sort_keys=True).encode() + b"\n")

    def reply(self, code: int, content_type: str, body: bytes, allow: str = "") -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        if allow:
            self.send_header("Allow", allow)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # no per-request logs


class Documents:
    """What the HTTP threads read: a frozen copy of the mirrors, replaced whole by the bus
    loop when the bus brought news (``freeze`` is ``BusView.frozen``); each document is
    built from it when asked for."""

    def __init__(self, freeze: Callable[[], FrozenView], node_address: str) -> None:
        self.freeze = freeze
        self.node_address = node_address
        self.mirrors = freeze()

    def refresh(self) -> None:
        """Main thread only."""
        self.mirrors = self.freeze()

    def status(self) -> Tuple[str, bytes]:
        mirrors = self.mirrors
        doc = status.assemble(mirrors.mirror, list(mirrors.sources))
        return "application/json", json.dumps(doc, indent=1, sort_keys=True).encode() + b"\n"

    def dns_config(self) -> Tuple[str, bytes]:
        from networkd.dns.config_dump import render_from_mirrors

        mirrors = self.mirrors  # one read: a refresh in between does not mix two copies
        return "text/plain; charset=utf-8", render_from_mirrors(
            mirrors.mirror, self.node_address
        ).encode()

    def vips(self) -> Tuple[str, bytes]:
        code, doc = vips_document(self.mirrors.mirror("elector", "state.vip_cluster"))
        if code != 200:
            doc["status"] = code
        return "application/json", json.dumps(doc, indent=1, sort_keys=True).encode() + b"\n"

    def networks(self) -> Tuple[str, bytes]:
        """Container networks (-libnetwork): the same JSON as ``networkdctl net list --json``."""
        doc = networks_document(self.mirrors.mirror)
        return "application/json", json.dumps(doc, indent=1, sort_keys=True).encode() + b"\n"

    def metrics(self) -> Tuple[str, bytes]:
        from networkd.metrics import render

        mirrors = self.mirrors
        return "text/plain; version=0.0.4; charset=utf-8", render(
            mirrors.mirror, mirrors.sources
        ).encode()


def main(ctx: WorkerContext) -> int:
    host, port = ctx.config.api_host_port
    try:
        token = read_token(ctx.config.api_token_file)
    except (OSError, ValueError) as exc:
        ctx.log.error("api token unusable path=%s reason=%s", ctx.config.api_token_file, exc)
        return EXIT_FATAL
    view = BusView(ctx.zmq_context, ctx.run_dir, ["state.", "command.done"], exclude=ctx.name)
    pub = ctx.publisher()
    docs = Documents(view.frozen, ctx.node_address)
    bridge = CommandBridge()
    routes: Dict[str, Route] = {
        "/v1/status": docs.status,
        "/v1/dns/config": docs.dns_config,
        "/metrics": docs.metrics,
        "/v1/vips": docs.vips,
        "/v1/networks": docs.networks,
    }
    api = Api(routes, bridge, token)
    try:
        servers = [
            ApiServer((host, port), api),
            LocalApiServer(os.path.join(ctx.state_dir, CTL_SOCKET), api),
        ]
    except OSError as exc:
        ctx.log.error("api bind failed addr=%s:%d reason=%s", host, port, exc.strerror)
        return EXIT_ERROR
    for server in servers:
        thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True
        )
        thread.start()
    ctx.log.info("api listening addr=%s:%d writes=%s", host, port,
                 "token" if token else "local socket only")  # fmt: skip
    sources = len(view.sources)
    while not ctx.stopping:
        # Asleep until a message or a command comes; brisk while commands wait for the
        # elector to subscribe or to answer (their resends are due on time).
        envelopes = view.poll(
            BUSY_POLL_MS if bridge.busy else IDLE_POLL_MS,
            [bridge.wakeup.rfd, ctx.stop_wakeup.rfd],
        )
        bridge.wakeup.drain()
        for env in envelopes:
            done = env.topic == "command.done" and env.sender == "elector"
            if done and isinstance(env.body, CommandResult):
                bridge.answer(env.body)
        listening = pub.has_subscriber("command.vip")
        for command in bridge.outgoing(time.monotonic(), listening):
            pub.event("command.vip", command)
        pub.poll()
        if any(e.topic.startswith("state.") for e in envelopes) or len(view.sources) != sources:
            sources = len(view.sources)
            docs.refresh()
    for server in servers:
        server.shutdown()
        server.server_close()
    pub.close()
    view.close()
    return 0
