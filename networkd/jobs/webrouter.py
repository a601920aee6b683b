"""``-webrouter``: tinydns-data lines for ``webrouter.lain`` and the wildcard of the domain.

Input: apps keys ``/lain/networkd/apps/webrouter/worker/<ip>:<port>``. Outputs, as the
Go daemon wrote them (``/lain/config/tinydns_fqdns/<name>`` = JSON list of lines):

- ``webrouter.lain``: ``+webrouter.lain:<ip>:300`` per webrouter IP;
- ``<domain>`` for ``-domain`` (when set) and for ``lain``: ``+*.<domain>:<ip>:300`` and
  ``.<domain>:<ip>:a:300`` per IP (the wildcard ``*.lain`` and the NS/SOA of the zone).

IPs are unique and sorted. With no webrouter at all nothing is written (as the Go daemon).
"""

import ipaddress
from typing import Dict, List

from networkd import keys
from networkd.bus.messages import AppsKey
from networkd.jobs.outputs import JobResult, compact_json
from networkd.jobs.tinydns import proc_endpoints

APP = "webrouter"
PROC = "worker"
TTL = 300


def webrouter_ips(apps: Dict[str, AppsKey], result: JobResult) -> List[str]:
    ips = {item.ip for item in proc_endpoints(apps, APP, PROC, result)}
    return sorted(ips, key=lambda ip: (ipaddress.ip_address(ip).version, ipaddress.ip_address(ip)))


def webrouter_outputs(apps: Dict[str, AppsKey], domain: str) -> JobResult:
    result = JobResult()
    ips = webrouter_ips(apps, result)
    if not ips:
        return result
    result.puts[keys.tinydns_fqdn_key("webrouter.lain")] = compact_json(
        [f"+webrouter.lain:{ip}:{TTL}" for ip in ips]
    )
    domains = []
    if domain:
        domains.append(domain)
    if domain != "lain":
        domains.append("lain")
    for name in domains:
        lines = []
        for ip in ips:
            lines.append(f"+*.{name}:{ip}:{TTL}")
            lines.append(f".{name}:{ip}:a:{TTL}")
        result.puts[keys.tinydns_fqdn_key(name)] = compact_json(lines)
    return result
