"""Every message type on the bus, one dataclass each, with its topic, sender and readers.

State topics (``state.*``) carry keyed items as snapshots and deltas; see
``networkd.bus.publisher.StateTopic``. Event topics carry one message each.
The item type of each state topic is fixed in ``STATE_TOPICS`` below.
"""

from dataclasses import dataclass, field
from typing import Dict, List, Optional

from networkd.bus.codec import register

# ---------------------------------------------------------------------------------------
# supervisor -> api, ctl, tap


@register
@dataclass
class WorkerInfo:
    """Item of ``state.workers`` (sender: supervisor; readers: api, networkdctl status).

    Key: worker name. ``last_exit`` is e.g. ``"exit 1"`` or ``"signal SIGKILL"``."""

    name: str
    pid: int
    state: str
    restarts: int
    started_at: float
    last_exit: str = ""
    user: str = ""


@register
@dataclass
class WorkerStarted:
    """Event ``worker.<name>.start`` (sender: supervisor; readers: tap, tests)."""

    name: str
    pid: int


@register
@dataclass
class WorkerExited:
    """Event ``worker.<name>.exit`` (sender: supervisor; readers: tap, tests).

    ``exitcode`` is None when a signal ended the worker, and ``signal`` names it."""

    name: str
    pid: int
    exitcode: Optional[int]
    signal: str = ""


@register
@dataclass
class WorkerStateChanged:
    """Event ``worker.<name>.state`` (sender: supervisor; readers: tap, tests)."""

    name: str
    old: str
    new: str
    reason: str = ""


@register
@dataclass
class SupervisorStopping:
    """Event ``supervisor.stopping`` (sender: supervisor; readers: every worker, tap).

    Published before the graceful stop begins, so that workers can tell a final stop
    (release VIPs, restore files) from a restart of themselves."""

    reason: str


# ---------------------------------------------------------------------------------------
# watcher -> elector, applier, dns, api (cluster state from etcd; SPEC section 1)


@register
@dataclass
class PortSpec:
    """One port of a VIP: ``src`` on the VIP, ``dest`` in the container."""

    src: int
    proto: str = "tcp"
    dest: int = 0


@register
@dataclass
class HealthCheck:
    """A VIP's health check: the ``health`` object of its etcd value (``tcp``, ``http``), or
    a check file of the node's own (``/etc/networkd/checks.d``; only these may ``exec``).

    ``port`` 0 means the VIP's first port's ``dest``; probes go to the local container."""

    type: str
    port: int = 0
    path: str = "/"
    expect: List[int] = field(default_factory=lambda: [200])
    interval: float = 1.0
    timeout: float = 1.0
    fall: int = 3
    rise: int = 2
    command: List[str] = field(default_factory=list)


@register
@dataclass
class VipConfig:
    """Item of ``state.vips`` (sender: watcher; readers: elector, dns, api, checker).

    Key: the etcd key suffix, ``<ip>`` or ``<ip>:<port>``. ``port`` is 0 for a floating VIP
    and the key's port for a port-only mapping (then ``ip`` may be ``0.0.0.0``). ``health``
    is the VIP's check from etcd (None: none, or rejected: then it is a config error and
    the VIP works without a check)."""

    ip: str
    app: str
    proc: str
    ports: List[PortSpec]
    excluded_nodes: List[str] = field(default_factory=list)
    port: int = 0
    health: Optional[HealthCheck] = None


@register
@dataclass
class DomainEntry:
    """Item of ``state.domains`` (sender: watcher; readers: dns, api).

    Key: the lower-cased name, wildcards as ``*.suffix``. ``type`` is ``""``, ``node`` or
    ``webrouter``; ``ips`` holds the valid addresses (both families) for type ``""``."""

    name: str
    ips: List[str]
    type: str = ""


