"""VIP transitions clients never notice, and a node that never fights a new owner.

Real etcd, real links, real ARP, real TCP clients in the netns lab (watcher + elector +
applier on every node). The ``soak`` variants run the trial counts of the issues (CI runs
them with ``make soak``); the quick ones run in ``make test``.
"""

import json
import os
import signal
import time
from typing import Any, Dict, List, Sequence

import pytest

from networkd.config import Config
from networkd.election.lease import default_margin
from tests.lab import observe
from tests.lab.lab import Lab, LabNode
from tests.lab.observe import AddressTimeline, LockViews, TcpProber

pytestmark = pytest.mark.lab

WORKERS = ["watcher", "elector", "applier"]
VIP = "10.77.0.200"
LOCK = f"/lain/networkd/vips/{VIP}.lock"


def vip_value(excluded: Sequence[str] = ()) -> str:
    return json.dumps(
        {
            "app": "web",
            "proc": "worker",
            "ports": [{"src": "80", "proto": "tcp", "dest": "80"}],
            "excluded_nodes": list(excluded),
        }
    )


def start(lab: Lab, nodes: Sequence[LabNode], vips: Sequence[str] = (VIP,), **flags: Any) -> Any:
    etcd = lab.run_networkd(nodes, WORKERS, **flags)
    for ip in vips:
        etcd.put(f"/lain/config/vips/{ip}", vip_value())
    for ip in vips:
        lab.wait(lambda: len(lab.owners(ip)) == 1, 15, f"{ip} owned once")  # noqa: B023
    return etcd


def lock_owner(etcd: Any, vip: str = VIP) -> str:
    return observe.lock_owner(etcd, vip)


def settled(lab: Lab, etcd: Any, vips: Sequence[str], quiet: float = 3.0) -> Dict[str, str]:
    """Wait until every VIP has one holder that is its lock owner, unchanged for ``quiet``."""

    def snapshot() -> Dict[str, str]:
        out = {}
        for ip in vips:
            owners = lab.owners(ip)
            if len(owners) != 1 or owners[0] != lock_owner(etcd, ip):
                return {}
            out[ip] = owners[0]
        return out

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        first = snapshot()
        if first:
            time.sleep(quiet)
            if snapshot() == first:
                return first
        time.sleep(0.2)
    raise AssertionError(f"VIPs never settled: {[(ip, lab.owners(ip)) for ip in vips]}")


# -- partitions: a healed owner yields at once and never answers for the VIP ------------


def partition_and_heal(lab: Lab, etcd: Any, cuts: Sequence[float]) -> List[Dict[str, float]]:
    results = []
    with AddressTimeline(lab.nodes, [VIP]) as timeline, lab.client.sniffer() as sniffer:
        views = LockViews(lab.nodes, VIP)
        prober = TcpProber(lab.client, VIP, 80, interval=0.05, timeout=0.5)
        try:
            for cut in cuts:
                old = lab.node(settled(lab, etcd, [VIP], quiet=1.0)[VIP])
                old.cut_link()
                cut_at = time.monotonic()
                lab.wait(lambda: lock_owner(etcd) not in ("", old.name), 8, "new owner")  # noqa: B023
                new = lock_owner(etcd)
                time.sleep(max(0.0, cut - (time.monotonic() - cut_at)))
                old.restore_link()
                healed = time.monotonic()
                lab.wait(lambda: not old.has_address(VIP), 3, "healed node yields")  # noqa: B023
                time.sleep(1.5)
                removed = [
                    c.at
                    for c in timeline.changes
                    if c.node == old.name and not c.present and c.at > cut_at
                ]
                assert removed, f"{old.name} never removed {VIP}"
                yield_s = removed[0] - healed
                replies = [
                    g
                    for g in sniffer.garps(VIP)
                    if g.at > healed and g.mac == old.mac and g.kind == "arp" and g.op == 2
                ]
                late = {n.name: views.current_after(n.name, new, healed) for n in lab.nodes}
                wrong = [
                    o
                    for o in prober.outcomes
                    if o.at > healed + 0.05 and o.result in {n.name for n in lab.nodes} - {new}
                ]
                results.append(
                    {
                        "cut_s": cut,
                        "yield_s": yield_s,
                        "view_s": max(v or 9.9 for v in late.values()),
                    }
                )
                print(
                    f"partition {cut:.0f}s: {old.name} -> {new}; healed node yielded after "
                    f"{yield_s:.3f}s; lock views current after {late}; "
                    f"ARP replies from the old owner {len(replies)}; wrong answers {len(wrong)}"
                )
                assert yield_s <= 0.3, yield_s
                assert not replies, replies[:3]
                assert all(v is not None and v <= 1.0 for v in late.values()), late
                assert not wrong, wrong[:5]
                assert lab.owners(VIP) == [new]
        finally:
            prober.close()
            views.close()
    return results


@pytest.fixture
def lab():
    with Lab(nodes=3, clients=1) as lab:
        yield lab


