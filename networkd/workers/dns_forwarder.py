"""The DNS forwarder (``dns-forwarder``, the DNS user, unprivileged): the node's one cache
and every upstream query (networkd/dns/forwarder.py).

It parses bytes from upstream servers, so it runs as the replicas' user with no etcd
credentials. It gets the shared UDP listening socket from the supervisor to send answers
on (it never reads it). The main thread mirrors the watcher's ``state.domain_servers``
and the resolvconf worker's ``state.upstreams`` into the forwarding table, and publishes
``state.dns_forwarder`` (item ``stats``) every second; the forwarder's epoll loop runs in
its own thread.
"""

import os
import resource
import threading
import time
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from networkd.bus.messages import DnsForwarderStats
from networkd.dns.channel import socket_path
from networkd.dns.forwarder import MAX_FETCHES, Forwarder
from networkd.workers.base import EXIT_ERROR, EXIT_OK, WorkerContext
from networkd.workers.dns import ready, snapshot

STATS_SECONDS = 1.0
SOURCES = {
    "watcher": ["state.domain_servers"],
    "resolvconf": ["state.upstreams"],
}


def main(ctx: WorkerContext) -> int:
    udp = ctx.fds.get("udp")
    if udp is None:
        ctx.log.error("dns sockets missing name=%s", ctx.name)
        return EXIT_ERROR
    raise_file_limit(MAX_FETCHES + 256)
    forwarder = Forwarder(
        udp,
        socket_path(ctx.run_dir),
        cache_bytes=ctx.config.dns_cache_size << 20,
        case_randomize=ctx.config.dns_case_randomize,
        own=own_addresses(udp.getsockname()),
    )
    pub = ctx.publisher()
    stats_topic = pub.state("state.dns_forwarder")
    sub = ctx.subscriber(SOURCES)
    awaited = awaited_mirrors(ctx.config.workers)
    thread: Optional[threading.Thread] = None
    started = time.monotonic()
    next_stats = 0.0
    seen: Any = None
    try:
        while not ctx.stopping:
            envelopes = sub.poll(timeout_ms=50)
            mirrors = {
                "domain_servers": sub.state("watcher", "state.domain_servers"),
                "upstreams": sub.state("resolvconf", "state.upstreams"),
            }
            inputs = (mirrors["domain_servers"], mirrors["upstreams"])
            if (envelopes or seen is None) and seen != inputs:
                seen = snapshot(inputs)
                forwarder.set_forwarding(
                    upstreams_of(mirrors["upstreams"]), servers_of(mirrors["domain_servers"])
                )
            if thread is None and ready(mirrors, awaited, started):
                forwarder.listen()
                thread = threading.Thread(target=forwarder.serve_forever, name="dns", daemon=True)
                thread.start()
                ctx.log.info("dns forwarder serving upstreams=%s", forwarder.forwarding.upstreams)
            now = time.monotonic()
            if now >= next_stats:
                next_stats = now + STATS_SECONDS
                stats_topic.set("stats", _stats(forwarder))
            pub.poll()
            if thread is not None and not thread.is_alive():
                ctx.log.error("dns forwarder thread ended")
                return EXIT_ERROR
    finally:
        forwarder.stop()
        if thread is not None:
            thread.join(2)
        sub.close()
        pub.close()
    return EXIT_OK


def awaited_mirrors(workers: Sequence[str]) -> List[str]:
    names: List[str] = []
    if not workers or "watcher" in workers:
        names.append("domain_servers")
    if not workers or "resolvconf" in workers:
        names.append("upstreams")
    return names


def raise_file_limit(wanted: int) -> None:
    """One socket per upstream query in flight: lift the soft fd limit up to the hard one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def own_addresses(name: Tuple[Any, ...]) -> List[Tuple[str, int]]:
    """The addresses this DNS server answers on: never forward to them."""
    host, port = str(name[0]), int(name[1])
    out = [(host, port)]
    if host in ("0.0.0.0", "::"):
        out += [("127.0.0.1", port), ("::1", port)]
    return out


def servers_of(items: Optional[Mapping[str, Any]]) -> Dict[str, List[str]]:
    out: Dict[str, List[str]] = {}
    for key, item in (items or {}).items():
        servers = getattr(item, "servers", None)
        if isinstance(servers, list) and servers:
            out[str(getattr(item, "domain", "") or key)] = [
                s for s in servers if isinstance(s, str)
            ]
    return out


def upstreams_of(items: Optional[Mapping[str, Any]]) -> List[str]:
    item = (items or {}).get("upstreams")
    servers = getattr(item, "servers", None)
    return [s for s in servers if isinstance(s, str)] if isinstance(servers, list) else []


def _stats(forwarder: Forwarder) -> DnsForwarderStats:
    s = forwarder.stats
    return DnsForwarderStats(
        pid=os.getpid(),
        requests=s.requests,
        cache_hits=s.cache_hits,
        merged=s.merged,
        upstream_queries=s.upstream_queries,
        upstream_tcp=s.upstream_tcp,
        upstream_failures=s.upstream_failures,
        rejected_replies=s.rejected_replies,
        servfails=s.servfails,
        in_flight=forwarder.in_flight,
        cache_entries=len(forwarder.cache),
        cache_bytes=forwarder.cache.bytes,
        latency_buckets=s.latency.cumulative(),
        latency_sum=s.latency.sum,
        latency_count=s.latency.count,
    )
