"""The cluster's container networks as typed records, rebuilt from the etcd mirror.

``ClusterView.update(entries)`` takes the mirror's raw entries (value, lease, revision)
of ``/lain/networkd/networks/`` and re-parses only keys whose revision changed, so a view
of thousands of allocations costs little per change. Rejected keys are kept in
``errors`` (key -> reason) and are otherwise absent.
"""

import ipaddress
from dataclasses import dataclass, field
from typing import Any, Dict, Mapping, Optional, Set, Tuple

from networkd import keys
from networkd.netdriver import records
from networkd.netdriver.records import (
    AddressRecord,
    BlockRecord,
    HostRecord,
    NetworkRecord,
    Record,
    RouteRecord,
)


@dataclass
class NetworkState:
    """One network and everything under it."""

    record: Optional[NetworkRecord] = None
    hosts: Dict[str, HostRecord] = field(default_factory=dict)
    blocks: Dict[str, BlockRecord] = field(default_factory=dict)
    addresses: Dict[str, AddressRecord] = field(default_factory=dict)
    routes: Dict[str, RouteRecord] = field(default_factory=dict)

    def block_owners(self) -> Dict[ipaddress.IPv4Network, str]:
        return {ipaddress.IPv4Network(b.block): b.host for b in self.blocks.values()}

    def taken(self) -> Set[ipaddress.IPv4Address]:
        return {ipaddress.IPv4Address(ip) for ip in self.addresses}

    def docker_ids(self, host: str) -> Set[str]:
        member = self.hosts.get(host)
        return set(member.docker) if member is not None else set()


class ClusterView:
    def __init__(self) -> None:
        self.networks: Dict[str, NetworkState] = {}
        self.errors: Dict[str, str] = {}
        self.revisions: Dict[str, int] = {}
        self.leases: Dict[str, int] = {}
        self.version = 0  # increments on every change
        self._parsed: Dict[str, Tuple[int, Optional[Record]]] = {}

    def update(self, entries: Mapping[str, Any]) -> bool:
        """Rebuild from the mirror's entries (objects with value, lease, mod_revision).

        Returns True when anything changed."""
        changed = set(self._parsed) != set(entries)
        parsed: Dict[str, Tuple[int, Optional[Record]]] = {}
        errors: Dict[str, str] = {}
        for key, entry in entries.items():
            previous = self._parsed.get(key)
            if previous is not None and previous[0] == entry.mod_revision:
                parsed[key] = previous
                if previous[1] is None:
                    errors[key] = self.errors.get(key, "rejected")
                continue
            changed = True
            try:
                record: Optional[Record] = records.parse(key, entry.value.encode())
            except ValueError as exc:
                record = None
                errors[key] = str(exc)
            parsed[key] = (entry.mod_revision, record)
        if not changed:
            return False
        self.version += 1
        self._parsed = parsed
        self.errors = errors
        self.revisions = {k: entries[k].mod_revision for k in entries}
        self.leases = {k: entries[k].lease for k in entries}
        networks: Dict[str, NetworkState] = {}
        for _key, (_rev, record) in parsed.items():
            if record is None:
                continue
            state = networks.setdefault(record.net, NetworkState())
            if isinstance(record, NetworkRecord):
                state.record = record
            elif isinstance(record, HostRecord):
                state.hosts[record.host] = record
            elif isinstance(record, BlockRecord):
                state.blocks[record.block] = record
            elif isinstance(record, AddressRecord):
                state.addresses[record.ip] = record
            else:
                state.routes[record.host] = record
        self.networks = networks
        return True

    def network(self, net: str) -> NetworkState:
        return self.networks.get(net) or NetworkState()

    def network_of_docker(self, host: str, docker_id: str) -> Optional[str]:
        """The network a Docker network of ``host`` belongs to."""
        for net, state in self.networks.items():
            if docker_id in state.docker_ids(host):
                return net
        return None

    def endpoint(self, host: str, endpoint_id: str) -> Optional[AddressRecord]:
        for state in self.networks.values():
            for address in state.addresses.values():
                if address.endpoint == endpoint_id and address.host == host:
                    return address
        return None

    def pools(self) -> Dict[str, ipaddress.IPv4Network]:
        """Every network's subnet by network name (records and any sub-key's network)."""
        out = {}
        for net in self.networks:
            out[net] = ipaddress.IPv4Network(keys.cidr_of_name(net))
        return out
