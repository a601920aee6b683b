"""LeaseKeeper, KeyMirror and OwnedKeys against a real etcd (no bus, no workers)."""

import os
import threading
import time

import pytest

from networkd.config import Config
from networkd.election.etcdconn import connect
from networkd.election.lease import LeaseKeeper, read_lease_file
from networkd.election.mirror import KeyMirror
from networkd.election.store import OwnedKeys
from networkd.etcd.channel import ClientHolder
from tests.support.etcd import TcpProxy


def _connector(etcd):
    config = Config(etcd_endpoints=(etcd.endpoint,))
    return lambda timeout=1.0: connect(config, timeout)


def _value(mirror, key):
    entry = mirror.get(key)
    return entry.value if entry is not None else None


def _wait(predicate, timeout, step=0.01):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return predicate()


def test_lease_kept_alive_resumed_after_restart_and_expires_when_abandoned(etcd, tmp_path):
    conn = _connector(etcd)
    path = str(tmp_path / "lease")
    keeper = LeaseKeeper(lambda: conn(0.4), 1.0, path, hostname="n1")
    keeper.start()
    lease_id = keeper.lease_id
    assert lease_id and keeper.alive() and not keeper.resumed
    assert read_lease_file(path) == lease_id
    client = etcd.client()
    client.put("/t/k", "v", lease=lease_id)
    time.sleep(2.5)  # 2.5 TTLs: only keep-alives hold it
    assert client.get("/t/k")[0] == b"v"
    assert keeper.alive()
    health = keeper.health()
    assert health.lease_id == lease_id and health.alive and health.keepalive_failures == 0
    keeper.stop()  # a plain restart: no revoke

    again = LeaseKeeper(lambda: conn(0.4), 1.0, path, hostname="n1")
    again.start()
    assert again.lease_id == lease_id and again.resumed and again.alive()
    assert client.get("/t/k")[0] == b"v"
    again.stop()

    # Abandoned past its TTL: the key goes with it and the next keeper gets a new lease.
    assert _wait(lambda: client.get("/t/k")[0] is None, 3.0)
    third = LeaseKeeper(lambda: conn(0.4), 1.0, path, hostname="n1")
    third.start()
    assert third.lease_id and third.lease_id != lease_id and not third.resumed
    assert third.revoke()
    assert not os.path.exists(path)
    third.stop()
    client.close()


def _keepalive_streams_started(etcd):
    from tests.support.etcd import scrape_metrics

    metrics = scrape_metrics(etcd.endpoint)
    return sum(
        v
        for (name, labels), v in metrics.items()
        if name == "grpc_server_started_total" and ("grpc_method", "LeaseKeepAlive") in labels
    )


def test_renewals_share_one_keepalive_stream_and_a_broken_one_is_replaced(etcd, tmp_path):
    """etcd sees one keep-alive stream for many renewals (a stream per renewal cost etcd and
    the node a stream set-up every TTL/4, docs/SCALE.md); after etcd restarts, the broken
    stream is replaced and the lease lives on."""
    conn = _connector(etcd)
    before = _keepalive_streams_started(etcd)
    keeper = LeaseKeeper(lambda: conn(0.4), 1.0, str(tmp_path / "lease"), hostname="n1")
    keeper.start()
    client = etcd.client()
    client.put("/t/ka", "v", lease=keeper.lease_id)
    time.sleep(3.0)  # 6 renewals at TTL/2
    assert _keepalive_streams_started(etcd) - before == 1
    assert keeper.alive() and client.get("/t/ka")[0] == b"v"
    lease_id = keeper.lease_id
    client.close()

    etcd.restart()  # leases persist across a restart; the old stream is broken
    # the restarted etcd counts from zero: a new stream carries the renewals
    assert _wait(lambda: _keepalive_streams_started(etcd) >= 1, 5.0)
    client = etcd.client()
    time.sleep(1.5)
    assert keeper.lease_id == lease_id and keeper.alive()
    assert client.get("/t/ka")[0] == b"v"
    keeper.stop()
    client.close()


def test_a_slow_etcd_answers_late_on_the_same_stream_and_the_lease_lives_on(etcd, tmp_path):
    """etcd stalls 1.5 s (longer than the 0.4 s keep-alive deadline, shorter than the TTL):
    a renewal misses its deadline, its answer arrives after the stall on the same stream
    and counts (from when it was sent). Nothing is torn down: one stream, the same channel,
    the same lease. Before, a missed deadline closed the stream and two of them replaced
    the channel, which under load made more load (docs/SCALE.md)."""
    conn = _connector(etcd)
    before = _keepalive_streams_started(etcd)
    keeper = LeaseKeeper(lambda: conn(0.4), 2.0, str(tmp_path / "lease"), hostname="n1")
    keeper.start()
    lease_id = keeper.lease_id
    time.sleep(1.2)  # a renewal on the stream first
    client_before = keeper._holder.peek()
    etcd.pause()
    try:
        time.sleep(1.5)  # a renewal is sent within the first second and misses its deadline
    finally:
        etcd.resume()
    assert _wait(lambda: keeper.alive(), 2.0)
    time.sleep(1.2)
    assert keeper.health().keepalive_failures >= 1  # the stall was seen
    assert keeper.lease_id == lease_id and keeper.alive() and keeper.lost == 0
    assert keeper._holder.peek() is client_before  # no new channel
    assert _keepalive_streams_started(etcd) - before == 1  # no new stream
    keeper.stop()


