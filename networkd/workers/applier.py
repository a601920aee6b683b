"""The applier worker (root): makes the host match the desired VIP set and the ACL.

Inputs (bus): elector ``state.desired`` and ``state.desired_rev`` (DesiredVip per key:
``<ip>`` = owned floating VIP, ``<ip>:<port>`` = port-only mapping), elector
``state.lease`` (fencing, with its deadline), watcher ``state.vips`` (which addresses are
cluster VIPs, so leftovers can be removed) and, with ``-acl``, watcher ``state.acl``.

Outputs: addresses (netlink), nat rules and the ACL (python-iptables), gratuitous ARP /
unsolicited NA and probes, ``state.applied`` (what is on the host per key) and
``state.applied_rev`` (the desired revision the host matched: the elector deletes a
released VIP's lock only after it), ``state.applier`` counters, events ``vip.garp`` and
``vip.duplicate``.

Rules of thumb:
- Nothing is removed before the elector's snapshot arrived. Then every present address
  that is desired is adopted as it is (never removed and re-added); VIP addresses that are
  not desired are removed (known VIPs: configured ones and those recorded as ours).
- Break before make, in this order (``networkd.net.vip_plan``): addresses that go are
  removed first, never waiting for the xtables lock; then the rules; then only addresses
  whose rules are in place are added. The xtables lock is tried for a moment and the
  pass retried, so neither removals nor fencing ever wait behind iptables.
- What the lease allows is ``networkd.net.fencing``: announcements only before the lease's
  deadline; probing and yielding otherwise.
- Every second the host is compared again, so outside changes are repaired.
- A plain restart (TERM/HUP) touches nothing. The final stop (INT) removes the ACL, the
  rules and the addresses; the elector has released the VIPs by then.
"""

import json
import os
import time
from typing import Any, Dict, FrozenSet, List, Optional, Set, Tuple

from networkd.bus.messages import (
    AppliedRevision,
    ApplierCounters,
    DesiredRevision,
    DesiredVip,
    DuplicateClaim,
    GarpSent,
    LeaseHealth,
)
from networkd.net import fencing
from networkd.net.acl_rules import AclRules
from networkd.net.addresses import AddressTable, InterfaceMissing, normalize_ip, plan_addresses
from networkd.net.carrier import CarrierWatch
from networkd.net.claims import Claim, ClaimListener
from networkd.net.garp import Announcer, GarpSchedule
from networkd.net.nat_helper import FamilyNat
from networkd.net.nat_rules import NatRule
from networkd.net.rules_thread import RulesState, RulesThread
from networkd.net.vip_plan import (
    HostWant,
    applied_items,
    floating_addresses,
    plan_host,
    ready_to_bind,
)
from networkd.wakeup import Wakeup, sleep_ms
from networkd.workers.base import WorkerContext

RECONCILE_INTERVAL = 1.0
VERIFY_INTERVAL = 30.0
POLL_MS = 50  # the shortest sleep: what is due sooner waits at most this long
IDLE_POLL_MS = 1000  # the longest (a reconcile is due every RECONCILE_INTERVAL anyway)
REANNOUNCE_MIN_INTERVAL = 0.2
RECORD_FILE = "addresses.json"
XTABLES_WARN_S = 5.0
# How long a released VIP's rules stay after its address went (networkd.net.vip_plan).
LINGER_S = 2.0


