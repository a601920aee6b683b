"""The DNS forwarder (``dns-forwarder``, the DNS user, unprivileged): the node's one cache
and every upstream query (networkd/dns/forwarder.py).

It parses bytes from upstream servers, so it runs as the replicas' user with no etcd
credentials. It gets the shared UDP listening socket from the supervisor to send answers
on (it never reads it). The main thread mirrors the watcher's ``state.domain_servers``
and the resolvconf worker's ``state.upstreams`` into the forwarding table, and publishes
``state.dns_forwarder`` (item ``stats``) every second (networkd/dns/serving.py runs the
loop); the forwarder's epoll loop runs in its own thread.
"""

import os
import resource
from typing import Any, Dict, List, Mapping, Optional, Tuple

from networkd.bus.messages import DnsForwarderStats
from networkd.dns import serving
from networkd.dns.channel import socket_path
from networkd.dns.forwarder import MAX_FETCHES, Forwarder
from networkd.workers.base import EXIT_ERROR, WorkerContext

MIRRORS = ("domain_servers", "upstreams")


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

    def apply(mirrors: serving.Mirrors) -> None:
        upstreams = upstreams_of(mirrors["upstreams"])
        forwarder.set_forwarding(upstreams, servers_of(mirrors["domain_servers"]))

    def on_start() -> None:
        forwarder.listen()
        ctx.log.info("dns forwarder serving upstreams=%s", forwarder.forwarding.upstreams)

    return serving.run(
        ctx, forwarder, MIRRORS, apply, "state.dns_forwarder", lambda: stats(forwarder), on_start
    )


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


def stats(forwarder: Forwarder) -> DnsForwarderStats:
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
