"""Local address records: one name's IPv4 and IPv6 addresses as ready answer bytes.

Every answer record names the question by a compression pointer to offset 12
(``0xC00C``), so the same bytes serve every spelling of every name a record covers.
"""

import logging
from typing import Iterable, List, Mapping, NamedTuple, Optional, Sequence, Tuple

from networkd.dns import wire

log = logging.getLogger("networkd.dns")

POINTER_TO_QUESTION = b"\xc0\x0c"
A_RR_SIZE = 16
AAAA_RR_SIZE = 28


class Record(NamedTuple):
    """Addresses of one local name and their answer records for A and AAAA."""

    v4: Tuple[bytes, ...]
    v6: Tuple[bytes, ...]
    rrs_a: bytes
    rrs_aaaa: bytes

    def answer(self, qtype: int) -> Tuple[bytes, int, int]:
        """(records, count, size of one record) for a question type."""
        if qtype == wire.TYPE_A:
            return self.rrs_a, len(self.v4), A_RR_SIZE
        if qtype == wire.TYPE_AAAA:
            return self.rrs_aaaa, len(self.v6), AAAA_RR_SIZE
        return b"", 0, 1


def split_addresses(ips: Iterable[str], what: str = "") -> Tuple[List[bytes], List[bytes]]:
    """Valid addresses by family, duplicates and bad ones dropped (logged), order kept."""
    v4: List[bytes] = []
    v6: List[bytes] = []
    for ip in ips:
        if not isinstance(ip, str):
            log.warning("address rejected name=%s value=%r reason=not a string", what, ip)
            continue
        try:
            family, packed = wire.parse_ip(ip)
        except ValueError as exc:
            log.warning("address rejected name=%s value=%r reason=%s", what, ip, exc)
            continue
        target = v4 if family == 4 else v6
        if packed not in target:
            target.append(packed)
    return v4, v6


def make_record(v4: Sequence[bytes], v6: Sequence[bytes], ttl: int) -> Record:
    ttl_bytes = wire.U32.pack(max(0, min(ttl, 0x7FFFFFFF)))
    head_a = POINTER_TO_QUESTION + b"\x00\x01\x00\x01" + ttl_bytes + b"\x00\x04"
    head_aaaa = POINTER_TO_QUESTION + b"\x00\x1c\x00\x01" + ttl_bytes + b"\x00\x10"
    return Record(
        tuple(v4),
        tuple(v6),
        b"".join(head_a + ip for ip in v4),
        b"".join(head_aaaa + ip for ip in v6),
    )


def record_for(ips: Iterable[str], ttl: int, what: str = "") -> Record:
    v4, v6 = split_addresses(ips, what)
    return make_record(v4, v6, ttl)


def webrouter_ips(vips: Optional[Mapping[str, object]]) -> List[str]:
    """IPs of the VIPs whose app is ``webrouter`` (unspecified 0.0.0.0 skipped), sorted."""
    found = set()
    for item in (vips or {}).values():
        app = getattr(item, "app", None)
        ip = getattr(item, "ip", None)
        if app != "webrouter" or not isinstance(ip, str):
            continue
        try:
            family, packed = wire.parse_ip(ip)
        except ValueError:
            continue
        if packed.strip(b"\x00") == b"":
            continue
        found.add((family, packed, ip))
    return [ip for _f, _p, ip in sorted(found)]