@register
@dataclass
class DomainServers:
    """Item of ``state.domain_servers`` (sender: watcher; readers: dns, api).

    Key: the lower-cased domain. ``servers`` are ``ip#port`` strings as in etcd."""

    domain: str
    servers: List[str]


@register
@dataclass
class LocalContainer:
    """Item of ``state.containers`` (sender: watcher; readers: elector).

    Key: ``<app>/<proc>``: the lowest-InstanceNo container of that proc on this node."""

    app: str
    proc: str
    instance_no: int
    container_id: str
    container_ip: str
    container_port: int
    node_name: str
    node_ip: str


@register
@dataclass
class ProcNodes:
    """Item of ``state.proc_nodes`` (sender: watcher; readers: elector).

    Key: ``<app>/<proc>``: every node name that runs a container of the proc, used to
    count eligible nodes for fair spreading."""

    app: str
    proc: str
    nodes: List[str]


@register
@dataclass
class LeaderAddress:
    """Item of ``state.leaders`` (sender: watcher; readers: elector leader jobs).

    Key: ``deployd`` or ``swarm``."""

    name: str
    ip: str
    port: int


@register
@dataclass
class AclList:
    """Item of ``state.acl`` (sender: watcher; readers: applier).

    Keys: ``whitelist_ips`` (``items`` = IPs/CIDRs), ``ex_ports/<proto>`` (``items`` =
    ports), ``in_ports/<source>`` (``ports`` = {proto: [port]}). Validated and normalised by
    networkd/etcd/validate.py (sources: an IPv4 or IPv6 address, CIDR or range ``a-b``;
    ports ``80`` or ``8000:8100``; protos ``tcp``/``udp``): the applier builds rules from
    them without judging them again; rejected values are config errors under their key."""

    key: str
    items: List[str] = field(default_factory=list)
    ports: Dict[str, List[str]] = field(default_factory=dict)


@register
@dataclass
class StreamrouterPool:
    """Item ``pool`` of ``state.streamrouter`` (sender: watcher; readers: elector).

    ``ports``: the streamrouter's stream ports (the Go daemon had them from lainlet),
    written into each pool VIP by the leader's streamrouter job; empty when unknown."""

    ips: List[str]
    ports: List[int] = field(default_factory=list)


@register
@dataclass
class AppsKey:
    """Item of ``state.apps`` (sender: watcher; readers: elector leader jobs).

    Key: ``<app>/<proc>/<ip>:<port>`` under ``/lain/networkd/apps``; ``node`` is the value."""

    app: str
    proc: str
    ip: str
    port: int
    node: str


@register
@dataclass
class ConfigError:
    """Item of ``state.config_errors`` (senders: watcher, elector; readers: api, ctl).

    Key: the etcd key. Also published once as the event ``config.error``."""

    key: str
    reason: str


@register
@dataclass
class EtcdHealth:
    """Item ``etcd`` of ``state.etcd`` (sender: watcher; readers: api, ctl)."""

    connected: bool
    revision: int
    last_error: str = ""
    endpoint: str = ""


@register
@dataclass
class WatcherSync:
    """Item ``sync`` of ``state.sync`` (sender: watcher; readers: elector, applier).

    ``in_sync`` turns true once the first full read has been published."""

    in_sync: bool
    revision: int


# ---------------------------------------------------------------------------------------
# checker -> elector, api (VIP health; SPEC section 9)


@register
@dataclass
class HealthStatus:
    """Item of ``state.health`` (sender: checker; readers: elector, api, ctl).

    Key: the VIP. ``state`` is PASSING, FAILING or UNKNOWN (no verdict yet: too few
    probes since the checker started or the check changed). ``source`` is ``etcd`` or
    ``local`` (a check file of this node). ``detail`` says what the last probe saw."""

    ip: str
    state: str
    source: str
    detail: str = ""
    checked_at: float = 0.0  # wall clock of the last probe


# ---------------------------------------------------------------------------------------
# elector -> applier, api (VIP ownership; SPEC section 3 and 5)


