"""The INPUT ACL of SPEC section 6: a pure plan from the whitelists and a python-iptables adapter.

Filter table, the same layout in iptables (IPv4 sources) and ip6tables (IPv6 sources)::

    INPUT -m comment --comment "networkd acl, input policy before: ACCEPT" -j lain-ACL
                                                           (the one rule of ours in INPUT)
    lain-ACL -i lo -j ACCEPT
    lain-ACL -i docker0 -j ACCEPT
    lain-ACL -i cali+ -j ACCEPT
    lain-ACL -m state --state INVALID -j DROP
    lain-ACL -m state --state RELATED,ESTABLISHED -j ACCEPT
    lain-ACL -p tcp -m tcp --dport 22 -j ACCEPT
    lain-ACL -p ipv6-icmp -j ACCEPT                                  (ip6tables only)
    lain-ACL -s <whitelist ip or cidr> | -m iprange --src-range <a-b> -j lain-ENTRY
    lain-ACL -p <proto> -m multiport --dports <up to 15> -j lain-ENTRY   (both families)
    lain-ACL -s <src> | -m iprange --src-range <a-b> -j lain-INPUT       (whitelist_in_ports)
    lain-ENTRY -j ACCEPT
    lain-INPUT -s <src> -p <proto> -m multiport --dports <ports> -j ACCEPT
    policy INPUT DROP

Ownership (docs/applier.md): the three ``lain-`` chains are networkd's entirely; in INPUT
only rules that jump into them are ours (the marked jump, and the Go daemon's unmarked
jumps into lain-ENTRY / lain-INPUT, which are replaced). Every other rule of INPUT is the
operator's: never read beyond its target, never moved, never deleted. The comment of the
jump records the INPUT policy found before networkd first changed it, so a restarted or
SIGKILLed applier, and even a ruleset saved and restored by iptables-services, knows what
the stop must restore; the stop restores it only when networkd turned it to DROP.

Whitelist values come validated and normalised from the watcher (networkd/etcd/validate.py);
the plan here does not judge them.
"""

import ipaddress
import logging
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

from networkd.net.xtables import (
    XtablesLockTimeout,
    rule_fields,
    strip_comment_quotes,
    xtables_lock,
)

log = logging.getLogger("networkd.applier")

ACL_CHAIN = "lain-ACL"
ENTRY_CHAIN = "lain-ENTRY"
INPUT_CHAIN = "lain-INPUT"
OUR_CHAINS = (ACL_CHAIN, ENTRY_CHAIN, INPUT_CHAIN)
FAMILIES = (4, 6)
MARK = "networkd acl"
MARK_POLICY = ", input policy before: "
POLICIES = ("ACCEPT", "DROP")
MULTIPORT_MAX = 15  # the multiport match takes at most 15 ports (a range counts as two)
ICMPV6 = "icmpv6"  # python-iptables' name of ipv6-icmp


@dataclass(frozen=True, order=True)
class FilterRule:
    """One rule of the ACL, in plain values."""

    chain: str
    target: str
    in_iface: str = ""
    src: str = ""  # a network with prefix (10.1.2.3/32, 2001:db8::/64); "" = any source
    src_range: str = ""  # a-b, the iprange match
    proto: str = ""
    dport: str = ""  # one port (-m tcp --dport)
    dports: str = ""  # multiport list
    state: str = ""  # -m state --state
    comment: str = ""

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
        if self.comment:
            parts.append(f'-m comment --comment "{self.comment}"')
        parts.append(f"-j {self.target}")
        return " ".join(parts)


BASE_RULES: Tuple[FilterRule, ...] = (
    FilterRule(ACL_CHAIN, "ACCEPT", in_iface="lo"),
    FilterRule(ACL_CHAIN, "ACCEPT", in_iface="docker0"),
    FilterRule(ACL_CHAIN, "ACCEPT", in_iface="cali+"),
    FilterRule(ACL_CHAIN, "DROP", state="INVALID"),
    FilterRule(ACL_CHAIN, "ACCEPT", state="RELATED,ESTABLISHED"),
    FilterRule(ACL_CHAIN, "ACCEPT", proto="tcp", dport="22"),
)
# IPv6 does not work without neighbour discovery and MLD (RFC 4890 4.4.1), which conntrack
# leaves untracked: ICMPv6 is accepted as a whole, as CentOS 7's stock ip6tables ruleset does.
BASE_RULES_V6: Tuple[FilterRule, ...] = BASE_RULES + (
    FilterRule(ACL_CHAIN, "ACCEPT", proto=ICMPV6),
)
ENTRY_RULES: Tuple[FilterRule, ...] = (FilterRule(ENTRY_CHAIN, "ACCEPT"),)