def test_partitioned_owner_yields_at_heal(lab: Lab) -> None:
    etcd = start(lab, lab.nodes)
    partition_and_heal(lab, etcd, [5.0, 8.0])


@pytest.mark.soak
def test_partitioned_owner_yields_at_heal_ten_times(lab: Lab) -> None:
    etcd = start(lab, lab.nodes)
    partition_and_heal(lab, etcd, [5.0, 8.0, 12.0, 8.0, 15.0, 8.0, 5.0, 8.0, 10.0, 8.0])


# -- etcd stalls and restarts: nothing moves --------------------------------------------


FOUR = [f"10.77.0.{200 + i}" for i in range(4)]


def disturb_etcd(lab: Lab, etcd_client: Any, plan: Sequence[Any]) -> None:
    before = settled(lab, etcd_client, FOUR)
    with AddressTimeline(lab.nodes, FOUR) as timeline, lab.client.sniffer() as sniffer:
        started = time.monotonic()
        for what in plan:
            at = time.monotonic()
            if what == "restart":
                lab.etcd.restart()
            else:
                lab.etcd.pause()
                time.sleep(float(what))
                lab.etcd.resume()
            etcd_client.close()
            etcd_client = lab.etcd.client()
            now = settled(lab, etcd_client, FOUR, quiet=2.0)
            no_owner = max(timeline.no_owner_longest(ip, since=at) for ip in FOUR)
            print(f"etcd {what}: holders {now}; longest without owner {no_owner:.3f}s")
            assert now == before, (what, before, now)
        macs = {n.mac: n.name for n in lab.nodes}
        for ip in FOUR:
            assert timeline.moves(ip) == 0, (ip, timeline.spans(ip))
            assert timeline.max_holders(ip) <= 1, (ip, timeline.spans(ip))
            announcers = {macs.get(g.mac, g.mac) for g in sniffer.garps(ip) if g.at > started}
            assert announcers <= {before[ip]}, (ip, announcers)
    etcd_client.close()


def test_etcd_stall_and_restart_move_no_vip(lab: Lab) -> None:
    etcd = start(lab, lab.nodes, FOUR)
    disturb_etcd(lab, etcd, ["5", "restart"])


@pytest.mark.soak
def test_etcd_stalls_and_restarts_move_no_vip_five_times(lab: Lab) -> None:
    etcd = start(lab, lab.nodes, FOUR)
    disturb_etcd(lab, etcd, ["5", "10", "restart"] * 5)


# -- planned moves: no client connection refused ----------------------------------------


def planned_moves(lab: Lab, etcd: Any, count: int) -> None:
    with AddressTimeline(lab.nodes, [VIP]) as timeline:
        prober = TcpProber(lab.client, VIP, 80, interval=0.01, timeout=1.0)
        gaps = []
        try:
            for _ in range(count):
                owner = lock_owner(etcd)
                moved_at = time.monotonic()
                etcd.put(f"/lain/config/vips/{VIP}", vip_value(excluded=[owner]))
                lab.wait(
                    lambda: [o for o in lab.owners(VIP) if o != owner],  # noqa: B023
                    5,
                    "moved",
                )
                spans = timeline.spans(VIP)
                gone = [s for s, h in spans if s > moved_at and not h]
                back = [s for s, h in spans if s > moved_at and h and owner not in h]
                if gone and back:
                    gaps.append(back[0] - gone[0])
                time.sleep(0.3)
        finally:
            prober.close()
    summary = prober.summary()
    print(f"{count} planned moves: gaps max {max(gaps):.3f}s; client probes {summary}")
    assert prober.count("refused") == 0, summary
    assert timeline.max_holders(VIP) <= 1, timeline.spans(VIP)
    assert max(gaps) <= 0.3, gaps


def test_planned_moves_refuse_no_connection(lab: Lab) -> None:
    etcd = start(lab, lab.nodes)
    planned_moves(lab, etcd, 10)


@pytest.mark.soak
def test_fifty_planned_moves_refuse_no_connection(lab: Lab) -> None:
    etcd = start(lab, lab.nodes)
    planned_moves(lab, etcd, 50)


# -- the lease's deadline, the xtables lock, TTL reloads --------------------------------


