"""Leader job outputs: the exact values of SPEC section 5 (pure functions)."""

import json

from networkd.bus.messages import AppsKey, LeaderAddress, StreamrouterPool
from networkd.config import Config
from networkd.jobs.leaders import leader_domain_outputs
from networkd.jobs.outputs import same_json
from networkd.jobs.runner import JobRunner, compute_jobs
from networkd.jobs.streamrouter import is_streamrouter_value, streamrouter_outputs
from networkd.jobs.tinydns import tinydns_outputs
from networkd.jobs.webrouter import webrouter_outputs


def apps(*entries):
    out = {}
    for app, proc, ip, port in entries:
        out[f"{app}/{proc}/{ip}:{port}"] = AppsKey(app=app, proc=proc, ip=ip, port=port, node="n1")
    return out


def test_deployd_and_swarm_domains():
    leaders = {"deployd": LeaderAddress("deployd", "10.0.0.5", 9003)}
    result = leader_domain_outputs("deployd", leaders)
    assert result.puts == {"/lain/config/domains/deployd.lain": '{"ips":["10.0.0.5"],"type":""}'}
    assert leader_domain_outputs("swarm", leaders).puts == {}  # absent: left alone
    swarm = leader_domain_outputs("swarm", {"swarm": LeaderAddress("swarm", "10.0.0.6", 2376)})
    assert swarm.puts == {"/lain/config/domains/swarm.lain": '{"ips":["10.0.0.6"],"type":""}'}


def test_bad_leader_ip_is_a_config_error_not_a_crash():
    result = leader_domain_outputs("deployd", {"deployd": LeaderAddress("deployd", "not-an-ip", 1)})
    assert not result.puts
    assert "/lain/deployd/leader" in result.errors


def test_tinydns_servers_for_lain_and_domain():
    a = apps(
        ("tinydns", "worker", "10.0.0.2", 53),
        ("tinydns", "worker", "10.0.0.1", 53),
        ("web", "worker", "10.0.0.3", 80),
    )
    result = tinydns_outputs(a, "lain")
    assert result.puts == {
        "/lain/config/domain_servers/lain": '{"servers":["10.0.0.1#53","10.0.0.2#53"]}'
    }
    result = tinydns_outputs(a, "example.com")
    assert set(result.puts) == {
        "/lain/config/domain_servers/lain",
        "/lain/config/domain_servers/example.com",
    }
    assert tinydns_outputs({}, "lain").puts == {
        "/lain/config/domain_servers/lain": '{"servers":[]}'
    }


def test_tinydns_bad_apps_entry_rejected_alone():
    a = apps(("tinydns", "worker", "10.0.0.1", 53))
    a["tinydns/worker/bogus:53"] = AppsKey(
        app="tinydns", proc="worker", ip="bogus", port=53, node="n2"
    )
    result = tinydns_outputs(a, "lain")
    assert json.loads(result.puts["/lain/config/domain_servers/lain"]) == {
        "servers": ["10.0.0.1#53"]
    }
    assert "/lain/networkd/apps/tinydns/worker/bogus:53" in result.errors


def test_webrouter_fqdns_like_the_go_daemon():
    a = apps(
        ("webrouter", "worker", "10.0.0.9", 80),
        ("webrouter", "worker", "10.0.0.8", 443),
        ("webrouter", "worker", "10.0.0.9", 443),
    )
    result = webrouter_outputs(a, "lain")
    assert json.loads(result.puts["/lain/config/tinydns_fqdns/webrouter.lain"]) == [
        "+webrouter.lain:10.0.0.8:300",
        "+webrouter.lain:10.0.0.9:300",
    ]
    assert json.loads(result.puts["/lain/config/tinydns_fqdns/lain"]) == [
        "+*.lain:10.0.0.8:300",
        ".lain:10.0.0.8:a:300",
        "+*.lain:10.0.0.9:300",
        ".lain:10.0.0.9:a:300",
    ]
    assert set(webrouter_outputs(a, "example.com").puts) == {
        "/lain/config/tinydns_fqdns/webrouter.lain",
        "/lain/config/tinydns_fqdns/example.com",
        "/lain/config/tinydns_fqdns/lain",
    }
    assert webrouter_outputs({}, "lain").puts == {}


