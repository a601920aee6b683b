"""The ACL never locks an operator out (issue 11): a real daemon (watcher + applier, ``-acl``)
in a lab node, whitelists from a real etcd, an SSH-like session from a client namespace,
and start, SIGKILL, restart and stop. IPv6 sources go through ip6tables; rejected whitelist
values reach ``state.config_errors`` under their etcd key."""

import json
import socket
import threading
import time
from typing import Any, Iterator, List

import pytest

from networkd import keys
from tests.lab import Lab, LabNode
from tests.lab.netns import in_netns, ip
from tests.lab.standin import BusStandIn
from tests.support.acl import CENTOS, filter_table, restore
from tests.support.daemon import networkd_pids, wait_for

pytestmark = pytest.mark.lab

NODE6, CLIENT6, STRANGER6 = "fd77::11", "fd77::100", "fd77::101"
BARE = "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n"
TOOLS = ("iptables", "ip6tables")


class EchoServer:
    """Echoes whatever a connection sends, on a socket of a lab namespace (test threads)."""

    def __init__(self, ns: str, family: int, port: int) -> None:
        with in_netns(ns):
            self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            self.sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        self.sock.bind(("::" if family == socket.AF_INET6 else "0.0.0.0", port))
        self.sock.listen(16)
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._echo, args=(conn,), daemon=True).start()

    @staticmethod
    def _echo(conn: socket.socket) -> None:
        with conn:
            while True:
                try:
                    data = conn.recv(4096)
                except OSError:
                    return
                if not data:
                    return
                conn.sendall(data)

    def close(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()


class Session:
    """A long-lived TCP connection from a client namespace (an SSH session, as the ACL sees it)."""

    def __init__(self, ns: str, host: str, port: int, source: str = "", timeout: float = 2.0):
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with in_netns(ns):
            self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.count = 0
        try:
            if source:
                self.sock.bind((source, 0))
            self.sock.connect((host, port))
        except OSError:
            self.sock.close()
            raise

    def exchange(self) -> None:
        self.count += 1
        payload = f"ping {self.count}\n".encode()
        self.sock.sendall(payload)
        data = b""
        while len(data) < len(payload):
            chunk = self.sock.recv(4096)
            assert chunk, "the session was closed"
            data += chunk
        assert data == payload

    def close(self) -> None:
        self.sock.close()


def reaches(ns: str, host: str, port: int, source: str = "") -> bool:
    """A new connection is accepted and echoes (drops time out, rejects are refused)."""
    try:
        session = Session(ns, host, port, source, timeout=0.7)
    except OSError:
        return False
    try:
        session.exchange()
        return True
    finally:
        session.close()


def without_ours(lines: List[str], mask_policy: bool = False) -> List[str]:
    """An ``iptables-save`` with our chains and jump taken out: the operator's rules."""
    kept = []
    for line in lines:
        if line.startswith((":lain-", "-A lain-")) or (
            line.startswith("-A INPUT") and " -j lain-" in line
        ):
            continue
        if mask_policy and line.startswith(":INPUT "):
            line = ":INPUT (policy of the ACL)"
        kept.append(line)
    return kept


def our_chains(node: LabNode) -> List[str]:
    return [line for tool in TOOLS for line in filter_table(node.ns, tool) if "lain-" in line]


def acl_installed(node: LabNode) -> bool:
    tables = [filter_table(node.ns, tool) for tool in TOOLS]
    return all(":INPUT DROP" in t and any(" -j lain-ACL" in line for line in t) for t in tables)


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    with Lab(nodes=1, clients=1) as lab:
        node, client = lab.nodes[0], lab.client
        ip("addr", "add", f"{NODE6}/64", "dev", "eth0", "nodad", netns=node.ns)
        for address in (CLIENT6, STRANGER6):
            ip("addr", "add", f"{address}/64", "dev", "eth0", "nodad", netns=client.ns)
        etcd = lab.etcd.client()
        etcd.put(keys.WHITELIST_IPS, json.dumps(["10.99.0.0/16"]))
        etcd.put(keys.whitelist_in_ports_key(CLIENT6), json.dumps({"ports": {"tcp": ["7000"]}}))
        etcd.put(keys.whitelist_ex_ports_key("icmp"), json.dumps(["8"]))  # rejected
        servers = [
            EchoServer(node.ns, socket.AF_INET, 22),
            EchoServer(node.ns, socket.AF_INET, 7000),
            EchoServer(node.ns, socket.AF_INET6, 7000),
        ]
        try:
            yield lab
        finally:
            for server in servers:
                server.close()


class Node:
    """The daemon of the lab node, started and ended the ways an operator's node sees."""

    def __init__(self, node: LabNode) -> None:
        self.node = node
        self.daemon: Any = None

    def start(self) -> BusStandIn:
        self.daemon = self.node.start_networkd(workers=["watcher", "applier"], acl=True)
        self.daemon.wait_running(["watcher", "applier"])
        bus = BusStandIn(
            self.daemon.run_dir, [], {"watcher": ["state.config_errors"], "applier": ["config."]}
        )
        wait_for(lambda: acl_installed(self.node), 10, what="the ACL in both families")
        time.sleep(1.2)  # one more periodic pass (1 s): what it keeps coming back to
        return bus

    def kill(self) -> None:
        run_dir = self.daemon.run_dir
        self.daemon.kill()  # SIGKILL the supervisor; its workers die with it
        wait_for(lambda: not networkd_pids(run_dir), 5, what="no networkd process left")

    def stop(self) -> None:
        assert self.daemon.stop() == 0, self.daemon.log()[-3000:]

    def close(self) -> None:
        if self.daemon is not None:
            self.daemon.close()


def test_iptables_services_ruleset_survives_start_sigkill_restart_stop(lab: Lab) -> None:
    node, client = lab.nodes[0], lab.client
    restore(node.ns, CENTOS)  # REJECT last in INPUT and FORWARD
    restore(node.ns, BARE, "ip6tables")
    operator = {tool: filter_table(node.ns, tool) for tool in TOOLS}
    ssh = Session(client.ns, node.ip, 22)
    ssh.exchange()
    daemon = Node(node)

    def check(running: bool) -> None:
        ssh.exchange()  # the long-lived session keeps exchanging data
        assert reaches(client.ns, node.ip, 22)  # and new SSH connections work
        for tool in TOOLS:  # the operator's rules, byte for byte
            now = filter_table(node.ns, tool)
            if running:
                assert without_ours(now, mask_policy=True) == without_ours(operator[tool], True)
            else:
                assert now == operator[tool]
        # IPv6: only the whitelisted source reaches its port (neighbour discovery included)
        for ns in (node.ns, client.ns):
            ip("-6", "neigh", "flush", "dev", "eth0", netns=ns, check=False)
        assert reaches(client.ns, NODE6, 7000, source=CLIENT6)
        assert reaches(client.ns, NODE6, 7000, source=STRANGER6) is not running

    try:
        bus = daemon.start()
        check(running=True)
        # the rejected whitelist value is a config error under its etcd key, nowhere else
        key = keys.whitelist_ex_ports_key("icmp")
        wait_for(lambda: key in (bus.state("watcher", "state.config_errors") or {}), 5)
        assert bus.events("config.error") == []  # the applier judges nothing
        bus.close()
        ours = our_chains(node)
        assert ours and not [line for line in ours if line.endswith("--dports 8 -j lain-ENTRY")]

        daemon.kill()
        check(running=True)
        assert our_chains(node) == ours

        daemon.start().close()
        check(running=True)
        assert our_chains(node) == ours  # adopted: nothing duplicated, nothing moved

        daemon.stop()
        check(running=False)
    finally:
        ssh.close()
        daemon.close()


def test_sigkill_with_policy_drop_keeps_ssh_and_replies(lab: Lab) -> None:
    """Without any rule of the operator, our chain alone lets SSH and established flows in."""
    node, client = lab.nodes[0], lab.client
    for tool in TOOLS:
        restore(node.ns, BARE, tool)
    bare = {tool: filter_table(node.ns, tool) for tool in TOOLS}
    ssh = Session(client.ns, node.ip, 22)
    daemon = Node(node)
    try:
        daemon.start().close()
        daemon.kill()
        assert acl_installed(node)  # policy DROP, nobody left to reconcile
        ssh.exchange()
        assert reaches(client.ns, node.ip, 22)
        assert not reaches(client.ns, node.ip, 7000)  # the ACL is on: 7000 is not whitelisted
        daemon.start().close()
        daemon.stop()
        assert {tool: filter_table(node.ns, tool) for tool in TOOLS} == bare  # ACCEPT again
        ssh.exchange()
        assert reaches(client.ns, node.ip, 7000)
    finally:
        ssh.close()
        daemon.close()
