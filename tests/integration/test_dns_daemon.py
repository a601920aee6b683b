"""DNS end to end through the real daemon: etcd -> watcher -> dns replicas and the
forwarder, the resolvconf keeper, privileges, bad packets, one cache shared by the
replicas (with BIND as the upstream of a domain), a replica restarted or gone FATAL."""

import contextlib
import json
import os
import random
import signal
import socket
import struct
import threading
import time
import urllib.request
from typing import Any, Dict, Iterator, List

import dns.exception
import dns.flags
import dns.message
import dns.query
import dns.rcode
import pytest

from tests.support.bind import Bind, zone
from tests.support.daemon import Daemon, dns_worker_pids, wait_for
from tests.support.dnsmasq import Dnsmasq
from tests.support.etcd import EtcdServer

NODE_ADDRESS = "10.55.0.1"
WORKERS = ["watcher", "resolvconf", "dns-forwarder", "dns.0", "dns.1", "api"]


def loopback_address() -> str:
    """A random 127/8 address: resolv.conf cannot name a port, so upstreams use port 53."""
    return f"127.{random.randrange(100, 250)}.{random.randrange(1, 250)}.{random.randrange(2, 250)}"


def ips(msg: dns.message.Message) -> List[str]:
    return sorted(rd.to_text() for rrset in msg.answer for rd in rrset)


SHARED_ZONE = zone("www A 10.60.0.1", "again A 10.60.0.2", "kept A 10.60.0.3", "*.miss A 10.60.9.9")


class Env:
    def __init__(self, etcd: EtcdServer, daemon: Daemon, upstream: Dnsmasq, bind: Bind) -> None:
        self.etcd = etcd
        self.daemon = daemon
        self.upstream = upstream
        self.bind = bind
        self.client = etcd.client()
        self.host, self.port = daemon.dns_addr

    def query(
        self, name: str, rdtype: str = "A", tcp: bool = False, timeout: float = 3.0
    ) -> dns.message.Message:
        q = dns.message.make_query(name, rdtype)
        if tcp:
            return dns.query.tcp(q, self.host, port=self.port, timeout=timeout)
        return dns.query.udp(q, self.host, port=self.port, timeout=timeout)

    def wait_answer(
        self, name: str, expected: List[str], rdtype: str = "A", timeout: float = 5.0
    ) -> None:
        wait_for(
            lambda: ips(self.query(name, rdtype)) == expected, timeout, what=f"{name} -> {expected}"
        )

    def put_domain(self, name: str, value: Any) -> None:
        self.client.put(f"/lain/config/domains/{name}", json.dumps(value))

    def replica_pids(self) -> Dict[str, int]:
        workers = self.daemon.workers()
        return {n: int(w["pid"]) for n, w in workers.items() if n.startswith("dns.")}

    def dns_pids(self) -> Dict[str, int]:
        return dns_worker_pids(self.daemon)

    def live_replica_pids(self) -> Dict[str, int]:
        return {n: p for n, p in self.dns_pids().items() if n.startswith("dns.")}


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    etcd = EtcdServer().start()
    bind = Bind({"shared.test": SHARED_ZONE}).start()
    client = etcd.client()
    client.put("/lain/config/domain_servers/shared.test", json.dumps({"servers": [bind.address]}))
    client.close()
    upstream = Dnsmasq(
        {"up.example": "10.20.0.1", "other.example": "10.20.0.2"},
        host=loopback_address(),
        port=53,
        extra_args=["--address=/nx.example/"],
    ).start()
    base = str(tmp_path_factory.mktemp("dnsd"))
    with open(os.path.join(base, "resolv.conf"), "w") as f:
        f.write(f"# test\nsearch example\nnameserver {upstream.host}\noptions rotate ndots:1\n")
    with open(os.path.join(base, "hosts"), "w") as f:
        f.write(
            "127.0.0.1 localhost\n10.70.0.1 multi.hosts\n10.70.0.2 multi.hosts\nfd00::70 multi.hosts\n"
            "10.70.0.9 both.lain\n"
        )
    flags: Dict[str, Any] = {"net.address": NODE_ADDRESS, "dns.replicas": 2}
    daemon = Daemon(base, etcd.endpoint, workers=("watcher", "resolvconf", "dns", "api"), **flags)
    daemon.start()
    try:
        daemon.wait_running(WORKERS, timeout=30)
        e = Env(etcd, daemon, upstream, bind)
        e.wait_answer("up.example", ["10.20.0.1"])
        yield e
    finally:
        daemon.close()
        upstream.close()
        bind.close()
        etcd.close()


