"""VIP health checks, FAILING nodes and notify hooks in the netns lab (real etcd, real
container servers, real client traffic)."""

import json
import os
import stat
import time
from typing import Any, Dict, List, Optional, Sequence

import pytest

from tests.lab import observe
from tests.lab.lab import Lab, LabNode
from tests.lab.observe import AddressTimeline, TcpProber

pytestmark = pytest.mark.lab

WORKERS = ["watcher", "elector", "applier", "checker", "api"]
VIP = "10.77.0.200"
VIP_B = "10.77.0.201"


def vip_value(health: Any = None, excluded: Sequence[str] = ()) -> str:
    value: Dict[str, Any] = {
        "app": "web",
        "proc": "worker",
        "ports": [{"src": "80", "proto": "tcp", "dest": "80"}],
        "excluded_nodes": list(excluded),
    }
    if health is not None:
        value["health"] = health
    return json.dumps(value)


def start(lab: Lab, nodes: Sequence[LabNode], **flags: Any) -> Any:
    return lab.run_networkd(nodes, WORKERS, **flags)


def lock_owner(etcd: Any, vip: str = VIP) -> str:
    return observe.lock_owner(etcd, vip)


def vip_state(node: LabNode, vip: str = VIP) -> Optional[str]:
    for item in node.daemon.status(0.2).get("vips", []):
        if item.get("ip") == vip:
            return str(item.get("state"))
    return None


@pytest.fixture
def lab():
    with Lab(nodes=3, clients=1) as lab:
        yield lab


def test_tcp_check_failure_moves_the_vip_and_rise_brings_the_node_back(lab: Lab) -> None:
    etcd = start(lab, lab.nodes)
    check = {"type": "tcp", "port": "80", "interval": 1, "timeout": 1, "fall": 3, "rise": 2}
    etcd.put(f"/lain/config/vips/{VIP}", vip_value(check))
    owner = lab.node(lab.wait(lambda: lock_owner(etcd), 15, "an owner"))
    lab.wait(lambda: lab.client.try_tcp(VIP, 80) == f"{owner.name} 80", 10)
    target = 1 * 3 + 0.3  # interval x fall + 0.3 s
    prober = TcpProber(lab.client, VIP, 80, interval=0.05, timeout=0.5)
    try:
        owner.stop_server()  # the container stays listed in pod_groups; its service is down
        stopped = time.monotonic()

        def served_elsewhere() -> Optional[float]:
            for o in list(prober.outcomes):
                if o.at > stopped and o.result not in (owner.name,) and o.result.startswith("node"):
                    return o.at
            return None

        answered = lab.wait(served_elsewhere, 10, "another node answers")
        took = answered - stopped
        print(f"check failure -> another node answers after {took:.2f}s (target {target:.1f}s)")
        assert took <= target, took
        lab.wait(lambda: vip_state(owner) == "FAILING", 5, "the old owner shows FAILING")
        new = lock_owner(etcd)
        assert new not in ("", owner.name)
        # FAILING never contends: even with the new owner excluded, the failing node waits
        others = [n.name for n in lab.nodes if n.name not in (owner.name, new)]
        etcd.put(f"/lain/config/vips/{VIP}", vip_value(check, excluded=[new, *others]))
        time.sleep(2.5)
        assert lock_owner(etcd) != owner.name and not owner.has_address(VIP)
        etcd.put(f"/lain/config/vips/{VIP}", vip_value(check))
        # the service is back: STANDBY after `rise` passing probes
        owner.start_server()
        back = time.monotonic()
        lab.wait(lambda: vip_state(owner) == "STANDBY", 6, "STANDBY again")
        print(f"service back -> STANDBY after {time.monotonic() - back:.2f}s")
        refused = [o for o in prober.outcomes if o.result == "refused"]
        assert not [o for o in refused if o.at > answered], refused[-3:]
    finally:
        prober.close()


def test_http_check_500_never_owns_and_a_bad_check_is_a_config_error(lab: Lab) -> None:
    bad = lab.nodes[1]
    for node in lab.nodes:
        code = "500" if node is bad else "204"
        node.run_in_container("tests.lab.httpstatus", "--port", "8090", "--status", code)
    etcd = start(lab, lab.nodes)
    check = {"type": "http", "port": 8090, "path": "/health", "expect": [200, 204],
             "interval": 0.5, "fall": 2, "rise": 2}  # fmt: skip
    others = [n.name for n in lab.nodes if n is not bad]
    with AddressTimeline(lab.nodes, [VIP]) as timeline:
        etcd.put(f"/lain/config/vips/{VIP}", vip_value(check))
        lab.wait(lambda: lock_owner(etcd) in others, 15, "a healthy node owns")
        lab.wait(lambda: vip_state(bad) == "FAILING", 5, "the 500 node is FAILING")
        # only the failing node left: it still never owns, the VIP stays unowned
        etcd.put(f"/lain/config/vips/{VIP}", vip_value(check, excluded=others))
        lab.wait(lambda: not lab.owners(VIP) and not lock_owner(etcd), 5, "released")
        time.sleep(3.0)
        assert not lab.owners(VIP) and not lock_owner(etcd)
        assert bad.name not in {n for _, holders in timeline.spans(VIP) for n in holders}
    # a check value with a bad type (exec from etcd) or a bad port: a config error, and the
    # VIP works without a check
    for health in ({"type": "exec", "command": ["/bin/true"]}, {"type": "tcp", "port": 0}):
        etcd.put(f"/lain/config/vips/{VIP_B}", vip_value(health))
        owner = lab.wait(lambda: lock_owner(etcd, VIP_B), 10, "VIP B owned without a check")
        lab.wait(lambda: lab.client.try_tcp(VIP_B, 80) == f"{owner} 80", 5)  # noqa: B023
        errors = {
            e["key"]: e["reason"] for e in lab.nodes[0].daemon.status(0.3).get("config_errors", [])
        }
        reason = errors.get(f"/lain/config/vips/{VIP_B}", "")
        assert "health." in reason and "without a check" in reason, errors


