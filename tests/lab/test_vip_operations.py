"""Operator control of VIPs in the netns lab: ``networkdctl vip list|move|add|rm`` and the
same over HTTP (``GET /v1/vips``; writes only with the token)."""

import json
import os
import time
import urllib.error
import urllib.request
from typing import Any, Dict, List, Optional, Tuple

import pytest

from tests.lab import observe
from tests.lab.lab import Lab, LabNode
from tests.lab.netns import in_netns
from tests.lab.observe import AddressTimeline, TcpProber

pytestmark = pytest.mark.lab

WORKERS = ["watcher", "elector", "applier", "checker", "api"]
VIP = "10.77.0.200"
VALUE = {"app": "web", "proc": "worker", "ports": [{"src": "80", "proto": "tcp", "dest": "80"}]}


def lock_owner(etcd: Any, vip: str = VIP) -> str:
    return observe.lock_owner(etcd, vip)


def ctl(node: LabNode, *args: str) -> Tuple[int, str, str]:
    result = node.daemon.ctl("vip", *args, timeout=30)
    return result.returncode, result.stdout, result.stderr


def vip_list(node: LabNode) -> Dict[str, Any]:
    code, out, err = ctl(node, "list", "--json")
    assert code == 0, err
    return {v["ip"]: v for v in json.loads(out)["vips"]}


def http(
    node: LabNode, method: str, path: str, body: Optional[bytes] = None, token: str = ""
) -> Tuple[int, Dict[str, Any]]:
    """A request to the node's -api.addr from inside its namespace."""
    request = urllib.request.Request(node.daemon.api_url + path, data=body, method=method)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    with in_netns(node.ns):
        try:
            with urllib.request.urlopen(request, timeout=20) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"{}")


@pytest.fixture
def lab():
    with Lab(nodes=3, clients=1) as lab:
        yield lab


def start(lab: Lab, placed: List[LabNode], **flags: Any) -> Any:
    return lab.run_networkd(lab.nodes, WORKERS, placed=placed, **flags)


def test_list_move_add_rm(lab: Lab) -> None:
    etcd = start(lab, lab.nodes[:2])  # node3 does not run the proc
    a, b, c = lab.nodes
    # add: a bad value is refused before anything reaches etcd; a good one is written
    code, _, err = ctl(a, "add", VIP, "--app", "web", "--proc", "worker", "--port", "80/sctp")
    assert code == 1 and "ports[0].proto" in err, err
    assert etcd.get(f"/lain/config/vips/{VIP}")[0] is None
    code, _, err = ctl(a, "add", VIP, "--value", json.dumps({**VALUE, "health": {"type": "exec"}}))
    assert code == 1 and "health.type" in err and etcd.get(f"/lain/config/vips/{VIP}")[0] is None
    code, out, err = ctl(a, "add", VIP, "--app", "web", "--proc", "worker", "--port", "80:80/tcp")
    assert code == 0, err
    assert json.loads(etcd.get(f"/lain/config/vips/{VIP}")[0])["ports"] == [
        {"src": "80", "dest": "80", "proto": "tcp"}
    ]
    owner = lab.wait(lambda: lock_owner(etcd), 10, "an owner")
    listed = lab.wait(lambda: vip_list(c).get(VIP, {}).get("owner") == owner and vip_list(c), 10)
    states = {n["node"]: n["state"] for n in listed[VIP]["nodes"]}
    other = b.name if owner == a.name else a.name
    assert states == {owner: "OWNER", other: "STANDBY", c.name: "INELIGIBLE"}, states
    # --to a node that cannot take it: refused, nothing moves
    code, _, err = ctl(a, "move", VIP, "--to", c.name)
    assert code == 1 and "INELIGIBLE" in err, err
    assert lock_owner(etcd) == owner
    # 20 planned moves under client load: short gaps, never two holders
    prober = TcpProber(lab.client, VIP, 80, interval=0.01, timeout=1.0)
    gaps: List[float] = []
    with AddressTimeline(lab.nodes, [VIP]) as timeline:
        try:
            for i in range(20):
                before = lock_owner(etcd)
                started = time.monotonic()
                args = ["move", VIP] + (
                    ["--to", other if before == owner else owner] if i % 2 else []
                )
                code, out, err = ctl(a, *args)
                assert code == 0, err
                after = lock_owner(etcd)
                assert after not in ("", before), (before, after, out)
                # the lock moved; the new owner binds once its rules are in
                lab.wait(lambda: after in timeline.holders_now(VIP), 3)  # noqa: B023
                spans = timeline.spans(VIP)
                gone = [s for s, h in spans if s > started and not h]
                back = [s for s, h in spans if s > started and after in h]
                assert gone and back, spans[-4:]
                gaps.append(back[0] - gone[0])
        finally:
            prober.close()
        assert timeline.max_holders(VIP) <= 1, timeline.spans(VIP)
    print(
        f"20 moves: gap max {max(gaps):.3f}s p50 {sorted(gaps)[10]:.3f}s; probes {prober.summary()}"
    )
    assert max(gaps) <= 0.3, gaps
    refused = [o.at for o in prober.outcomes if o.result == "refused"]
    assert not refused, (refused, [s for s in timeline.spans(VIP) if abs(s[0] - refused[0]) < 1])
    # only one node left eligible: a move is refused with a clear message
    etcd.put(f"/lain/config/vips/{VIP}", json.dumps({**VALUE, "excluded_nodes": [other]}))
    lab.wait(lambda: lock_owner(etcd) not in ("", other), 10)
    code, _, err = ctl(a, "move", VIP)
    assert code == 1 and "no other node is eligible" in err, err
    # rm
    code, out, err = ctl(b, "rm", VIP)
    assert code == 0 and etcd.get(f"/lain/config/vips/{VIP}")[0] is None, err
    lab.wait(lambda: not lab.owners(VIP), 10, "released after rm")


