"""AclRules against real iptables in a throwaway namespace (SPEC section 6)."""

from typing import List

from networkd.bus.messages import AclList
from tests.integration.netns_fixtures import nsagent  # noqa: F401
from tests.lab.netns import ns_exec

BASE = [
    "-A INPUT -i lo -j ACCEPT",
    "-A INPUT -i docker0 -j ACCEPT",
    "-A INPUT -i cali+ -j ACCEPT",
    "-A INPUT -m state --state INVALID -j DROP",
    "-A INPUT -m state --state RELATED,ESTABLISHED -j ACCEPT",
    "-A INPUT -p tcp -m tcp --dport 22 -j ACCEPT",
]


def save(ns: str, chain: str) -> List[str]:
    return ns_exec(ns, "iptables", "-w", "-S", chain, check=False).splitlines()


def acl(ips=(), ex=None, inp=None):
    items = {}
    if ips:
        items["whitelist_ips"] = AclList("whitelist_ips", items=list(ips))
    for proto, ports in (ex or {}).items():
        items[f"ex_ports/{proto}"] = AclList(f"ex_ports/{proto}", items=list(ports))
    for source, ports in (inp or {}).items():
        items[f"in_ports/{source}"] = AclList(f"in_ports/{source}", ports=ports)
    return items


def test_input_chain_as_spec(nsagent):  # noqa: F811
    ns, agent = nsagent
    ns_exec(ns, "iptables", "-w", "-A", "INPUT", "-p", "icmp", "-j", "ACCEPT")  # an operator's rule
    result = agent.call(
        "tests.lab.nsops:acl_apply",
        acl(["10.1.0.0/16"], {"tcp": ["80", "443"]}, {"10.9.0.1-10.9.0.5": {"tcp": ["8080"]}}),
    )
    assert result.policy_changed and not result.errors
    assert save(ns, "INPUT") == [
        "-P INPUT DROP",
        "-A INPUT -p icmp -j ACCEPT",
        *BASE,
        "-A INPUT -s 10.1.0.0/16 -j lain-ENTRY",
        "-A INPUT -p tcp -m multiport --dports 80,443 -j lain-ENTRY",
        "-A INPUT -m iprange --src-range 10.9.0.1-10.9.0.5 -j lain-INPUT",
    ]
    assert save(ns, "lain-ENTRY") == ["-N lain-ENTRY", "-A lain-ENTRY -j ACCEPT"]
    assert save(ns, "lain-INPUT") == [
        "-N lain-INPUT",
        "-A lain-INPUT -p tcp -m iprange --src-range 10.9.0.1-10.9.0.5 "
        "-m multiport --dports 8080 -j ACCEPT",
    ]
    again = agent.call(
        "tests.lab.nsops:acl_apply",
        acl(["10.1.0.0/16"], {"tcp": ["443", "80"]}, {"10.9.0.1-10.9.0.5": {"tcp": ["8080"]}}),
    )
    assert not again.changed


def test_whitelist_changes_replace(nsagent):  # noqa: F811
    ns, agent = nsagent
    agent.call(
        "tests.lab.nsops:acl_apply",
        acl(["10.1.0.1"], {"tcp": ["80"]}, {"10.2.0.0/16": {"udp": ["53"]}}),
    )
    agent.call(
        "tests.lab.nsops:acl_apply",
        acl(["10.1.0.2"], {"udp": ["53"]}, {"10.3.0.1": {"tcp": ["22", "8080"]}}),
    )
    rules = save(ns, "INPUT")[1:]
    assert rules == [
        *BASE,
        "-A INPUT -s 10.1.0.2/32 -j lain-ENTRY",
        "-A INPUT -p udp -m multiport --dports 53 -j lain-ENTRY",
        "-A INPUT -s 10.3.0.1/32 -j lain-INPUT",
    ]
    assert save(ns, "lain-INPUT")[1:] == [
        "-A lain-INPUT -s 10.3.0.1/32 -p tcp -m multiport --dports 22,8080 -j ACCEPT"
    ]
    # more than 15 ports: split
    agent.call("tests.lab.nsops:acl_apply", acl(ex={"tcp": [str(p) for p in range(2000, 2020)]}))
    multiport = [line for line in save(ns, "INPUT") if "multiport" in line]
    assert len(multiport) == 2
    assert "2000,2001" in multiport[0] and multiport[1].endswith(
        "2015,2016,2017,2018,2019 -j lain-ENTRY"
    )


def test_outside_damage_and_duplicates_repaired(nsagent):  # noqa: F811
    ns, agent = nsagent
    items = acl(["10.1.0.1"])
    agent.call("tests.lab.nsops:acl_apply", items)
    good = save(ns, "INPUT")
    ns_exec(ns, "iptables", "-w", "-D", "INPUT", "-i", "lo", "-j", "ACCEPT")
    ns_exec(ns, "iptables", "-w", "-A", "INPUT", "-s", "10.1.0.1", "-j", "lain-ENTRY")
    ns_exec(ns, "iptables", "-w", "-A", "INPUT", "-s", "10.6.6.6", "-p", "tcp", "-j", "lain-ENTRY")
    ns_exec(ns, "iptables", "-w", "-P", "INPUT", "ACCEPT")
    result = agent.call("tests.lab.nsops:acl_apply", items)
    assert result.changed and result.policy_changed
    assert sorted(save(ns, "INPUT")) == sorted(good)


def test_remove_restores_accept(nsagent):  # noqa: F811
    ns, agent = nsagent
    ns_exec(ns, "iptables", "-w", "-A", "INPUT", "-p", "icmp", "-j", "ACCEPT")
    agent.call(
        "tests.lab.nsops:acl_apply",
        acl(["10.1.0.1"], {"tcp": ["80"]}, {"10.2.0.0/16": {"udp": ["53"]}}),
    )
    assert agent.call("tests.lab.nsops:acl_remove") > 0
    assert save(ns, "INPUT") == ["-P INPUT ACCEPT", "-A INPUT -p icmp -j ACCEPT"]
    assert "lain-" not in ns_exec(ns, "iptables", "-w", "-S")
    assert agent.call("tests.lab.nsops:acl_remove") == 0  # idempotent
