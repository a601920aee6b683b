"""NatRules against real iptables in a throwaway namespace (never the host's tables)."""

from typing import List

from networkd.net.nat_rules import dnat_rules
from tests.integration.netns_fixtures import nsagent  # noqa: F401
from tests.lab.netns import ns_exec


def rules(ip, port=80, cip="172.30.1.2", dest=8080, proto="tcp", comment="app.web"):
    return dnat_rules(ip, proto, port, cip, dest, comment)


def save(ns: str, chain: str = "") -> List[str]:
    out = ns_exec(ns, "iptables", "-w", "-t", "nat", "-S", *([chain] if chain else []))
    return [line for line in out.splitlines() if line.startswith("-A ")]


def counters(ns: str, chain: str) -> List[str]:
    out = ns_exec(ns, "iptables", "-w", "-t", "nat", "-L", chain, "-n", "-v", "-x")
    return [
        " ".join(line.split()[:2]) + " " + " ".join(line.split()[7:])
        for line in out.splitlines()[2:]
    ]


def test_apply_exact_and_idempotent(nsagent):  # noqa: F811
    ns, agent = nsagent
    desired = rules("10.0.0.1") + rules("10.0.0.1", 53, dest=5353, proto="udp")
    result = agent.call("tests.lab.nsops:nat_apply", desired)
    assert result.added == 4 and result.chains_created == 2
    assert sorted(save(ns)) == sorted(
        [
            "-A PREROUTING -j lain-PREROUTING",
            "-A OUTPUT -j lain-OUTPUT",
            "-A lain-PREROUTING -d 10.0.0.1/32 -p tcp -m tcp --dport 80 "
            '-m comment --comment "app.web" '
            "-j DNAT --to-destination 172.30.1.2:8080",
            "-A lain-PREROUTING -d 10.0.0.1/32 -p udp -m udp --dport 53 "
            '-m comment --comment "app.web" '
            "-j DNAT --to-destination 172.30.1.2:5353",
            "-A lain-OUTPUT -d 10.0.0.1/32 -o lo -p tcp -m tcp --dport 80 "
            '-m comment --comment "app.web" -j DNAT --to-destination 172.30.1.2:8080',
            "-A lain-OUTPUT -d 10.0.0.1/32 -o lo -p udp -m udp --dport 53 "
            '-m comment --comment "app.web" -j DNAT --to-destination 172.30.1.2:5353',
        ]
    )
    again = agent.call("tests.lab.nsops:nat_apply", desired)
    assert not again.changed
    assert len(save(ns)) == 6


def test_changes_give_one_rule_per_port(nsagent):  # noqa: F811
    ns, agent = nsagent
    agent.call("tests.lab.nsops:nat_apply", rules("10.0.0.1"))
    for change in (
        {"dest": 9090},
        {"cip": "172.30.1.3", "dest": 9090},
        {"proto": "udp", "dest": 9090},
        {"port": 81, "proto": "udp", "dest": 9090},
    ):
        agent.call("tests.lab.nsops:nat_apply", rules("10.0.0.1", **change))
        pre = save(ns, "lain-PREROUTING")
        out = save(ns, "lain-OUTPUT")
        assert len(pre) == 1 and len(out) == 1, (change, pre, out)
        assert f"--dport {change.get('port', 80)}" in pre[0]
        assert f":{change['dest']}" in pre[0]


def test_neighbour_vip_never_touched(nsagent):  # noqa: F811
    ns, agent = nsagent
    agent.call("tests.lab.nsops:nat_apply", rules("10.0.0.1") + rules("110.0.0.1"))
    # give the 110.0.0.1 rules counters: a delete + re-add would reset them
    for chain in ("lain-PREROUTING", "lain-OUTPUT"):
        lines = save(ns, chain)
        number = 1 + next(i for i, line in enumerate(lines) if "110.0.0.1" in line)
        spec = lines[number - 1].split(" ", 2)[2].replace('"', "")
        ns_exec(ns, "sh", "-c", f"iptables -w -t nat -R {chain} {number} {spec} -c 7 700")
    before = [
        c for c in counters(ns, "lain-PREROUTING") + counters(ns, "lain-OUTPUT") if "110.0.0.1" in c
    ]
    assert all(c.startswith("7 700") for c in before)
    for dest in (9000, 9001):
        agent.call("tests.lab.nsops:nat_apply", rules("10.0.0.1", dest=dest) + rules("110.0.0.1"))
    agent.call("tests.lab.nsops:nat_apply", rules("110.0.0.1"))
    after = [
        c for c in counters(ns, "lain-PREROUTING") + counters(ns, "lain-OUTPUT") if "110.0.0.1" in c
    ]
    assert after == before
    assert not [line for line in save(ns) if " 10.0.0.1/32" in line]