def test_elector_gone_while_etcd_unreachable_stops_announcing(lab: Lab) -> None:
    node = lab.nodes[0]
    etcd = start(lab, [node], vip_garp_refresh=1)
    with lab.client.sniffer() as sniffer:
        node.partition_etcd()
        try:
            pid = node.daemon.pid("elector")
            os.kill(pid, signal.SIGKILL)
            killed = time.monotonic()
            lab.wait(lambda: node.daemon.pid("elector") not in (0, pid), 10, "a new elector")
            time.sleep(4.0)
            mine = [g.at - killed for g in sniffer.garps(VIP) if g.mac == node.mac]
            print(f"announcements after the elector was killed at 0: {[round(t, 2) for t in mine]}")
            # the last lease renewal was at most one interval (TTL/2) before the kill: the
            # lease is valid until at most TTL - margin after it (1.7 s at the default 2 s)
            ttl = Config().vip_ttl  # start() leaves -vip.ttl at its default
            valid_for = ttl - default_margin(ttl)
            assert all(t <= valid_for + 0.1 for t in mine), mine
            assert node.has_address(VIP)  # hold: kept, but silent
            lab.client.send_garp(VIP, mac="02:00:00:77:77:79")
            lab.wait(lambda: not node.has_address(VIP), 2, "yielded to another announcer")
        finally:
            node.heal_etcd()
    lab.wait(lambda: node.has_address(VIP), 15, "back once etcd is reachable")
    assert lock_owner(etcd) == node.name


def hold_xtables_lock(seconds: float) -> Any:
    import fcntl
    import threading

    fd = os.open("/run/xtables.lock", os.O_CREAT | os.O_RDWR, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)

    def release() -> None:
        time.sleep(seconds)
        os.close(fd)

    thread = threading.Thread(target=release, daemon=True)
    thread.start()
    return thread


def test_strict_removal_never_waits_for_the_xtables_lock(lab: Lab) -> None:
    a, b = lab.nodes[:2]
    etcd = start(lab, [a, b], vip_fencing="strict")
    owner = lab.node(lock_owner(etcd))
    other = b if owner is a else a
    with AddressTimeline(lab.nodes, [VIP]) as timeline:
        # a release (the owner is excluded) while Docker, say, holds the xtables lock
        held = hold_xtables_lock(4.0)
        at = time.monotonic()
        etcd.put(f"/lain/config/vips/{VIP}", vip_value(excluded=[owner.name]))
        lab.wait(lambda: not owner.has_address(VIP), 1.0, "address removed at once")
        removed = time.monotonic() - at
        held.join()
        lab.wait(lambda: other.has_address(VIP), 10, "the other node takes over")
        spans = timeline.spans(VIP)
        assert timeline.max_holders(VIP) == 1, spans
        assert not [r for r in owner.nat_rules() if VIP in r]
        print(f"strict release with the xtables lock held: address gone after {removed:.3f}s")
        # fencing: the owner loses etcd while the lock is held again
        etcd.put(f"/lain/config/vips/{VIP}", vip_value())
        time.sleep(1.0)
        new_owner = lab.node(lock_owner(etcd))
        held = hold_xtables_lock(4.0)
        new_owner.partition_etcd()
        at = time.monotonic()
        try:
            lab.wait(lambda: not new_owner.has_address(VIP), 2.0, "fenced before the lease ends")
            fenced = time.monotonic() - at
        finally:
            new_owner.heal_etcd()
            held.join()
        print(f"strict fencing with the xtables lock held: address gone after {fenced:.3f}s")
        assert fenced < 2.0
        assert timeline.max_holders(VIP) == 1, timeline.spans(VIP)


def test_ttl_reload_moves_no_vip(lab: Lab) -> None:
    a, b = lab.nodes[:2]
    flag_files = {}
    for node in (a, b):
        path = os.path.join(node.dir, "networkd.conf")
        with open(path, "w") as f:
            f.write("-vip.ttl=2\n")
        flag_files[node.name] = path
    etcd = lab.etcd.client()
    etcd.put("/lain/deployd/pod_groups/web/web.web.worker", lab.pod_group([a, b]))
    etcd.put(f"/lain/config/vips/{VIP}", vip_value())
    for node in (a, b):
        node.start_networkd(
            workers=WORKERS, docker_endpoint="", extra_args=["-config", flag_files[node.name]]
        )
    for node in (a, b):
        node.daemon.wait_running(WORKERS, timeout=20)
    owner_name = lab.wait(lambda: lock_owner(etcd), 15)
    owner = lab.node(owner_name)
    with owner.monitor_addresses() as monitor:
        for ttl in (10, 2):
            with open(flag_files[owner_name], "w") as f:
                f.write(f"-vip.ttl={ttl}\n")
            pid = owner.daemon.pid("elector")
            owner.daemon.signal(signal.SIGHUP)
            lab.wait(
                lambda: owner.daemon.pid("elector") not in (0, pid),  # noqa: B023
                10,
                "elector restarted",
            )

            def granted(want: int = ttl) -> bool:
                _value, meta = etcd.get(LOCK)
                assert meta is not None, "the lock went away during the TTL change"
                return bool(meta.lease_id) and etcd.get_lease_info(meta.lease_id).grantedTTL == want

            lab.wait(granted, 10, f"the lock moved to a lease of TTL {ttl}")
            time.sleep(2 * 2.5)  # longer than the old lease's TTL (2 s): it must not lapse
            assert lock_owner(etcd) == owner_name
            assert lab.owners(VIP) == [owner_name]
        assert monitor.deleted(VIP) == [], monitor.deleted(VIP)
