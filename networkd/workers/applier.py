"""The applier worker (root): makes the host match the desired VIP set and the ACL.

Inputs (bus): elector ``state.desired`` (DesiredVip per key: ``<ip>`` = owned floating VIP,
``<ip>:<port>`` = port-only mapping), elector ``state.lease`` (fencing), watcher
``state.vips`` (which addresses are cluster VIPs, so leftovers can be removed) and, with
``-acl``, watcher ``state.acl``.

Outputs: addresses (netlink), nat rules and the ACL (python-iptables), gratuitous ARP /
unsolicited NA, ``state.applied`` (what is on the host per key, read by the elector
before it deletes a lock), ``state.applier`` counters, events ``vip.garp`` and
``vip.duplicate``.

Rules of thumb:
- Nothing is removed before the elector's snapshot arrived. Then every present address
  that is desired is adopted as it is (never removed and re-added); VIP addresses that are
  not desired are removed (known VIPs: configured ones and those recorded as ours).
- Every second the host is compared again, so outside changes are repaired.
- A plain restart (TERM/HUP) touches nothing. The final stop (INT) removes the ACL, the
  rules and the addresses; the elector has released the VIPs by then.
"""

import json
import os
import time
from typing import Any, Dict, List, Optional, Set, Tuple

from networkd.bus.messages import (
    AppliedVip,
    ApplierCounters,
    DesiredVip,
    DuplicateClaim,
    GarpSent,
    LeaseHealth,
)
from networkd.net.acl_rules import AclRules
from networkd.net.addresses import AddressTable, InterfaceMissing, normalize_ip, plan_addresses
from networkd.net.claims import ClaimListener
from networkd.net.garp import Announcer, GarpSchedule
from networkd.net.nat_rules import NatRule, NatRules, dnat_rules, unique_by_port
from networkd.workers.base import WorkerContext

