"""Several networkd daemons (watcher + elector) against one real etcd, standing in for nodes.

Each "node" is a real ``networkd`` process tree with its own hostname, run dir and lease;
they compete through etcd exactly as nodes do. Pod groups place containers on nodes.
"""

import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Dict, Iterable, List, Optional, Tuple

from tests.support.daemon import Daemon, wait_for
from tests.support.etcd import EtcdServer, current_revision

LOCKS = "/lain/networkd/vips/"
LEADER = "/lain/networkd/leader"


def pod_group(app: str, proc: str, nodes: Iterable[str], cid_prefix: str = "c") -> str:
    pods = []
    for i, node in enumerate(nodes):
        index = int(node.lstrip("n") or 0) if node.lstrip("n").isdigit() else i
        pods.append(
            {
                "InstanceNo": i + 1,
                "Containers": [
                    {
                        "Id": f"{cid_prefix}{i:02d}{app}",
                        "NodeName": node,
                        "NodeIp": f"10.77.0.{index}",
                        "ContainerIp": f"172.20.{index}.{i + 2}",
                        "ContainerPort": 8080,
                    }
                ],
            }
        )
    return json.dumps({"Spec": {"Namespace": app, "Name": f"{app}.{app}.{proc}"}, "Pods": pods})


def vip_value(
    app: str = "web", proc: str = "worker", excluded: Iterable[str] = (), src: str = "80"
) -> str:
    return json.dumps(
        {
            "app": app,
            "proc": proc,
            "ports": [{"src": src, "proto": "tcp", "dest": "8080"}],
            "excluded_nodes": list(excluded),
        }
    )


class Cluster:
    def __init__(self, etcd: EtcdServer, base_dir: str) -> None:
        self.etcd = etcd
        self.base_dir = base_dir
        self.client = etcd.client()
        self.nodes: Dict[str, Daemon] = {}

    # -- etcd data ------------------------------------------------------------------

    def place(self, app: str, proc: str, nodes: Iterable[str]) -> None:
        self.client.put(
            f"/lain/deployd/pod_groups/{app}/{app}.{app}.{proc}", pod_group(app, proc, nodes)
        )

    def put_vip(self, ip: str, **kw: Any) -> None:
        self.client.put(f"/lain/config/vips/{ip}", vip_value(**kw))

    def locks(self) -> Dict[str, Tuple[str, int]]:
        out = {}
        for value, meta in self.client.get_prefix(LOCKS):
            key = meta.key.decode()
            out[key[len(LOCKS) : -len(".lock")]] = (value.decode(), meta.lease_id)
        return out

    def holder(self, ip: str) -> Optional[str]:
        value, _ = self.client.get(f"{LOCKS}{ip}.lock")
        return value.decode() if value is not None else None

    def leader(self) -> Optional[str]:
        value, _ = self.client.get(LEADER)
        return value.decode() if value is not None else None

    def revision(self) -> int:
        return current_revision(self.client)

    # -- daemons ----------------------------------------------------------------------

    def daemon(self, name: str, **flags: Any) -> Daemon:
        index = int(name.lstrip("n")) if name.lstrip("n").isdigit() else 9
        defaults: Dict[str, Any] = {
            "docker.endpoint": "",
            "net.address": f"10.77.0.{index}",
            "verbose": True,
        }
        defaults.update(flags)
        return Daemon(
            os.path.join(self.base_dir, name),
            self.etcd.endpoint,
            workers=("watcher", "elector"),
            hostname=name,
            **defaults,
        )

    def start(self, names: Iterable[str], **flags: Any) -> List[Daemon]:
        started = []
        for name in names:
            d = self.daemon(name, **flags)
            self.nodes[name] = d
            d.start()
            started.append(d)
        with ThreadPoolExecutor(len(started) or 1) as pool:
            list(pool.map(lambda d: d.wait_running(["watcher", "elector"], timeout=20), started))
        return started

    def restart(self, name: str) -> Daemon:
        """Start a killed node again with the same run dir (so the same lease file)."""
        d = self.nodes[name]
        d.close_view()
        d.start()
        return d

    def kill(self, name: str) -> None:
        """Node death: SIGKILL the supervisor; its workers die with it (parent-death signal)."""
        d = self.nodes[name]
        d.close_view()
        d.kill()

    def desired(self, name: str) -> Optional[Dict[str, Any]]:
        view = self.nodes[name].view()
        view.poll(30)
        return view.mirror("elector", "state.desired")

    def mirror(
        self, name: str, topic: str, settle_ms: int = 30, sender: str = "elector"
    ) -> Optional[Dict[str, Any]]:
        view = self.nodes[name].view()
        view.poll(settle_ms)
        return view.mirror(sender, topic)

    def wait(self, predicate: Any, timeout: float = 10.0, what: str = "") -> Any:
        return wait_for(predicate, timeout, interval=0.02, what=what)

    def close(self) -> None:
        with ThreadPoolExecutor(max(1, len(self.nodes))) as pool:
            list(pool.map(lambda d: d.close(), list(self.nodes.values())))
        self.client.close()


def timed(predicate: Any, timeout: float, interval: float = 0.01) -> float:
    """Seconds until ``predicate()`` holds; raises AssertionError after ``timeout``."""
    start = time.monotonic()
    wait_for(predicate, timeout, interval=interval)
    return time.monotonic() - start