def test_http_reads_open_writes_need_the_token(lab: Lab) -> None:
    token = "s3cret-token"
    path = os.path.join(lab.dir, "token")
    with open(path, "w") as f:
        f.write(token + "\n")
    os.chmod(path, 0o644)
    etcd = start(lab, lab.nodes, **{"api.token-file": path})
    a = lab.nodes[0]
    value = json.dumps(VALUE).encode()
    code, doc = http(a, "PUT", f"/v1/vips/{VIP}", value)
    assert code == 403 and "token" in doc["error"]
    code, doc = http(a, "PUT", f"/v1/vips/{VIP}", value, token="wrong")
    assert code == 403
    assert etcd.get(f"/lain/config/vips/{VIP}")[0] is None
    code, doc = http(a, "PUT", f"/v1/vips/{VIP}", b"{broken", token=token)
    assert code == 400 and "not valid JSON" in doc["error"], doc
    code, doc = http(a, "PUT", f"/v1/vips/{VIP}", value, token=token)
    assert code == 200 and doc["ok"], doc
    owner = lab.wait(lambda: lock_owner(etcd), 10, "an owner")
    code, doc = lab.wait(
        lambda: (lambda r: r if r[1].get("vips") and r[1]["vips"][0]["owner"] else None)(
            http(a, "GET", "/v1/vips")
        ),
        10,
    )
    assert code == 200 and doc["vips"][0]["owner"] == owner
    code, doc = http(a, "POST", f"/v1/vips/{VIP}/move", b"{}", token=token)
    assert code == 200 and doc["ok"], doc
    assert lock_owner(etcd) not in ("", owner)
    code, doc = http(a, "DELETE", f"/v1/vips/{VIP}", token=token)
    assert code == 200 and etcd.get(f"/lain/config/vips/{VIP}")[0] is None
    # without -api.token-file every HTTP write is refused, the local socket still works
    b = lab.nodes[1]
    b.stop_networkd()
    b.start_networkd(workers=WORKERS, docker_endpoint="")
    b.daemon.wait_running(WORKERS, timeout=20)
    code, doc = http(b, "PUT", f"/v1/vips/{VIP}", value, token=token)
    assert code == 403 and "no -api.token-file" in doc["error"]
    code, _, err = ctl(b, "add", VIP, "--value", json.dumps(VALUE))
    assert code == 0, err
