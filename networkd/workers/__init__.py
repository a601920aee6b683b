"""The worker registry: which processes the supervisor runs, as whom, in what order.

``stop_group`` orders the final stop: the elector releases VIPs while the applier still
runs, the resolv.conf keeper restores the file before DNS goes, the watcher goes last.
``config_fields`` name the Config fields a worker depends on: a HUP restarts a worker
only when one of them changed.
"""

import dataclasses
from typing import List, Tuple

ETCD_FIELDS = (
    "etcd_endpoints",
    "etcd_cacert",
    "etcd_cert",
    "etcd_key",
    "etcd_user",
    "etcd_password",
)
NODE_FIELDS = ("hostname", "net_interface", "net_address")


@dataclasses.dataclass(frozen=True)
class WorkerSpec:
    name: str
    module: str
    user: str  # "root", "user" (Config.user) or "dns" (Config.dns_user)
    stop_group: int
    config_fields: Tuple[str, ...]


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
    "resolvconf", "resolvconf", "root", 1, ("resolv_conf", "hosts_file", "godns_addr")
)
APPLIER = WorkerSpec(
    "applier", "applier", "root", 2, ("net_interface", "vip_garp_refresh", "vip_fencing", "acl")
)
API = WorkerSpec("api", "api", "user", 2, ("api_addr", "dns_replicas"))
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


def worker_group(spec: WorkerSpec) -> str:
    """The name -workers uses for a spec: ``dns`` covers the replicas and the forwarder."""
    return "dns" if spec.module in ("dns", "dns_forwarder") else spec.name


def all_specs(dns_replicas: int, only: Tuple[str, ...] = ()) -> List[WorkerSpec]:
    """Workers in start order; ``only`` (the -workers flag) keeps the named ones ("dns" = the replicas and the forwarder)."""
    specs = (
        [WATCHER, RESOLVCONF, ELECTOR, APPLIER, DNS_FORWARDER]
        + [dns_spec(i) for i in range(dns_replicas)]
        + [API]
    )
    if only:
        specs = [s for s in specs if s.name in only or worker_group(s) in only]
    return specs
