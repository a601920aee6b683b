"""``GET /metrics``: the node's state in the Prometheus text format (version 0.0.4).

Everything is derived from bus mirrors, so the numbers are the ones the workers publish
(counters are per worker process lifetime, as the workers keep them; a restarted worker
starts its counters again, which Prometheus' ``rate()`` handles as a counter reset).
"""

from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Tuple

from networkd.proc_state import ProcessState

MirrorLookup = Callable[[str, str], Optional[Mapping[str, Any]]]
Labels = Dict[str, str]


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(labels: Labels) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{_escape(str(v))}"' for k, v in sorted(labels.items())) + "}"


def _number(value: float) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    return repr(float(value))


class Family:
    """One metric family: HELP, TYPE and its samples."""

    def __init__(self, name: str, kind: str, help_text: str) -> None:
        self.name = name
        self.kind = kind
        self.help_text = help_text
        self.samples: List[Tuple[str, Labels, float]] = []

    def add(self, value: float, suffix: str = "", **labels: str) -> None:
        self.samples.append((suffix, labels, value))

    def render(self) -> str:
        lines = [f"# HELP {self.name} {self.help_text}", f"# TYPE {self.name} {self.kind}"]
        for suffix, labels, value in self.samples:
            lines.append(f"{self.name}{suffix}{_labels(labels)} {_number(value)}")
        return "\n".join(lines)


def _items(mirror: MirrorLookup, sender: str, topic: str) -> Mapping[str, Any]:
    return mirror(sender, topic) or {}


def families(mirror: MirrorLookup, sources: Iterable[str]) -> List[Family]:
    out: List[Family] = []

    def family(name: str, kind: str, help_text: str) -> Family:
        fam = Family(name, kind, help_text)
        out.append(fam)
        return fam

    # workers
    restarts = family(
        "networkd_worker_restarts_total", "counter", "Times the supervisor restarted a worker."
    )
    states = family(
        "networkd_worker_state", "gauge", "1 for the worker's current state, 0 for the others."
    )
    for info in _items(mirror, "supervisor", "state.workers").values():
        restarts.add(info.restarts, worker=info.name)
        for state in ProcessState:
            states.add(1 if info.state == state.value else 0, worker=info.name, state=state.value)

    # VIPs
    owned = family("networkd_vip_owned", "gauge", "1 when this node owns the VIP.")
    vip_state = family(
        "networkd_vip_state", "gauge", "1 for the VIP's state on this node (OWNER, STANDBY, ...)."
    )
    for status in _items(mirror, "elector", "state.vip_status").values():
        owned.add(1 if status.state == "OWNER" else 0, vip=status.ip)
        for name in ("OWNER", "STANDBY", "INELIGIBLE", "EXCLUDED"):
            vip_state.add(1 if status.state == name else 0, vip=status.ip, state=name)
    counters = _items(mirror, "elector", "state.elector").get("counters")
    failovers = family(
        "networkd_vip_failovers_total", "counter", "VIPs this node took over from another node."
    )
    acquisitions = family("networkd_vip_acquisitions_total", "counter", "VIP locks this node won.")
    releases = family("networkd_vip_releases_total", "counter", "VIP locks this node gave up.")
    if counters is not None:
        failovers.add(counters.failovers)
        acquisitions.add(counters.acquisitions)
        releases.add(counters.releases)
    applier = _items(mirror, "applier", "state.applier").get("counters")
    garps = family(
        "networkd_garp_sent_total", "counter", "Gratuitous ARP / unsolicited NA packets sent."
    )
    claims = family(
        "networkd_duplicate_claims_total",
        "counter",
        "Other MACs seen announcing a VIP this node holds.",
    )
    repairs = family(
        "networkd_applier_repairs_total",
        "counter",
        "Outside changes to addresses or rules repaired.",
    )
    if applier is not None:
        garps.add(applier.garps_sent)
        claims.add(applier.duplicate_claims)
        repairs.add(applier.repairs)

    # lease and etcd
    lease = _items(mirror, "elector", "state.lease").get("lease")
    lease_alive = family(
        "networkd_lease_alive", "gauge", "1 while the node lease is renewed in time."
    )
    lease_latency = family(
        "networkd_lease_keepalive_seconds", "gauge", "Latency of the last lease keep-alive."
    )
    lease_failures = family(
        "networkd_lease_keepalive_failures_total", "counter", "Lease keep-alives that failed."
    )
    if lease is not None:
        lease_alive.add(lease.alive)
        lease_latency.add(lease.keepalive_ms / 1000.0)
        lease_failures.add(lease.keepalive_failures)
    etcd = _items(mirror, "watcher", "state.etcd").get("etcd")
    connected = family(
        "networkd_etcd_connected", "gauge", "1 while the watcher is connected to etcd."
    )
    revision = family(
        "networkd_etcd_revision", "gauge", "The etcd revision the watcher has applied."
    )
    connected.add(bool(etcd.connected) if etcd is not None else 0)
    revision.add(etcd.revision if etcd is not None else 0)

    errors = 0
    for sender in ("watcher", "elector", "netstore"):
        errors += len(_items(mirror, sender, "state.config_errors"))
    family("networkd_config_errors", "gauge", "etcd keys rejected by validation right now.").add(
        errors
    )

    _container_networks(mirror, family)
    _dns_replica_families(family, mirror, list(sources))
    _dns_forwarder_families(family, mirror)
    return out


