"""AclRules against real iptables and ip6tables in a throwaway namespace (SPEC section 6)."""

from typing import List

from tests.integration.netns_fixtures import nsagent  # noqa: F401
from tests.lab.netns import ns_exec
from tests.support.acl import BASE, BASE6, CENTOS, JUMP, filter_table, restore
from tests.support.acl import acl_items as acl

# What the Go daemon left after a SIGKILL: unmarked base rules, jumps, chains, DROP.
GO_LEFTOVERS = """*filter
:INPUT DROP [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:lain-ENTRY - [0:0]
:lain-INPUT - [0:0]
-A INPUT -i lo -j ACCEPT
-A INPUT -i docker0 -j ACCEPT
-A INPUT -i cali+ -j ACCEPT
-A INPUT -m state --state INVALID -j DROP
-A INPUT -m state --state RELATED,ESTABLISHED -j ACCEPT
-A INPUT -p tcp -m tcp --dport 22 -j ACCEPT
-A INPUT -s 10.1.0.1/32 -j lain-ENTRY
-A INPUT -s 10.6.6.6/32 -j lain-ENTRY
-A INPUT -s 10.2.0.0/16 -j lain-INPUT
-A lain-ENTRY -j ACCEPT
-A lain-INPUT -s 10.2.0.0/16 -p udp -m multiport --dports 53 -j ACCEPT
COMMIT
"""


def save(ns: str, chain: str, tool: str = "iptables") -> List[str]:
    return ns_exec(ns, tool, "-w", "-S", chain, check=False).splitlines()


def test_layout_families_and_no_churn(nsagent):  # noqa: F811
    ns, agent = nsagent
    ns_exec(ns, "iptables", "-w", "-A", "INPUT", "-p", "icmp", "-j", "ACCEPT")  # an operator's rule
    items = acl(
        ["10.1.0.0/16", "0.0.0.0/0", "2001:db8::/32", "::/0"],
        {"tcp": ["80", "443"]},
        {"10.9.0.1-10.9.0.5": {"tcp": ["8080"]}, "fd00::1-fd00::9": {"udp": ["53"]}},
    )
    result = agent.call("tests.lab.nsops:acl_apply", items)
    assert result.policy_changed and not result.failed
    assert save(ns, "INPUT") == [
        "-P INPUT DROP",
        JUMP.format("ACCEPT"),
        "-A INPUT -p icmp -j ACCEPT",
    ]
    assert save(ns, "lain-ACL")[1:] == [
        *BASE,
        "-A lain-ACL -s 10.1.0.0/16 -j lain-ENTRY",
        "-A lain-ACL -j lain-ENTRY",
        "-A lain-ACL -p tcp -m multiport --dports 80,443 -j lain-ENTRY",
        "-A lain-ACL -m iprange --src-range 10.9.0.1-10.9.0.5 -j lain-INPUT",
    ]
    assert save(ns, "lain-ENTRY") == ["-N lain-ENTRY", "-A lain-ENTRY -j ACCEPT"]
    assert save(ns, "lain-INPUT")[1:] == [
        "-A lain-INPUT -p tcp -m iprange --src-range 10.9.0.1-10.9.0.5 "
        "-m multiport --dports 8080 -j ACCEPT",
    ]
    # IPv6 entries land in ip6tables only, the same chains and mark
    assert save(ns, "INPUT", "ip6tables") == ["-P INPUT DROP", JUMP.format("ACCEPT")]
    assert save(ns, "lain-ACL", "ip6tables")[1:] == [
        *BASE6,
        "-A lain-ACL -s 2001:db8::/32 -j lain-ENTRY",
        "-A lain-ACL -j lain-ENTRY",
        "-A lain-ACL -p tcp -m multiport --dports 80,443 -j lain-ENTRY",
        "-A lain-ACL -m iprange --src-range fd00::1-fd00::9 -j lain-INPUT",
    ]
    assert save(ns, "lain-INPUT", "ip6tables")[1:] == [
        "-A lain-INPUT -p udp -m iprange --src-range fd00::1-fd00::9 "
        "-m multiport --dports 53 -j ACCEPT",
    ]
    # read back equal to the plan: a second pass (and a restarted applier's) changes nothing
    assert not agent.call("tests.lab.nsops:acl_apply", items).changed
    agent.call("tests.lab.nsops:acl_restart")
    assert not agent.call("tests.lab.nsops:acl_apply", items).changed


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
    assert save(ns, "lain-ACL")[len(BASE) + 1 :] == [
        "-A lain-ACL -s 10.1.0.2/32 -j lain-ENTRY",
        "-A lain-ACL -p udp -m multiport --dports 53 -j lain-ENTRY",
        "-A lain-ACL -s 10.3.0.1/32 -j lain-INPUT",
    ]
    assert save(ns, "lain-INPUT")[1:] == [
        "-A lain-INPUT -s 10.3.0.1/32 -p tcp -m multiport --dports 22,8080 -j ACCEPT"
    ]
    # more than 15 ports: split
    agent.call("tests.lab.nsops:acl_apply", acl(ex={"tcp": [str(p) for p in range(2000, 2020)]}))
    multiport = [line for line in save(ns, "lain-ACL") if "multiport" in line]
    assert len(multiport) == 2
    assert "2000,2001" in multiport[0] and multiport[1].endswith(
        "2015,2016,2017,2018,2019 -j lain-ENTRY"
    )


