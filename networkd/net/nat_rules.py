"""DNAT rules of the VIPs in the nat table: a pure plan and a python-iptables adapter.

Layout (SPEC section 3): chains ``lain-PREROUTING`` and ``lain-OUTPUT``, each jumped to
exactly once from ``PREROUTING`` / ``OUTPUT``. Per VIP port::

    lain-PREROUTING -d X/32 -p PROTO -m PROTO --dport SRC -m comment --comment app.proc
                    -j DNAT --to-destination CIP:DEST
    lain-OUTPUT     the same with -o lo (local access to the VIP)

Both chains belong to networkd alone: any rule in them that is not desired is removed,
duplicates collapse to one, and rules are compared exactly (``10.0.0.1/32`` never matches
``110.0.0.1/32``). One commit per batch, under the xtables lock.
"""

import ctypes
import ipaddress
import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

from networkd.net.xtables import (
    XtablesLockTimeout,
    rule_fields,
    strip_comment_quotes,
    xtables_lock,
)

log = logging.getLogger("networkd.applier")

PREROUTING_CHAIN = "lain-PREROUTING"
OUTPUT_CHAIN = "lain-OUTPUT"
# built-in chain -> our chain jumped to from it
JUMPS: Dict[str, str] = {"PREROUTING": PREROUTING_CHAIN, "OUTPUT": OUTPUT_CHAIN}
PROTOCOLS = ("tcp", "udp")
COMMENT_MAX = 255


@dataclass(frozen=True, order=True)
class NatRule:
    """One DNAT rule in one of our chains."""

    chain: str
    dst: str
    proto: str
    dport: int
    to_ip: str
    to_port: int
    comment: str = ""
    out_iface: str = ""

    @property
    def family(self) -> int:
        return ipaddress.ip_address(self.dst).version

    @property
    def to_destination(self) -> str:
        if ipaddress.ip_address(self.to_ip).version == 6:
            return f"[{self.to_ip}]:{self.to_port}"
        return f"{self.to_ip}:{self.to_port}"

    def describe(self) -> str:
        out = f" -o {self.out_iface}" if self.out_iface else ""
        return (
            f"{self.chain} -d {self.dst} -p {self.proto} --dport {self.dport}{out} "
            f"-j DNAT --to-destination {self.to_destination} comment={self.comment}"
        )


def dnat_rules(
    ip: str, proto: str, src: int, container_ip: str, dest: int, comment: str
) -> List[NatRule]:
    """The two rules of one VIP port; raises ValueError naming what is wrong."""
    vip = ipaddress.ip_address(ip)
    target = ipaddress.ip_address(container_ip)
    if vip.version != target.version:
        raise ValueError(f"VIP {ip} and container IP {container_ip} are of different families")
    proto = proto.lower()
    if proto not in PROTOCOLS:
        raise ValueError(f"unknown proto {proto!r}")
    for name, port in (("src", src), ("dest", dest)):
        if not 0 < int(port) < 65536:
            raise ValueError(f"{name} port out of range: {port}")
    comment = sanitize_comment(comment)
    return [
        NatRule(
            PREROUTING_CHAIN, vip.compressed, proto, int(src), target.compressed, int(dest), comment
        ),
        NatRule(
            OUTPUT_CHAIN,
            vip.compressed,
            proto,
            int(src),
            target.compressed,
            int(dest),
            comment,
            "lo",
        ),
    ]


def sanitize_comment(text: str) -> str:
    cleaned = "".join(ch for ch in text if ch.isprintable() and ch != '"')
    return cleaned[:COMMENT_MAX]


def parse_nat_rule(chain: str, fields: Dict[str, Any]) -> Optional[NatRule]:
    """A rule read from the kernel as a NatRule, or None when it is not of our shape."""
    if fields.get("target") != "DNAT" or fields.get("src") or fields.get("in"):
        return None
    proto = fields.get("proto", "")
    dst = fields.get("dst", "")
    if proto not in PROTOCOLS or "/" not in dst:
        return None
    address, _, plen = dst.partition("/")
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return None
    if int(plen) != (32 if ip.version == 4 else 128):
        return None
    dport = ""
    comment = ""
    for match in fields.get("matches", []):
        name = match.get("name")
        if name == proto and set(match) <= {"name", "dport"}:
            dport = match.get("dport", "")
        elif name == "comment" and set(match) <= {"name", "comment"}:
            comment = strip_comment_quotes(match.get("comment"))
        else:
            return None
    if not dport.isdigit():
        return None
    destination = fields.get("target_params", {}).get("to-destination", "")
    if set(fields.get("target_params", {})) - {"to-destination"}:
        return None
    host, sep, port = destination.rpartition(":")
    if not sep or not port.isdigit():
        return None
    try:
        to_ip = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None
    return NatRule(
        chain,
        ip.compressed,
        proto,
        int(dport),
        to_ip.compressed,
        int(port),
        comment,
        fields.get("out", ""),
    )


