"""DNS end to end through the real daemon: etcd -> watcher -> dns replicas, the
resolvconf keeper, privileges, bad packets and SIGKILLed replicas under load."""

import json
import os
import random
import signal
import socket
import struct
import threading
import time
import urllib.request
from typing import Any, Dict, Iterator, List, Tuple

import dns.message
import dns.query
import dns.rcode
import pytest

from tests.support.daemon import Daemon, wait_for, worker_pids_of
from tests.support.dnsmasq import Dnsmasq
from tests.support.etcd import EtcdServer

NODE_ADDRESS = "10.55.0.1"


def loopback_address() -> str:
    """A random 127/8 address: resolv.conf cannot name a port, so upstreams use port 53."""
    return f"127.{random.randrange(100, 250)}.{random.randrange(1, 250)}.{random.randrange(2, 250)}"


def ips(msg: dns.message.Message) -> List[str]:
    return sorted(rd.to_text() for rrset in msg.answer for rd in rrset)


class Env:
    def __init__(self, etcd: EtcdServer, daemon: Daemon, upstream: Dnsmasq) -> None:
        self.etcd = etcd
        self.daemon = daemon
        self.upstream = upstream
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

    def live_replica_pids(self) -> Dict[str, int]:
        """From /proc (fast, no bus): the daemon's descendants titled ``networkd: dns [N]``."""
        assert self.daemon.proc is not None
        out = {}
        for pid in worker_pids_of([self.daemon.proc.pid]):
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    title = f.read().split(b"\0")[0].decode(errors="replace")
            except OSError:
                continue
            if title.startswith("networkd: dns ["):
                out["dns." + title.split("[", 1)[1].split("]")[0]] = pid
        return out


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    etcd = EtcdServer().start()
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
        daemon.wait_running(["watcher", "resolvconf", "dns.0", "dns.1", "api"], timeout=30)
        e = Env(etcd, daemon, upstream)
        e.wait_answer("up.example", ["10.20.0.1"])
        yield e
    finally:
        daemon.close()
        upstream.close()
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


def test_replicas_unprivileged(env: Env) -> None:
    for name, pid in env.replica_pids().items():
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


def test_sigkill_replicas_under_load_loses_no_query(env: Env) -> None:
    env.put_domain("load.lain", {"ips": ["10.0.0.88"], "type": ""})
    env.wait_answer("load.lain", ["10.0.0.88"])
    results: List[Tuple[str, float]] = []
    stop = threading.Event()

    def client(seed: int) -> None:
        rng = random.Random(seed)
        while not stop.is_set():
            # a new socket (source port) each time, so queries hash to every replica
            name = "load.lain" if rng.random() < 0.7 else "up.example"
            want = ["10.0.0.88"] if name == "load.lain" else ["10.20.0.1"]
            start = time.monotonic()
            try:
                msg = env.query(name, timeout=6.0)
                ok = "ok" if ips(msg) == want else f"bad {msg.rcode()} {ips(msg)}"
            except Exception as exc:
                ok = f"lost {exc!r}"
            results.append((ok, time.monotonic() - start))
            time.sleep(0.01)

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(4)]
    for t in threads:
        t.start()
    kills = 0
    deadline = time.monotonic() + 10
    names = sorted(env.replica_pids())
    while time.monotonic() < deadline:
        name = names[kills % len(names)]
        try:
            os.kill(env.live_replica_pids()[name], signal.SIGKILL)
            kills += 1
        except (ProcessLookupError, KeyError):
            pass
        time.sleep(0.2)
    time.sleep(1.0)
    stop.set()
    for t in threads:
        t.join(10)
    failures = [r for r in results if r[0] != "ok"]
    print(f"kills={kills} queries={len(results)} slowest={max(r[1] for r in results):.3f}s")
    assert kills >= 30
    assert len(results) > 300
    assert failures == [], failures[:5]
    env.daemon.wait_running(["dns.0", "dns.1"], timeout=10)


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