class AddressRecord:
    """The VIP addresses this applier bound, kept in the run dir across restarts.

    Lets a restarted applier remove its own leftovers even when the VIP left the cluster
    configuration meanwhile. The run dir is on tmpfs: it goes with the addresses on reboot."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.ips: Set[str] = set()
        try:
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
            self.ips = {normalize_ip(str(ip)) for ip in data.get("addresses", [])}
        except FileNotFoundError:
            pass
        except (OSError, ValueError, AttributeError) as exc:
            # a damaged record only costs us leftover detection
            self.ips = set()
            import logging

            logging.getLogger("networkd.applier").warning(
                "address record unreadable path=%s reason=%s", path, exc
            )

    def update(self, ips: Set[str]) -> None:
        if ips == self.ips:
            return
        self.ips = set(ips)
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        tmp = f"{self.path}.tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump({"addresses": sorted(self.ips)}, f)
        os.replace(tmp, self.path)


class Applier:
    """The reconcile loop's state; ``ctx`` gives config, bus and stop flags."""

    def __init__(self, ctx: WorkerContext) -> None:
        self.ctx = ctx
        self.config = ctx.config
        self.log = ctx.log
        interface = self.config.net_interface
        self.addresses = AddressTable(interface)
        # The rules thread waits for the xtables lock like `iptables -w`; nothing else does.
        self.nat = FamilyNat(lock_timeout=None)  # IPv6 rules in a helper process (nat_helper.py)
        self.acl: Optional[AclRules] = AclRules(lock_timeout=None) if self.config.acl else None
        self.wakeup = Wakeup()
        self.rules = RulesThread(self.nat, self.acl, self.wakeup.poke)
        self.rules_repairs = 0
        self.xtables_warned = False
        self.announcer = Announcer(interface)
        self.claims = ClaimListener(interface)
        self.carrier = CarrierWatch(interface)
        self.schedule = GarpSchedule(self.config.vip_garp_refresh)
        self.record = AddressRecord(os.path.join(ctx.state_dir, RECORD_FILE))
        self.counters = ApplierCounters()
        self.yielded: Set[str] = set()
        self.lingering: Dict[str, Tuple[DesiredVip, float]] = {}  # key -> (entry, until)
        self.wishes: List[Tuple[int, FrozenSet[NatRule]]] = []  # not yet applied, in order
        self.last_desired: Dict[str, DesiredVip] = {}
        self.bound: Set[str] = set()  # bind-VIPs present on the interface after the last pass
        self.mac = ""
        self.dirty = True
        self.last_reconcile = 0.0
        self.last_verify = 0.0
        self.last_reannounce: Dict[str, float] = {}
        self.next_probe = 0.0
        self._pass_changes = 0
        self.last_signature: Any = None
        self.logged: Set[Tuple[str, str]] = set()
        self.interface_missing_logged = False
        self.last_lease: Optional[LeaseHealth] = None
        self.lease_seen: fencing.Lease = fencing.Lease.UNKNOWN
        sources: Dict[str, List[str]] = {
            "elector": ["state.desired", "state.lease"],
            "watcher": ["state.vips"],
        }
        if self.config.acl:
            sources["watcher"].append("state.acl")
        self.pub = ctx.publisher()
        # state.applied is created on the first full pass: an empty snapshot before it would
        # tell the elector that addresses are gone when they may not be.
        self.applied: Any = None
        self.applied_rev: Any = None
        self.key_bind: Dict[str, bool] = {}
        self.counters_topic = self.pub.state("state.applier")
        self.counters_topic.set("counters", ApplierCounters(**vars(self.counters)))
        self.sub = ctx.subscriber(sources)

    # -- inputs --------------------------------------------------------------------------

    def desired(self) -> Optional[Dict[str, DesiredVip]]:
        items = self.sub.state("elector", "state.desired")
        return None if items is None else dict(items)

    def desired_revision(self) -> Tuple[float, int]:
        """(elector epoch, revision) of the desired set in hand; (0, 0) when unknown."""
        items = self.sub.state("elector", "state.desired_rev") or {}
        item = items.get("rev")
        if not isinstance(item, DesiredRevision):
            return 0.0, 0
        return self.sub.epoch("elector", "state.desired_rev"), int(item.rev)

    def lease_state(self, now: float) -> fencing.Lease:
        """What the lease allows now. The last health seen is kept while the elector's
        mirror resyncs (a restarted elector): its deadline still holds."""
        items = self.sub.state("elector", "state.lease")
        item = items.get("lease") if items else None
        if isinstance(item, LeaseHealth):
            self.last_lease = item
        return fencing.lease_state(self.last_lease, now)

    def configured_vips(self) -> Set[str]:
        return floating_addresses(self.sub.state("watcher", "state.vips") or {})

    def warn_once(self, key: str, reason: str) -> None:
        if (key, reason) not in self.logged:
            self.logged.add((key, reason))
            self.log.warning("vip rejected key=%s reason=%s", key, reason)

    # -- the loop ------------------------------------------------------------------------

    def run(self) -> int:
        ctx = self.ctx
        self.log.info("applier started interface=%s fencing=%s acl=%s", self.config.net_interface,
                      self.config.vip_fencing, self.config.acl)  # fmt: skip
        self.rules.start()
        while not ctx.stopping:
            extra = [*self.claims.filenos(), self.wakeup.rfd, *self._carrier_fds()]
            extra += [self.pub.socket, ctx.stop_wakeup.rfd]
            envelopes = self.sub.poll(timeout_ms=self._poll_ms(), extra=extra)
            for env in envelopes:
                if env.topic.startswith("state."):
                    self.dirty = True
            if self._rules_done():
                self.dirty = True
            now = time.monotonic()
            if self.lingering and min(u for _, u in self.lingering.values()) <= now:
                self.dirty = True  # a released VIP's rules go now
            lease = self.lease_state(now)
            if lease is not self.lease_seen:
                self.log.info("applier lease state old=%s new=%s", self.lease_seen.value,
                              lease.value)  # fmt: skip
                self.lease_seen = lease
                self.dirty = True  # strict fencing, or taking yielded VIPs back
            if self.carrier.came_up() and self.bound:
                self.log.info("vip interface carrier back interface=%s action=probe",
                              self.config.net_interface)  # fmt: skip
                self.next_probe = 0.0  # a healed link: ask at once who has our VIPs
            self._read_claims(lease)
            if self.dirty or now - self.last_reconcile >= RECONCILE_INTERVAL:
                verify = now - self.last_verify >= VERIFY_INTERVAL
                self.reconcile(verify=verify)
            now = time.monotonic()
            self._announce(now, lease)
            self._probe(now, lease)
            self.pub.poll()
        if ctx.final:
            self.teardown()
        else:
            self.log.info("applier restarting: host left as it is")
        self.close()
        return 0

    def _poll_ms(self) -> int:
        """Asleep until the next thing time alone changes. Bus messages, claims, link
        events, the rules thread, new subscribers and a stop wake the poll themselves."""
        now = time.monotonic()
        lease = self.lease_state(now)
        due: List[Optional[float]] = [self.last_reconcile + RECONCILE_INTERVAL]
        if self.lingering:
            due.append(min(u for _, u in self.lingering.values()))
        if lease is fencing.Lease.ALIVE and self.last_lease is not None:
            due.append(self.last_lease.valid_until)  # then it is DEAD: fencing acts
        if self.bound and fencing.may_announce(lease):
            due.append(self.schedule.next_time())
        if self.bound and fencing.should_probe(self.config.vip_fencing, lease):
            due.append(self.next_probe)
        return sleep_ms(now, due, POLL_MS, IDLE_POLL_MS)

    def _carrier_fds(self) -> List[int]:
        try:
            return [self.carrier.fileno()]
        except OSError as exc:
            self.warn_once("carrier", f"link events unavailable: {exc}")
            return []

    # -- reconcile -----------------------------------------------------------------------

    def reconcile(self, verify: bool = False) -> None:
        now = time.monotonic()
        self.dirty = False
        self.last_reconcile = now
        if verify:
            self.last_verify = now
        self.counters.reconciles += 1
        desired = self.desired()
        if desired is None:
            self.rules.want(None, self._acl_items())  # the ACL may go in; nat rules stay
            return  # the elector's snapshot has not arrived: adopt by touching nothing
        revision = self.desired_revision()
        lease = self.lease_state(now)
        if lease is fencing.Lease.ALIVE:
            self.yielded.clear()
        held_back = set(self.yielded)
        if fencing.fenced(self.config.vip_fencing, lease):
            held_back |= {v.ip for v in desired.values() if v.bind}
        want = plan_host(desired, self.ctx.node_address, held_back, self._linger(desired, now))
        for key, reason in want.problems:
            self.warn_once(key, reason)
        self.yielded &= {ip for key, ip in want.resolved.items() if desired[key].bind}
        # changes made while the wanted state stayed the same are repairs of outside drift
        signature = (frozenset(want.addresses), frozenset(want.rules))
        periodic = signature == self.last_signature
        self.last_signature = signature

        actual = self._remove_addresses(want)  # 1. never behind iptables
        self._wish(self.rules.want(want.rules, self._acl_items(), verify), want.rules)  # 2.
        state = self.rules.state()
        nat_actual = state.nat_actual
        # 3. addresses follow their rules
        present = self._add_addresses(want, actual, self._rules_staying(state))
        changed = self._pass_changes
        self._track_bound(present & want.addresses)
        if periodic and changed:
            self.counters.repairs += changed
            self.log.warning("host drift repaired what=addresses changes=%d", changed)
        self._publish_applied(desired, want, present, nat_actual)
        if actual is not None and revision[1]:
            self._confirm(revision)
        self.counters_topic.set("counters", ApplierCounters(**vars(self.counters)))

    def _wish(self, seq: int, rules: List[NatRule]) -> None:
        """Remember each wish handed to the rules thread until it has applied it."""
        if not self.wishes or self.wishes[-1][0] != seq:
            self.wishes.append((seq, frozenset(rules)))

    def _rules_staying(self, state: RulesState) -> Optional[Set[NatRule]]:
        """The rules in the kernel that no pass still to come can remove: in place after the
        thread's last pass, and in every wish it has not applied yet (the pass in flight
        works from one of them). An address is bound once all its rules are among these."""
        if state.nat_actual is None:
            return None
        self.wishes = [(seq, rules) for seq, rules in self.wishes if seq > state.applied_seq]
        staying = set(state.nat_actual)
        for _seq, rules in self.wishes:
            staying &= rules
        return staying

    def _linger(self, desired: Dict[str, DesiredVip], now: float) -> Dict[str, DesiredVip]:
        """Floating VIPs released in the last LINGER_S seconds (their rules stay that long)."""
        for key, vip in self.last_desired.items():
            if key not in desired and vip.bind and vip.ip in self.bound:
                self.lingering[key] = (vip, now + LINGER_S)
        self.last_desired = dict(desired)
        for key in [k for k, (_, until) in self.lingering.items() if until <= now or k in desired]:
            del self.lingering[key]
        return {key: vip for key, (vip, _) in self.lingering.items()}

    def _remove_addresses(self, want: HostWant) -> Optional[Set[str]]:
        """Remove the VIP addresses that are not wanted; returns the addresses present
        afterwards (None when netlink failed: nothing is confirmed then)."""
        self._pass_changes = 0
        try:
            actual = self.addresses.host_addresses()
            plan = plan_addresses(want.addresses, actual, self._removable(), self._protected())
            removed = [ip for ip in plan.remove if self.addresses.remove(ip)]
        except InterfaceMissing as exc:
            if not self.interface_missing_logged:
                self.log.warning("vip interface missing reason=%s", exc)
                self.interface_missing_logged = True
            return None
        except Exception as exc:
            self.log.warning("address removal failed reason=%s", exc)
            self.dirty = True
            return None
        self.interface_missing_logged = False
        for ip in removed:
            self.log.info("vip unbound ip=%s interface=%s", ip, self.config.net_interface)
        self._pass_changes += len(removed)
        return actual - set(removed)

    def _add_addresses(
        self, want: HostWant, actual: Optional[Set[str]], nat_actual: Optional[Set[NatRule]]
    ) -> Set[str]:
        """Bind the wanted addresses whose rules are in place; returns what is bound now."""
        if actual is None:
            return set(self.bound)
        missing = want.addresses - actual
        ready = ready_to_bind(missing, want.rules, nat_actual)
        if missing - ready:
            self.dirty = True  # their rules are not in yet: bind them on a later pass
        if ready:
            try:
                # listening before the address is bound: no claim is missed
                self.claims.open(ipv6=any(":" in ip for ip in want.addresses))
            except OSError as exc:
                self.log.warning("claim listener unavailable reason=%s", exc)
        added: List[str] = []
        try:
            for ip in sorted(ready):
                if self.addresses.add(ip):
                    added.append(ip)
        except Exception as exc:
            self.log.warning("address apply failed reason=%s", exc)
            self.dirty = True
        for ip in added:
            self.log.info("vip bound ip=%s interface=%s", ip, self.config.net_interface)
        # re-adding an address we had bound is a repair; binding one whose rules just came
        # in is the plan going on
        self._pass_changes += len(set(added) & self.bound)
        present = actual | set(added)
        removable = self._removable()
        self.record.update((self.record.ips | (present & want.addresses)) - (removable - present))
        if not self.mac:
            try:
                self.mac = self.addresses.mac()
            except Exception as exc:
                self.log.warning("interface mac unknown reason=%s", exc)
        return present

    def _removable(self) -> Set[str]:
        return self.record.ips | self.configured_vips() | self.yielded

    def _protected(self) -> Set[str]:
        return {a for a in (self.ctx.node_address, self.config.net_address) if a}

    def _track_bound(self, bound: Set[str]) -> None:
        for ip in bound - self.bound:
            self.schedule.bound(ip, time.monotonic())
        for ip in self.bound - bound:
            self.schedule.forget(ip)
            self.last_reannounce.pop(ip, None)
        for ip in set(self.schedule.known()) - bound:
            self.schedule.forget(ip)
        self.bound = bound
        if not bound:
            self.claims.close()  # nothing to defend; reopened when a VIP is bound
        else:
            try:
                self.claims.open(ipv6=any(":" in ip for ip in bound))
            except OSError as exc:
                self.log.warning("claim listener unavailable reason=%s", exc)

    def _publish_applied(
        self,
        desired: Dict[str, DesiredVip],
        want: HostWant,
        present: Set[str],
        nat_actual: Optional[List[NatRule]],
    ) -> None:
        fresh = self.applied is None
        if fresh:
            self.applied = self.pub.state("state.applied")
        for key, item in desired.items():
            self.key_bind[key] = item.bind
        items = applied_items(
            desired, want.resolved, present, nat_actual, self.applied.items(), self.key_bind
        )
        self.applied.replace(items)
        if fresh:
            # subscribers that joined before the topic existed wait for a snapshot
            self.applied.send_snapshot()
        for key in set(self.key_bind) - set(items) - set(desired):
            del self.key_bind[key]

    def _confirm(self, revision: Tuple[float, int]) -> None:
        """The host matches the desired set of ``revision``: tell the elector (after
        ``state.applied``, on the same socket)."""
        fresh = self.applied_rev is None
        if fresh:
            self.applied_rev = self.pub.state("state.applied_rev")
        self.applied_rev.set("rev", AppliedRevision(epoch=revision[0], rev=revision[1]))

    def _acl_items(self) -> Optional[Dict[str, Any]]:
        """The watcher's whitelist (None until it arrived: no DROP with nothing allowed)."""
        if self.acl is None:
            return None
        items = self.sub.state("watcher", "state.acl")
        return None if items is None else dict(items)

    def _rules_done(self) -> bool:
        """The rules thread poked us: take its repairs, warn about a stuck xtables lock."""
        poked = self.wakeup.drain()
        state = self.rules.state()
        if state.repairs != self.rules_repairs:
            self.counters.repairs += state.repairs - self.rules_repairs
            self.rules_repairs = state.repairs
        waiting = time.monotonic() - state.waiting_since if state.waiting_since else 0.0
        if waiting > XTABLES_WARN_S and not self.xtables_warned:
            self.xtables_warned = True
            self.log.warning("rules wait for the xtables lock waited_s=%.1f", waiting)
        elif not waiting:
            self.xtables_warned = False
        return poked

    # -- announcements, probes and claims ------------------------------------------------

    def _announce(self, now: float, lease: fencing.Lease) -> None:
        if not self.bound or not fencing.may_announce(lease):
            return  # fencing: no announcement without a live lease
        for ip in self.schedule.due(now):
            if ip not in self.bound or not self.mac:
                continue
            sent = self.announcer.announce(ip, self.mac)
            if sent:
                self.counters.garps_sent += sent
                self.pub.event("vip.garp", GarpSent(ip=ip, count=sent))
                self.counters_topic.set("counters", ApplierCounters(**vars(self.counters)))

    def _probe(self, now: float, lease: fencing.Lease) -> None:
        """Held VIPs without a live lease: ask who else has them (answers are claims)."""
        if not self.bound or not self.mac or now < self.next_probe:
            return
        if not fencing.should_probe(self.config.vip_fencing, lease):
            return
        self.next_probe = now + fencing.PROBE_INTERVAL
        for ip in sorted(self.bound - self.yielded):
            self.announcer.probe(ip, self.mac)

    def _read_claims(self, lease: fencing.Lease) -> None:
        if not self.bound or not self.mac:
            return
        claims = self.claims.read(self.bound, {self.mac})
        for claim in claims:
            self._claimed(claim, lease)
        if claims:
            self.counters_topic.set("counters", ApplierCounters(**vars(self.counters)))
            if self.dirty:
                self.reconcile()

    def _claimed(self, claim: Claim, lease: fencing.Lease) -> None:
        self.counters.duplicate_claims += 1
        yielded = fencing.yields_to_claims(lease)
        if yielded:
            if claim.ip not in self.yielded:
                self.log.warning("vip yielded ip=%s claimed_by=%s reason=lease %s",
                                 claim.ip, claim.mac, lease.value)  # fmt: skip
            self.yielded.add(claim.ip)
            self.dirty = True
        else:
            now = time.monotonic()
            if now - self.last_reannounce.get(claim.ip, -1e18) >= REANNOUNCE_MIN_INTERVAL:
                self.log.warning("vip claimed by another node ip=%s mac=%s action=reannounce",
                                 claim.ip, claim.mac)  # fmt: skip
                self.last_reannounce[claim.ip] = now
                self.schedule.bound(claim.ip, now)
                self._announce(now, lease)
        self.pub.event("vip.duplicate", DuplicateClaim(ip=claim.ip, mac=claim.mac, yielded=yielded))

    # -- stop ----------------------------------------------------------------------------

    def teardown(self) -> None:
        """Final stop: addresses first (never behind iptables), then the ACL (policy
        restored) and our rules."""
        self.log.info("applier final stop: removing addresses, acl and rules")
        try:
            desired = self.desired() or {}
            ours = self.record.ips | {v.ip for v in desired.values() if v.bind} | self.bound
            actual = self.addresses.host_addresses()
            plan = plan_addresses((), actual, ours, self._protected())
            _, removed = self.addresses.apply(plan)
            for ip in removed:
                self.log.info("vip unbound ip=%s reason=final stop", ip)
            self.record.update(set())
        except Exception as exc:
            self.log.warning("address removal failed reason=%s", exc)
        if self.applied is not None:
            self.applied.replace({})
        wait = max(1.0, self.config.stop_timeout - 2.0)
        if not self.rules.finish(wait):
            self.log.warning("applier final stop: rules left in place reason=xtables lock busy")
        deadline = time.monotonic() + 0.2
        while time.monotonic() < deadline:  # let subscribers see the empty state
            self.pub.poll(20)

    def close(self) -> None:
        for closer in (
            self.rules.stop,
            self.wakeup.close,
            self.claims.close,
            self.carrier.close,
            self.announcer.close,
            self.addresses.close,
            self.sub.close,
            self.pub.close,
        ):
            try:
                closer()
            except Exception:
                pass


def main(ctx: WorkerContext) -> int:
    return Applier(ctx).run()
