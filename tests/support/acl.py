"""ACL test helpers: state.acl items as the watcher publishes them, the rule lines networkd
writes, an operator's stock ruleset, and reading/loading a namespace's filter table."""

import subprocess
from typing import Dict, Iterable, List, Mapping, Optional, Sequence

from networkd.bus.messages import AclList
from tests.lab.netns import ns_exec

# The SPEC section 6 base rules of lain-ACL as ``iptables -S`` prints them.
BASE = [
    "-A lain-ACL -i lo -j ACCEPT",
    "-A lain-ACL -i docker0 -j ACCEPT",
    "-A lain-ACL -i cali+ -j ACCEPT",
    "-A lain-ACL -m state --state INVALID -j DROP",
    "-A lain-ACL -m state --state RELATED,ESTABLISHED -j ACCEPT",
    "-A lain-ACL -p tcp -m tcp --dport 22 -j ACCEPT",
]
BASE6 = [*BASE, "-A lain-ACL -p ipv6-icmp -j ACCEPT"]
JUMP = '-A INPUT -m comment --comment "networkd acl, input policy before: {}" -j lain-ACL'

# CentOS 7 iptables-services' stock /etc/sysconfig/iptables, REJECT last.
CENTOS = """*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
-A INPUT -m state --state RELATED,ESTABLISHED -j ACCEPT
-A INPUT -p icmp -j ACCEPT
-A INPUT -i lo -j ACCEPT
-A INPUT -p tcp -m state --state NEW -m tcp --dport 22 -j ACCEPT
-A INPUT -j REJECT --reject-with icmp-host-prohibited
-A FORWARD -j REJECT --reject-with icmp-host-prohibited
COMMIT
"""


def acl_items(
    ips: Iterable[str] = (),
    ex: Optional[Mapping[str, Sequence[str]]] = None,
    inp: Optional[Mapping[str, Dict[str, List[str]]]] = None,
) -> Dict[str, AclList]:
    """``state.acl`` items: whitelist_ips, ex_ports/<proto>, in_ports/<source>."""
    items = {"whitelist_ips": AclList("whitelist_ips", items=list(ips))}
    for proto, ports in (ex or {}).items():
        items[f"ex_ports/{proto}"] = AclList(f"ex_ports/{proto}", items=list(ports))
    for source, by_proto in (inp or {}).items():
        items[f"in_ports/{source}"] = AclList(f"in_ports/{source}", ports=dict(by_proto))
    return items


def filter_table(ns: str, tool: str = "iptables") -> List[str]:
    """``iptables-save -t filter`` of a namespace without comments and counters."""
    lines = []
    for line in ns_exec(ns, f"{tool}-save", "-t", "filter").splitlines():
        if line.startswith("#"):
            continue
        lines.append(line.split(" [")[0] if line.startswith(":") else line)
    return lines


def restore(ns: str, text: str, tool: str = "iptables") -> None:
    """Load a ruleset into a namespace as iptables-services does at boot."""
    subprocess.run(["ip", "netns", "exec", ns, f"{tool}-restore"], input=text, text=True,
                   check=True, timeout=30)  # fmt: skip
