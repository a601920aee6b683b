"""The local data table: SPEC section 4 lookup rules."""

import socket
from typing import Dict, List, Optional

from networkd.bus.messages import DomainEntry, HostsEntry, PortSpec, VipConfig
from networkd.dns import wire
from networkd.dns.zone import Zone, ZoneBuilder


def domains(**entries: object) -> Dict[str, DomainEntry]:
    out = {}
    for name, value in entries.items():
        name = name.replace("STAR", "*").replace("_", ".")
        if isinstance(value, tuple):
            out[name] = DomainEntry(name=name, ips=[], type=value[0])
        else:
            out[name] = DomainEntry(name=name, ips=list(value))  # type: ignore[call-overload]
    return out


def addrs(zone: Zone, name: str) -> Optional[List[str]]:
    record = zone.lookup(wire.encode_name(name))
    if record is None:
        return None
    return [socket.inet_ntop(socket.AF_INET, p) for p in record.v4] + [
        socket.inet_ntop(socket.AF_INET6, p) for p in record.v6
    ]


def test_exact_wildcard_apex_longest_suffix_and_precedence() -> None:
    zone = ZoneBuilder().build(
        domains(
            foo_lain=["10.0.0.1"],
            STAR_lain=["10.0.0.2"],
            STAR_a_lain=["10.0.0.3"],
            STAR_b_lain=["10.0.0.4"],
            b_lain=["10.0.0.5"],
        )
    )
    assert addrs(zone, "foo.lain") == ["10.0.0.1"]  # exact
    assert addrs(zone, "lain") == ["10.0.0.2"]  # apex of the one-label wildcard
    assert addrs(zone, "x.lain") == ["10.0.0.2"]
    assert addrs(zone, "x.y.z.lain") == ["10.0.0.2"]
    assert addrs(zone, "a.lain") == ["10.0.0.3"]  # apex of the longer suffix
    assert addrs(zone, "q.a.lain") == ["10.0.0.3"]  # longest suffix wins
    assert addrs(zone, "b.lain") == ["10.0.0.5"]  # exact beats wildcard
    assert addrs(zone, "c.b.lain") == ["10.0.0.4"]
    assert addrs(zone, "x.foo.lain") == ["10.0.0.2"]  # exact names are not suffixes
    assert addrs(zone, "lain.com") is None
    assert addrs(zone, "com") is None


def test_case_insensitive_keys() -> None:
    zone = ZoneBuilder().build(
        {
            "Foo.LAIN": DomainEntry(name="Foo.LAIN", ips=["10.0.0.1"]),
            "*.Bar.Lain": DomainEntry(name="*.Bar.Lain", ips=["10.0.0.2"]),
        }
    )
    assert addrs(zone, "foo.lain") == ["10.0.0.1"]
    assert addrs(zone, "X.bar.lain") == ["10.0.0.2"]


def test_mixed_families_invalid_dropped_mapped_is_v4() -> None:
    zone = ZoneBuilder().build(
        domains(m_lain=["10.0.0.1", "fd00::1", "bogus", "10.0.0.1", "::ffff:10.0.0.9", "300.1.1.1"])
    )
    record = zone.lookup(wire.encode_name("m.lain"))
    assert record is not None
    assert addrs(zone, "m.lain") == ["10.0.0.1", "10.0.0.9", "fd00::1"]
    assert record.answer(wire.TYPE_A)[1] == 2
    assert record.answer(wire.TYPE_AAAA)[1] == 1
    assert record.answer(wire.TYPE_ANY)[1] == 0


def test_entry_without_valid_address_is_not_local() -> None:
    zone = ZoneBuilder().build(domains(e_lain=[], b_lain=["nope"]))
    assert addrs(zone, "e.lain") is None and addrs(zone, "b.lain") is None


def test_node_and_webrouter_types() -> None:
    vips = {
        "10.1.0.1": VipConfig(ip="10.1.0.1", app="webrouter", proc="worker", ports=[PortSpec(80)]),
        "10.1.0.2": VipConfig(ip="10.1.0.2", app="webrouter", proc="worker", ports=[PortSpec(443)]),
        "10.1.0.3": VipConfig(ip="10.1.0.3", app="other", proc="worker", ports=[PortSpec(80)]),
        "0.0.0.0:8080": VipConfig(
            ip="0.0.0.0", app="webrouter", proc="w", ports=[PortSpec(8080)], port=8080
        ),
    }
    zone = ZoneBuilder().build(
        domains(n_lain=("node",), w_lain=("webrouter",), STAR_w_lain=("webrouter",)),
        vips=vips,
        node_address="192.168.1.10",
    )
    assert addrs(zone, "n.lain") == ["192.168.1.10"]
    assert addrs(zone, "w.lain") == ["10.1.0.1", "10.1.0.2"]
    assert addrs(zone, "x.w.lain") == ["10.1.0.1", "10.1.0.2"]
    empty = ZoneBuilder().build(domains(n_lain=("node",), w_lain=("webrouter",)))
    assert addrs(empty, "n.lain") == [] and addrs(empty, "w.lain") == []  # local, NODATA


def test_hosts_all_addresses_and_etcd_wins() -> None:
    hosts = {
        "h.local": HostsEntry(name="h.local", ips=["10.0.0.1", "10.0.0.2", "fd00::2"]),
        "both.lain": HostsEntry(name="both.lain", ips=["10.9.9.9"]),
        "under.wild": HostsEntry(name="under.wild", ips=["10.7.7.7"]),
    }
    zone = ZoneBuilder().build(domains(both_lain=["10.0.0.8"], STAR_wild=["10.6.6.6"]), hosts=hosts)
    assert addrs(zone, "h.local") == ["10.0.0.1", "10.0.0.2", "fd00::2"]
    assert addrs(zone, "both.lain") == ["10.0.0.8"]
    assert addrs(zone, "under.wild") == ["10.7.7.7"]  # an exact hosts name beats a wildcard
    assert addrs(zone, "x.wild") == ["10.6.6.6"]


def test_bad_names_and_types_rejected_alone() -> None:
    entries = domains(ok_lain=["10.0.0.1"])
    entries["*"] = DomainEntry(name="*", ips=["10.0.0.2"])
    entries["a.*.lain"] = DomainEntry(name="a.*.lain", ips=["10.0.0.3"])
    entries["x" * 70 + ".lain"] = DomainEntry(name="x" * 70 + ".lain", ips=["10.0.0.4"])
    entries["t.lain"] = DomainEntry(name="t.lain", ips=["10.0.0.5"], type="bogus")
    zone = ZoneBuilder().build(entries)
    assert len(zone) == 1 and addrs(zone, "ok.lain") == ["10.0.0.1"]


def test_ttl_in_records_and_versions_grow() -> None:
    builder = ZoneBuilder(ttl=42)
    z1 = builder.build(domains(a_lain=["10.0.0.1"]))
    z2 = builder.build(domains(a_lain=["10.0.0.1"]))
    assert z2.version > z1.version
    record = z1.lookup(wire.encode_name("a.lain"))
    assert record is not None
    assert record.rrs_a == b"\xc0\x0c\x00\x01\x00\x01\x00\x00\x00\x2a\x00\x04\x0a\x00\x00\x01"
