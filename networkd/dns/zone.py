"""The local data table: etcd domains, /etc/hosts, node and webrouter records.

Lookup order for a lower-cased wire name (SPEC section 4):
1. an exact etcd domain;
2. an /etc/hosts name (etcd wins for the same name);
3. the longest etcd wildcard ``*.suffix`` that equals the name or one of its parents
   (one-label suffixes like ``*.lain`` included).

Wildcards lose to /etc/hosts for a name both cover: exact beats wildcard, as dnsmasq's
``address=`` loses to its hosts file. A type ``""`` entry without one valid address is
ignored (the name is forwarded), as the Go daemon did; ``node`` and ``webrouter``
entries are always local (an empty answer when there is no address).
"""

import logging
from typing import Dict, Mapping, Optional, Tuple

from networkd.dns import wire
from networkd.dns.records import Record, make_record, split_addresses, webrouter_ips

log = logging.getLogger("networkd.dns")

DOMAIN_TYPES = ("", "node", "webrouter")


class Zone:
    """An immutable snapshot of the local names; replaced whole on every change."""

    __slots__ = ("exact", "version", "wildcard")

    def __init__(
        self, exact: Dict[bytes, Record], wildcard: Dict[bytes, Record], version: int = 0
    ) -> None:
        self.exact = exact
        self.wildcard = wildcard
        self.version = version

    def lookup(self, lname: bytes) -> Optional[Record]:
        record = self.exact.get(lname)
        if record is not None:
            return record
        wildcard = self.wildcard
        if wildcard:
            pos = 0
            end = len(lname)
            while pos < end:
                length = lname[pos]
                if not length:
                    break
                record = wildcard.get(lname[pos:])
                if record is not None:
                    return record
                pos += 1 + length
        return None

    def __len__(self) -> int:
        return len(self.exact) + len(self.wildcard)


def _ips_of(item: object) -> Tuple[str, ...]:
    ips = getattr(item, "ips", None)
    if not isinstance(ips, (list, tuple)):
        return ()
    return tuple(ip for ip in ips if isinstance(ip, str))


class ZoneBuilder:
    """Builds Zones from bus mirrors; remembers built records so a rebuild is cheap."""

    def __init__(self, ttl: int = 600) -> None:
        self.ttl = ttl
        self._records: Dict[Tuple[Tuple[str, ...], int], Record] = {}
        self._version = 0

    def record(self, ips: Tuple[str, ...], what: str) -> Record:
        key = (ips, self.ttl)
        record = self._records.get(key)
        if record is None:
            v4, v6 = split_addresses(ips, what)
            record = make_record(v4, v6, self.ttl)
            if len(self._records) > 100000:
                self._records.clear()
            self._records[key] = record
        return record

    def build(
        self,
        domains: Optional[Mapping[str, object]] = None,
        hosts: Optional[Mapping[str, object]] = None,
        vips: Optional[Mapping[str, object]] = None,
        node_address: str = "",
    ) -> Zone:
        """A Zone from state.domains (DomainEntry), state.hosts (HostsEntry), state.vips."""
        exact: Dict[bytes, Record] = {}
        wildcard: Dict[bytes, Record] = {}
        webrouter: Optional[Tuple[str, ...]] = None
        for name, item in (hosts or {}).items():
            try:
                key = wire.encode_name(str(getattr(item, "name", "") or name))
            except ValueError as exc:
                log.warning("hosts name rejected name=%r reason=%s", name, exc)
                continue
            record = self.record(_ips_of(item), str(name))
            if record.v4 or record.v6:
                exact[key] = record
        for name, item in (domains or {}).items():
            text = str(getattr(item, "name", "") or name).strip().lower()
            kind = getattr(item, "type", "")
            if kind not in DOMAIN_TYPES:
                log.warning("domain rejected name=%s reason=unknown type %r", text, kind)
                continue
            is_wildcard = text.startswith("*.")
            try:
                key = wire.encode_name(text[2:] if is_wildcard else text)
            except ValueError as exc:
                log.warning("domain rejected name=%s reason=%s", text, exc)
                continue
            if key == b"\x00" or "*" in (text[2:] if is_wildcard else text):
                log.warning("domain rejected name=%s reason=wildcard must be *.suffix", text)
                continue
            if kind == "node":
                record = self.record((node_address,) if node_address else (), text)
            elif kind == "webrouter":
                if webrouter is None:
                    webrouter = tuple(webrouter_ips(vips))
                record = self.record(webrouter, text)
            else:
                record = self.record(_ips_of(item), text)
                if not record.v4 and not record.v6:
                    log.warning("domain ignored name=%s reason=no valid address", text)
                    continue
            (wildcard if is_wildcard else exact)[key] = record
        self._version += 1
        return Zone(exact, wildcard, self._version)