def test_domains_from_etcd_each_rule(env: Env) -> None:
    env.put_domain("exact.lain", {"ips": ["10.0.0.1"], "type": ""})
    env.put_domain("*.lain", {"ips": ["10.0.0.2"], "type": ""})
    env.put_domain("*.app.lain", {"ips": ["10.0.0.3"], "type": ""})
    env.put_domain("Mixed.Lain", {"ips": ["10.0.0.4", "fd00::4"], "type": ""})
    env.put_domain("node.lain", {"ips": [], "type": "node"})
    env.put_domain("webrouter.lain", {"ips": [], "type": "webrouter"})
    env.client.put(
        "/lain/config/vips/10.66.0.1",
        json.dumps(
            {
                "app": "webrouter",
                "proc": "worker",
                "ports": [{"src": "80", "proto": "tcp", "dest": "8080"}],
            }
        ),
    )
    env.put_domain("both.lain", {"ips": ["10.0.0.5"], "type": ""})
    env.wait_answer("webrouter.lain", ["10.66.0.1"])
    env.wait_answer("both.lain", ["10.0.0.5"])  # etcd over /etc/hosts
    for tcp in (False, True):
        assert ips(env.query("exact.lain", tcp=tcp)) == ["10.0.0.1"]
        assert ips(env.query("x.y.lain", tcp=tcp)) == ["10.0.0.2"]
        assert ips(env.query("lain", tcp=tcp)) == ["10.0.0.2"]
        assert ips(env.query("q.app.lain", tcp=tcp)) == ["10.0.0.3"]
        assert ips(env.query("MIXED.lain", tcp=tcp)) == ["10.0.0.4"]
        assert ips(env.query("mixed.lain", "AAAA", tcp=tcp)) == ["fd00::4"]
        assert env.query("exact.lain", "AAAA", tcp=tcp).answer == []
        assert ips(env.query("node.lain", tcp=tcp)) == [NODE_ADDRESS]
        assert ips(env.query("multi.hosts", tcp=tcp)) == ["10.70.0.1", "10.70.0.2"]
        assert ips(env.query("multi.hosts", "AAAA", tcp=tcp)) == ["fd00::70"]
    # deletion: the exact name falls back to the wildcard, then to forwarding
    env.client.delete("/lain/config/domains/exact.lain")
    env.wait_answer("exact.lain", ["10.0.0.2"])
    env.client.delete("/lain/config/domains/*.lain")
    wait_for(
        lambda: (
            env.query("exact.lain").rcode() != dns.rcode.NOERROR
            or not env.query("exact.lain").answer
        ),
        5,
        what="exact.lain forwarded",
    )
    env.client.delete("/lain/config/domains/both.lain")
    env.wait_answer("both.lain", ["10.70.0.9"])


def test_big_answer_truncated_over_udp(env: Env) -> None:
    env.put_domain("big.lain", {"ips": [f"10.2.0.{i}" for i in range(1, 101)], "type": ""})
    wait_for(lambda: env.query("big.lain", tcp=True).answer, 5, what="big.lain")
    assert env.query("big.lain").flags & dns.flags.TC
    assert len(ips(env.query("big.lain", tcp=True))) == 100


def test_hosts_file_edit_seen(env: Env) -> None:
    path = env.daemon.hosts_file
    with open(path, "a") as f:
        f.write("10.71.0.1 late.hosts\n")
    env.wait_answer("late.hosts", ["10.71.0.1"], timeout=3)


