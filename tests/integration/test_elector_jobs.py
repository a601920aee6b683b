"""Leader jobs and port-only keys across three real networkd processes on one etcd.

Exact values of SPEC section 5, leadership moving with the outputs kept right, malformed
leader values reported but harmless, and no etcd writes at all in steady state.
"""

import json
import time

from tests.integration.elector_cluster import timed

NODES = ["n1", "n2", "n3"]
JOB_FLAGS = {
    "deployd": True,
    "swarm": True,
    "tinydns": True,
    "webrouter": True,
    "streamrouter": True,
}


def get(cluster, key):
    value, _ = cluster.client.get(key)
    return value.decode() if value is not None else None


def get_json(cluster, key):
    value = get(cluster, key)
    return json.loads(value) if value is not None else None


def port_only(cluster, ip_port, app, src):
    value = {"app": app, "proc": "worker", "ports": [{"src": src, "proto": "udp", "dest": "53"}]}
    cluster.client.put(f"/lain/config/vips/{ip_port}", json.dumps(value))


def test_leader_jobs_port_only_failover_and_quiet_steady_state(cluster):
    c = cluster
    c.client.put("/lain/deployd/leader", "10.9.0.5:9003")
    c.client.put("/lain/swarm/docker/swarm/leader", "10.9.0.6:2376")
    c.client.put("/lain/config/streamrouter/vippool", json.dumps(["10.9.1.1", "10.9.1.2"]))
    c.place("web", "worker", NODES)
    c.place("tinydns", "worker", ["n1", "n2"])
    c.place("webrouter", "worker", ["n2", "n3"])
    port_only(c, "0.0.0.0:53", "tinydns", "53")
    port_only(c, "0.0.0.0:8443", "webrouter", "8443")
    c.start(NODES, **JOB_FLAGS)
    leader = c.wait(lambda: c.leader(), 5)

    # Exact outputs of SPEC section 5.
    c.wait(
        lambda: get(c, "/lain/config/domains/deployd.lain") == '{"ips":["10.9.0.5"],"type":""}', 5
    )
    c.wait(lambda: get(c, "/lain/config/domains/swarm.lain") == '{"ips":["10.9.0.6"],"type":""}', 5)
    c.wait(
        lambda: (
            get(c, "/lain/config/domain_servers/lain")
            == '{"servers":["10.77.0.1#53","10.77.0.2#53"]}'
        ),
        5,
        "tinydns domain servers from both nodes' apps keys",
    )
    c.wait(lambda: get_json(c, "/lain/config/tinydns_fqdns/webrouter.lain") is not None, 5)
    assert get_json(c, "/lain/config/tinydns_fqdns/webrouter.lain") == [
        "+webrouter.lain:10.77.0.2:300",
        "+webrouter.lain:10.77.0.3:300",
    ]
    assert get_json(c, "/lain/config/tinydns_fqdns/lain") == [
        "+*.lain:10.77.0.2:300",
        ".lain:10.77.0.2:a:300",
        "+*.lain:10.77.0.3:300",
        ".lain:10.77.0.3:a:300",
    ]
    sr = '{"app":"streamrouter","proc":"worker","ports":[],"excluded_nodes":[]}'
    c.wait(
        lambda: (
            get(c, "/lain/config/vips/10.9.1.1") == sr
            and get(c, "/lain/config/vips/10.9.1.2") == sr
        ),
        5,
    )

    # Port-only keys: DNAT entries on the nodes running the proc, apps keys by each node.
    apps = {
        meta.key.decode(): value.decode()
        for value, meta in c.client.get_prefix("/lain/networkd/apps/")
    }
    assert apps == {
        "/lain/networkd/apps/tinydns/worker/10.77.0.1:53": "n1",
        "/lain/networkd/apps/tinydns/worker/10.77.0.2:53": "n2",
        "/lain/networkd/apps/webrouter/worker/10.77.0.2:8443": "n2",
        "/lain/networkd/apps/webrouter/worker/10.77.0.3:8443": "n3",
    }
    d1 = c.wait(lambda: (c.desired("n1") or {}).get("10.77.0.1:53"), 5)
    assert (
        not d1.bind
        and d1.ip == "10.77.0.1"
        and d1.ports[0].src == 53
        and d1.ports[0].proto == "udp"
    )
    assert not any(k.endswith(":8443") for k in c.desired("n1"))
    assert set(k for k in c.desired("n3") if ":" in k) == {"10.77.0.3:8443"}

    # A malformed leader value is reported, never fatal; outputs stay as they were.
    c.client.put("/lain/deployd/leader", "garbage-without-colon")
    c.wait(
        lambda: (
            "/lain/deployd/leader"
            in (c.mirror(leader, "state.config_errors", sender="watcher") or {})
        ),
        5,
    )
    time.sleep(0.3)
    assert get(c, "/lain/config/domains/deployd.lain") == '{"ips":["10.9.0.5"],"type":""}'
    assert all(d.proc.poll() is None for d in c.nodes.values())
    c.client.put("/lain/deployd/leader", "10.9.0.5:9003")

    # Steady state: etcd's revision does not move in 60 s (keep-alives do not count; the
    # jobs' 60 s verification pass only reads).
    time.sleep(1.0)
    revision = c.revision()
    time.sleep(61)
    assert c.revision() == revision, "networkd wrote to etcd in steady state"

    # The leader dies: leadership moves within the TTL; the new leader keeps outputs right.
    c.kill(leader)
    took = timed(lambda: c.leader() not in (None, leader), 4.0)
    assert took <= 3.0, took
    new_leader = c.leader()
    c.client.put("/lain/swarm/docker/swarm/leader", "10.9.0.7:2376")
    c.wait(lambda: get(c, "/lain/config/domains/swarm.lain") == '{"ips":["10.9.0.7"],"type":""}', 5)
    c.client.put("/lain/config/streamrouter/vippool", json.dumps(["10.9.1.1"]))
    c.wait(lambda: get(c, "/lain/config/vips/10.9.1.2") is None, 5, "departed pool VIP deleted")
    assert get(c, "/lain/config/vips/10.9.1.1") == sr
    # The dead node's apps keys went with its lease; the outputs follow.
    alive_tinydns = sorted(f"10.77.0.{n[1]}#53" for n in ("n1", "n2") if n != leader)
    c.wait(lambda: get_json(c, "/lain/config/domain_servers/lain") == {"servers": alive_tinydns}, 5)
    # A proc leaving a node removes that node's apps key (and only that one).
    survivor = "n2" if leader != "n2" else "n3"
    remaining = [n for n in ("n2", "n3") if n != survivor and n != leader]
    c.place("webrouter", "worker", remaining)
    c.wait(
        lambda: get(c, f"/lain/networkd/apps/webrouter/worker/10.77.0.{survivor[1]}:8443") is None,
        5,
    )
    for n in remaining:
        assert get(c, f"/lain/networkd/apps/webrouter/worker/10.77.0.{n[1]}:8443") == n
    assert new_leader != leader