def test_notify_hook_gets_ip_old_new_and_delays_nothing(lab: Lab) -> None:
    hook_dir = os.path.join(lab.dir, "hooks")
    os.makedirs(hook_dir)
    os.chmod(hook_dir, 0o777)
    hook = os.path.join(hook_dir, "notify")
    calls = os.path.join(hook_dir, "calls")
    with open(hook, "w") as f:
        f.write(f'#!/bin/sh\nprintf "%s|%s|%s|%s\\n" "$#" "$1" "$2" "$3" >> {calls}\nsleep 30\n')
    os.chmod(hook, stat.S_IRWXU | stat.S_IRGRP | stat.S_IXGRP | stat.S_IROTH | stat.S_IXOTH)
    a, b = lab.nodes[:2]
    etcd = start(lab, [a, b], vip_notify=hook, vip_notify_timeout=60)
    etcd.put(f"/lain/config/vips/{VIP}", vip_value())
    first = lab.wait(lambda: lock_owner(etcd), 10, "an owner")
    lab.wait(lambda: lab.owners(VIP) == [first], 5)
    # a planned move while every hook run still sleeps: ownership is not held up
    moved_at = time.monotonic()
    etcd.put(f"/lain/config/vips/{VIP}", vip_value(excluded=[first]))
    second = lab.wait(lambda: [n for n in lab.owners(VIP) if n != first], 5, "moved")[0]
    took = time.monotonic() - moved_at
    assert took < 2.0, took

    def lines() -> List[str]:
        try:
            with open(calls) as f:
                return f.read().splitlines()
        except FileNotFoundError:
            return []

    want = {
        f"3|{VIP}|NONE|STANDBY",  # the first state each node saw (or NONE -> OWNER)
        f"3|{VIP}|STANDBY|EXCLUDED",
        f"3|{VIP}|STANDBY|OWNER",
    }
    lab.wait(lambda: {line for line in lines()} >= {f"3|{VIP}|OWNER|EXCLUDED"}, 5, "hook runs")
    seen = set(lines())
    print(f"hook calls: {sorted(seen)}; move took {took:.3f}s with hooks sleeping")
    assert all(line.startswith(f"3|{VIP}|") for line in seen), seen
    assert f"3|{VIP}|OWNER|EXCLUDED" in seen and (
        f"3|{VIP}|STANDBY|OWNER" in seen or f"3|{VIP}|NONE|OWNER" in seen
    ), (seen, want, second)


def test_exec_checks_come_from_the_nodes_own_files_and_run_unprivileged(lab: Lab) -> None:
    a, b = lab.nodes[:2]
    checks = os.path.join(lab.dir, "checks.d")
    out = os.path.join(lab.dir, "exec-out")
    os.makedirs(checks)
    os.makedirs(out)
    os.chmod(out, 0o777)
    os.chmod(checks, 0o755)
    # on node a, a local check that fails and says who ran it; node b has no check file
    script = f"id -un > {out}/who; echo not healthy; exit 1"
    with open(os.path.join(checks, "web.json"), "w") as f:
        json.dump({"vip": VIP, "type": "exec", "command": ["/bin/sh", "-c", script],
                   "interval": 0.5, "timeout": 2, "fall": 1, "rise": 1}, f)  # fmt: skip
    os.chmod(os.path.join(checks, "web.json"), 0o644)
    etcd = lab.run_networkd([a], WORKERS, placed=[a, b], **{"vip.checks.dir": checks})
    b.start_networkd(workers=WORKERS, docker_endpoint="")
    b.daemon.wait_running(WORKERS, timeout=20)
    etcd.put(f"/lain/config/vips/{VIP}", vip_value())  # no check in etcd
    lab.wait(lambda: lock_owner(etcd) == b.name, 15, "only the node without a failing check")
    lab.wait(lambda: vip_state(a) == "FAILING", 5)
    with open(os.path.join(out, "who")) as f:
        assert f.read().strip() == "networkd"  # the checker's unprivileged user, not root

    def checks_seen() -> Dict[str, str]:
        listed = json.loads(a.daemon.ctl("vip", "list", "--json").stdout or "{}")
        return {n["node"]: n["check"] for v in listed.get("vips", []) for n in v["nodes"]}

    # the verdict reaches the view through etcd (node a's health report), and the view is
    # at most 0.5 s old (docs/OPERATIONS.md): `vip list` shows it within a second or two
    lab.wait(
        lambda: checks_seen().get(a.name, "").startswith("FAILING: exit 1: not healthy"),
        3,
        "the FAILING check in vip list",
    )
