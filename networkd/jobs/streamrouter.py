"""``-streamrouter``: one floating VIP per IP of the streamrouter pool.

Input: ``/lain/config/streamrouter/vippool`` (JSON list of IPs; ``state.streamrouter``,
which also carries the streamrouter ports). Output: ``/lain/config/vips/<IP>`` =
``{"app":"streamrouter","proc":"worker","ports":[{"src":"P","proto":"tcp","dest":"P"}],
"excluded_nodes":[]}`` per pool IP. Keys of IPs that left the pool are deleted, but only
while they still hold a streamrouter value (a VIP an operator re-purposed is left alone).
"""

import json
from typing import Collection, List, Optional

from networkd import keys
from networkd.bus.messages import StreamrouterPool
from networkd.jobs.outputs import JobResult, compact_json

APP = "streamrouter"
PROC = "worker"


def vip_value(ports: List[int]) -> str:
    return compact_json(
        {
            "app": APP,
            "proc": PROC,
            "ports": [{"src": str(p), "proto": "tcp", "dest": str(p)} for p in ports],
            "excluded_nodes": [],
        }
    )


def is_streamrouter_value(text: str) -> bool:
    try:
        data = json.loads(text)
    except ValueError:
        return False
    return isinstance(data, dict) and data.get("app") == APP and data.get("proc") == PROC


def valid_pool_ips(pool: Optional[StreamrouterPool], result: JobResult) -> List[str]:
    ips: List[str] = []
    if pool is None:
        return ips
    for text in pool.ips:
        try:
            ip = keys.parse_ip(text)
            if ip.is_unspecified or ip.is_multicast:
                raise keys.KeyLayoutError(f"not a unicast address: {text!r}")
        except keys.KeyLayoutError as exc:
            result.errors[keys.STREAMROUTER_VIPPOOL] = f"streamrouter pool entry rejected: {exc}"
            continue
        if str(ip) not in ips:
            ips.append(str(ip))
    return ips


def streamrouter_outputs(pool: Optional[StreamrouterPool], departed: Collection[str]) -> JobResult:
    """``departed``: IPs seen in earlier pools; those not in the pool now are deleted."""
    result = JobResult()
    ips = valid_pool_ips(pool, result)
    if pool is None:
        return result
    ports = []
    for port in getattr(pool, "ports", []) or []:
        if isinstance(port, int) and 0 < port < 65536 and port not in ports:
            ports.append(port)
        else:
            result.errors[keys.STREAMROUTER_VIPPOOL] = f"streamrouter port rejected: {port!r}"
    value = vip_value(sorted(ports))
    for ip in ips:
        result.puts[keys.vip_key(ip)] = value
    for ip in departed:
        if ip not in ips:
            result.deletes[keys.vip_key(ip)] = is_streamrouter_value
    return result
