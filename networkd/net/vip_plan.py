"""What the host should hold for the elector's desired set, and what it holds: pure logic.

The applier reconciles in this order (break before make, on one node):

1. ``plan_host``: the addresses and DNAT rules wanted now, from ``state.desired``;
2. addresses that are not wanted are removed first, before anything waits on iptables, so
   a release or a fencing removal is never held up by the xtables lock (Docker may hold
   it for seconds) and a released VIP stops drawing connections before its rules go
   (clients reaching it in between would be refused with a TCP RST);
3. the rules (one commit, under the xtables lock);
4. ``ready_to_bind``: only addresses whose rules are all in place are added, so a new
   owner never answers a connection with RST either.

``applied_items`` is what goes out on ``state.applied`` afterwards.
"""

import dataclasses
from typing import Any, Dict, Iterable, List, Mapping, Optional, Set, Tuple

from networkd.bus.messages import AppliedVip, DesiredVip
from networkd.net.addresses import normalize_ip
from networkd.net.nat_rules import NatRule, dnat_rules, unique_by_port


@dataclasses.dataclass
class HostWant:
    """Addresses and DNAT rules wanted on the host, the address of each desired key, and
    the entries that could not be used (key, reason)."""

    addresses: Set[str] = dataclasses.field(default_factory=set)
    rules: List[NatRule] = dataclasses.field(default_factory=list)
    resolved: Dict[str, str] = dataclasses.field(default_factory=dict)
    problems: List[Tuple[str, str]] = dataclasses.field(default_factory=list)


def floating_addresses(vips: Mapping[str, Any]) -> Set[str]:
    """The addresses of the floating VIPs configured in the cluster (``state.vips`` items):
    port-only keys bind no address, whatever their family (``[fd00::1]:80`` included)."""
    out: Set[str] = set()
    for vip in vips.values():
        if getattr(vip, "port", 0):
            continue
        try:
            out.add(normalize_ip(vip.ip))
        except (ValueError, AttributeError):
            continue
    return out


def target_ip(vip: DesiredVip, node_address: str) -> str:
    """The address a desired entry acts on (``0.0.0.0`` port-only keys: this node's)."""
    ip = vip.ip
    if not vip.bind and ip in ("", "0.0.0.0", "::"):
        if not node_address:
            raise ValueError("no node address for 0.0.0.0")
        ip = node_address
    return normalize_ip(ip)


def plan_host(
    desired: Mapping[str, DesiredVip],
    node_address: str,
    held_back: Iterable[str] = (),
    lingering: Mapping[str, DesiredVip] = {},
) -> HostWant:
    """The host state for ``desired``. ``held_back``: floating VIPs to hold neither address
    nor rules of now (fencing ``strict`` without a live lease, or yielded to another
    node's announcement): a non-owner has neither (SPEC section 3).

    ``lingering``: VIPs released a moment ago whose rules stay a little longer (never their
    address). A client whose ARP cache still names us sends a few more SYNs our way until
    the new owner's announcement reaches it; with the rules still here they reach our
    container instead of being forwarded to the new owner before its rules are in, where
    the untranslated connection would stay in conntrack and its retransmitted SYN be
    answered with a RST once the address is there."""
    out = HostWant()
    skip = set(held_back)
    rules: List[NatRule] = []
    for key in sorted(desired):
        vip = desired[key]
        try:
            ip = target_ip(vip, node_address)
        except (ValueError, AttributeError) as exc:
            out.problems.append((key, str(exc) or "bad address"))
            continue
        out.resolved[key] = ip
        if vip.bind:
            if ip in skip:
                continue
            out.addresses.add(ip)
        if not vip.container_ip:
            continue
        comment = f"{vip.app}.{vip.proc}"
        for port in vip.ports:
            dest = port.dest or port.src
            try:
                rules.extend(
                    dnat_rules(ip, port.proto or "tcp", port.src, vip.container_ip, dest, comment)
                )
            except (ValueError, TypeError) as exc:
                out.problems.append((key, str(exc)))
    for key in sorted(lingering):
        vip = lingering[key]
        if key in desired or not vip.container_ip:
            continue
        for port in vip.ports:
            try:
                rules.extend(
                    dnat_rules(
                        normalize_ip(vip.ip),
                        port.proto or "tcp",
                        port.src,
                        vip.container_ip,
                        port.dest or port.src,
                        f"{vip.app}.{vip.proc}",
                    )
                )
            except (ValueError, TypeError):
                continue  # reported while it was desired
    kept, conflicts = unique_by_port(rules)
    for rule in conflicts:
        out.problems.append(
            (f"{rule.dst}:{rule.dport}/{rule.proto}", "two mappings for one port; the first wins")
        )
    out.rules = kept
    return out


def ready_to_bind(
    candidates: Iterable[str], wanted: Iterable[NatRule], actual: Optional[Iterable[NatRule]]
) -> Set[str]:
    """The candidate addresses whose wanted rules are all in the kernel (``actual``; None
    when the rules could not be read or applied this pass: only rule-less addresses)."""
    have = set(actual) if actual is not None else set()
    needs: Dict[str, Set[NatRule]] = {}
    for rule in wanted:
        needs.setdefault(rule.dst, set()).add(rule)
    return {ip for ip in candidates if needs.get(ip, set()) <= have}


def applied_items(
    desired: Mapping[str, DesiredVip],
    resolved: Mapping[str, str],
    present: Set[str],
    nat_actual: Optional[List[NatRule]],
    previous: Mapping[str, AppliedVip],
    key_bind: Mapping[str, bool],
) -> Dict[str, AppliedVip]:
    """``state.applied``: per desired key (and per key still on the host) whether its
    address is bound and how many of its rules are in our chains. ``previous`` is the last
    publication (rule counts are kept from it when the rules could not be read), and
    ``key_bind`` remembers whether a key that left the desired set was a floating VIP."""
    rules_by_ip: Dict[str, List[NatRule]] = {}
    for rule in nat_actual or []:
        rules_by_ip.setdefault(rule.dst, []).append(rule)
    items: Dict[str, AppliedVip] = {}
    for key in sorted(set(desired) | set(previous)):
        vip = desired.get(key)
        if vip is not None:
            ip = resolved.get(key, vip.ip)
            bind = vip.bind
        else:
            ip = previous[key].ip
            bind = key_bind.get(key, True)
        if nat_actual is None:
            count = previous[key].rules if key in previous else 0
        else:
            mine = rules_by_ip.get(ip, [])
            if not bind:
                port = key.rsplit(":", 1)[1]
                srcs = {str(p.src) for p in vip.ports} if vip is not None else set()
                mine = [r for r in mine if str(r.dport) == port or str(r.dport) in srcs]
            count = len(mine)
        is_bound = bind and ip in present
        if vip is None and not is_bound and count == 0:
            continue  # released and gone from the host
        items[key] = AppliedVip(ip=ip, bound=is_bound, rules=count)
    return items
