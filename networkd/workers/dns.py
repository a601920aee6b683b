"""A DNS replica (``dns.N``, unprivileged): serves SPEC section 4 on the UDP and TCP
sockets the supervisor shares between all replicas (``ctx.fds``).

It mirrors the watcher's ``state.domains`` and ``state.vips`` and the resolvconf
worker's ``state.hosts``; on a change it builds a new Zone and hands it to the server
thread by one assignment (networkd/dns/serving.py runs the loop). It publishes
``state.dns`` (item ``stats``) every second. Names that are not local go to the
forwarder worker (``networkd.workers.dns_forwarder``) over its unix socket.
"""

import os

from networkd.bus.messages import DnsStats
from networkd.dns import serving
from networkd.dns.channel import socket_path
from networkd.dns.server import DnsServer
from networkd.dns.zone import ZoneBuilder
from networkd.workers.base import EXIT_ERROR, WorkerContext

MIRRORS = ("domains", "vips", "hosts")


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

    def apply(mirrors: serving.Mirrors) -> None:
        zone = builder.build(
            mirrors["domains"], mirrors["hosts"], mirrors["vips"], ctx.node_address
        )
        server.set_zone(zone)

    def on_start() -> None:
        ctx.log.info("dns serving name=%s names=%d", ctx.name, len(server.zone))

    return serving.run(
        ctx, server, MIRRORS, apply, "state.dns", lambda: stats(server, ctx.replica), on_start
    )


def stats(server: DnsServer, replica: int) -> DnsStats:
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