@dataclass(frozen=True)
class ChainPlan:
    """Changes to one of our chains. ``rebuild``: flush and re-add (a foreign rule is in it)."""

    delete: Tuple[NatRule, ...] = ()
    add: Tuple[NatRule, ...] = ()
    rebuild: bool = False

    @property
    def empty(self) -> bool:
        return not self.delete and not self.add and not self.rebuild


def plan_chain(desired: Iterable[NatRule], actual: Sequence[Optional[NatRule]]) -> ChainPlan:
    """Diff one chain: keep one copy of each desired rule, delete the rest, add the missing.

    ``actual`` is the chain in order; None marks a rule that is not of our shape (it can
    only be deleted by rebuilding the chain)."""
    want = sorted(set(desired))
    if any(rule is None for rule in actual):
        return ChainPlan(add=tuple(want), rebuild=True)
    have = Counter(rule for rule in actual if rule is not None)
    wanted = set(want)
    delete: List[NatRule] = []
    for rule, count in sorted(have.items()):
        extra = count - 1 if rule in wanted else count
        delete.extend([rule] * extra)
    add = [rule for rule in want if rule not in have]
    return ChainPlan(delete=tuple(delete), add=tuple(add))


def unique_by_port(rules: Iterable[NatRule]) -> Tuple[List[NatRule], List[NatRule]]:
    """One rule per (chain, dst, proto, dport): the first wins; returns (kept, conflicting)."""
    seen: Dict[Tuple[str, str, str, int], NatRule] = {}
    conflicts: List[NatRule] = []
    for rule in rules:
        key = (rule.chain, rule.dst, rule.proto, rule.dport)
        if key in seen:
            if seen[key] != rule:
                conflicts.append(rule)
            continue
        seen[key] = rule
    return list(seen.values()), conflicts


@dataclass
class NatResult:
    """What an apply did, and the rules in our chains afterwards."""

    added: int = 0
    removed: int = 0
    jumps_fixed: int = 0
    chains_created: int = 0
    actual: List[NatRule] = field(default_factory=list)
    # family -> why its rules could not be applied (the other family's still were; its
    # rules are then missing from ``actual``, so its addresses wait for them)
    failed: Dict[int, str] = field(default_factory=dict)

    @property
    def changed(self) -> bool:
        return bool(self.added or self.removed or self.jumps_fixed or self.chains_created)


LOG_EACH_MAX = 16  # a bigger batch (a cold start with hundreds of VIPs) is logged as a count


def log_changes(what: str, chain: str, rules: Sequence[NatRule]) -> None:
    if len(rules) > LOG_EACH_MAX:
        log.info("nat rules %s chain=%s count=%d first=%s", what, chain, len(rules),
                 rules[0].describe())  # fmt: skip
        return
    for rule in rules:
        log.info("nat rule %s rule=%s", what, rule.describe())


@dataclass(frozen=True)
class Entry:
    """A rule as libiptc takes it: the ``ipt_entry`` bytes and the mask that deletes it."""

    data: Any
    mask: Any


def v6_chains_exist() -> bool:
    """Whether our chains are in ip6tables' nat table (no DNAT needed to tell)."""
    try:
        import iptc

        table = iptc.Table6(iptc.Table6.NAT, autocommit=False)
        table.refresh()
        return any(table.is_chain(c) for c in JUMPS.values())
    except Exception:  # no ip6tables nat in this kernel: nothing of ours there
        return False


