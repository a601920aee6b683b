"""The Prometheus rendering, checked with prometheus_client's own parser."""

from typing import Any, Dict, Optional

from prometheus_client.parser import text_string_to_metric_families

from networkd import metrics
from networkd.bus.messages import (
    ApplierCounters,
    DnsStats,
    ElectorCounters,
    EtcdHealth,
    LeaseHealth,
    PortSpec,
    VipStatus,
    WorkerInfo,
)

MIRRORS: Dict[tuple, Dict[str, Any]] = {
    ("supervisor", "state.workers"): {
        "api": WorkerInfo("api", 10, "RUNNING", 2, 0.0),
        "dns.0": WorkerInfo("dns.0", 11, "FATAL", 5, 0.0, "exit 1"),
    },
    ("elector", "state.vip_status"): {
        "10.0.0.1": VipStatus("10.0.0.1", "node1", "OWNER", [PortSpec(80)], 1.5),
        "10.0.0.2": VipStatus("10.0.0.2", "node2", "STANDBY", [PortSpec(80)], 0.0),
    },
    ("elector", "state.elector"): {
        "counters": ElectorCounters(acquisitions=3, releases=1, failovers=2)
    },
    ("elector", "state.lease"): {"lease": LeaseHealth(7, True, 2.0, 3.5, 1)},
    ("applier", "state.applier"): {"counters": ApplierCounters(garps_sent=12, duplicate_claims=1)},
    ("watcher", "state.etcd"): {"etcd": EtcdHealth(True, 42)},
    ("watcher", "state.config_errors"): {"/lain/config/vips/x": object()},
    ("dns.0", "state.dns"): {
        "stats": DnsStats(
            0,
            11,
            100,
            {"NOERROR": 90, "NXDOMAIN": 10},
            40,
            50,
            2,
            {"0.001": 10, "0.01": 45, "+Inf": 50},
            0.2,
            50,
        )
    },
}


def lookup(sender: str, topic: str) -> Optional[Dict[str, Any]]:
    return MIRRORS.get((sender, topic))


def parsed() -> Dict[str, Any]:
    text = metrics.render(lookup, ["supervisor", "elector", "applier", "watcher", "dns.0"])
    return {f.name: f for f in text_string_to_metric_families(text)}


def samples(families: Dict[str, Any], name: str) -> Dict[tuple, float]:
    out = {}
    for family in families.values():
        for s in family.samples:
            if s.name == name:
                out[tuple(sorted(s.labels.items()))] = s.value
    return out


def test_every_family_parses_and_has_the_values_published() -> None:
    fams = parsed()
    assert samples(fams, "networkd_worker_restarts_total")[(("worker", "api"),)] == 2
    assert samples(fams, "networkd_worker_state")[(("state", "FATAL"), ("worker", "dns.0"))] == 1
    assert samples(fams, "networkd_vip_owned") == {
        (("vip", "10.0.0.1"),): 1,
        (("vip", "10.0.0.2"),): 0,
    }
    assert samples(fams, "networkd_vip_failovers_total") == {(): 2}
    assert samples(fams, "networkd_garp_sent_total") == {(): 12}
    assert samples(fams, "networkd_duplicate_claims_total") == {(): 1}
    assert samples(fams, "networkd_lease_keepalive_seconds") == {(): 0.0035}
    assert samples(fams, "networkd_lease_keepalive_failures_total") == {(): 1}
    assert samples(fams, "networkd_etcd_connected") == {(): 1}
    assert samples(fams, "networkd_config_errors") == {(): 1}
    queries = samples(fams, "networkd_dns_queries_total")
    assert queries[(("rcode", "NXDOMAIN"), ("replica", "0"))] == 10
    assert samples(fams, "networkd_dns_cache_hits_total") == {(("replica", "0"),): 40}
    buckets = samples(fams, "networkd_dns_forward_latency_seconds_bucket")
    assert buckets[(("le", "0.01"), ("replica", "0"))] == 45
    assert buckets[(("le", "+Inf"), ("replica", "0"))] == 50
    assert samples(fams, "networkd_dns_forward_latency_seconds_count") == {(("replica", "0"),): 50}


def test_empty_mirrors_still_render_valid_text() -> None:
    text = metrics.render(lambda s, t: None, [])
    names = {f.name for f in text_string_to_metric_families(text)}
    assert "networkd_etcd_connected" in names