def test_outside_changes_repaired(nsagent):  # noqa: F811
    ns, agent = nsagent
    desired = rules("10.0.0.1") + rules("10.0.0.2")
    agent.call("tests.lab.nsops:nat_apply", desired)
    good = save(ns)
    # an operator deletes one rule, duplicates another, adds a foreign one, and a second jump
    first = good[2].replace("-A ", "-D ", 1).replace('"', "")
    ns_exec(ns, "sh", "-c", f"iptables -w -t nat {first}")
    dup = good[3].replace('"', "")
    ns_exec(ns, "sh", "-c", f"iptables -w -t nat {dup}")
    ns_exec(ns, "iptables", "-w", "-t", "nat", "-A", "PREROUTING", "-j", "lain-PREROUTING")
    result = agent.call("tests.lab.nsops:nat_apply", desired, False)  # the cheap pass sees counts
    assert result.changed
    assert sorted(save(ns)) == sorted(good)
    ns_exec(ns, "iptables", "-w", "-t", "nat", "-A", "lain-OUTPUT", "-p", "tcp", "-j", "ACCEPT")
    agent.call("tests.lab.nsops:nat_apply", desired)
    assert sorted(save(ns)) == sorted(good)
    # in-place edits keep the count: the verifying pass catches them
    spec = good[2].split(" ", 2)[2].replace('"', "").replace("8080", "8999")
    ns_exec(ns, "sh", "-c", f"iptables -w -t nat -R lain-PREROUTING 1 {spec}")
    agent.call("tests.lab.nsops:nat_apply", desired, True)
    assert sorted(save(ns)) == sorted(good)


def test_adopts_go_daemon_rules_and_removes_all(nsagent):  # noqa: F811
    ns, agent = nsagent
    script = (
        "iptables -w -t nat -N lain-PREROUTING && iptables -w -t nat -N lain-OUTPUT && "
        "iptables -w -t nat -A PREROUTING -j lain-PREROUTING && "
        "iptables -w -t nat -A OUTPUT -j lain-OUTPUT && "
        "iptables -w -t nat -A lain-PREROUTING -p tcp -d 10.0.0.1 --dport 80 -j DNAT "
        "--to-destination 172.30.1.2:8080 -m comment --comment app.web"
    )
    ns_exec(ns, "sh", "-c", script)
    counters_line = "iptables -w -t nat -Z lain-PREROUTING"
    ns_exec(ns, "sh", "-c", counters_line)
    result = agent.call("tests.lab.nsops:nat_apply", rules("10.0.0.1"))
    assert result.removed == 0 and result.added == 1  # only the lain-OUTPUT rule was missing
    assert agent.call("tests.lab.nsops:nat_remove_all") == 2
    assert save(ns) == []
    assert "lain-" not in ns_exec(ns, "iptables", "-w", "-t", "nat", "-S")


def save6(ns: str) -> List[str]:
    out = ns_exec(ns, "ip6tables", "-w", "-t", "nat", "-S")
    return [line for line in out.splitlines() if line.startswith("-A ")]


def test_ipv4_and_ipv6_vips_on_one_node(nsagent):  # noqa: F811
    """A node with IPv4 and IPv6 VIPs gets the rules of both. (With iptables 1.8 one process
    finds DNAT for one address family only: the IPv6 rules are made by the applier's helper
    process, networkd/net/nat_helper.py.) Either order, and removal, work."""
    ns, agent = nsagent
    desired = rules("10.0.0.1") + rules("fd00::1", cip="fd01::2")
    result = agent.call("tests.lab.nsops:nat_apply", desired)
    assert not result.failed and result.added == 4
    assert sorted(r.dst for r in result.actual) == ["10.0.0.1", "10.0.0.1", "fd00::1", "fd00::1"]
    assert any("-d 10.0.0.1/32" in line for line in save(ns, "lain-PREROUTING"))
    v6 = [line for line in save6(ns) if "-d fd00::1/128" in line]
    assert len(v6) == 2 and all("--to-destination [fd01::2]:8080" in line for line in v6)
    again = agent.call("tests.lab.nsops:nat_apply", desired)  # the next pass: nothing to do
    assert not again.changed and not again.failed and len(again.actual) == 4
    changed = rules("10.0.0.2") + rules("fd00::2", cip="fd01::3")  # both families change
    result = agent.call("tests.lab.nsops:nat_apply", changed)
    assert not result.failed and result.added == 4 and result.removed == 4
    assert agent.call("tests.lab.nsops:nat_remove_all") == 4
    assert save6(ns) == [] and save(ns) == []
