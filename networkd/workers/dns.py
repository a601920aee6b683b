"""A DNS replica (``dns.N``, unprivileged): serves SPEC section 4 on the UDP and TCP
sockets the supervisor handed over (``ctx.fds``).

The main thread owns the bus: it mirrors the watcher's ``state.domains``,
``state.domain_servers``, ``state.vips`` and the resolvconf worker's ``state.upstreams``,
``state.hosts``; on a change it builds a new Zone / Forwarding table and hands it to the
server thread by one assignment. It publishes ``state.dns`` (item ``stats``) every second.
The server thread runs the epoll loop of ``networkd.dns.server``.

Serving starts once the mirrors of the running watcher and resolvconf workers are synced
(or after START_WAIT seconds, so a missing worker cannot keep DNS down): until then
queries wait in the socket buffer, and a restarted replica never answers from half data.
"""

import logging
import os
import threading
import time
from typing import Any, Dict, List, Mapping, Optional, Sequence

from networkd.bus.messages import DnsStats
from networkd.dns.server import DnsServer
from networkd.dns.zone import ZoneBuilder
from networkd.workers.base import EXIT_ERROR, EXIT_OK, WorkerContext

log = logging.getLogger("networkd.dns")

START_WAIT = 3.0
STATS_SECONDS = 1.0
SOURCES = {
    "watcher": ["state.domains", "state.domain_servers", "state.vips"],
    "resolvconf": ["state.upstreams", "state.hosts"],
}


def _servers_of(items: Optional[Mapping[str, Any]]) -> Dict[str, List[str]]:
    out: Dict[str, List[str]] = {}
    for key, item in (items or {}).items():
        servers = getattr(item, "servers", None)
        if isinstance(servers, list) and servers:
            out[str(getattr(item, "domain", "") or key)] = [
                s for s in servers if isinstance(s, str)
            ]
    return out


def _upstreams_of(items: Optional[Mapping[str, Any]]) -> List[str]:
    item = (items or {}).get("upstreams")
    servers = getattr(item, "servers", None)
    return [s for s in servers if isinstance(s, str)] if isinstance(servers, list) else []


def main(ctx: WorkerContext) -> int:
    udp = ctx.fds.get("udp")
    tcp = ctx.fds.get("tcp")
    if udp is None:
        ctx.log.error("dns sockets missing name=%s", ctx.name)
        return EXIT_ERROR
    replica = ctx.replica
    server = DnsServer(udp, tcp)
    builder = ZoneBuilder(ctx.config.dns_ttl)
    pub = ctx.publisher()
    stats_topic = pub.state("state.dns")
    sub = ctx.subscriber(SOURCES)
    thread: Optional[threading.Thread] = None
    awaited = awaited_mirrors(ctx.config.workers)
    started = time.monotonic()
    next_stats = 0.0
    seen: Dict[str, Any] = {}
    try:
        while not ctx.stopping:
            envelopes = sub.poll(timeout_ms=50)
            mirrors = {
                "domains": sub.state("watcher", "state.domains"),
                "vips": sub.state("watcher", "state.vips"),
                "hosts": sub.state("resolvconf", "state.hosts"),
                "domain_servers": sub.state("watcher", "state.domain_servers"),
                "upstreams": sub.state("resolvconf", "state.upstreams"),
            }
            if envelopes or not seen:
                zone_inputs = (mirrors["domains"], mirrors["vips"], mirrors["hosts"])
                if seen.get("zone") != zone_inputs:
                    seen["zone"] = _snapshot(zone_inputs)
                    server.set_zone(
                        builder.build(
                            mirrors["domains"], mirrors["hosts"], mirrors["vips"], ctx.node_address
                        )
                    )
                fwd_inputs = (mirrors["domain_servers"], mirrors["upstreams"])
                if seen.get("fwd") != fwd_inputs:
                    seen["fwd"] = _snapshot(fwd_inputs)
                    server.set_forwarding(
                        _upstreams_of(mirrors["upstreams"]), _servers_of(mirrors["domain_servers"])
                    )
            if thread is None and (
                all(mirrors[name] is not None for name in awaited)
                or time.monotonic() - started > START_WAIT
            ):
                thread = threading.Thread(target=server.serve_forever, name="dns", daemon=True)
                thread.start()
                ctx.log.info(
                    "dns serving name=%s names=%d upstreams=%s",
                    ctx.name,
                    len(server.zone),
                    server.forwarding.upstreams,
                )
            now = time.monotonic()
            if now >= next_stats:
                next_stats = now + STATS_SECONDS
                stats_topic.set("stats", _stats(server, replica))
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
        names += ["domains", "vips", "domain_servers"]
    if not workers or "resolvconf" in workers:
        names += ["upstreams", "hosts"]
    return names


def _snapshot(inputs: Any) -> Any:
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
        upstream_failures=s.upstream_failures,
        forward_latency_buckets=s.latency_histogram(),
        forward_latency_sum=s.latency_sum,
        forward_latency_count=sum(s.latency),
    )
