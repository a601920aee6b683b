"""The ``netplugin`` worker (its own user, no root, no etcd): Docker's network and IPAM
plugin on the socket the supervisor made (``ctx.fds["plugin"]``).

It is the only process that reads Docker's JSON (``networkd.netdriver.protocol``) and it
can do nothing with it but forward typed requests to the netstore, which accepts them
only from this worker's user. See docs/NETWORKS.md.
"""

import os
import threading
from typing import Any

from networkd.netdriver import messages as m
from networkd.netdriver.channel import ChannelClient
from networkd.netdriver.httpd import PluginServer
from networkd.workers.base import EXIT_ERROR, STOP_EVENT, WorkerContext

STORE_SOCKET = ("bus", "netstore", "requests.sock")
FORWARD_TIMEOUT = 25.0  # below Docker's plugin call timeout


def main(ctx: WorkerContext) -> int:
    listener = ctx.fds.get("plugin")
    if listener is None:
        ctx.log.error("plugin socket missing name=%s", ctx.name)
        return EXIT_ERROR
    path = os.path.join(ctx.run_dir, *STORE_SOCKET)
    local = threading.local()

    def forward(request: Any) -> m.Reply:
        client = getattr(local, "client", None)
        if client is None:
            client = local.client = ChannelClient(path, timeout=FORWARD_TIMEOUT)
        return client.call(request)  # type: ignore[no-any-return]

    server = PluginServer(listener, forward)
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True
    )
    thread.start()
    ctx.log.info("docker plugin serving socket=%s", ctx.config.docker_plugin_socket)
    while not ctx.stopping:
        STOP_EVENT.wait(0.2)
    server.shutdown()
    return 0