# ---------------------------------------------------------------------------------------
# the plan: whitelists -> rules per family and chain

ChainRules = Dict[str, List[FilterRule]]


def source_match(text: str) -> Optional[Tuple[int, str, str]]:
    """A validated source -> (family, src, src_range); None if it does not parse.

    A ``/0`` network becomes "any source" (``src`` ""): the kernel reads a /0 back as no
    source, so writing it as ``0.0.0.0/0`` would look like a different rule every pass."""
    try:
        if "-" in text:
            first, _, last = text.partition("-")
            a, b = ipaddress.ip_address(first), ipaddress.ip_address(last)
            return a.version, "", f"{a}-{b}"
        network = ipaddress.ip_network(text, strict=False)
    except ValueError:
        return None
    return network.version, "" if network.prefixlen == 0 else network.with_prefixlen, ""


def _port_span(text: str) -> Tuple[int, int]:
    first, _, last = text.partition(":")
    return int(first), int(last or first)


def port_chunks(ports: Iterable[str]) -> List[str]:
    """Sorted, de-duplicated multiport lists of at most 15 ports (a range counts twice).

    ``ports`` are validated ``80`` / ``8000:8100`` strings."""
    spans = set()
    for port in ports:
        try:
            spans.add(_port_span(str(port)))
        except ValueError:
            continue  # not from validate.py: nothing to build from it
    chunks: List[str] = []
    current: List[str] = []
    weight = 0
    for lo, hi in sorted(spans):
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


def desired_acl(acl: Mapping[str, Any]) -> Dict[int, ChainRules]:
    """Rules per family and chain from the watcher's ``state.acl`` items (AclList).

    Keys: ``whitelist_ips``, ``ex_ports/<proto>``, ``in_ports/<source>``. Each source lands
    in its own family only; ``ex_ports`` (no source) in both."""
    out: Dict[int, ChainRules] = {
        family: {
            ACL_CHAIN: list(BASE_RULES if family == 4 else BASE_RULES_V6),
            ENTRY_CHAIN: list(ENTRY_RULES),
            INPUT_CHAIN: [],
        }
        for family in FAMILIES
    }

    def add(family: int, rule: FilterRule) -> None:
        rules = out[family][rule.chain]
        if rule not in rules:
            rules.append(rule)

    whitelist = acl.get("whitelist_ips")
    for item in whitelist.items if whitelist is not None else []:
        found = source_match(str(item))
        if found is not None:
            family, src, src_range = found
            add(family, FilterRule(ACL_CHAIN, ENTRY_CHAIN, src=src, src_range=src_range))
    for key in sorted(acl):
        if key.startswith("ex_ports/"):
            proto = key.split("/", 1)[1]
            for chunk in port_chunks(acl[key].items):
                for family in FAMILIES:
                    add(family, FilterRule(ACL_CHAIN, ENTRY_CHAIN, proto=proto, dports=chunk))
    for key in sorted(acl):
        if not key.startswith("in_ports/"):
            continue
        found = source_match(key.split("/", 1)[1])
        if found is None:
            continue
        family, src, src_range = found
        rules = [
            FilterRule(
                INPUT_CHAIN, "ACCEPT", src=src, src_range=src_range, proto=proto, dports=chunk
            )
            for proto in sorted(acl[key].ports)
            for chunk in port_chunks(acl[key].ports[proto])
        ]
        if rules:
            add(family, FilterRule(ACL_CHAIN, INPUT_CHAIN, src=src, src_range=src_range))
            for rule in rules:
                add(family, rule)
    return out


# ---------------------------------------------------------------------------------------
# the jump from INPUT and the policy it records


def jump_rule(policy_before: str) -> FilterRule:
    """Our one rule of INPUT; its comment is both our mark and the policy record."""
    return FilterRule("INPUT", ACL_CHAIN, comment=f"{MARK}{MARK_POLICY}{policy_before}")


