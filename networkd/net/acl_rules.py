"""The INPUT ACL of SPEC section 6: a pure plan from the whitelists and a python-iptables adapter.

Filter table, in this order::

    INPUT -i lo -j ACCEPT
    INPUT -i docker0 -j ACCEPT
    INPUT -i cali+ -j ACCEPT
    INPUT -m state --state INVALID -j DROP
    INPUT -m state --state RELATED,ESTABLISHED -j ACCEPT
    INPUT -p tcp -m tcp --dport 22 -j ACCEPT
    INPUT -s <whitelist ip or cidr> -j lain-ENTRY                      (whitelist_ips)
    INPUT -p <proto> -m multiport --dports <up to 15> -j lain-ENTRY    (whitelist_ex_ports)
    INPUT -s <src> | -m iprange --src-range <a-b> -j lain-INPUT        (whitelist_in_ports)
    lain-ENTRY -j ACCEPT
    lain-INPUT -s <src> -p <proto> -m multiport --dports <ports> -j ACCEPT
    policy INPUT DROP

Rules are the same shape the Go daemon used (``-m state``, no comments), so its leftovers
are adopted. A rule of INPUT is ours when it is one of the six base rules or jumps to one of
our chains; other rules of INPUT are never touched. Updates go by diff (never duplicated,
never leaked); the rules are committed before the policy turns DROP; ``remove`` restores
policy ACCEPT first and then removes everything.
"""

import ipaddress
import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

from networkd.net.xtables import rule_fields, xtables_lock

log = logging.getLogger("networkd.applier")

ENTRY_CHAIN = "lain-ENTRY"
INPUT_CHAIN = "lain-INPUT"
OUR_CHAINS = (ENTRY_CHAIN, INPUT_CHAIN)
MULTIPORT_MAX = 15  # the multiport match takes at most 15 ports (a range counts as two)
PROTOCOLS = ("tcp", "udp", "sctp", "dccp", "udplite")


@dataclass(frozen=True, order=True)
class FilterRule:
    """One rule of the ACL, in plain values."""

    chain: str
    target: str
    in_iface: str = ""
    src: str = ""  # a network with prefix, e.g. 10.0.0.0/8 or 10.1.2.3/32
    src_range: str = ""  # a-b, the iprange match
    proto: str = ""
    dport: str = ""  # one port (-m tcp --dport)
    dports: str = ""  # multiport list
    state: str = ""  # -m state --state

    def describe(self) -> str:
        parts = [self.chain]
        if self.in_iface:
            parts.append(f"-i {self.in_iface}")
        if self.src:
            parts.append(f"-s {self.src}")
        if self.src_range:
            parts.append(f"-m iprange --src-range {self.src_range}")
        if self.proto:
            parts.append(f"-p {self.proto}")
        if self.state:
            parts.append(f"-m state --state {self.state}")
        if self.dport:
            parts.append(f"--dport {self.dport}")
        if self.dports:
            parts.append(f"-m multiport --dports {self.dports}")
        parts.append(f"-j {self.target}")
        return " ".join(parts)


BASE_RULES: Tuple[FilterRule, ...] = (
    FilterRule("INPUT", "ACCEPT", in_iface="lo"),
    FilterRule("INPUT", "ACCEPT", in_iface="docker0"),
    FilterRule("INPUT", "ACCEPT", in_iface="cali+"),
    FilterRule("INPUT", "DROP", state="INVALID"),
    FilterRule("INPUT", "ACCEPT", state="RELATED,ESTABLISHED"),
    FilterRule("INPUT", "ACCEPT", proto="tcp", dport="22"),
)
ENTRY_RULES: Tuple[FilterRule, ...] = (FilterRule(ENTRY_CHAIN, "ACCEPT"),)


# ---------------------------------------------------------------------------------------
# validation of whitelist values


