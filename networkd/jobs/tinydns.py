"""``-tinydns``: the tinydns workers as the domain servers of ``lain`` (and ``-domain``).

Input: apps keys ``/lain/networkd/apps/tinydns/worker/<ip>:<port>`` (``state.apps``).
Output: ``/lain/config/domain_servers/lain`` = ``{"servers":["ip#port",...]}`` in key
order, and the same under ``/<domain>`` when ``-domain`` is set and is not ``lain``.
"""

from typing import Dict, List

from networkd import keys
from networkd.bus.messages import AppsKey
from networkd.jobs.outputs import JobResult, compact_json

APP = "tinydns"
PROC = "worker"


def proc_endpoints(
    apps: Dict[str, AppsKey], app: str, proc: str, result: JobResult
) -> List[AppsKey]:
    """The valid apps keys of one proc, in key order; bad ones go to ``result.errors``."""
    found = []
    for item_key in sorted(apps):
        item = apps[item_key]
        if item.app != app or item.proc != proc:
            continue
        try:
            ip = str(keys.parse_ip(item.ip))
            if not 0 < int(item.port) < 65536:
                raise keys.KeyLayoutError(f"not a port in 1..65535: {item.port!r}")
        except (keys.KeyLayoutError, TypeError, ValueError) as exc:
            result.errors[keys.APPS_PREFIX + item_key] = str(exc)
            continue
        found.append(
            AppsKey(app=item.app, proc=item.proc, ip=ip, port=int(item.port), node=item.node)
        )
    return found


def tinydns_outputs(apps: Dict[str, AppsKey], domain: str) -> JobResult:
    result = JobResult()
    servers = []
    for item in proc_endpoints(apps, APP, PROC, result):
        server = f"{item.ip}#{item.port}"
        if server not in servers:
            servers.append(server)
    value = compact_json({"servers": servers})
    result.puts[keys.domain_servers_key("lain")] = value
    if domain and domain != "lain":
        result.puts[keys.domain_servers_key(domain)] = value
    return result