def recorded_policy(rules: Sequence[Optional[FilterRule]]) -> Optional[str]:
    """The policy recorded by the first of our INPUT rules that carries a readable record."""
    for rule in rules:
        if rule is None or not rule.comment.startswith(MARK + MARK_POLICY):
            continue
        policy = rule.comment[len(MARK + MARK_POLICY) :]
        if policy in POLICIES:
            return policy
    return None


def policy_before(current: str, leftovers: bool) -> str:
    """What the stop should restore, decided when no record exists.

    Without any chain of ours the current policy is the operator's. With chains of ours
    but no record (the Go daemon's leftovers, which had no marks; or a jump removed from
    outside), today's DROP may be ours: SPEC section 6 says the stop restores ACCEPT, as
    the Go daemon's own stop did."""
    return "ACCEPT" if leftovers else current


def policy_to_restore(before: Optional[str], current: str) -> Optional[str]:
    """The policy the stop sets, or None to leave it: only a DROP that networkd set goes."""
    if before is None or current != "DROP" or before == "DROP":
        return None
    return before


# ---------------------------------------------------------------------------------------
# reading rules back and planning changes


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
            found = source_match(params["src-range"])
            values["src_range"] = found[2] if found else params["src-range"]
        elif name == "comment" and set(params) == {"comment"}:
            values["comment"] = strip_comment_quotes(params["comment"])
        else:
            return None
    return FilterRule(chain, fields.get("target", ""), **values)


@dataclass(frozen=True)
class ChainPlan:
    """Changes to one chain of ours: flush first (rebuild), delete, then insert each rule at
    its 0-based position, in order."""

    flush: bool = False
    delete: Tuple[FilterRule, ...] = ()
    insert: Tuple[Tuple[int, FilterRule], ...] = ()

    @property
    def empty(self) -> bool:
        return not (self.flush or self.delete or self.insert)


def plan_chain(desired: Sequence[FilterRule], actual: Sequence[Optional[FilterRule]]) -> ChainPlan:
    """Make a chain of ours hold exactly ``desired``, in order, touching only what differs.

    ``actual`` has None for a rule we cannot read. Unchanged rules keep their place and
    counters; a duplicate, an unreadable rule or a rule out of order makes the chain be
    rebuilt in the same commit (never a moment without it)."""
    wanted = list(dict.fromkeys(desired))
    order = {rule: i for i, rule in enumerate(wanted)}
    kept = [rule for rule in actual if rule is not None and rule in order]
    positions = [order[rule] for rule in kept]
    if None in actual or len(set(kept)) != len(kept) or positions != sorted(positions):
        return ChainPlan(flush=True, insert=tuple(enumerate(wanted)))
    delete = tuple(rule for rule in actual if rule is not None and rule not in order)
    present = set(kept)
    insert = tuple((i, rule) for i, rule in enumerate(wanted) if rule not in present)
    return ChainPlan(delete=delete, insert=insert)


@dataclass(frozen=True)
class InputPlan:
    """Changes to INPUT: delete every rule of ours, then insert the jump at ``position``."""

    replace: bool = False
    position: int = 0


@dataclass(frozen=True)
class InputRule:
    """A rule of INPUT that jumps into one of our chains (``rule`` None: unreadable)."""

    index: int
    target: str
    rule: Optional[FilterRule]


def plan_input(jump: FilterRule, ours: Sequence[InputRule]) -> InputPlan:
    """Exactly one jump into our chains: ours where it is, else at the top of INPUT.

    A wrong or extra rule of ours goes. The jump keeps the place of the first existing
    jump to lain-ACL; without one it goes to the top, ahead of an operator's final REJECT
    (an unmarked jump into lain-ENTRY / lain-INPUT, the Go daemon's, gives no place)."""
    if [found.rule for found in ours] == [jump]:
        return InputPlan()
    for found in ours:
        if found.target == ACL_CHAIN:
            # its index once the rules of ours above it are deleted too
            above = sum(1 for other in ours if other.index < found.index)
            return InputPlan(replace=True, position=found.index - above)
    return InputPlan(replace=True, position=0)


# ---------------------------------------------------------------------------------------
# adapter


class AclFamilyUnavailable(RuntimeError):
    """The filter table of a family cannot be opened (e.g. IPv6 disabled in the kernel)."""


@dataclass
class AclResult:
    added: int = 0
    removed: int = 0
    policy_changed: bool = False
    failed: Dict[int, str] = field(default_factory=dict)  # family -> reason
    busy: bool = False  # the xtables lock was held by someone else: try again soon

    @property
    def changed(self) -> bool:
        return bool(self.added or self.removed or self.policy_changed)