@register
@dataclass
class DesiredVip:
    """Item of ``state.desired`` (sender: elector; readers: applier).

    Key: ``<ip>`` for an owned floating VIP (``bind`` true), ``<ip>:<port>`` for a
    port-only mapping served here (``bind`` false). ``rules`` lists the DNAT targets."""

    ip: str
    app: str
    proc: str
    container_ip: str
    ports: List[PortSpec]
    bind: bool = True


@register
@dataclass
class VipStatus:
    """Item of ``state.vip_status`` (sender: elector; readers: api, ctl).

    ``state`` is OWNER, STANDBY, FAILING (the VIP's health check does not pass here),
    INELIGIBLE or EXCLUDED."""

    ip: str
    owner: str
    state: str
    ports: List[PortSpec]
    lease_ttl_s: float


@register
@dataclass
class VipNodeState:
    """One node's state for one VIP in ``VipClusterView``."""

    node: str
    state: str  # OWNER, STANDBY, FAILING, INELIGIBLE, EXCLUDED
    check: str = ""  # the node's check verdict and what it saw ("FAILING: status 500")


@register
@dataclass
class VipClusterView:
    """Item of ``state.vip_cluster`` (sender: elector; readers: api, ctl): one configured
    floating VIP as the whole cluster sees it (``networkdctl vip list``, ``GET /v1/vips``).

    Built from etcd: locks, presence, the watcher's configuration and placement, each
    node's health report; ``moving_to`` is set while a planned move is in progress."""

    ip: str
    app: str
    proc: str
    owner: str
    nodes: List[VipNodeState] = field(default_factory=list)
    moving_to: str = ""
    check: str = ""  # the check's type ("tcp", "http"), "" for none


@register
@dataclass
class VipCommand:
    """Event ``command.vip`` (sender: api; reader: elector): an operator's request.

    ``action`` add (``value``: the JSON value for ``/lain/config/vips/<key>``), rm, or move
    (``to``: the node to move to, "" for any other eligible node)."""

    id: str
    action: str
    key: str
    value: str = ""
    to: str = ""


@register
@dataclass
class CommandResult:
    """Event ``command.done`` (sender: elector; reader: api): the outcome of a command."""

    id: str
    ok: bool
    message: str
    status: int = 200  # the HTTP status the api answers with


@register
@dataclass
class LeaderInfo:
    """Item ``leader`` of ``state.leader`` (sender: elector; readers: api, ctl)."""

    hostname: str
    is_self: bool


@register
@dataclass
class LeaseHealth:
    """Item ``lease`` of ``state.lease`` (sender: elector; readers: applier, api).

    ``alive`` false means the lease could not be renewed in time (fencing applies).
    ``valid_until`` is the CLOCK_MONOTONIC instant (``time.monotonic()``, the same in every
    process of the host) after which the lease may be gone: a reader treats the lease as
    dead past it, whatever it heard last (0: no lease)."""

    lease_id: int
    alive: bool
    ttl_s: float
    keepalive_ms: float = 0.0
    keepalive_failures: int = 0
    valid_until: float = 0.0


@register
@dataclass
class DesiredRevision:
    """Item ``rev`` of ``state.desired_rev`` (sender: elector; readers: applier).

    Sent right after every change of ``state.desired`` (same socket, so it arrives after
    the change): the applier echoes it back in ``state.applied_rev`` once the host matches
    that desired set, which is what lets the elector delete a released VIP's lock."""

    rev: int


# ---------------------------------------------------------------------------------------
# applier -> elector, api


@register
@dataclass
class AppliedVip:
    """Item of ``state.applied`` (sender: applier; readers: elector, api).

    Key as in ``state.desired``: what is actually on the host now."""

    ip: str
    bound: bool
    rules: int


