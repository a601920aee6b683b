"""resolv.conf transformations of SPEC section 7 (pure functions; the keeper is
``networkd.workers.resolvconf``).

``render`` puts ``nameserver <dns ip>`` on the first line and keeps every other line in
order (comments, ``search``, ``domain``, ``options``, other nameservers, unknown lines),
except that it drops ``nameserver`` lines whose value is not an IP address (or is our own
address, which it already put first) and removes the ``rotate`` option as a whole word
(``rotate`` would send queries round-robin past us). ``render`` is idempotent, so the
keeper never loops on its own write. ``restore`` is the upstream-only form written when
networkd stops, so the host does not point at a resolver that is gone.
"""

import ipaddress
from typing import List, Optional


def dns_ip(godns_host: str) -> str:
    """The address to put in resolv.conf for a DNS server listening on ``godns_host``."""
    host = godns_host.strip().strip("[]")
    if host in ("", "0.0.0.0"):
        return "127.0.0.1"
    if host == "::":
        return "::1"
    return host


def _ip(text: str) -> Optional[ipaddress._BaseAddress]:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _same(a: str, b: str) -> bool:
    ia, ib = _ip(a), _ip(b)
    return ia is not None and ia == ib


def _transform(text: str, ours: str) -> List[str]:
    out: List[str] = []
    for line in text.splitlines():
        tokens = line.split()
        if tokens and tokens[0] == "nameserver":
            if len(tokens) < 2 or _ip(tokens[1]) is None or _same(tokens[1], ours):
                continue
            out.append(line)
        elif tokens and tokens[0] == "options":
            options = [t for t in tokens[1:] if t != "rotate"]
            if len(options) == len(tokens) - 1:
                out.append(line)
            elif options:
                out.append("options " + " ".join(options))
        else:
            out.append(line.rstrip("\r"))
    return out


def render(text: str, ours: str) -> str:
    """The resolv.conf content that points at our DNS server ``ours`` (an IP)."""
    return "\n".join([f"nameserver {ours}", *_transform(text, ours)]) + "\n"


def restore(text: str, ours: str) -> str:
    """The upstream-only content: ``render`` without our nameserver line."""
    lines = _transform(text, ours)
    return "\n".join(lines) + "\n" if lines else ""


def upstreams(text: str, ours: str) -> List[str]:
    """Upstream nameserver IPs in file order, our own address and duplicates skipped.

    Scoped IPv6 addresses (``fe80::1%eth0``) are kept in the file but not used."""
    out: List[str] = []
    for line in text.splitlines():
        tokens = line.split()
        if len(tokens) < 2 or tokens[0] != "nameserver" or "%" in tokens[1]:
            continue
        address = _ip(tokens[1])
        if address is None or _same(tokens[1], ours):
            continue
        value = str(address)
        if value not in out:
            out.append(value)
    return out