def test_resolv_conf_kept_and_outside_edit(env: Env) -> None:
    path = env.daemon.resolv_conf
    with open(path) as f:
        text = f.read()
    assert (
        text
        == f"nameserver 127.0.0.1\n# test\nsearch example\nnameserver {env.upstream.host}\noptions ndots:1\n"
    )
    # no rewrite loop: the file stays put
    before = os.stat(path)
    time.sleep(1.0)
    after = os.stat(path)
    assert (before.st_ino, before.st_mtime_ns) == (after.st_ino, after.st_mtime_ns)
    second = Dnsmasq({"second.example": "10.21.0.1"}, host=loopback_address(), port=53).start()
    try:
        with open(path, "w") as f:  # an outside edit, e.g. DHCP
            f.write(f"nameserver {second.host}\noptions rotate\n")
        wait_for(
            lambda: open(path).read() == f"nameserver 127.0.0.1\nnameserver {second.host}\n",
            2,
            what="resolv.conf fixed within a second",
        )
        env.wait_answer("second.example", ["10.21.0.1"], timeout=3)
    finally:
        with open(path, "w") as f:
            f.write(f"nameserver {env.upstream.host}\n")
        second.close()
    env.wait_answer("other.example", ["10.20.0.2"])


def test_replicas_and_forwarder_unprivileged(env: Env) -> None:
    pids = env.dns_pids()
    assert set(pids) == {"dns.0", "dns.1", "dns-forwarder"}
    for name, pid in pids.items():
        with open(f"/proc/{pid}/status") as f:
            status = dict(line.split(":", 1) for line in f.read().splitlines() if ":" in line)
        uids = [int(u) for u in status["Uid"].split()]
        assert all(u != 0 for u in uids), (name, uids)
        assert all(int(g) != 0 for g in status["Gid"].split()), name
        for cap in ("CapInh", "CapPrm", "CapEff", "CapAmb"):
            assert int(status[cap].strip(), 16) == 0, (name, cap, status[cap])
        assert status["NoNewPrivs"].strip() == "1"


def test_status_and_config_dump(env: Env) -> None:
    env.put_domain("dump.lain", {"ips": ["10.0.0.77"], "type": ""})
    env.wait_answer("dump.lain", ["10.0.0.77"])
    stats = wait_for(
        lambda: [d for d in env.daemon.status()["dns"] if d["queries"] > 0], 5, what="stats"
    )
    pids = env.replica_pids()
    assert {d["pid"] for d in env.daemon.status()["dns"]} == set(pids.values())
    assert stats[0]["rcodes"]
    url = env.daemon.api_url + "/v1/dns/config"

    def dump() -> str:
        with urllib.request.urlopen(url, timeout=3) as r:
            return r.read().decode()

    text = wait_for(lambda: "dump.lain [10.0.0.77]" in dump() and dump(), 5, what="dump")
    assert "# wildcard domains" in text and "# domain servers (tinydns)" in text
    assert f"nameserver {env.upstream.host}:53" in text


def test_bad_packets_replicas_stay_up(env: Env) -> None:
    pids = env.replica_pids()
    rng = random.Random(7)
    good = dns.message.make_query("up.example", "A", use_edns=0).to_wire()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for i in range(4000):
            if i % 2:
                data = os.urandom(rng.randrange(0, 200))
            else:
                data = good[: rng.randrange(len(good))] + os.urandom(rng.randrange(0, 4))
            s.sendto(data, (env.host, env.port))
    for i in range(400):
        with socket.create_connection((env.host, env.port), timeout=2) as c:
            c.sendall(
                os.urandom(rng.randrange(1, 100)) if i % 2 else struct.pack(">H", 50) + good[:10]
            )
    time.sleep(0.3)
    assert env.replica_pids() == pids
    assert ips(env.query("up.example")) == ["10.20.0.1"]
    assert ips(env.query("up.example", tcp=True)) == ["10.20.0.1"]