@register
@dataclass
class AppliedRevision:
    """Item ``rev`` of ``state.applied_rev`` (sender: applier; readers: elector).

    The elector's ``state.desired`` revision (and the elector's epoch, so a restarted
    elector never takes an old echo for its own) that the host matched at the end of the
    applier's last pass: every address not desired in it is gone."""

    epoch: float
    rev: int


@register
@dataclass
class DuplicateClaim:
    """Event ``vip.duplicate`` (sender: applier; readers: elector, api, tap).

    Another MAC announced a VIP this node holds."""

    ip: str
    mac: str
    yielded: bool


@register
@dataclass
class GarpSent:
    """Event ``vip.garp`` (sender: applier; readers: api metrics, tap)."""

    ip: str
    count: int


@register
@dataclass
class ApplierCounters:
    """Item ``counters`` of ``state.applier`` (sender: applier; readers: api metrics)."""

    garps_sent: int = 0
    duplicate_claims: int = 0
    reconciles: int = 0
    repairs: int = 0


# ---------------------------------------------------------------------------------------
# resolvconf -> dns, api


@register
@dataclass
class Upstreams:
    """Item ``upstreams`` of ``state.upstreams`` (sender: resolvconf; readers: dns, api).

    ``servers`` are ``ip`` or ``ip#port`` strings in resolv.conf order, ourselves skipped."""

    servers: List[str]


@register
@dataclass
class HostsEntry:
    """Item of ``state.hosts`` (sender: resolvconf; readers: dns). Key: lower-cased name."""

    name: str
    ips: List[str]


# ---------------------------------------------------------------------------------------
# dns.N, dns-forwarder -> api


@register
@dataclass
class DnsStats:
    """Item ``stats`` of ``state.dns`` (sender: dns.N; readers: api, ctl).

    ``forwarded`` counts queries handed to the forwarder, ``upstream_failures`` those the
    replica answered SERVFAIL itself because no forwarder answered in time; the latency
    histogram is handed -> answered."""

    replica: int
    pid: int
    queries: int = 0
    rcodes: Dict[str, int] = field(default_factory=dict)
    cache_hits: int = 0
    forwarded: int = 0
    upstream_failures: int = 0
    # Cumulative histogram of forward latency: upper bound in seconds ("0.005", "+Inf") -> count.
    forward_latency_buckets: Dict[str, int] = field(default_factory=dict)
    forward_latency_sum: float = 0.0
    forward_latency_count: int = 0
    cache_entries: int = 0  # this replica's copy of the node's cache
    cache_bytes: int = 0
    forwarder_connected: bool = False


@register
@dataclass
class DnsForwarderStats:
    """Item ``stats`` of ``state.dns_forwarder`` (sender: dns-forwarder; readers: api, ctl)."""

    pid: int
    requests: int = 0  # queries the replicas handed over
    cache_hits: int = 0
    merged: int = 0  # joined an identical query in flight
    upstream_queries: int = 0
    upstream_tcp: int = 0
    upstream_failures: int = 0  # timeouts, SERVFAIL, unusable answers
    rejected_replies: int = 0  # wrong ID, question or source: ignored
    servfails: int = 0  # every upstream failed
    in_flight: int = 0
    cache_entries: int = 0
    cache_bytes: int = 0
    latency_buckets: Dict[str, int] = field(default_factory=dict)  # cumulative, seconds
    latency_sum: float = 0.0
    latency_count: int = 0


@register
@dataclass
class ElectorCounters:
    """Item ``counters`` of ``state.elector`` (sender: elector; readers: api metrics).

    ``failovers`` counts VIPs this node took over from another node's expired or deleted
    lock; ``acquisitions`` every lock won; ``releases`` every lock given up."""

    acquisitions: int = 0
    releases: int = 0
    failovers: int = 0


# ---------------------------------------------------------------------------------------
# netstore, netlinks -> api, ctl, netlinks (container networks; SPEC section 10)