def parse_source(text: str) -> Tuple[str, str]:
    """``ip``, ``cidr`` or ``a-b`` -> (src, src_range); raises ValueError naming the value."""
    value = text.strip()
    if "-" in value:
        first, _, last = value.partition("-")
        try:
            a = ipaddress.IPv4Address(first.strip())
            b = ipaddress.IPv4Address(last.strip())
        except ValueError:
            raise ValueError(f"not an IPv4 range: {text!r}")
        if int(a) > int(b):
            raise ValueError(f"range start after end: {text!r}")
        return "", f"{a}-{b}"
    try:
        network = ipaddress.IPv4Network(value, strict=False)
    except ValueError:
        raise ValueError(f"not an IPv4 address or network: {text!r}")
    return network.with_prefixlen, ""


def parse_port(text: str) -> Tuple[int, int]:
    """``80`` or ``8000:8100`` (``8000-8100``) -> (first, last); raises ValueError."""
    value = str(text).strip().replace("-", ":")
    first, sep, last = value.partition(":")
    if not first.isdigit() or (sep and not last.isdigit()):
        raise ValueError(f"not a port or port range: {text!r}")
    lo, hi = int(first), int(last) if sep else int(first)
    if not (0 < lo < 65536 and 0 < hi < 65536 and lo <= hi):
        raise ValueError(f"port out of range: {text!r}")
    return lo, hi


def port_chunks(ports: Iterable[str]) -> List[str]:
    """Sorted, de-duplicated multiport lists of at most 15 ports (a range counts twice)."""
    parsed = sorted({parse_port(p) for p in ports})
    chunks: List[str] = []
    current: List[str] = []
    weight = 0
    for lo, hi in parsed:
        item = str(lo) if lo == hi else f"{lo}:{hi}"
        cost = 1 if lo == hi else 2
        if weight + cost > MULTIPORT_MAX:
            chunks.append(",".join(current))
            current, weight = [], 0
        current.append(item)
        weight += cost
    if current:
        chunks.append(",".join(current))
    return chunks


@dataclass
class AclPlanInput:
    """The ACL wanted, as rules per chain, plus the whitelist entries that were rejected."""

    input: List[FilterRule] = field(default_factory=list)
    entry: List[FilterRule] = field(default_factory=list)
    lain_input: List[FilterRule] = field(default_factory=list)
    errors: List[Tuple[str, str]] = field(default_factory=list)


def desired_acl(acl: Mapping[str, Any]) -> AclPlanInput:
    """Rules from the watcher's ``state.acl`` items (AclList); bad entries go to errors.

    Keys: ``whitelist_ips``, ``ex_ports/<proto>``, ``in_ports/<source>``."""
    out = AclPlanInput(input=list(BASE_RULES), entry=list(ENTRY_RULES))
    whitelist = acl.get("whitelist_ips")
    if whitelist is not None:
        seen = set()
        for item in whitelist.items:
            try:
                src, src_range = parse_source(str(item))
            except ValueError as exc:
                out.errors.append(("whitelist_ips", str(exc)))
                continue
            rule = FilterRule("INPUT", ENTRY_CHAIN, src=src, src_range=src_range)
            if rule not in seen:
                seen.add(rule)
                out.input.append(rule)
    for key in sorted(acl):
        if not key.startswith("ex_ports/"):
            continue
        proto = key.split("/", 1)[1].lower()
        if proto not in PROTOCOLS:
            out.errors.append((key, f"unknown proto {proto!r}"))
            continue
        good = []
        for port in acl[key].items:
            try:
                parse_port(str(port))
                good.append(str(port))
            except ValueError as exc:
                out.errors.append((key, str(exc)))
        for chunk in port_chunks(good):
            out.input.append(FilterRule("INPUT", ENTRY_CHAIN, proto=proto, dports=chunk))
    for key in sorted(acl):
        if not key.startswith("in_ports/"):
            continue
        source = key.split("/", 1)[1]
        try:
            src, src_range = parse_source(source)
        except ValueError as exc:
            out.errors.append((key, str(exc)))
            continue
        rules = []
        for proto_name in sorted(acl[key].ports):
            proto = proto_name.lower()
            if proto not in PROTOCOLS:
                out.errors.append((key, f"unknown proto {proto_name!r}"))
                continue
            good = []
            for port in acl[key].ports[proto_name]:
                try:
                    parse_port(str(port))
                    good.append(str(port))
                except ValueError as exc:
                    out.errors.append((key, str(exc)))
            for chunk in port_chunks(good):
                rules.append(
                    FilterRule(
                        INPUT_CHAIN,
                        "ACCEPT",
                        src=src,
                        src_range=src_range,
                        proto=proto,
                        dports=chunk,
                    )
                )
        if rules:
            out.input.append(FilterRule("INPUT", INPUT_CHAIN, src=src, src_range=src_range))
            out.lain_input.extend(rules)
    return out