@contextlib.contextmanager
def stopped(*pids: int) -> Iterator[None]:
    """SIGSTOP these processes for the block (SIGCONT whatever happens)."""
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGCONT)


def fresh_query(env: Env, name: str, timeout: float = 2.0) -> dns.message.Message:
    """A query from a new socket (a new source port), as a new client would send it."""
    return env.query(name, timeout=timeout)


def answered_from_copy(env: Env, name: str, want: List[str]) -> float:
    """Seconds until a fresh client gets ``want`` for ``name`` (retrying every 50 ms):
    with the forwarder stopped, only a replica's copy of the cache can answer."""
    start = time.monotonic()
    while True:
        try:
            msg = fresh_query(env, name, timeout=0.05)
        except dns.exception.Timeout:
            assert time.monotonic() - start < 2, f"{name} not in the serving replica's copy"
            continue
        assert ips(msg) == want
        return time.monotonic() - start


def test_replicas_answer_from_one_cache(env: Env) -> None:
    name = "www.shared.test"
    assert ips(env.query(name)) == ["10.60.0.1"]  # a miss: the forwarder asks BIND
    time.sleep(0.01)  # "every replica answers it from cache within 10 ms"
    pids = env.dns_pids()
    ttls = []
    with stopped(pids["dns-forwarder"]):  # only the replicas' copies can answer now
        for serving, other in (("dns.0", "dns.1"), ("dns.1", "dns.0")):
            with stopped(pids[other]):
                late = answered_from_copy(env, name, ["10.60.0.1"])
                print(f"{serving} answered from its copy {late * 1000:.1f} ms later")
                for _ in range(10):
                    msg = fresh_query(env, name)
                    assert ips(msg) == ["10.60.0.1"], serving
                    ttls.append(msg.answer[0].ttl)
    env.bind.stop()  # the upstream is gone: 20 fresh clients still get the cached answer
    try:
        for _ in range(20):
            msg = fresh_query(env, name)
            assert ips(msg) == ["10.60.0.1"]
            ttls.append(msg.answer[0].ttl)
    finally:
        env.bind.start()
    assert max(ttls) - min(ttls) <= 2 and max(ttls) <= 300  # one countdown for all
    assert len(env.bind.queries(name)) == 1  # one upstream query per name per TTL


def test_restarted_replica_answers_cached_names_within_a_second(env: Env) -> None:
    name = "again.shared.test"
    assert ips(env.query(name)) == ["10.60.0.2"]
    pids = env.dns_pids()
    env.bind.stop()
    try:
        with stopped(pids["dns.1"]):  # dns.0 alone serves
            os.kill(pids["dns.0"], signal.SIGKILL)
            start = time.monotonic()
            while True:
                try:
                    msg = env.query(name, timeout=0.05)
                    break
                except dns.exception.Timeout:
                    assert time.monotonic() - start < 3, "no answer from the restarted replica"
            elapsed = time.monotonic() - start
            assert ips(msg) == ["10.60.0.2"]
            new = env.live_replica_pids()["dns.0"]
            assert new != pids["dns.0"]
            with stopped(pids["dns-forwarder"]):  # answered from its own copy of the cache
                assert ips(fresh_query(env, name)) == ["10.60.0.2"]
        print(f"restarted replica answered a cached name {elapsed * 1000:.0f} ms after SIGKILL")
        assert elapsed < 1.0
    finally:
        env.bind.start()
    env.daemon.wait_running(WORKERS, timeout=10)


def restart_forwarder(env: Env) -> None:
    """SIGKILL the forwarder and wait for its successor's process."""
    victim = env.dns_pids()["dns-forwarder"]
    os.kill(victim, signal.SIGKILL)
    wait_for(lambda: env.dns_pids().get("dns-forwarder", victim) != victim, 10)


