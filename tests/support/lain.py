"""Values shaped like the ones LAIN's tools write to etcd (deployd's pod groups)."""

import hashlib
import json
from typing import Any, List, Sequence, Tuple

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


def deployd_pod_group(
    app: str, proc: str, placements: Sequence[Tuple[str, str, str]], version: int = 1
) -> str:
    """A pod group as deployd writes it, with the fields networkd ignores: the spec (image,
    env, volumes, limits, health check), per-pod state and the container runtime data.
    ``placements``: (node name, node IP, container IP) per instance. About 1.4 KiB of spec
    plus 0.7 KiB per pod, the size of a typical LAIN app's key."""
    name = f"{app}.worker.{proc}"
    stamp = "2024-05-01T10:00:00.000000000+08:00"
    image = f"registry.lain.local/{app}:release-1714528800-{hashlib.sha1(app.encode()).hexdigest()}"
    container_spec = {
        "Image": image,
        "Env": [f"LAIN_APPNAME={app}", f"LAIN_PROCNAME={proc}", "LAIN_DOMAIN=lain.local",
                "TZ=Asia/Shanghai", f"DEPLOYD_POD_NAME={name}", "LAIN_SDK_VERSION=2.4.1"],
        "User": "", "WorkingDir": "/lain/app", "DnsSearch": ["lain.local"],
        "Volumes": ["/data", "/var/log/app"], "SystemVolumes": [
            "/data/lain/entrypoint:/lain/entrypoint:ro", "/etc/localtime:/etc/localtime:ro"],
        "Command": ["./entry.sh", "serve", "--port", "8080"], "Entrypoint": ["/lain/entrypoint/bin/run"],
        "CpuLimit": 2, "MemoryLimit": 536870912, "Expose": 8080,
        "LogConfig": {"Type": "json-file", "Config": {"max-size": "100m", "max-file": "3"}},
    }  # fmt: skip
    spec = {
        "Name": name, "Namespace": app, "Version": version, "CreatedAt": stamp, "UpdatedAt": stamp,
        "Pod": {
            "Name": name, "Namespace": app, "Version": version, "CreatedAt": stamp,
            "UpdatedAt": stamp, "Containers": [container_spec], "Filters": [],
            "Labels": {"lain.app": app, "lain.proc": proc}, "Dependencies": [],
            "Annotation": json.dumps({"mountpoint": [f"{proc}.{app}.lain.local"], "https_only": False}),
            "Stateful": False, "SetupTime": 0, "KillTimeout": 10,
            "HealthConfig": {"Cmd": "", "Options": {"interval": 10, "timeout": 5, "retries": 3}},
        },
        "NumInstances": len(placements), "RestartPolicy": 0,
    }  # fmt: skip
    pods = []
    for i, (node, node_ip, container_ip) in enumerate(placements):
        cid = hashlib.sha256(f"{app}/{proc}/{i}/{node}/{version}".encode()).hexdigest()
        pods.append({
            "InstanceNo": i + 1,
            "Containers": [{
                "Id": cid, "NodeName": node, "NodeIp": node_ip, "ContainerIp": container_ip,
                "ContainerPort": 8080, "Runtime": {"Status": "running", "Health": "healthy",
                "CreatedAt": stamp, "StartedAt": stamp, "ExitCode": 0, "Name": f"{name}.v{version}-i{i + 1}-d0"},
            }],
            "Dependencies": None, "Annotation": "", "OOMkilled": False, "State": 2,
            "LastError": "", "RestartCount": 0, "RestartAt": stamp, "CreatedAt": stamp,
            "UpdatedAt": stamp, "HealthState": 2,
        })  # fmt: skip
    return json.dumps({"Spec": spec, "PrevState": {"NumInstances": len(placements)}, "Pods": pods})


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