class NatRules:
    """Our nat chains through python-iptables (IPv4 table; IPv6 when a v6 VIP needs it).

    ``apply`` is idempotent and always compares against the kernel's rules. Entries are
    recognised by their bytes (minus counters); ``verify`` drops that memo and parses all."""

    def __init__(
        self, lock_timeout: Optional[float] = 5.0, families: Tuple[int, ...] = (4, 6)
    ) -> None:
        # ``families``: the address families this process handles. The applier's own
        # process does IPv4 only and a helper process IPv6 (networkd/net/nat_helper.py:
        # python-iptables finds DNAT for one family per process with iptables 1.8).
        self.families = families
        # How long to wait for the xtables lock before XtablesLockTimeout: the applier
        # waits only a moment and retries, so nothing else it does waits behind iptables.
        self.lock_timeout = lock_timeout
        self._rule_cache: Dict[NatRule, Entry] = {}
        self._parsed: Dict[bytes, Optional[NatRule]] = {}

    # -- python-iptables access ---------------------------------------------------------

    @staticmethod
    def _iptc() -> Any:
        import iptc

        return iptc

    def load(self) -> None:
        """Import python-iptables now (it loads libiptc and libxtables: about 0.3 s)."""
        self._iptc()

    def _table(self, family: int) -> Any:
        iptc = self._iptc()
        if family == 6:
            return iptc.Table6(iptc.Table6.NAT, autocommit=False)
        return iptc.Table(iptc.Table.NAT, autocommit=False)

    def _build(self, rule: NatRule) -> Entry:
        """The rule as libiptc's entry bytes (and deletion mask), built once per rule.

        python-iptables' ``append_rule``/``delete_rule`` run ``final_check`` each time,
        which prints every match and target back to text and parses it again (about
        0.5 ms a rule); a cold start with 500 VIPs builds 2,000 rules, so each is checked
        once here and its bytes are handed to libiptc directly (``append_entry``)."""
        cached = self._rule_cache.get(rule)
        if cached is not None:
            return cached
        iptc = self._iptc()
        built = iptc.Rule6() if rule.family == 6 else iptc.Rule()
        built.dst = f"{rule.dst}/{32 if rule.family == 4 else 128}"
        built.protocol = rule.proto
        if rule.out_iface:
            built.out_interface = rule.out_iface
        match = built.create_match(rule.proto)
        match.dport = str(rule.dport)
        if rule.comment:
            comment = built.create_match("comment")
            comment.comment = rule.comment
        target = built.create_target("DNAT")
        target.to_destination = rule.to_destination
        for module in (*built.matches, built.target):
            # final_check without the text round trip: the parameters were just parsed
            check = getattr(module, "_final_check", None) or module.final_check
            check()
        entry = Entry(built.rule, built.mask)
        if len(self._rule_cache) > 20000:
            self._rule_cache.clear()
        self._rule_cache[rule] = entry
        return entry

    def _jump(self, family: int, chain: str) -> Any:
        iptc = self._iptc()
        rule = iptc.Rule6() if family == 6 else iptc.Rule()
        rule.create_target(chain)
        return rule

    @staticmethod
    def _count(table: Any, chain: str) -> int:
        count = 0
        entry = table.first_rule(chain)
        while entry:
            count += 1
            entry = table.next_rule(entry)
        return count

    @staticmethod
    def _fingerprint(entry: Any) -> bytes:
        """The entry's bytes without counters and back pointer: equal bytes, equal rule."""
        kind = type(entry)
        raw = bytearray(ctypes.string_at(ctypes.addressof(entry), entry.next_offset))
        for name in ("counters", "comefrom"):
            desc = getattr(kind, name)
            raw[desc.offset : desc.offset + desc.size] = bytes(desc.size)
        return bytes(raw)

    def _read_chain(self, table: Any, chain: str) -> List[Optional[NatRule]]:
        """The chain's rules; entries seen before are recognised by their bytes, so only
        new or changed entries are parsed (parsing is the slow part of python-iptables)."""
        iptc = self._iptc()
        ch = iptc.Chain(table, chain)
        out: List[Optional[NatRule]] = []
        entry = table.first_rule(chain)
        while entry:
            key = self._fingerprint(entry)
            if key in self._parsed:
                out.append(self._parsed[key])
            else:
                parsed = parse_nat_rule(chain, rule_fields(table.create_rule(entry, ch)))
                if len(self._parsed) > 50000:
                    self._parsed.clear()
                self._parsed[key] = parsed
                out.append(parsed)
            entry = table.next_rule(entry)
        return out

    # -- operations ---------------------------------------------------------------------

    def read(self, family: int = 4) -> Dict[str, List[Optional[NatRule]]]:
        """Our chains as they are in the kernel (None for a rule not of our shape)."""
        with xtables_lock(timeout=self.lock_timeout):
            table = self._table(family)
            table.refresh()
            return {
                c: self._read_chain(table, c) if table.is_chain(c) else [] for c in JUMPS.values()
            }

    def apply(self, desired: Iterable[NatRule], verify: bool = True) -> NatResult:
        """Make our chains hold exactly ``desired`` (one commit per family)."""
        by_family: Dict[int, List[NatRule]] = {4: [], 6: []}
        for rule in desired:
            by_family[rule.family].append(rule)
        result = NatResult()
        for family in self.families:
            if family == 6 and not by_family[6] and not v6_chains_exist():
                continue
            try:
                self._apply_family(family, by_family[family], verify, result)
            except XtablesLockTimeout:
                raise  # the whole pass waits for the lock, and is retried
            except Exception as exc:  # one family's failure must not hold up the other's
                result.failed[family] = f"{type(exc).__name__}: {exc}"
        return result

    def _apply_family(
        self, family: int, desired: List[NatRule], verify: bool, result: NatResult
    ) -> None:
        iptc = self._iptc()
        started = time.monotonic()
        with xtables_lock(timeout=self.lock_timeout):
            table = self._table(family)
            table.refresh()
            changed = False
            for builtin, chain in JUMPS.items():
                if not table.is_chain(chain):
                    table.create_chain(chain)
                    result.chains_created += 1
                    changed = True
                fixed = self._fix_jump(table, family, builtin, chain)
                result.jumps_fixed += fixed
                changed = changed or bool(fixed)
            if verify:
                self._parsed.clear()
            after: Dict[str, List[Optional[NatRule]]] = {}
            for chain in JUMPS.values():
                want = [rule for rule in desired if rule.chain == chain]
                actual = self._read_chain(table, chain)
                plan = plan_chain(want, actual)
                ch = iptc.Chain(table, chain)
                if plan.rebuild:
                    log.warning("nat chain rebuilt chain=%s reason=foreign rule", chain)
                    result.removed += len(actual)
                    ch.flush()
                else:
                    for rule in plan.delete:
                        entry = self._build(rule)
                        table.delete_entry(chain, entry.data, entry.mask)
                        result.removed += 1
                for rule in plan.add:
                    table.append_entry(chain, self._build(rule).data)
                    result.added += 1
                if not plan.empty:
                    changed = True
                    log_changes("removed", chain, plan.delete)
                    log_changes("added", chain, plan.add)
                kept: List[Optional[NatRule]] = list(sorted(set(want)))
                after[chain] = kept if not plan.empty else [r for r in actual if r is not None]
            if changed:
                table.commit()
                table.refresh()
        for rules in after.values():
            result.actual.extend(r for r in rules if r is not None)
        log.debug("nat applied family=%d seconds=%.3f", family, time.monotonic() - started)

    def _fix_jump(self, table: Any, family: int, builtin: str, chain: str) -> int:
        """Exactly one plain ``-j chain`` in ``builtin``; returns how many changes it made."""
        iptc = self._iptc()
        ch = iptc.Chain(table, builtin)
        plain = 0
        changes = 0
        for rule in ch.rules:
            fields = rule_fields(rule)
            if fields["target"] != chain:
                continue
            is_plain = not (
                fields["src"]
                or fields["dst"]
                or fields["in"]
                or fields["out"]
                or fields["proto"]
                or fields["matches"]
            )
            if is_plain and plain == 0:
                plain += 1
                continue
            ch.delete_rule(rule)
            changes += 1
        if plain == 0:
            ch.insert_rule(self._jump(family, chain), 0)
            changes += 1
        return changes

    def remove_all(self) -> int:
        """Remove the jumps and our chains (final stop). Returns rules removed."""
        iptc = self._iptc()
        removed = 0
        for family in self.families:
            try:
                with xtables_lock(timeout=self.lock_timeout):
                    table = self._table(family)
                    table.refresh()
                    if not any(table.is_chain(c) for c in JUMPS.values()):
                        continue
                    for builtin, chain in JUMPS.items():
                        for rule in iptc.Chain(table, builtin).rules:
                            if rule.target is not None and rule.target.name == chain:
                                iptc.Chain(table, builtin).delete_rule(rule)
                        if table.is_chain(chain):
                            removed += self._count(table, chain)
                            table.flush_entries(chain)
                            table.delete_chain(chain)
                    table.commit()
                    table.refresh()
            except Exception as exc:
                if family == 4:
                    raise
                log.debug("nat ipv6 cleanup skipped reason=%s", exc)
        return removed
