"""The api worker: HTTP on -api.addr with the status document, DNS config, container
networks (``/v1/networks``, as ``networkdctl net list --json``) and metrics.

The bus is read in the main thread; HTTP requests are served by threads that only read
the latest documents, which the main thread replaces whole (no locks needed).
"""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Dict, Tuple

from networkd import status
from networkd.bus.view import BusView
from networkd.netdriver.view import networks_document
from networkd.workers.base import EXIT_ERROR, WorkerContext

Route = Callable[[], Tuple[str, bytes]]


class ApiServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: Tuple[str, int], routes: Dict[str, Route]) -> None:
        self.routes = routes
        super().__init__(address, ApiHandler)


class ApiHandler(BaseHTTPRequestHandler):
    server: ApiServer
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        route = self.server.routes.get(self.path.split("?", 1)[0])
        if route is None:
            self.reply(404, "text/plain; charset=utf-8", b"not found\n")
            return
        content_type, body = route()
        self.reply(200, content_type, body)

    def not_allowed(self) -> None:
        self.reply(405, "text/plain; charset=utf-8", b"method not allowed\n", allow="GET")

    do_POST = do_PUT = do_DELETE = do_PATCH = not_allowed
    do_HEAD = not_allowed

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
    """The latest rendered documents, replaced whole by the bus loop."""

    def __init__(self, view: BusView, node_address: str) -> None:
        self.view = view
        self.node_address = node_address
        self.status: bytes = b"{}"
        self.networks: bytes = b"[]"

    def refresh(self) -> None:
        doc = status.assemble(self.view.mirror, self.view.sources)
        self.status = json.dumps(doc, indent=1, sort_keys=True).encode() + b"\n"
        nets = networks_document(self.view.mirror)
        self.networks = json.dumps(nets, indent=1, sort_keys=True).encode() + b"\n"

    def dns_config(self) -> Tuple[str, bytes]:
        from networkd.dns.config_dump import render_from_mirrors

        return "text/plain; charset=utf-8", render_from_mirrors(
            self.view.mirror, self.node_address
        ).encode()

    def metrics(self) -> Tuple[str, bytes]:
        from networkd.metrics import render

        return "text/plain; version=0.0.4; charset=utf-8", render(
            self.view.mirror, self.view.sources
        ).encode()


def main(ctx: WorkerContext) -> int:
    host, port = ctx.config.api_host_port
    view = BusView(ctx.zmq_context, ctx.run_dir, ["state."], exclude=ctx.name)
    docs = Documents(view, ctx.node_address)
    routes: Dict[str, Route] = {
        "/v1/status": lambda: ("application/json", docs.status),
        "/v1/networks": lambda: ("application/json", docs.networks),
        "/v1/dns/config": docs.dns_config,
        "/metrics": docs.metrics,
    }
    try:
        server = ApiServer((host, port), routes)
    except OSError as exc:
        ctx.log.error("api bind failed addr=%s:%d reason=%s", host, port, exc.strerror)
        return EXIT_ERROR
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True
    )
    thread.start()
    ctx.log.info("api listening addr=%s:%d", host, port)
    while not ctx.stopping:
        view.poll(200)
        docs.refresh()  # every pass: uptimes move even when the bus is quiet
    server.shutdown()
    server.server_close()
    view.close()
    return 0