def test_lease_not_alive_before_it_can_expire_then_regranted(etcd, tmp_path):
    conn = _connector(etcd)
    changes = threading.Event()
    keeper = LeaseKeeper(lambda: conn(0.2), 2.0, str(tmp_path / "lease"), on_change=changes.set)
    keeper.start()
    first = keeper.lease_id
    gen = keeper.generation
    etcd.pause()
    paused_at = time.monotonic()
    try:
        assert _wait(lambda: not keeper.alive(), 3.0)
        dead_after = time.monotonic() - paused_at
        # The last renewal was sent before the pause, so the server's expiry is at least
        # ttl after it; alive() turns false a safety margin earlier than that.
        assert keeper.margin >= 0.3
        assert dead_after <= keeper.ttl - keeper.margin + 0.1, dead_after
        assert keeper.health().keepalive_failures >= 1
        time.sleep(1.5)
    finally:
        etcd.resume()
    # etcd expires the lease once it runs again; the keeper notices and re-grants.
    assert _wait(lambda: keeper.alive() and keeper.generation > gen, 5.0)
    assert keeper.lease_id != first
    keeper.revoke()
    keeper.stop()


def test_mirror_follows_puts_deletes_expiry_and_survives_etcd_restart(etcd):
    client = etcd.client()
    client.put("/lain/networkd/a", "1")
    woke = threading.Event()
    mirror = KeyMirror(
        ClientHolder(lambda: _connector(etcd)(1.0), "mirror"), "/lain/networkd/", on_change=woke.set
    )
    mirror.start()
    try:
        assert mirror.wait_synced(3.0)
        assert _value(mirror, "/lain/networkd/a") == "1"
        client.put("/lain/networkd/b", "2")
        client.put("/lain/other", "x")
        assert _wait(lambda: mirror.get("/lain/networkd/b") is not None, 2.0)
        assert mirror.get("/lain/other") is None
        lease = client.lease(1)
        client.put("/lain/networkd/c", "3", lease=lease.id)
        assert _wait(lambda: mirror.get("/lain/networkd/c") is not None, 2.0)
        entry = mirror.get("/lain/networkd/c")
        assert entry is not None and entry.lease == lease.id
        assert _wait(lambda: mirror.get("/lain/networkd/c") is None, 4.0)  # expired
        client.delete("/lain/networkd/a")
        assert _wait(lambda: mirror.get("/lain/networkd/a") is None, 2.0)
        etcd.restart()
        client = etcd.client()
        client.put("/lain/networkd/d", "4")
        assert _wait(lambda: mirror.get("/lain/networkd/d") is not None, 5.0)
        assert _value(mirror, "/lain/networkd/b") == "2"
    finally:
        mirror.stop()
        client.close()


def _mirror_through(proxy):
    config = Config(etcd_endpoints=(proxy.endpoint,))
    holder = ClientHolder(lambda: connect(config, 1.0), "mirror")
    return KeyMirror(holder, "/lain/networkd/")


@pytest.mark.parametrize("compacted", [False, True])
def test_mirror_resumes_after_a_partition_and_reads_again_only_after_compaction(etcd, compacted):
    """A partition from etcd ends in a watch resumed from the last revision seen: what
    changed meanwhile arrives as events, without reading the prefix again (at 1,000 nodes
    every node re-reading every presence and lock key was the reconnect storm's O(N^2)).
    Only a compaction past that revision forces the full read."""
    client = etcd.client()
    client.put("/lain/networkd/kept", "1")
    client.put("/lain/networkd/gone", "1")
    proxy = TcpProxy(("127.0.0.1", etcd.client_port))
    mirror = _mirror_through(proxy)
    mirror.start()
    try:
        assert mirror.wait_synced(3.0)
        assert mirror.resyncs == 1
        proxy.cut()
        assert _wait(lambda: not mirror.connected, 5.0)
        client.put("/lain/networkd/new", "2")
        client.put("/lain/networkd/kept", "3")
        client.delete("/lain/networkd/gone")
        if compacted:
            etcd.compact()
        proxy.restore()
        assert _wait(lambda: mirror.connected and _value(mirror, "/lain/networkd/new") == "2", 5.0)
        assert _value(mirror, "/lain/networkd/kept") == "3"
        assert mirror.get("/lain/networkd/gone") is None
        if compacted:
            assert mirror.resyncs == 2
        else:
            assert mirror.resyncs == 1 and mirror.resumes >= 1
        client.put("/lain/networkd/after", "4")  # and the resumed watch goes on
        assert _wait(lambda: _value(mirror, "/lain/networkd/after") == "4", 3.0)
    finally:
        mirror.stop()
        proxy.close()
        client.close()