FamilyMaker = Callable[[str, str, str], Family]


def _histogram(
    fam: Family, buckets: Dict[str, int], total: float, count: int, **labels: str
) -> None:
    ordered = sorted(buckets.items(), key=lambda kv: _bucket_order(kv[0]))
    for bound, value in ordered:
        fam.add(value, "_bucket", le=bound, **labels)
    if ordered and ordered[-1][0] != "+Inf":
        fam.add(count, "_bucket", le="+Inf", **labels)
    fam.add(total, "_sum", **labels)
    fam.add(count, "_count", **labels)


def _dns_replica_families(family: FamilyMaker, mirror: MirrorLookup, sources: List[str]) -> None:
    queries = family(
        "networkd_dns_queries_total", "counter", "DNS queries answered, by replica and rcode."
    )
    hits = family(
        "networkd_dns_cache_hits_total", "counter", "Forwarded names answered from the cache."
    )
    forwarded = family(
        "networkd_dns_forwarded_total", "counter", "Queries handed to the forwarder."
    )
    failed = family(
        "networkd_dns_forwarder_failures_total",
        "counter",
        "Queries a replica answered SERVFAIL itself: no forwarder answered in time.",
    )
    latency = family(
        "networkd_dns_forward_latency_seconds",
        "histogram",
        "Latency of forwarded queries (handed to the forwarder -> answered).",
    )
    entries = family(
        "networkd_dns_cache_entries", "gauge", "Entries in each copy of the node's DNS cache."
    )
    size = family("networkd_dns_cache_bytes", "gauge", "Bytes of each copy of the DNS cache.")
    for name in sorted(sources):
        if not name.startswith("dns."):
            continue
        stats = _items(mirror, name, "state.dns").get("stats")
        if stats is None:
            continue
        replica = str(stats.replica)
        for rcode, count in sorted(stats.rcodes.items()):
            queries.add(count, replica=replica, rcode=rcode)
        hits.add(stats.cache_hits, replica=replica)
        forwarded.add(stats.forwarded, replica=replica)
        failed.add(stats.upstream_failures, replica=replica)
        _histogram(
            latency,
            stats.forward_latency_buckets,
            stats.forward_latency_sum,
            stats.forward_latency_count,
            replica=replica,
        )
        entries.add(stats.cache_entries, process=name)
        size.add(stats.cache_bytes, process=name)
    forwarder = _items(mirror, "dns-forwarder", "state.dns_forwarder").get("stats")
    if forwarder is not None:
        entries.add(forwarder.cache_entries, process="dns-forwarder")
        size.add(forwarder.cache_bytes, process="dns-forwarder")