class AclRules:
    """The ACL in the filter tables (iptables and ip6tables) through python-iptables."""

    def __init__(
        self, families: Sequence[int] = FAMILIES, lock_timeout: Optional[float] = 5.0
    ) -> None:
        self.families = tuple(families)
        # How long ``apply`` waits for the xtables lock: the applier waits only a moment and
        # retries on its next pass, so nothing else it does waits behind iptables.
        self.lock_timeout = lock_timeout
        # family -> the policy the stop restores, as last read from our jump's comment (kept
        # to write the jump back the same if someone deletes it while we run)
        self.before: Dict[int, str] = {}

    @staticmethod
    def _iptc() -> Any:
        import iptc

        return iptc

    def _open(self, family: int) -> Any:
        iptc = self._iptc()
        try:
            if family == 6:
                table = iptc.Table6(iptc.Table6.FILTER, autocommit=False)
            else:
                table = iptc.Table(iptc.Table.FILTER, autocommit=False)
            table.refresh()
        except iptc.IPTCError as exc:
            raise AclFamilyUnavailable(f"IPv{family} filter table: {exc}") from exc
        return table

    def _build(self, family: int, rule: FilterRule) -> Any:
        iptc = self._iptc()
        built = iptc.Rule6() if family == 6 else iptc.Rule()
        if rule.in_iface:
            built.in_interface = rule.in_iface
        if rule.src:
            built.src = rule.src
        if rule.proto:
            built.protocol = rule.proto
        if rule.src_range:
            built.create_match("iprange").src_range = rule.src_range
        if rule.state:
            built.create_match("state").state = rule.state
        if rule.dport:
            built.create_match(rule.proto).dport = rule.dport
        if rule.dports:
            built.create_match("multiport").dports = rule.dports
        if rule.comment:
            built.create_match("comment").comment = rule.comment
        built.create_target(rule.target)
        return built

    def _read_chain(self, table: Any, chain: str) -> List[Optional[FilterRule]]:
        iptc = self._iptc()
        return [parse_filter_rule(chain, rule_fields(r)) for r in iptc.Chain(table, chain).rules]

    def _input_ours(self, table: Any) -> List[InputRule]:
        """The INPUT rules that jump into our chains. Other rules are only looked at for
        their target: an operator's rule is none of our business."""
        iptc = self._iptc()
        ours = []
        for index, rule in enumerate(iptc.Chain(table, "INPUT").rules):
            target = rule.target
            if target is not None and target.name in OUR_CHAINS:
                parsed = parse_filter_rule("INPUT", rule_fields(rule))
                ours.append(InputRule(index, target.name, parsed))
        return ours

    def _delete_ours_from_input(self, family: int, table: Any) -> int:
        """Delete each INPUT rule jumping into our chains, reading INPUT afresh each time
        (python-iptables rule handles point into the table cache and go stale)."""
        iptc = self._iptc()
        chain = iptc.Chain(table, "INPUT")
        removed = 0
        while True:
            ours = [r for r in chain.rules if r.target is not None and r.target.name in OUR_CHAINS]
            if not ours:
                return removed
            described = parse_filter_rule("INPUT", rule_fields(ours[0]))
            chain.delete_rule(ours[0])
            removed += 1
            what = described.describe() if described else "INPUT (unreadable) -> lain chain"
            log.info("acl rule removed family=%d rule=%s", family, what)

    def _sync_chain(
        self, family: int, table: Any, chain: str, desired: Sequence[FilterRule], result: AclResult
    ) -> bool:
        actual = self._read_chain(table, chain)
        plan = plan_chain(desired, actual)
        if plan.empty:
            return False
        ch = self._iptc().Chain(table, chain)
        if plan.flush:
            table.flush_entries(chain)
            result.removed += len(actual)
            log.info("acl chain rebuilt family=%d chain=%s rules=%d", family, chain, len(actual))
        for rule in plan.delete:
            ch.delete_rule(self._build(family, rule))
            result.removed += 1
            log.info("acl rule removed family=%d rule=%s", family, rule.describe())
        for position, rule in plan.insert:
            ch.insert_rule(self._build(family, rule), position)
            result.added += 1
            if not plan.flush:
                log.info("acl rule added family=%d rule=%s", family, rule.describe())
        return True

    def read(self, family: int = 4) -> Dict[str, List[Optional[FilterRule]]]:
        """Our rules: INPUT's jumps into our chains, and each chain of ours (tests, status)."""
        with xtables_lock():
            table = self._open(family)
            out = {"INPUT": [found.rule for found in self._input_ours(table)]}
            for chain in OUR_CHAINS:
                out[chain] = self._read_chain(table, chain) if table.is_chain(chain) else []
            return out

    def apply(self, acl: Mapping[str, Any]) -> AclResult:
        """Install the ACL for ``acl`` (state.acl items) in each family; policy DROP once the
        rules are committed. A family that fails is reported in ``failed``, the other goes on."""
        wanted = desired_acl(acl)
        result = AclResult()
        for family in self.families:
            try:
                self._apply_family(family, wanted[family], result)
            except XtablesLockTimeout:
                result.busy = True
            except Exception as exc:
                result.failed[family] = f"{type(exc).__name__}: {exc}"
        return result

    def _apply_family(self, family: int, chains: ChainRules, result: AclResult) -> None:
        iptc = self._iptc()
        with xtables_lock(timeout=self.lock_timeout):
            table = self._open(family)
            ours = self._input_ours(table)
            policy = str(table.get_policy("INPUT")[0].name)
            leftovers = any(table.is_chain(chain) for chain in OUR_CHAINS)
            before = (
                recorded_policy([found.rule for found in ours])
                or self.before.get(family)
                or policy_before(policy, leftovers)
            )
            self.before[family] = before
            changed = False
            for chain in OUR_CHAINS:
                if not table.is_chain(chain):
                    table.create_chain(chain)
                    changed = True
            for chain in (ENTRY_CHAIN, INPUT_CHAIN, ACL_CHAIN):
                changed = self._sync_chain(family, table, chain, chains[chain], result) or changed
            jump = jump_rule(before)
            plan = plan_input(jump, ours)
            if plan.replace:
                result.removed += self._delete_ours_from_input(family, table)
                iptc.Chain(table, "INPUT").insert_rule(self._build(family, jump), plan.position)
                result.added += 1
                changed = True
                log.info("acl rule added family=%d position=%d rule=%s", family,
                         plan.position + 1, jump.describe())  # fmt: skip
            if changed:
                table.commit()
                table.refresh()
            if policy != "DROP":
                # Only now, with the rules committed, does the default turn to DROP.
                table.set_policy("INPUT", iptc.Policy("DROP"))
                table.commit()
                table.refresh()
                result.policy_changed = True
                log.info(
                    "acl policy set family=%d chain=INPUT policy=DROP before=%s", family, before
                )

    def remove(self) -> int:
        """Final stop, per family: restore the INPUT policy (only a DROP networkd set), then
        remove our jump and chains. Returns the number of rules removed; raises the first
        failure once every family was tried."""
        removed = 0
        failures: List[str] = []
        for family in self.families:
            try:
                removed += self._remove_family(family)
            except AclFamilyUnavailable as exc:
                log.info("acl family skipped family=%d reason=%s", family, exc)
            except Exception as exc:
                failures.append(f"IPv{family}: {type(exc).__name__}: {exc}")
        if failures:
            raise RuntimeError("; ".join(failures))
        return removed

    def _remove_family(self, family: int) -> int:
        iptc = self._iptc()
        with xtables_lock():
            table = self._open(family)
            ours = self._input_ours(table)
            policy = str(table.get_policy("INPUT")[0].name)
            leftovers = any(table.is_chain(chain) for chain in OUR_CHAINS)
            before = recorded_policy([found.rule for found in ours]) or self.before.get(family)
            if before is None and leftovers:
                before = policy_before(policy, leftovers)
            restore = policy_to_restore(before, policy)
            if restore is not None:
                # First, while our rules still let SSH and replies in.
                table.set_policy("INPUT", iptc.Policy(restore))
                table.commit()
                table.refresh()
                log.info("acl policy set family=%d chain=INPUT policy=%s", family, restore)
            removed = self._delete_ours_from_input(family, table)
            present = [chain for chain in OUR_CHAINS if table.is_chain(chain)]
            for chain in present:
                removed += len(iptc.Chain(table, chain).rules)
                table.flush_entries(chain)
            for chain in present:
                table.delete_chain(chain)
            if removed or present:
                table.commit()
                table.refresh()
            self.before.pop(family, None)
            return removed
