"""Reconciling this host's allocations against what Docker knows: a pure plan.

Docker normally tells the plugin when an endpoint goes (Leave, DeleteEndpoint,
ReleaseAddress) and when a network goes (ReleasePool). When it could not (networkd or
the plugin worker was down, dockerd was killed, a request was retried after a crash),
allocations and pool references would leak. The netstore asks Docker's API which networks
and endpoints exist on this host and plans:

- an address of this host whose IP and endpoint no Docker network of its pool lists is
  reclaimed, but only once it is older than the grace period (an address is allocated
  before Docker lists its endpoint: a container being started is never reclaimed);
- a Docker network ID recorded for this host that Docker no longer has is dropped, the
  pool references are set to the number of Docker networks using the pool, and a host
  with none left (older than the grace period) leaves the network.

Nothing is planned unless Docker answered: an unreachable Docker means "keep everything".
"""

from dataclasses import dataclass, field
from typing import Dict, List, Optional

from networkd.netdriver.cluster import NetworkState

IPAM_DRIVER = "networkd"


@dataclass(frozen=True)
class DockerNetwork:
    """One Docker network as Docker's API shows it on this host."""

    docker_id: str
    name: str
    driver: str
    ipam_driver: str
    subnets: List[str]
    endpoints: Dict[str, str] = field(default_factory=dict)  # endpoint ID -> IPv4 address


@dataclass(frozen=True)
class ReclaimPlan:
    """What to change for one network on this host."""

    net: str
    addresses: List[str] = field(default_factory=list)  # allocations to delete
    refs: Optional[int] = None  # new pool reference count (None: unchanged)
    docker: Optional[Dict[str, str]] = None  # Docker network ID -> name (None: unchanged)
    leave: bool = False  # the host no longer uses the network at all

    @property
    def empty(self) -> bool:
        return not self.addresses and self.refs is None and self.docker is None and not self.leave


def plan_reclaim(
    net: str,
    subnet: str,
    state: NetworkState,
    host: str,
    docker: Dict[str, DockerNetwork],
    now: float,
    grace: float,
) -> ReclaimPlan:
    """The plan for one network; ``docker`` is every Docker network on this host."""
    ours = {
        d.docker_id: d
        for d in docker.values()
        if d.ipam_driver == IPAM_DRIVER and subnet in d.subnets
    }
    live_ips = {ip for d in ours.values() for ip in d.endpoints.values()}
    live_endpoints = {eid for d in ours.values() for eid in d.endpoints}
    stale = sorted(
        a.ip
        for a in state.addresses.values()
        if a.host == host
        and a.kind == "container"
        and a.ip not in live_ips
        and (not a.endpoint or a.endpoint not in live_endpoints)
        and now - a.since >= grace
    )
    member = state.hosts.get(host)
    if member is None:
        return ReclaimPlan(net, addresses=stale)
    # ``since`` is the host's last pool request: a network being created right now may
    # not be listed by Docker yet, so nothing is dropped within the grace period.
    settled = now - member.since >= grace
    if not ours:
        return ReclaimPlan(net, addresses=stale, leave=settled)
    recorded = {docker_id: info.name for docker_id, info in member.docker.items()}
    new_docker = {k: v for k, v in recorded.items() if not settled}
    new_docker.update({docker_id: d.name for docker_id, d in ours.items()})
    # Extra references are harmless while Docker still uses the pool (a retried
    # RequestPool after a crash adds one); too few would release a pool in use.
    refs = max(member.refs, len(ours))
    return ReclaimPlan(
        net,
        addresses=stale,
        refs=refs if refs != member.refs else None,
        docker=new_docker if new_docker != recorded else None,
    )
