"""The worker registry: which processes the supervisor runs, as whom, in what order.

``stop_group`` orders the final stop: the elector releases VIPs while the applier still
runs, the resolv.conf keeper restores the file before DNS goes, the watcher goes last.
``config_fields`` name the Config fields a worker depends on: a HUP restarts a worker
only when one of them changed, and they (with RUNTIME_FIELDS) are all of the Config the
worker receives: ``worker_config`` leaves every other field at its default. So etcd
credentials (user, password, TLS key) reach the watcher and the elector only, never a
DNS replica that parses network input. A worker that reads a field must name it here.

``subscribers`` names who may connect to a root worker's bus endpoint (``"user"``: the
-user group, ``"dns"``: the -dns.user group; root always may); empty means the endpoint
is open to every local user (an unprivileged publisher: nothing it sends changes the host
without the elector's and applier's own checks).
"""

import dataclasses
from typing import List, Tuple

from networkd.config import Config

ETCD_FIELDS = (
    "etcd_endpoints",
    "etcd_cacert",
    "etcd_cert",
    "etcd_key",
    "etcd_user",
    "etcd_password",
)
NODE_FIELDS = ("hostname", "net_interface", "net_address")
# What every worker's runtime reads: logging, the run dir, which workers run, stop time.
RUNTIME_FIELDS = ("run_dir", "log_file", "verbose", "workers", "stop_timeout")


@dataclasses.dataclass(frozen=True)
class WorkerSpec:
    name: str
    module: str
    user: str  # "root", "user" (Config.user), "dns" (Config.dns_user), "plugin" (Config.netplugin_user)
    stop_group: int
    config_fields: Tuple[str, ...]
    subscribers: Tuple[str, ...] = ()


WATCHER = WorkerSpec("watcher", "watcher", "user", 5, ETCD_FIELDS + NODE_FIELDS)
ELECTOR = WorkerSpec(
    "elector",
    "elector",
    "user",
    0,
    ETCD_FIELDS
    + NODE_FIELDS
    + (
        "vip_ttl",
        "vip_fencing",
        "domain",
        "docker_endpoint",
        "tinydns",
        "swarm",
        "webrouter",
        "streamrouter",
        "deployd",
    ),
)
RESOLVCONF = WorkerSpec(
    "resolvconf",
    "resolvconf",
    "root",
    1,
    ("resolv_conf", "hosts_file", "godns_addr"),
    subscribers=("user", "dns"),  # the api; the DNS replicas (upstreams, hosts)
)
APPLIER = WorkerSpec(
    "applier",
    "applier",
    "root",
    2,
    ("net_interface", "net_address", "vip_garp_refresh", "vip_fencing", "acl"),
    subscribers=("user",),  # the elector and the api
)
CHECKER = WorkerSpec(
    "checker",
    "checker",
    "user",
    2,
    ("vip_checks_dir", "vip_notify", "vip_notify_timeout") + NODE_FIELDS,
)
# The supervisor's own endpoint (state.workers, worker.* events): read by the api.
SUPERVISOR_SUBSCRIBERS = ("user",)
API = WorkerSpec("api", "api", "user", 2, ("api_addr", "api_token_file", "dns_replicas"))
DNS_FIELDS = (
    "godns_addr",
    "dns_replicas",
    "dns_ttl",
    "domain",
    "dns_user",
    "dns_cache_size",
) + NODE_FIELDS
# The forwarder parses upstream bytes: the replicas' user, no etcd, no root.
DNS_FORWARDER = WorkerSpec(
    "dns-forwarder",
    "dns_forwarder",
    "dns",
    3,
    ("godns_addr", "dns_user", "dns_cache_size", "dns_case_randomize"),
)


def dns_spec(replica: int) -> WorkerSpec:
    return WorkerSpec(f"dns.{replica}", "dns", "dns", 3, DNS_FIELDS)


# Container networks (-libnetwork): the root netlinks changes links and routes on typed
# requests of the netstore (user networkd, etcd), which answers the requests that the
# netplugin (its own user, no etcd, no root) parsed from Docker. See docs/NETWORKS.md.
NETLINKS = WorkerSpec(
    "netlinks",
    "netlinks",
    "root",
    2,
    ("user",),
    subscribers=("user",),  # the netstore (its requests, its bus view) and the api
)
NETSTORE = WorkerSpec(
    "netstore",
    "netstore",
    "user",
    1,
    ETCD_FIELDS
    + NODE_FIELDS
    + ("docker_endpoint", "netplugin_ttl", "netplugin_grace", "netplugin_user"),
)
NETPLUGIN = WorkerSpec(
    "netplugin", "netplugin", "plugin", 0, ("docker_plugin_socket", "netplugin_user")
)
LIBNETWORK_SPECS = [NETLINKS, NETSTORE, NETPLUGIN]


def worker_config(config: Config, spec: WorkerSpec) -> Config:
    """The Config a worker receives: its own fields and the runtime's; the rest default."""
    keep = set(RUNTIME_FIELDS) | set(spec.config_fields)
    return dataclasses.replace(Config(), **{name: getattr(config, name) for name in keep})


def worker_group(spec: WorkerSpec) -> str:
    """The name -workers uses for a spec: ``dns`` covers the replicas and the forwarder."""
    return "dns" if spec.module in ("dns", "dns_forwarder") else spec.name


def all_specs(
    dns_replicas: int, only: Tuple[str, ...] = (), libnetwork: bool = False
) -> List[WorkerSpec]:
    """Workers in start order; ``only`` (the -workers flag) keeps the named ones ("dns" = the replicas and the forwarder)."""
    specs = (
        [WATCHER, RESOLVCONF, ELECTOR, APPLIER, CHECKER, DNS_FORWARDER]
        + [dns_spec(i) for i in range(dns_replicas)]
        + [API]
    )
    if libnetwork:
        specs += LIBNETWORK_SPECS
    if only:
        specs = [s for s in specs if s.name in only or worker_group(s) in only]
    return specs
