"""The hosts file parser: ``ip name [alias ...]`` lines, ``#`` comments, any garbage
skipped line by line. Every address of a name is kept (both families, file order,
duplicates dropped); names are lower-cased.
"""

import logging
from typing import Dict, List

from networkd.dns import wire

log = logging.getLogger("networkd.hosts")

MAX_NAMES = 100000


def parse(text: str) -> Dict[str, List[str]]:
    """name -> addresses. Bad addresses, scoped IPv6 and unusable names are skipped."""
    table: Dict[str, List[str]] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        fields = line.split()
        if len(fields) < 2:
            continue
        try:
            wire.parse_ip(fields[0])
        except ValueError:
            log.debug("hosts line skipped line=%d reason=bad address %r", number, fields[0])
            continue
        for name in fields[1:]:
            name = name.lower().rstrip(".")
            if not name or not name.isprintable() or "*" in name:
                continue
            try:
                wire.encode_name(name)
            except ValueError:
                continue
            ips = table.get(name)
            if ips is None:
                if len(table) >= MAX_NAMES:
                    continue
                ips = table[name] = []
            if fields[0] not in ips:
                ips.append(fields[0])
    return table
