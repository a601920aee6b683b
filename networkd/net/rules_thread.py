"""The applier's iptables work (VIP DNAT rules and the ACL), on a thread of its own.

Every iptables change needs ``/run/xtables.lock``, which Docker may hold for seconds while
it starts containers. The applier's main loop must never wait for it: addresses are
removed, strict fencing applied, probes sent and claims answered while a change of rules
waits. So the main loop only says what it wants (``want``) and reads what is in place
(``state``); this thread waits for the lock the way ``iptables -w`` does (in the kernel,
so it gets its turn among Docker's calls), applies the newest wish, and pokes the main loop
(``wake``) when the rules changed, so addresses whose rules are now in can be bound.

python-iptables (libiptc through ctypes) is used from this thread only.
"""

import dataclasses
import logging
import threading
import time
from typing import Any, Callable, Dict, List, Mapping, Optional

from networkd.net.acl_rules import AclRules
from networkd.net.nat_helper import FamilyNat
from networkd.net.nat_rules import NatRule

log = logging.getLogger("networkd.applier")

# Re-applied every PERIODIC_S even without a change, to repair outside drift, unless a pass
# costs more than 1/DUTY of that: reading our chains back costs about 0.3 ms per rule in
# python-iptables (0.7 s for 2,000 rules), and drift checks must not eat a core.
PERIODIC_S = 1.0
DUTY = 5.0


def log_new_failures(
    level: int, message: str, failed: Mapping[int, str], before: Mapping[int, str]
) -> Dict[int, str]:
    """Log each family's failure once, when its reason is new; returns what to remember."""
    for family, reason in sorted(failed.items()):
        if before.get(family) != reason:
            log.log(level, message, family, reason)
    return dict(failed)


@dataclasses.dataclass
class RulesState:
    """What the thread last achieved (read by the main loop)."""

    nat_actual: Optional[List[NatRule]] = None  # our nat rules in the kernel; None: unknown
    applied_seq: int = 0  # the ``want`` sequence number the nat rules last matched
    repairs: int = 0  # changes made while the wish stayed the same (outside drift)
    waiting_since: float = 0.0  # monotonic time a pass started waiting/working (0: idle)


class RulesThread:
    def __init__(
        self,
        nat: FamilyNat,
        acl: Optional[AclRules],
        wake: Callable[[], None],
        periodic: float = PERIODIC_S,
    ) -> None:
        self.nat = nat
        self.acl = acl
        self._wake_main = wake
        self.periodic = periodic
        self._cond = threading.Condition()
        self._seq = 0
        self._rules: Optional[List[NatRule]] = None
        self._acl_items: Optional[Mapping[str, Any]] = None
        self._verify = False
        self._stop = False
        self._final = False
        self._finished = threading.Event()
        self._state = RulesState()
        self._last_nat: Optional[frozenset] = None
        self._last_acl = ""
        self._acl_failures: Dict[int, str] = {}
        self._nat_failures: Dict[int, str] = {}
        self._thread = threading.Thread(target=self._run, name="applier-rules", daemon=True)

    def start(self) -> "RulesThread":
        self._thread.start()
        return self

    def want(
        self,
        rules: Optional[List[NatRule]],
        acl_items: Optional[Mapping[str, Any]],
        verify: bool = False,
    ) -> int:
        """The newest wish (``rules`` None: leave the nat chains as they are, ``acl_items``
        None: no ACL yet); returns its sequence number. Applied as soon as the lock allows."""
        with self._cond:
            changed = rules != self._rules or acl_items != self._acl_items
            self._rules = None if rules is None else list(rules)
            self._acl_items = acl_items
            self._verify = self._verify or verify
            if changed or verify:
                self._seq += 1
                self._cond.notify()
            return self._seq

    def state(self) -> RulesState:
        with self._cond:
            return dataclasses.replace(self._state)

    def stop(self) -> None:
        """A plain restart: leave the rules as they are."""
        with self._cond:
            self._stop = True
            self._cond.notify()
        if self._thread.is_alive():
            self._thread.join(1.0)  # a daemon thread: one stuck on the lock ends with us

    def finish(self, timeout: float) -> bool:
        """Final stop: the thread removes the ACL (policy first) and our nat chains, then
        ends. False when it could not within ``timeout`` (the xtables lock stayed busy)."""
        with self._cond:
            self._final = True
            self._cond.notify()
        return self._finished.wait(timeout)

    # -- the thread ----------------------------------------------------------------------

    def _run(self) -> None:
        try:
            self.nat.load()  # python-iptables' import (~0.3 s) while the elector contends
        except Exception as exc:
            log.warning("python-iptables not loaded reason=%s", exc)
        done = -1
        while True:
            with self._cond:
                if self._seq == done and not (self._stop or self._final):
                    self._cond.wait(self.periodic)
                if self._stop:
                    return
                if self._final:
                    break
                seq, rules, acl_items = self._seq, self._rules, self._acl_items
                verify, self._verify = self._verify, False
                self._state.waiting_since = time.monotonic()
            started = time.monotonic()
            if rules is not None:
                self._apply_nat(seq, rules, verify)
            self._apply_acl(acl_items)
            self.periodic = max(PERIODIC_S, DUTY * (time.monotonic() - started))
            with self._cond:
                self._state.waiting_since = 0.0
            done = seq
            self._wake_main()  # rules may be in now: addresses can follow
        self._teardown()
        self._finished.set()

    def _teardown(self) -> None:
        if self.acl is not None:
            try:
                self.acl.remove()
            except Exception as exc:
                log.warning("acl removal failed reason=%s", exc)
        try:
            self.nat.remove_all()
        except Exception as exc:
            log.warning("nat removal failed reason=%s", exc)

    def _apply_nat(self, seq: int, rules: List[NatRule], verify: bool) -> None:
        try:
            result = self.nat.apply(rules, verify=verify)
        except Exception as exc:
            log.warning("nat apply failed reason=%s", exc)
            with self._cond:
                self._state.nat_actual = None
            return
        self._nat_failures = log_new_failures(
            logging.ERROR,
            "nat apply failed family=%d reason=%s (its VIPs wait for their rules)",
            result.failed,
            self._nat_failures,
        )
        wanted = frozenset(rules)
        changes = result.added + result.removed + result.jumps_fixed + result.chains_created
        with self._cond:
            self._state.nat_actual = list(result.actual)
            self._state.applied_seq = seq
            if changes and wanted == self._last_nat:
                self._state.repairs += changes
                log.warning("host drift repaired what=nat changes=%d", changes)
        self._last_nat = wanted

    def _apply_acl(self, items: Optional[Mapping[str, Any]]) -> None:
        if self.acl is None or items is None:
            return  # wait for the whitelist before the policy turns DROP
        signature = repr(sorted(items.items()))
        periodic = signature == self._last_acl
        self._last_acl = signature
        result = self.acl.apply(items)  # the watcher validated every entry (validate.py)
        self._acl_failures = log_new_failures(
            logging.WARNING,
            "acl apply failed family=%d reason=%s",
            result.failed,
            self._acl_failures,
        )
        if result.failed:
            self._last_acl = ""  # what the retry changes is not outside drift
        if periodic and result.changed:
            with self._cond:
                self._state.repairs += result.added + result.removed + int(result.policy_changed)
            log.warning("acl drift repaired added=%d removed=%d", result.added, result.removed)