RECONCILE_INTERVAL = 1.0
VERIFY_INTERVAL = 30.0
POLL_MS = 50
REANNOUNCE_MIN_INTERVAL = 1.0
RECORD_FILE = "addresses.json"


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
        self.nat = NatRules()
        self.acl: Optional[AclRules] = AclRules() if self.config.acl else None
        self.announcer = Announcer(interface)
        self.claims = ClaimListener(interface)
        self.schedule = GarpSchedule(self.config.vip_garp_refresh)
        self.record = AddressRecord(os.path.join(ctx.state_dir, RECORD_FILE))
        self.counters = ApplierCounters()
        self.yielded: Set[str] = set()
        self.bound: Set[str] = set()  # bind-VIPs present on the interface after the last pass
        self.mac = ""
        self.dirty = True
        self.last_reconcile = 0.0
        self.last_verify = 0.0
        self.last_reannounce: Dict[str, float] = {}
        self.last_signature: Any = None
        self.last_acl_signature = ""
        self.logged: Set[Tuple[str, str]] = set()
        self.acl_failures: Dict[int, str] = {}  # family -> last failure logged
        self.interface_missing_logged = False
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
        self.key_bind: Dict[str, bool] = {}
        self.counters_topic = self.pub.state("state.applier")
        self.counters_topic.set("counters", ApplierCounters(**vars(self.counters)))
        self.sub = ctx.subscriber(sources)

    # -- inputs --------------------------------------------------------------------------

    def desired(self) -> Optional[Dict[str, DesiredVip]]:
        items = self.sub.state("elector", "state.desired")
        return None if items is None else dict(items)

    def lease(self) -> Optional[LeaseHealth]:
        items = self.sub.state("elector", "state.lease")
        if not items:
            return None
        item = items.get("lease")
        return item if isinstance(item, LeaseHealth) else None

    def lease_alive(self) -> bool:
        """False only when the elector says the lease could not be renewed."""
        lease = self.lease()
        return lease is None or bool(lease.alive)

    def configured_vips(self) -> Set[str]:
        items = self.sub.state("watcher", "state.vips") or {}
        out = set()
        for key, vip in items.items():
            if ":" in key and "." in key:  # port-only keys bind no address
                continue
            try:
                out.add(normalize_ip(vip.ip))
            except (ValueError, AttributeError):
                continue
        return out

    def warn_once(self, key: str, reason: str) -> None:
        if (key, reason) not in self.logged:
            self.logged.add((key, reason))
            self.log.warning("vip rejected key=%s reason=%s", key, reason)

    # -- the loop ------------------------------------------------------------------------

    def run(self) -> int:
        ctx = self.ctx
        self.log.info("applier started interface=%s fencing=%s acl=%s", self.config.net_interface,
                      self.config.vip_fencing, self.config.acl)  # fmt: skip
        while not ctx.stopping:
            extra = self._claim_fds()
            envelopes = self.sub.poll(timeout_ms=POLL_MS, extra=extra)
            for env in envelopes:
                if env.topic.startswith("state."):
                    self.dirty = True
            self._read_claims()
            now = time.monotonic()
            if self.dirty or now - self.last_reconcile >= RECONCILE_INTERVAL:
                verify = now - self.last_verify >= VERIFY_INTERVAL
                self.reconcile(verify=verify)
            self._announce(time.monotonic())
            self.pub.poll()
        if ctx.final:
            self.teardown()
        else:
            self.log.info("applier restarting: host left as it is")
        self.close()
        return 0

    def _claim_fds(self) -> List[Any]:
        if not self.bound:
            return []
        try:
            return [self.claims.fileno()]
        except OSError:
            return []

    # -- reconcile -----------------------------------------------------------------------

    def _target_ip(self, key: str, vip: DesiredVip) -> str:
        ip = vip.ip
        if not vip.bind and ip in ("", "0.0.0.0"):
            ip = self.ctx.node_address
        return normalize_ip(ip)

    def _build(
        self, desired: Dict[str, DesiredVip], fenced: bool
    ) -> Tuple[Set[str], List[NatRule], Dict[str, str]]:
        """Addresses and rules wanted now; also the resolved IP of each key."""
        addresses: Set[str] = set()
        rules: List[NatRule] = []
        resolved: Dict[str, str] = {}
        for key in sorted(desired):
            vip = desired[key]
            try:
                ip = self._target_ip(key, vip)
            except (ValueError, AttributeError) as exc:
                self.warn_once(key, str(exc) or "no node address for 0.0.0.0")
                continue
            resolved[key] = ip
            if vip.bind:
                if fenced or ip in self.yielded:
                    continue
                addresses.add(ip)
            if not vip.container_ip:
                continue
            for port in vip.ports:
                dest = port.dest or port.src
                try:
                    rules.extend(dnat_rules(ip, port.proto or "tcp", port.src, vip.container_ip, dest,
                                            f"{vip.app}.{vip.proc}"))  # fmt: skip
                except (ValueError, TypeError) as exc:
                    self.warn_once(key, str(exc))
        kept, conflicts = unique_by_port(rules)
        for rule in conflicts:
            self.warn_once(
                f"{rule.dst}:{rule.dport}/{rule.proto}", "two mappings for one port; the first wins"
            )
        return addresses, kept, resolved

    def reconcile(self, verify: bool = False) -> None:
        now = time.monotonic()
        self.dirty = False
        self.last_reconcile = now
        if verify:
            self.last_verify = now
        self.counters.reconciles += 1
        self._reconcile_acl()
        desired = self.desired()
        if desired is None:
            return  # the elector's snapshot has not arrived: adopt by touching nothing
        lease = self.lease()
        if lease is not None and lease.alive:
            self.yielded.clear()
        fenced = self.config.vip_fencing == "strict" and lease is not None and not lease.alive
        want_addresses, want_rules, resolved = self._build(desired, fenced)
        # changes made while the wanted state stayed the same are repairs of outside drift
        signature = (frozenset(want_addresses), frozenset(want_rules))
        periodic = signature == self.last_signature
        self.last_signature = signature
        self.yielded &= {ip for key, ip in resolved.items() if desired[key].bind}
        changed = 0
        nat_actual: Optional[List[NatRule]] = None
        try:
            result = self.nat.apply(want_rules, verify=verify)
            nat_actual = result.actual
            changed += result.added + result.removed + result.jumps_fixed + result.chains_created
        except Exception as exc:
            self.log.warning("nat apply failed reason=%s", exc)
            self.dirty = True
        present: Set[str] = set()
        if want_addresses:
            try:
                self.claims.open()  # listening before the address is bound: no claim is missed
            except OSError as exc:
                self.log.warning("claim listener unavailable reason=%s", exc)
        try:
            actual = self.addresses.host_addresses()
            removable = self.record.ips | self.configured_vips() | self.yielded
            protected = {a for a in (self.ctx.node_address, self.config.net_address) if a}
            plan = plan_addresses(want_addresses, actual, removable, protected)
            added, removed = self.addresses.apply(plan)
            for ip in added:
                self.log.info("vip bound ip=%s interface=%s", ip, self.config.net_interface)
            for ip in removed:
                self.log.info("vip unbound ip=%s interface=%s", ip, self.config.net_interface)
            changed += len(added) + len(removed)
            present = (actual | set(added)) - set(removed)
            self.record.update(
                (self.record.ips | (present & want_addresses))
                - set(removed)
                - (removable - present)
            )
            if not self.mac:
                self.mac = self.addresses.mac()
            self.interface_missing_logged = False
        except InterfaceMissing as exc:
            if not self.interface_missing_logged:
                self.log.warning("vip interface missing reason=%s", exc)
                self.interface_missing_logged = True
            self.dirty = False
        except Exception as exc:
            self.log.warning("address apply failed reason=%s", exc)
            self.dirty = True
        bound = present & want_addresses
        for ip in bound - self.bound:
            self.schedule.bound(ip, time.monotonic())
        for ip in self.bound - bound:
            self.schedule.forget(ip)
        for ip in set(self.schedule.known()) - bound:
            self.schedule.forget(ip)
        self.bound = bound
        if not bound:
            self.claims.close()  # nothing to defend; reopened (empty) when a VIP is bound
        if periodic and changed:
            self.counters.repairs += changed
            self.log.warning("host drift repaired changes=%d", changed)
        self._publish_applied(desired, resolved, present, nat_actual)
        self.counters_topic.set("counters", ApplierCounters(**vars(self.counters)))

    def _publish_applied(
        self,
        desired: Dict[str, DesiredVip],
        resolved: Dict[str, str],
        present: Set[str],
        nat_actual: Optional[List[NatRule]],
    ) -> None:
        fresh = self.applied is None
        if fresh:
            self.applied = self.pub.state("state.applied")
        for key, item in desired.items():
            self.key_bind[key] = item.bind
        rules_by_ip: Dict[str, List[NatRule]] = {}
        for rule in nat_actual or []:
            rules_by_ip.setdefault(rule.dst, []).append(rule)
        items: Dict[str, AppliedVip] = {}
        keys = set(desired) | set(self.applied.items())
        for key in sorted(keys):
            vip = desired.get(key)
            if vip is not None:
                ip = resolved.get(key, vip.ip)
                bind = vip.bind
            else:
                ip = self.applied.get(key).ip
                bind = self.key_bind.get(key, True)
            if nat_actual is None:
                previous = self.applied.get(key)
                count = previous.rules if previous is not None else 0
            else:
                mine = rules_by_ip.get(ip, [])
                if not bind:
                    port = key.rsplit(":", 1)[1]
                    mine = [
                        r
                        for r in mine
                        if str(r.dport) == port
                        or (vip and any(p.src == r.dport for p in vip.ports))
                    ]
                count = len(mine)
            is_bound = bind and ip in present
            if vip is None and not is_bound and count == 0:
                continue  # released and gone: the elector may delete the lock now
            items[key] = AppliedVip(ip=ip, bound=is_bound, rules=count)
        self.applied.replace(items)
        if fresh:
            # subscribers that joined before the topic existed wait for a snapshot
            self.applied.send_snapshot()
        for key in set(self.key_bind) - set(items) - set(desired):
            del self.key_bind[key]

    def _reconcile_acl(self) -> None:
        if self.acl is None:
            return
        items = self.sub.state("watcher", "state.acl")
        if items is None:
            return  # wait for the whitelist before the policy turns DROP
        signature = repr(sorted(items.items()))
        periodic = signature == self.last_acl_signature
        self.last_acl_signature = signature
        result = self.acl.apply(items)  # the watcher validated every entry (validate.py)
        for family, reason in sorted(result.failed.items()):
            if self.acl_failures.get(family) != reason:
                self.log.warning("acl apply failed family=%d reason=%s", family, reason)
        self.acl_failures = dict(result.failed)
        if result.failed:
            self.last_acl_signature = ""  # what the retry changes is not outside drift
        if periodic and result.changed:
            self.counters.repairs += result.added + result.removed + int(result.policy_changed)
            self.log.warning("acl drift repaired added=%d removed=%d", result.added, result.removed)

    # -- announcements and claims --------------------------------------------------------

    def _announce(self, now: float) -> None:
        if not self.bound or not self.lease_alive():
            return  # fencing: no announcement without a live lease
        for ip in self.schedule.due(now):
            if ip not in self.bound or not self.mac:
                continue
            sent = self.announcer.announce(ip, self.mac)
            if sent:
                self.counters.garps_sent += sent
                self.pub.event("vip.garp", GarpSent(ip=ip, count=sent))
                self.counters_topic.set("counters", ApplierCounters(**vars(self.counters)))

    def _read_claims(self) -> None:
        if not self.bound or not self.mac:
            return
        claims = self.claims.read(self.bound, {self.mac})
        for claim in claims:
            self.counters.duplicate_claims += 1
            alive = self.lease_alive()
            yielded = not alive
            if yielded:
                self.yielded.add(claim.ip)
                self.dirty = True
                self.log.warning(
                    "vip yielded ip=%s claimed_by=%s reason=lease not alive", claim.ip, claim.mac
                )
            else:
                self.log.warning(
                    "vip claimed by another node ip=%s mac=%s action=reannounce",
                    claim.ip,
                    claim.mac,
                )
                now = time.monotonic()
                if now - self.last_reannounce.get(claim.ip, 0.0) >= REANNOUNCE_MIN_INTERVAL:
                    self.last_reannounce[claim.ip] = now
                    self.schedule.bound(claim.ip, now)
            self.pub.event(
                "vip.duplicate", DuplicateClaim(ip=claim.ip, mac=claim.mac, yielded=yielded)
            )
        if claims:
            self.counters_topic.set("counters", ApplierCounters(**vars(self.counters)))
            if self.dirty:
                self.reconcile()

    # -- stop ----------------------------------------------------------------------------

    def teardown(self) -> None:
        """Final stop: ACL off (policy ACCEPT), then our rules and addresses."""
        self.log.info("applier final stop: removing acl, rules and addresses")
        if self.acl is not None:
            try:
                self.acl.remove()
            except Exception as exc:
                self.log.warning("acl removal failed reason=%s", exc)
        try:
            self.nat.remove_all()
        except Exception as exc:
            self.log.warning("nat removal failed reason=%s", exc)
        try:
            desired = self.desired() or {}
            ours = self.record.ips | {v.ip for v in desired.values() if v.bind} | self.bound
            actual = self.addresses.host_addresses()
            protected = {a for a in (self.ctx.node_address, self.config.net_address) if a}
            plan = plan_addresses((), actual, ours, protected)
            _, removed = self.addresses.apply(plan)
            for ip in removed:
                self.log.info("vip unbound ip=%s reason=final stop", ip)
            self.record.update(set())
        except Exception as exc:
            self.log.warning("address removal failed reason=%s", exc)
        if self.applied is not None:
            self.applied.replace({})
        deadline = time.monotonic() + 0.2
        while time.monotonic() < deadline:  # let subscribers see the empty state
            self.pub.poll(20)

    def close(self) -> None:
        for closer in (
            self.claims.close,
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
