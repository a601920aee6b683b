"""Which checks this node runs, against what (pure logic).

A floating VIP is checked here when the node runs its proc (``state.containers``) and it
has a check: this node's check file for the VIP, else the ``health`` object of its etcd
value. The probe goes to the local container: its IP and the check's port, by default the
VIP's first port's ``dest``.
"""

import dataclasses
from typing import Dict, Mapping

from networkd.bus.messages import HealthCheck, LocalContainer, VipConfig


@dataclasses.dataclass(frozen=True)
class CheckTarget:
    ip: str
    check: HealthCheck
    source: str  # "etcd" or "local"
    host: str  # the container's address
    port: int


def default_port(vip: VipConfig) -> int:
    if not vip.ports:
        return 0
    first = vip.ports[0]
    return first.dest or first.src


def plan_checks(
    vips: Mapping[str, VipConfig],
    containers: Mapping[str, LocalContainer],
    local: Mapping[str, HealthCheck],
) -> Dict[str, CheckTarget]:
    out: Dict[str, CheckTarget] = {}
    for vip in vips.values():
        if vip.port:
            continue  # port-only keys have no owner to demote
        check = local.get(vip.ip)
        source = "local"
        if check is None:
            check, source = vip.health, "etcd"
        if check is None:
            continue
        container = containers.get(f"{vip.app}/{vip.proc}")
        if container is None or not container.container_ip:
            continue  # not running here: not eligible anyway
        port = check.port or default_port(vip)
        if check.type != "exec" and not port:
            continue
        out[vip.ip] = CheckTarget(vip.ip, check, source, container.container_ip, port)
    return out
