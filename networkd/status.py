"""The status document, assembled from bus mirrors: ``networkdctl status`` and ``GET /v1/status``."""

import os
import time
from typing import Any, Callable, Dict, List, Mapping, Optional

from networkd.bus.codec import to_plain
from networkd.bus.publisher import endpoint_path

MirrorLookup = Callable[[str, str], Optional[Mapping[str, Any]]]

FIXED_PUBLISHERS = ("supervisor", "watcher", "elector", "applier", "resolvconf", "api")


def publisher_names(run_dir: str) -> List[str]:
    """Every publisher with an endpoint directory in the run dir (dns replicas included)."""
    bus = os.path.join(run_dir, "bus")
    try:
        names = sorted(os.listdir(bus))
    except OSError:
        return []
    return [n for n in names if os.path.exists(endpoint_path(run_dir, n)) or n in FIXED_PUBLISHERS]


def assemble(mirror: MirrorLookup, sources: List[str]) -> Dict[str, Any]:
    """The status document from whatever mirrors are synced now."""
    now = time.time()
    workers = []
    for info in sorted(
        (mirror("supervisor", "state.workers") or {}).values(), key=lambda w: w.name
    ):
        workers.append(
            {
                "name": info.name,
                "pid": info.pid,
                "state": info.state,
                "restarts": info.restarts,
                "uptime_s": round(now - info.started_at, 3) if info.pid else 0.0,
                "last_exit": info.last_exit,
            }
        )
    vips = [to_plain(v) for _, v in sorted((mirror("elector", "state.vip_status") or {}).items())]
    leader_items = mirror("elector", "state.leader") or {}
    leader = leader_items.get("leader")
    etcd_items = mirror("watcher", "state.etcd") or {}
    etcd = etcd_items.get("etcd")
    errors: Dict[str, Any] = {}
    for sender in ("watcher", "elector", "netstore"):
        for key, err in (mirror(sender, "state.config_errors") or {}).items():
            errors[key] = {"key": err.key, "reason": err.reason}
    dns = []
    for name in sources:
        if not name.startswith("dns."):
            continue
        stats = (mirror(name, "state.dns") or {}).get("stats")
        if stats is not None:
            dns.append(to_plain(stats))
    forwarder = (mirror("dns-forwarder", "state.dns_forwarder") or {}).get("stats")
    lease = (mirror("elector", "state.lease") or {}).get("lease")
    applier = (mirror("applier", "state.applier") or {}).get("counters")
    return {
        "workers": workers,
        "vips": vips,
        "leader": leader.hostname if leader is not None else "",
        "etcd": to_plain(etcd)
        if etcd is not None
        else {"connected": False, "revision": 0, "last_error": "no data"},
        "lease": to_plain(lease) if lease is not None else None,
        "config_errors": [errors[k] for k in sorted(errors)],
        "dns": sorted(dns, key=lambda d: d["replica"]),
        "dns_forwarder": to_plain(forwarder) if forwarder is not None else None,
        "applier": to_plain(applier) if applier is not None else None,
    }


def render_text(doc: Dict[str, Any]) -> str:
    """The status document as tables for people."""
    lines = [f"{'WORKER':<12} {'PID':>7} {'STATE':<9} {'RESTARTS':>8} {'UPTIME':>9}  LAST EXIT"]
    for w in doc["workers"]:
        lines.append(
            f"{w['name']:<12} {w['pid']:>7} {w['state']:<9} {w['restarts']:>8} {w['uptime_s']:>8.1f}s  {w['last_exit'] or '-'}"
        )
    etcd = doc["etcd"]
    lines.append("")
    lines.append(
        f"etcd: {'connected' if etcd.get('connected') else 'DISCONNECTED'} revision={etcd.get('revision', 0)}"
        + (f" last_error={etcd['last_error']}" if etcd.get("last_error") else "")
    )
    lines.append(f"leader: {doc['leader'] or '-'}")
    if doc["vips"]:
        lines.append("")
        lines.append(f"{'VIP':<40} {'STATE':<11} {'OWNER':<20} PORTS")
        for v in doc["vips"]:
            ports = ",".join(f"{p['src']}/{p['proto']}->{p['dest']}" for p in v.get("ports", []))
            lines.append(f"{v['ip']:<40} {v['state']:<11} {v['owner'] or '-':<20} {ports}")
    if doc["dns"]:
        lines.append("")
        for d in doc["dns"]:
            lines.append(
                f"dns [{d['replica']}] pid={d['pid']} queries={d['queries']} cache_hits={d['cache_hits']} "
                f"forwarded={d['forwarded']} cache={d['cache_entries']}"
            )
    fwd = doc.get("dns_forwarder")
    if fwd:
        lines.append(
            f"dns forwarder pid={fwd['pid']} upstream_queries={fwd['upstream_queries']} "
            f"merged={fwd['merged']} upstream_failures={fwd['upstream_failures']} "
            f"rejected_replies={fwd['rejected_replies']} cache={fwd['cache_entries']} "
            f"({fwd['cache_bytes'] >> 20} MiB)"
        )
    if doc["config_errors"]:
        lines.append("")
        lines.append("config errors:")
        for e in doc["config_errors"]:
            lines.append(f"  {e['key']}: {e['reason']}")
    return "\n".join(lines) + "\n"
