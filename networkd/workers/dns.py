"""A DNS replica (``dns.N``, unprivileged): serves SPEC section 4 on the UDP and TCP
sockets the supervisor shares between all replicas (``ctx.fds``).

The main thread owns the bus: it mirrors the watcher's ``state.domains`` and
``state.vips`` and the resolvconf worker's ``state.hosts``; on a change it builds a new
Zone and hands it to the server thread by one assignment. It publishes ``state.dns``
(item ``stats``) every second. The server thread runs the epoll loop of
``networkd.dns.server``; names that are not local go to the forwarder worker
(``networkd.workers.dns_forwarder``) over its unix socket.

Serving starts once the mirrors of the running watcher and resolvconf workers are synced
(or after START_WAIT seconds, so a missing worker cannot keep DNS down): until then the
other replicas answer, and a restarted replica never answers from half data.
"""

import os
import threading
import time
from typing import Any, Dict, List, Optional, Sequence

from networkd.bus.messages import DnsStats
from networkd.dns.channel import socket_path
from networkd.dns.server import DnsServer
from networkd.dns.zone import ZoneBuilder
from networkd.workers.base import EXIT_ERROR, EXIT_OK, WorkerContext

START_WAIT = 3.0
STATS_SECONDS = 1.0
SOURCES = {
    "watcher": ["state.domains", "state.vips"],
    "resolvconf": ["state.hosts"],
}


def main(ctx: WorkerContext) -> int:
    udp = ctx.fds.get("udp")
    tcp = ctx.fds.get("tcp")
    if udp is None:
        ctx.log.error("dns sockets missing name=%s", ctx.name)
        return EXIT_ERROR
    server = DnsServer(
        udp,
        tcp,
        socket_path(ctx.run_dir),
        name=ctx.name,
        cache_bytes=ctx.config.dns_cache_size << 20,
    )
    builder = ZoneBuilder(ctx.config.dns_ttl)
    pub = ctx.publisher()
    stats_topic = pub.state("state.dns")
    sub = ctx.subscriber(SOURCES)
    thread: Optional[threading.Thread] = None
    awaited = awaited_mirrors(ctx.config.workers)
    started = time.monotonic()
    next_stats = 0.0
    seen: Any = None
    try:
        while not ctx.stopping:
            envelopes = sub.poll(timeout_ms=50)
            mirrors = {
                "domains": sub.state("watcher", "state.domains"),
                "vips": sub.state("watcher", "state.vips"),
                "hosts": sub.state("resolvconf", "state.hosts"),
            }
            zone_inputs = (mirrors["domains"], mirrors["vips"], mirrors["hosts"])
            if (envelopes or seen is None) and seen != zone_inputs:
                seen = snapshot(zone_inputs)
                server.set_zone(
                    builder.build(
                        mirrors["domains"], mirrors["hosts"], mirrors["vips"], ctx.node_address
                    )
                )
            if thread is None and ready(mirrors, awaited, started):
                thread = threading.Thread(target=server.serve_forever, name="dns", daemon=True)
                thread.start()
                ctx.log.info("dns serving name=%s names=%d", ctx.name, len(server.zone))
            now = time.monotonic()
            if now >= next_stats:
                next_stats = now + STATS_SECONDS
                stats_topic.set("stats", _stats(server, ctx.replica))
            pub.poll()
            if thread is not None and not thread.is_alive():
                ctx.log.error("dns server thread ended name=%s", ctx.name)
                return EXIT_ERROR
    finally:
        server.stop()
        if thread is not None:
            thread.join(2)
        sub.close()
        pub.close()
    return EXIT_OK


def awaited_mirrors(workers: Sequence[str]) -> List[str]:
    """The mirrors to wait for before serving: those of the workers that run."""
    names: List[str] = []
    if not workers or "watcher" in workers:
        names += ["domains", "vips"]
    if not workers or "resolvconf" in workers:
        names += ["hosts"]
    return names


def ready(mirrors: Dict[str, Any], awaited: Sequence[str], started: float) -> bool:
    """Serve once every awaited mirror is synced, or START_WAIT seconds after start."""
    synced = all(mirrors.get(name) is not None for name in awaited)
    return synced or time.monotonic() - started > START_WAIT


def snapshot(inputs: Any) -> Any:
    """A copy of the mirrors to compare with later (mirrors are mutated in place)."""
    return tuple(None if m is None else dict(m) for m in inputs)


def _stats(server: DnsServer, replica: int) -> DnsStats:
    s = server.stats
    return DnsStats(
        replica=replica,
        pid=os.getpid(),
        queries=s.queries,
        rcodes=s.rcode_counts(),
        cache_hits=s.cache_hits,
        forwarded=s.forwarded,
        upstream_failures=s.forwarder_failures,
        forward_latency_buckets=s.latency.cumulative(),
        forward_latency_sum=s.latency.sum,
        forward_latency_count=s.latency.count,
        cache_entries=len(server.cache),
        cache_bytes=server.cache.bytes,
        forwarder_connected=server.link.connected,
    )