def _dns_forwarder_families(family: FamilyMaker, mirror: MirrorLookup) -> None:
    stats = _items(mirror, "dns-forwarder", "state.dns_forwarder").get("stats")
    counters = (
        ("upstream_queries", "Queries sent to upstream servers (UDP and TCP)."),
        ("upstream_tcp", "Queries sent to upstream servers over TCP."),
        ("upstream_failures", "Upstream timeouts, SERVFAILs and unusable answers."),
        ("rejected_replies", "Upstream replies ignored: wrong ID, question or source."),
        ("merged", "Queries that joined an identical query already in flight."),
        ("servfails", "Questions answered SERVFAIL after every upstream failed."),
    )
    for field, help_text in counters:
        fam = family(f"networkd_dns_{field}_total", "counter", help_text)
        if stats is not None:
            fam.add(getattr(stats, field))
    in_flight = family("networkd_dns_upstream_in_flight", "gauge", "Questions waiting upstream.")
    latency = family(
        "networkd_dns_upstream_latency_seconds", "histogram", "First upstream query -> answer."
    )
    if stats is not None:
        in_flight.add(stats.in_flight)
        _histogram(latency, stats.latency_buckets, stats.latency_sum, stats.latency_count)


def _container_networks(mirror: MirrorLookup, family: Callable[[str, str, str], Family]) -> None:
    """Container networks (-libnetwork): the netstore's and netlinks' counters."""
    store = _items(mirror, "netstore", "state.netstore").get("counters")
    for name, field, help_text in (
        (
            "networkd_net_requests_total",
            "requests",
            "Docker plugin requests the netstore answered.",
        ),
        (
            "networkd_net_refused_total",
            "refused",
            "Docker plugin requests refused (Docker showed the error).",
        ),
        (
            "networkd_net_allocations_total",
            "allocations",
            "Container addresses allocated on this host.",
        ),
        ("networkd_net_releases_total", "releases", "Container addresses released by Docker."),
        (
            "networkd_net_reclaimed_total",
            "reclaimed",
            "Addresses reclaimed because Docker no longer knew them.",
        ),
        (
            "networkd_net_blocks_claimed_total",
            "blocks_claimed",
            "Address blocks this host claimed.",
        ),
        (
            "networkd_net_conflicts_total",
            "conflicts",
            "etcd compare-and-swap transactions that lost a race.",
        ),
    ):
        fam = family(name, "counter", help_text)
        if store is not None:
            fam.add(getattr(store, field))
    alive = family(
        "networkd_net_lease_alive", "gauge", "1 while this host's route lease is renewed."
    )
    if store is not None:
        alive.add(store.lease_alive)
    allocated = family(
        "networkd_net_addresses",
        "gauge",
        "Allocated addresses per network and host (cluster-wide).",
    )
    networks = _items(mirror, "netstore", "state.net_networks")
    counts: Dict[Tuple[str, str], int] = {}
    for a in _items(mirror, "netstore", "state.net_addresses").values():
        network = networks.get(a.net)
        subnet = network.subnet if network is not None else a.net
        counts[(subnet, a.host or "-")] = counts.get((subnet, a.host or "-"), 0) + 1
    for (subnet, host), count in sorted(counts.items()):
        allocated.add(count, network=subnet, host=host)
    links = _items(mirror, "netlinks", "state.netlinks").get("counters")
    for name, field, help_text in (
        (
            "networkd_net_route_changes_total",
            "route_changes",
            "Container-network routes added, replaced or removed here.",
        ),
        (
            "networkd_net_route_errors_total",
            "route_errors",
            "Container-network routes the kernel refused.",
        ),
        (
            "networkd_net_links_created_total",
            "links_created",
            "Container links (veth, macvlan, ipvlan) created.",
        ),
        ("networkd_net_links_removed_total", "links_removed", "Container links removed."),
    ):
        fam = family(name, "counter", help_text)
        if links is not None:
            fam.add(getattr(links, field))
    routes = family(
        "networkd_net_routes", "gauge", "Container-network routes installed here, by kind."
    )
    kinds: Dict[str, int] = {}
    for route in _items(mirror, "netlinks", "state.net_routes").values():
        kinds[route.kind] = kinds.get(route.kind, 0) + 1
    for kind, count in sorted(kinds.items()):
        routes.add(count, kind=kind)


def _bucket_order(bound: str) -> float:
    try:
        return float(bound)
    except ValueError:
        return float("inf")


def render(mirror: MirrorLookup, sources: Iterable[str]) -> str:
    return "\n".join(f.render() for f in families(mirror, list(sources))) + "\n"