def test_outside_damage_repaired_operator_rules_untouched(nsagent):  # noqa: F811
    ns, agent = nsagent
    restore(ns, CENTOS)
    operator = filter_table(ns)
    items = acl(["10.1.0.1"])
    agent.call("tests.lab.nsops:acl_apply", items)
    good = filter_table(ns)
    ns_exec(ns, "iptables", "-w", "-D", "lain-ACL", "-i", "lo", "-j", "ACCEPT")
    ns_exec(ns, "iptables", "-w", "-A", "lain-ACL", "-s", "10.1.0.1", "-j", "lain-ENTRY")
    ns_exec(ns, "iptables", "-w", "-D", "INPUT", "1")  # our jump
    ns_exec(ns, "iptables", "-w", "-A", "INPUT", "-s", "10.6.6.6", "-j", "lain-ENTRY")
    ns_exec(ns, "iptables", "-w", "-P", "INPUT", "ACCEPT")
    result = agent.call("tests.lab.nsops:acl_apply", items)
    assert result.changed and result.policy_changed
    assert filter_table(ns) == good
    # the stop restores ACCEPT (the jump's record survived in memory) and leaves the
    # operator's rules exactly as they were, identical base rules included
    assert agent.call("tests.lab.nsops:acl_remove") > 0
    assert filter_table(ns) == operator
    assert "lain-" not in ns_exec(ns, "ip6tables-save")
    assert agent.call("tests.lab.nsops:acl_remove") == 0  # idempotent


def test_policy_restored_only_when_networkd_changed_it(nsagent):  # noqa: F811
    ns, agent = nsagent
    # the operator's DROP (with their own SSH rule): stop leaves DROP, in both families
    for tool in ("iptables", "ip6tables"):
        ns_exec(ns, tool, "-w", "-A", "INPUT", "-p", "tcp", "--dport", "22", "-j", "ACCEPT")
        ns_exec(ns, tool, "-w", "-P", "INPUT", "DROP")
    before = {tool: filter_table(ns, tool) for tool in ("iptables", "ip6tables")}
    result = agent.call("tests.lab.nsops:acl_apply", acl(["10.1.0.1", "fd00::1"]))
    assert not result.policy_changed
    assert save(ns, "INPUT")[1] == JUMP.format("DROP")
    agent.call("tests.lab.nsops:acl_restart")  # the record lives in the rule, not the process
    agent.call("tests.lab.nsops:acl_remove")
    assert {tool: filter_table(ns, tool) for tool in before} == before

    # ACCEPT before: DROP while we run, across a restart, ACCEPT after the stop
    for tool in ("iptables", "ip6tables"):
        ns_exec(ns, tool, "-w", "-P", "INPUT", "ACCEPT")
    agent.call("tests.lab.nsops:acl_apply", acl(["10.1.0.1"]))
    agent.call("tests.lab.nsops:acl_restart")
    again = agent.call("tests.lab.nsops:acl_apply", acl(["10.1.0.1"]))
    assert not again.changed
    assert save(ns, "INPUT")[:2] == ["-P INPUT DROP", JUMP.format("ACCEPT")]
    agent.call("tests.lab.nsops:acl_restart")
    agent.call("tests.lab.nsops:acl_remove")
    for tool in ("iptables", "ip6tables"):
        assert save(ns, "INPUT", tool) == [
            "-P INPUT ACCEPT",
            "-A INPUT -p tcp -m tcp --dport 22 -j ACCEPT",
        ]


def test_upgrade_from_the_go_daemon(nsagent):  # noqa: F811
    ns, agent = nsagent
    restore(ns, GO_LEFTOVERS)
    agent.call("tests.lab.nsops:acl_apply", acl(["10.1.0.1"]))
    rules = save(ns, "INPUT")
    go_base = [line.replace("lain-ACL", "INPUT") for line in BASE]
    # its jumps into lain-ENTRY / lain-INPUT (stale grants) are gone, its unmarked base
    # rules (which nothing tells from an operator's) stay; its DROP counts as networkd's
    assert rules == ["-P INPUT DROP", JUMP.format("ACCEPT"), *go_base]
    assert save(ns, "lain-INPUT") == ["-N lain-INPUT"]
    agent.call("tests.lab.nsops:acl_remove")
    assert save(ns, "INPUT") == ["-P INPUT ACCEPT", *go_base]
    assert "lain-" not in ns_exec(ns, "iptables-save")