def test_streamrouter_pool_vips_and_departed():
    pool = StreamrouterPool(ips=["10.0.5.1", "10.0.5.2", "bad"], ports=[9000, 8000])
    result = streamrouter_outputs(pool, departed=["10.0.5.3"])
    value = '{"app":"streamrouter","proc":"worker","ports":[{"src":"8000","proto":"tcp","dest":"8000"},{"src":"9000","proto":"tcp","dest":"9000"}],"excluded_nodes":[]}'
    assert result.puts == {"/lain/config/vips/10.0.5.1": value, "/lain/config/vips/10.0.5.2": value}
    assert list(result.deletes) == ["/lain/config/vips/10.0.5.3"]
    assert "/lain/config/streamrouter/vippool" in result.errors
    assert is_streamrouter_value(value)
    assert not is_streamrouter_value('{"app":"web","proc":"worker","ports":[]}')
    assert not is_streamrouter_value("garbage")


def test_compute_jobs_honours_flags():
    leaders = {"deployd": LeaderAddress("deployd", "10.0.0.5", 9003)}
    none = compute_jobs(Config(), leaders, {}, None, [])
    assert not none.puts
    some = compute_jobs(Config(deployd=True, tinydns=True), leaders, {}, None, [])
    assert set(some.puts) == {
        "/lain/config/domains/deployd.lain",
        "/lain/config/domain_servers/lain",
    }


def test_same_json():
    assert same_json('{"a": 1}', '{"a":1}')
    assert not same_json('{"a": 2}', '{"a":1}')
    assert not same_json("garbage", '{"a":1}')


class FakeStore:
    """A dict standing in for etcd, with the leader fence as a flag."""

    def __init__(self):
        self.data = {}
        self.leader = True
        self.calls = []

    def read(self, key):
        self.calls.append(("read", key))
        value = self.data.get(key)
        return value.encode() if value is not None else None

    def fenced_put(self, key, value, fence_key, lease):
        self.calls.append(("put", key))
        if self.leader:
            self.data[key] = value
        return type("R", (), {"succeeded": self.leader, "revision": 1})()

    def fenced_delete(self, key, expected, fence_key, lease):
        self.calls.append(("delete", key))
        ok = self.leader and self.data.get(key) == expected
        if ok:
            del self.data[key]
        return type("R", (), {"succeeded": ok, "revision": 1})()


def test_runner_read_compare_write_and_quiet_steady_state():
    store = FakeStore()
    runner = JobRunner(store)
    result = compute_jobs(
        Config(deployd=True), {"deployd": LeaderAddress("deployd", "10.0.0.5", 9003)}, {}, None, []
    )
    store.data["/lain/config/domains/deployd.lain"] = (
        '{"ips": ["10.0.0.5"], "type": ""}'  # same JSON
    )
    assert runner.run(result, 1) and runner.writes == 0
    store.data.clear()
    runner.reset()
    assert runner.run(result, 1) and runner.writes == 1
    store.calls.clear()
    assert not runner.pending(result)
    assert runner.run(result, 1) and store.calls == []  # steady state: no requests
    # Leadership lost: the fenced write is refused and the runner says so.
    store.leader = False
    changed = compute_jobs(
        Config(deployd=True), {"deployd": LeaderAddress("deployd", "10.0.0.7", 1)}, {}, None, []
    )
    assert not runner.run(changed, 1)
    assert json.loads(store.data["/lain/config/domains/deployd.lain"])["ips"] == ["10.0.0.5"]


def test_runner_deletes_only_streamrouter_values():
    store = FakeStore()
    store.data["/lain/config/vips/10.0.5.3"] = '{"app":"streamrouter","proc":"worker","ports":[]}'
    store.data["/lain/config/vips/10.0.5.4"] = '{"app":"web","proc":"worker","ports":[]}'
    runner = JobRunner(store)
    result = streamrouter_outputs(StreamrouterPool(ips=[]), departed=["10.0.5.3", "10.0.5.4"])
    assert runner.run(result, 1)
    assert "/lain/config/vips/10.0.5.3" not in store.data
    assert "/lain/config/vips/10.0.5.4" in store.data