def test_forwarder_sigkill_loses_no_query_and_keeps_the_cache(env: Env) -> None:
    assert ips(env.query("kept.shared.test")) == ["10.60.0.3"]
    failures: List[str] = []
    answered = [0]
    stop = threading.Event()

    def client(seed: int) -> None:
        n = 0
        while not stop.is_set():
            n += 1
            name, want = (
                (f"m{seed}-{n}.miss.shared.test", "10.60.9.9")
                if n % 2
                else ("kept.shared.test", "10.60.0.3")
            )
            try:
                got = ips(env.query(name, timeout=6.0))  # a restart's worst case, busy machine
            except dns.exception.Timeout:
                failures.append(f"lost {name}")
                continue
            if got != [want]:
                failures.append(f"{name}: {got}")
            answered[0] += 1

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(4)]
    for t in threads:
        t.start()
    try:
        for _ in range(3):
            time.sleep(0.5)
            restart_forwarder(env)
        time.sleep(1.0)
    finally:
        stop.set()
        for t in threads:
            t.join(10)
    assert failures == [], failures[:5]
    assert answered[0] > 50, answered[0]
    # the new forwarder got the node's cache back from the replicas
    env.daemon.wait_running(WORKERS, timeout=10)
    cached = wait_for(
        lambda: (env.daemon.status(0.5).get("dns_forwarder") or {}).get("cache_entries", 0),
        5,
        what="forwarder cache restored",
    )
    assert cached > 0


def test_tcp_answer_over_65535_bytes_cut_with_tc(env: Env) -> None:
    addresses = [f"fd00:77::{i:x}" for i in range(1, 3001)]
    env.put_domain("many.lain", {"ips": addresses, "type": ""})
    wait_for(lambda: env.query("many.lain", "AAAA", tcp=True).answer, 5, what="many.lain")
    pids = env.replica_pids()
    for _ in range(6):  # twice per replica and more: none of them dies
        q = dns.message.make_query("many.lain", "AAAA")
        raw = dns.query.tcp(q, env.host, port=env.port, timeout=3)
        assert raw.flags & dns.flags.TC
        assert 2000 < sum(len(r) for r in raw.answer) < 3000
        assert len(raw.to_wire()) <= 65535
    assert env.replica_pids() == pids
    assert ips(env.query("up.example", tcp=True)) == ["10.20.0.1"]


def test_fatal_replica_leaves_no_client_unanswered(env: Env) -> None:
    """dns.1 cannot start (its bus directory is taken from it) until it is FATAL; the
    shared sockets are read by dns.0, so every client still gets its answer."""
    bus_dir = os.path.join(env.daemon.run_dir, "bus", "dns.1")
    owner = os.stat(bus_dir)
    os.chown(bus_dir, 0, 0)
    try:
        os.kill(env.replica_pids()["dns.1"], signal.SIGKILL)
        wait_for(
            lambda: env.daemon.workers().get("dns.1", {}).get("state") == "FATAL",
            45,  # five failed starts with their backoff, on a busy machine
            what="dns.1 FATAL",
        )
        for _ in range(50):
            assert ips(fresh_query(env, "up.example")) == ["10.20.0.1"]
    finally:
        os.chown(bus_dir, owner.st_uid, owner.st_gid)
    assert env.daemon.ctl("restart", "dns.1").returncode == 0
    env.daemon.wait_running(WORKERS, timeout=15)


def test_restore_on_stop(tmp_path: Any) -> None:
    etcd = EtcdServer().start()
    daemon = Daemon(str(tmp_path), etcd.endpoint, workers=("resolvconf",))
    with open(daemon.resolv_conf, "w") as f:
        f.write("search x\nnameserver 10.0.0.53\noptions rotate\n")
    daemon.start()
    try:
        daemon.wait_running(["resolvconf"], timeout=20)
        wait_for(lambda: open(daemon.resolv_conf).read().startswith("nameserver 127.0.0.1\n"), 3)
        assert daemon.stop() == 0
        with open(daemon.resolv_conf) as f:
            assert f.read() == "search x\nnameserver 10.0.0.53\n"
    finally:
        daemon.close()
        etcd.close()