@register
@dataclass
class NetHost:
    """A host's use of a container network (inside ``NetNetwork.hosts``).

    ``docker``: this host's Docker network IDs on the pool -> name; ``parents``: ID ->
    parent interface (L2 modes)."""

    refs: int
    docker: Dict[str, str] = field(default_factory=dict)
    parents: Dict[str, str] = field(default_factory=dict)


@register
@dataclass
class NetNetwork:
    """Item of ``state.net_networks`` (sender: netstore; readers: netlinks, api, ctl).

    Key: the network's name in etcd (``10.50.0.0-16``). ``mode`` is empty until a host's
    Docker created the network."""

    net: str
    subnet: str
    mode: str
    ipvlan_mode: str
    gateway: str
    block: int
    hosts: Dict[str, NetHost] = field(default_factory=dict)


@register
@dataclass
class NetBlock:
    """Item of ``state.net_blocks`` (sender: netstore; readers: netlinks, api, ctl).

    Key: ``<net>/<block>``. ``via`` is the owner's address while its lease-bound route
    key exists, else empty (no route to the block)."""

    net: str
    block: str
    host: str
    via: str = ""


@register
@dataclass
class NetAddress:
    """Item of ``state.net_addresses`` (sender: netstore; readers: netlinks, api, ctl).

    Key: ``<net>/<ip>``: one allocation anywhere in the cluster."""

    net: str
    ip: str
    host: str
    kind: str
    endpoint: str = ""


@register
@dataclass
class NetStoreCounters:
    """Item ``counters`` of ``state.netstore`` (sender: netstore; readers: api metrics, ctl)."""

    requests: int = 0
    refused: int = 0
    allocations: int = 0
    releases: int = 0
    reclaimed: int = 0
    blocks_claimed: int = 0
    blocks_released: int = 0
    conflicts: int = 0
    lease_alive: bool = False
    docker_error: str = ""


@register
@dataclass
class NetRoute:
    """Item of ``state.net_routes`` (sender: netlinks; readers: api, ctl).

    Key: the destination CIDR: a route networkd installed on this host (``kind`` local,
    remote or unreachable)."""

    dst: str
    kind: str
    via: str = ""
    dev: str = ""


@register
@dataclass
class NetLinksCounters:
    """Item ``counters`` of ``state.netlinks`` (sender: netlinks; readers: api metrics, ctl)."""

    links_created: int = 0
    links_removed: int = 0
    route_changes: int = 0
    route_errors: int = 0
    last_error: str = ""


# ---------------------------------------------------------------------------------------
# state topic -> item type (every reader decodes with it)

STATE_TOPICS: Dict[str, type] = {
    "state.workers": WorkerInfo,
    "state.vips": VipConfig,
    "state.domains": DomainEntry,
    "state.domain_servers": DomainServers,
    "state.containers": LocalContainer,
    "state.proc_nodes": ProcNodes,
    "state.leaders": LeaderAddress,
    "state.acl": AclList,
    "state.streamrouter": StreamrouterPool,
    "state.apps": AppsKey,
    "state.config_errors": ConfigError,
    "state.etcd": EtcdHealth,
    "state.sync": WatcherSync,
    "state.desired": DesiredVip,
    "state.desired_rev": DesiredRevision,
    "state.vip_status": VipStatus,
    "state.vip_cluster": VipClusterView,
    "state.leader": LeaderInfo,
    "state.lease": LeaseHealth,
    "state.elector": ElectorCounters,
    "state.applied": AppliedVip,
    "state.applied_rev": AppliedRevision,
    "state.health": HealthStatus,
    "state.applier": ApplierCounters,
    "state.upstreams": Upstreams,
    "state.hosts": HostsEntry,
    "state.dns": DnsStats,
    "state.dns_forwarder": DnsForwarderStats,
    "state.net_networks": NetNetwork,
    "state.net_blocks": NetBlock,
    "state.net_addresses": NetAddress,
    "state.netstore": NetStoreCounters,
    "state.net_routes": NetRoute,
    "state.netlinks": NetLinksCounters,
}
