"""FORWARD accept rules for routed container networks (python-iptables).

Docker sets the filter FORWARD policy to DROP and accepts only its own bridges, so
packets routed between the host's interface and a routed network's veths would be
dropped. networkd keeps its own chain::

    FORWARD -j lain-FORWARD                       (once, first)
    lain-FORWARD -s <subnet> -j ACCEPT            (per routed network)
    lain-FORWARD -d <subnet> -j ACCEPT

The plan is pure (``plan_forward``); the adapter rewrites the chain only when it differs
and checks again every ``VERIFY_S`` seconds, so an outside flush is repaired.
"""

import logging
import time
from dataclasses import dataclass
from typing import Any, List, Sequence, Tuple

from networkd.net.xtables import rule_fields, xtables_lock

log = logging.getLogger("networkd.netlinks")

CHAIN = "lain-FORWARD"
VERIFY_S = 30.0


@dataclass(frozen=True)
class ForwardRule:
    src: str = ""
    dst: str = ""


def plan_forward(subnets: Sequence[str]) -> List[ForwardRule]:
    rules: List[ForwardRule] = []
    for subnet in sorted(set(subnets)):
        rules += [ForwardRule(src=subnet), ForwardRule(dst=subnet)]
    return rules


class ForwardRules:
    def __init__(self) -> None:
        self._applied: Tuple[str, ...] = ()
        self._checked = 0.0

    def apply(self, subnets: Sequence[str]) -> bool:
        """Make the chain hold the rules of ``subnets``; True when something changed."""
        wanted = tuple(sorted(set(subnets)))
        now = time.monotonic()
        if wanted == self._applied and now - self._checked < VERIFY_S:
            return False
        self._checked = now
        changed = self._sync(plan_forward(wanted), bool(wanted))
        self._applied = wanted
        return changed

    def _sync(self, desired: List[ForwardRule], needed: bool) -> bool:
        import iptc

        with xtables_lock():
            table = iptc.Table(iptc.Table.FILTER, autocommit=False)
            table.refresh()
            if not table.is_chain(CHAIN):
                if not needed:
                    return False
                table.create_chain(CHAIN)
            chain = iptc.Chain(table, CHAIN)
            actual = [self._parse(rule) for rule in chain.rules]
            changed = actual != desired
            if changed:
                table.flush_entries(CHAIN)
                for rule in desired:
                    chain.append_rule(self._build(rule))
            forward = iptc.Chain(table, "FORWARD")
            jumps = [r for r in forward.rules if r.target is not None and r.target.name == CHAIN]
            if not jumps:
                jump = iptc.Rule()
                jump.create_target(CHAIN)
                forward.insert_rule(jump)
                changed = True
            for extra in jumps[1:]:
                forward.delete_rule(extra)
                changed = True
            if changed:
                table.commit()
                log.info("forward rules set chain=%s rules=%d", CHAIN, len(desired))
            return changed

    @staticmethod
    def _parse(rule: Any) -> ForwardRule:
        fields = rule_fields(rule)
        return ForwardRule(src=fields["src"], dst=fields["dst"])

    @staticmethod
    def _build(rule: ForwardRule) -> Any:
        import iptc

        built = iptc.Rule()
        if rule.src:
            built.src = rule.src
        if rule.dst:
            built.dst = rule.dst
        built.create_target("ACCEPT")
        return built
