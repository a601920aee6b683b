"""Values shaped like the ones LAIN's tools write to etcd (deployd's pod groups)."""

import json
from typing import Any, List

from networkd import keys


def pod(
    instance: int, node: str, container_ip: str, node_ip: str = "10.0.0.1", container_id: str = ""
) -> Any:
    """One pod of a pod group with a single container on ``node``."""
    return {
        "InstanceNo": instance,
        "Containers": [
            {
                "Id": container_id or f"c{instance}",
                "NodeName": node,
                "NodeIp": node_ip,
                "ContainerIp": container_ip,
                "ContainerPort": 80,
            }
        ],
    }


def pod_group(app: str, proc: str, pods: List[Any], kind: str = "worker") -> str:
    """deployd's JSON for ``/lain/deployd/pod_groups/<app>/<app>.<kind>.<proc>``."""
    return json.dumps({"Spec": {"Namespace": app, "Name": f"{app}.{kind}.{proc}"}, "Pods": pods})


def one_key_of_each_kind() -> List[str]:
    """One etcd key of every kind networkd reads (SPEC section 1), wildcards and port-only
    VIPs included: the fuzz and layout tests walk this list, so a new kind goes here."""
    return [
        keys.vip_key("10.0.0.1"),
        keys.vip_key("0.0.0.0", 8080),
        keys.domain_key("a.lain"),
        keys.domain_key("*.lain"),
        keys.domain_servers_key("lain"),
        keys.pod_group_key("app", "app.web.web"),
        keys.DEPLOYD_LEADER,
        keys.SWARM_LEADER,
        keys.STREAMROUTER_VIPPOOL,
        keys.WHITELIST_IPS,
        keys.whitelist_ex_ports_key("tcp"),
        keys.whitelist_in_ports_key("10.0.0.0/8"),
        keys.apps_key("webrouter", "worker", "10.0.0.1", 80),
    ]
