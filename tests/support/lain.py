"""Values shaped like the ones LAIN's tools write to etcd (deployd's pod groups)."""

import json
from typing import Any, List


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
