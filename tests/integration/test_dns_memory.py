"""Memory is bounded in bytes (issue 10): 100,000 distinct forwarded names with large
answers through the real daemon, and the resident size of every DNS process (both
replicas, the forwarder) stays under ``-dns.cache-size`` plus a fixed overhead."""

import json
import os
import subprocess
from typing import Dict, Iterator, Tuple

import pytest

from tests.support.bind import Bind, zone
from tests.support.daemon import Daemon, dns_worker_pids
from tests.support.etcd import EtcdServer

pytestmark = pytest.mark.lab

CACHE_MIB = 16
NAMES = 100_000
OVERHEAD_MIB = 24  # memos, dict tables, allocator slack: fixed, whatever the load
TEXT = " ".join(f'"{c * 180}"' for c in "abcde")  # a ~950-byte answer
ZONE = zone(f"* TXT {TEXT}", ttl=3600, negative_ttl=3600)


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for {pid}")


def dnsperf(port: int, path: str) -> str:
    cmd = ["dnsperf", "-s", "127.0.0.1", "-p", str(port), "-d", path, "-n", "1"]
    cmd += ["-c", "8", "-q", "100", "-t", "3", "-e"]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300).stdout


@pytest.fixture
def service(tmp_path: str) -> Iterator[Tuple[Daemon, str]]:
    etcd = EtcdServer().start()
    bind = Bind({"mem.test": ZONE}).start()
    client = etcd.client()
    client.put("/lain/config/domain_servers/mem.test", json.dumps({"servers": [bind.address]}))
    client.close()
    d = Daemon(
        str(tmp_path),
        etcd.endpoint,
        workers=("watcher", "resolvconf", "dns"),
        flags={"dns.cache-size": CACHE_MIB},
    )
    d.start()
    try:
        d.wait_running(["watcher", "resolvconf", "dns-forwarder", "dns.0", "dns.1"], timeout=30)
        yield d, str(tmp_path)
    finally:
        d.close()
        bind.close()
        etcd.close()


def names_file(base: str, name: str, count: int) -> str:
    path = os.path.join(base, name)
    with open(path, "w") as f:
        f.writelines(f"{name}{i}.mem.test TXT\n" for i in range(count))
    return path


def test_100000_large_answers_stay_within_the_cache_size(service: Tuple[Daemon, str]) -> None:
    daemon, base = service
    port = daemon.dns_addr[1]
    dnsperf(port, names_file(base, "warm", 2000))
    pids = dns_worker_pids(daemon)
    before: Dict[str, float] = {name: rss_mib(pid) for name, pid in pids.items()}
    out = dnsperf(port, names_file(base, "n", NAMES))
    assert "Queries completed:" in out, out
    completed = int(out.split("Queries completed:")[1].split()[0])
    assert completed >= NAMES * 0.99, out
    after = {name: rss_mib(pid) for name, pid in pids.items()}
    assert dns_worker_pids(daemon) == pids, "a DNS process restarted"
    status = daemon.status(1.5)
    forwarder = status["dns_forwarder"]
    print(f"RSS MiB before {before} after {after}; forwarder cache {forwarder}")
    assert forwarder["cache_bytes"] <= CACHE_MIB << 20
    assert 1000 < forwarder["cache_entries"] < NAMES / 4  # full, and evicting
    for replica in status["dns"]:
        assert replica["cache_bytes"] <= CACHE_MIB << 20
    for name, rss in after.items():
        assert rss <= before[name] + CACHE_MIB + OVERHEAD_MIB, (name, before[name], rss)