# ---------------------------------------------------------------------------------------
# reading rules back


def parse_filter_rule(chain: str, fields: Dict[str, Any]) -> Optional[FilterRule]:
    """A kernel rule as a FilterRule, or None when it has a part we do not produce."""
    if fields.get("dst") or fields.get("out") or fields.get("target_params"):
        return None
    values: Dict[str, str] = {
        "in_iface": fields.get("in", ""),
        "src": fields.get("src", ""),
        "proto": fields.get("proto", ""),
    }
    for match in fields.get("matches", []):
        name = match.get("name")
        params = {k: v for k, v in match.items() if k != "name"}
        if name == "state" and set(params) == {"state"}:
            values["state"] = params["state"]
        elif name == "conntrack" and set(params) == {"ctstate"}:
            values["state"] = params["ctstate"]
        elif name == values["proto"] and set(params) == {"dport"}:
            values["dport"] = params["dport"]
        elif name == "multiport" and set(params) == {"dports"}:
            values["dports"] = params["dports"]
        elif name == "iprange" and set(params) == {"src-range"}:
            values["src_range"] = params["src-range"]
        else:
            return None
    return FilterRule(chain, fields.get("target", ""), **values)


def is_ours_in_input(fields: Dict[str, Any], rule: Optional[FilterRule]) -> bool:
    """Whether a rule of INPUT belongs to the ACL (so we may change or remove it)."""
    if fields.get("target") in OUR_CHAINS:
        return True
    return rule is not None and rule in BASE_RULES


@dataclass(frozen=True)
class RulesPlan:
    delete: Tuple[FilterRule, ...] = ()
    add: Tuple[FilterRule, ...] = ()

    @property
    def empty(self) -> bool:
        return not self.delete and not self.add


def plan_rules(desired: Sequence[FilterRule], actual: Sequence[FilterRule]) -> RulesPlan:
    """Keep one copy of each desired rule present, delete the rest, append the missing
    (in desired order). ``actual`` holds only rules that are ours."""
    have = Counter(actual)
    wanted = set(desired)
    delete: List[FilterRule] = []
    for rule in actual:
        if have[rule] > (1 if rule in wanted else 0):
            delete.append(rule)
            have[rule] -= 1
    present = set(actual)
    add: List[FilterRule] = []
    for rule in desired:
        if rule not in present and rule not in add:
            add.append(rule)
    return RulesPlan(delete=tuple(delete), add=tuple(add))


# ---------------------------------------------------------------------------------------
# adapter


@dataclass
class AclResult:
    added: int = 0
    removed: int = 0
    policy_changed: bool = False
    errors: List[Tuple[str, str]] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.added or self.removed or self.policy_changed)


