"""``-deployd`` / ``-swarm``: the leader's IP as ``deployd.lain`` / ``swarm.lain``.

Input: the watcher's ``state.leaders`` (``/lain/deployd/leader`` and
``/lain/swarm/docker/swarm/leader``, ``ip:port``). Output: ``/lain/config/domains/
deployd.lain`` (``swarm.lain``) = ``{"ips":["<ip>"],"type":""}``. When the leader key is
absent the domain is left as it is (a stale address beats none).
"""

from typing import Dict

from networkd import keys
from networkd.bus.messages import LeaderAddress
from networkd.jobs.outputs import JobResult, compact_json

DOMAIN_KEYS = {"deployd": keys.DEPLOYD_DOMAIN, "swarm": keys.SWARM_DOMAIN}


def domain_value(ip: str) -> str:
    return compact_json({"ips": [ip], "type": ""})


def leader_domain_outputs(name: str, leaders: Dict[str, LeaderAddress]) -> JobResult:
    result = JobResult()
    leader = leaders.get(name)
    if leader is None:
        return result
    try:
        ip = str(keys.parse_ip(leader.ip))
    except keys.KeyLayoutError as exc:
        result.errors[keys.LEADER_KEYS[name]] = f"{name} leader: {exc}"
        return result
    result.puts[DOMAIN_KEYS[name]] = domain_value(ip)
    return result