def test_owned_keys_claim_rebind_release_and_fencing(etcd):
    conn = _connector(etcd)
    c1, c2 = conn(1.0), conn(1.0)
    l1, l1b, l2 = c1.lease(5).id, c1.lease(5).id, c2.lease(5).id
    n1, n2 = OwnedKeys(c1, "n1"), OwnedKeys(c2, "n2")
    key = "/lain/networkd/vips/10.0.0.1.lock"
    assert n1.claim(key, l1).succeeded
    assert not n2.claim(key, l2).succeeded
    assert not n1.claim(key, l1).succeeded  # create-if-absent: never overwrites
    assert not n2.release(key, l2).succeeded  # not n2's
    assert not n1.release(key, l1b).succeeded  # ours by name but another lease
    assert n1.rebind(key, l1, l1b).succeeded
    value, meta = c1.get(key)
    assert value == b"n1" and meta.lease_id == l1b
    # Leader-fenced writes: only while the leader key is ours.
    leader = "/lain/networkd/leader"
    assert n1.claim(leader, l1).succeeded
    assert n1.fenced_put("/lain/config/x", "v1", leader, l1).succeeded
    assert not n2.fenced_put("/lain/config/x", "v2", leader, l2).succeeded
    assert not n1.fenced_put("/lain/config/x", "v3", leader, l1b).succeeded
    assert not n1.fenced_delete("/lain/config/x", "other", leader, l1).succeeded
    assert n1.fenced_delete("/lain/config/x", "v1", leader, l1).succeeded
    assert n1.release(key, l1b).succeeded
    assert c1.get(key)[0] is None
    c1.close()
    c2.close()


@pytest.mark.parametrize("contenders", [3])
def test_claim_race_has_exactly_one_winner(etcd, contenders):
    conn = _connector(etcd)
    clients = [conn(1.0) for _ in range(contenders)]
    stores = [OwnedKeys(c, f"n{i}") for i, c in enumerate(clients)]
    leases = [c.lease(5).id for c in clients]
    results = [None] * contenders
    barrier = threading.Barrier(contenders)

    def run(i):
        barrier.wait()
        results[i] = stores[i].claim("/lain/networkd/vips/10.9.9.9.lock", leases[i]).succeeded

    threads = [threading.Thread(target=run, args=(i,)) for i in range(contenders)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(1 for r in results if r) == 1
    for c in clients:
        c.close()


def test_a_lease_below_etcds_minimum_is_renewed_at_the_granted_ttl(tmp_path, caplog):
    """etcd raises a lease below 1.5 x its election timeout (rounded up to seconds): with
    etcd's default timing (heartbeat 100 ms, election 1 s) `-vip.ttl 1` gets a 2 s lease.
    The keeper says so and paces its renewals and its liveness by the granted TTL."""
    from tests.support.etcd import EtcdServer

    server = EtcdServer(heartbeat_ms=100, election_ms=1000).start()
    try:
        conn = _connector(server)
        keeper = LeaseKeeper(lambda: conn(0.4), 1.0, str(tmp_path / "lease"), hostname="n1")
        with caplog.at_level("WARNING", logger="networkd.elector"):
            keeper.start()
        try:
            assert keeper.alive() and keeper.health().ttl_s == 2.0
            assert any("requested_s=1 granted_s=2" in r.getMessage() for r in caplog.records)
            time.sleep(2.5)  # more than the requested TTL: the 2 s lease is still renewed
            assert keeper.alive() and keeper.health().keepalive_failures == 0
            first = keeper.lease_id
        finally:
            keeper.stop()  # a plain restart: no revoke
        # The restart resumes that lease: a lease etcd raised is not a changed -vip.ttl.
        again = LeaseKeeper(lambda: conn(0.4), 1.0, str(tmp_path / "lease"), hostname="n1")
        again.start()
        try:
            assert again.resumed and again.lease_id == first and again.alive()
            time.sleep(0.5)
            assert again.lease_id == first  # not replaced "for the new TTL"
        finally:
            again.stop()
        # A changed -vip.ttl still gets a lease of its own (the old one retires).
        third = LeaseKeeper(lambda: conn(0.4), 3.0, str(tmp_path / "lease"), hostname="n1")
        third.start()
        try:
            assert third.lease_id not in (0, first) and third.health().ttl_s == 3.0
        finally:
            assert third.revoke()
            third.stop()
    finally:
        server.close()