class AclRules:
    """The ACL in the filter table through python-iptables."""

    @staticmethod
    def _iptc() -> Any:
        import iptc

        return iptc

    def _table(self) -> Any:
        iptc = self._iptc()
        return iptc.Table(iptc.Table.FILTER, autocommit=False)

    def _build(self, rule: FilterRule) -> Any:
        iptc = self._iptc()
        built = iptc.Rule()
        if rule.in_iface:
            built.in_interface = rule.in_iface
        if rule.src:
            built.src = rule.src
        if rule.proto:
            built.protocol = rule.proto
        if rule.src_range:
            match = built.create_match("iprange")
            match.src_range = rule.src_range
        if rule.state:
            match = built.create_match("state")
            match.state = rule.state
        if rule.dport:
            match = built.create_match(rule.proto)
            match.dport = rule.dport
        if rule.dports:
            match = built.create_match("multiport")
            match.dports = rule.dports
        built.create_target(rule.target)
        return built

    def _read(self, table: Any, chain: str) -> Tuple[List[FilterRule], List[Any]]:
        """Our rules of ``chain`` in order, and iptc rules that are ours but unreadable."""
        iptc = self._iptc()
        ours: List[FilterRule] = []
        odd: List[Any] = []
        for rule in iptc.Chain(table, chain).rules:
            fields = rule_fields(rule)
            parsed = parse_filter_rule(chain, fields)
            if chain == "INPUT" and not is_ours_in_input(fields, parsed):
                continue
            if parsed is None:
                odd.append(rule)
            else:
                ours.append(parsed)
        return ours, odd

    def read(self) -> Dict[str, List[FilterRule]]:
        with xtables_lock():
            table = self._table()
            table.refresh()
            out = {"INPUT": self._read(table, "INPUT")[0]}
            for chain in OUR_CHAINS:
                out[chain] = self._read(table, chain)[0] if table.is_chain(chain) else []
            return out

    def policy(self) -> str:
        with xtables_lock():
            table = self._table()
            table.refresh()
            return str(table.get_policy("INPUT")[0].name)

    def apply(self, acl: Mapping[str, Any]) -> AclResult:
        """Install the ACL for ``acl`` (state.acl items); policy DROP once the rules are in."""
        wanted = desired_acl(acl)
        result = AclResult(errors=list(wanted.errors))
        iptc = self._iptc()
        with xtables_lock():
            table = self._table()
            table.refresh()
            changed = False
            for chain in OUR_CHAINS:
                if not table.is_chain(chain):
                    table.create_chain(chain)
                    changed = True
            for chain, desired in (
                (ENTRY_CHAIN, wanted.entry),
                (INPUT_CHAIN, wanted.lain_input),
                ("INPUT", wanted.input),
            ):
                changed = self._sync_chain(table, chain, desired, result) or changed
            if changed:
                table.commit()
                table.refresh()
            if table.get_policy("INPUT")[0].name != "DROP":
                # Only now, with the rules committed, does the default turn to DROP.
                table.set_policy("INPUT", iptc.Policy("DROP"))
                table.commit()
                table.refresh()
                result.policy_changed = True
                log.info("acl policy set chain=INPUT policy=DROP")
        return result

    def _sync_chain(
        self, table: Any, chain: str, desired: Sequence[FilterRule], result: AclResult
    ) -> bool:
        iptc = self._iptc()
        ch = iptc.Chain(table, chain)
        actual, odd = self._read(table, chain)
        changed = False
        while odd:
            # rules of ours in a shape we do not produce: delete one at a time, then re-read
            ch.delete_rule(odd[0])
            result.removed += 1
            changed = True
            actual, odd = self._read(table, chain)
        plan = plan_rules(desired, actual)
        for rule in plan.delete:
            ch.delete_rule(self._build(rule))
            log.info("acl rule removed rule=%s", rule.describe())
            result.removed += 1
        for rule in plan.add:
            ch.append_rule(self._build(rule))
            log.info("acl rule added rule=%s", rule.describe())
            result.added += 1
        return changed or not plan.empty

    def remove(self) -> int:
        """Policy ACCEPT first, then every rule and chain of the ACL. Returns rules removed."""
        iptc = self._iptc()
        removed = 0
        with xtables_lock():
            table = self._table()
            table.refresh()
            if table.get_policy("INPUT")[0].name != "ACCEPT":
                table.set_policy("INPUT", iptc.Policy("ACCEPT"))
                table.commit()
                table.refresh()
                log.info("acl policy set chain=INPUT policy=ACCEPT")
            ch = iptc.Chain(table, "INPUT")
            actual, odd = self._read(table, "INPUT")
            while odd:
                ch.delete_rule(odd[0])
                removed += 1
                actual, odd = self._read(table, "INPUT")
            for rule in actual:
                ch.delete_rule(self._build(rule))
                removed += 1
            for chain in OUR_CHAINS:
                if table.is_chain(chain):
                    removed += len(iptc.Chain(table, chain).rules)
                    table.flush_entries(chain)
                    table.delete_chain(chain)
            table.commit()
            table.refresh()
        return removed
