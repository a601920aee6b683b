"""The scale benchmark's harness (bench/scale.py) on 5 simulated nodes against a real
3-member etcd cluster: what the sweep reports must hold here already.

Simulated nodes run networkd's real watcher reader and elector core (tests/support/
simnode.py). In steady state they make no etcd writes; a pod_groups change reaches every
node's elector; a killed owner's VIPs are bound on other nodes within a few seconds; the
etcd leader's death moves no VIP.
"""

from bench.scale import TTL, Run


def test_five_simulated_nodes_steady_change_owner_kill_and_leader_kill():
    run = Run(5, steady_s=4.0, changes=3, owner_kills=1, leader_observe_s=6.0)
    try:
        assert run.result.hosts == 1
        run.steady()
        steady = run.result.steady
        assert steady["writes_s"] == 0.0 and steady["raft_commits_s"] == 0.0, steady
        assert steady["keepalive_s"] > 0 and steady["watch_msgs_s"] > 0, steady

        run.changes()  # raises unless every node's elector got each change
        assert len(run.result.change_delays) == 3 * 5
        assert run.result.change["events_sent"] >= 5  # one event per watching node

        run.owner_kills()
        assert run.result.kill_vips[0] >= 1 and not run.result.notes, run.result.notes
        assert len(run.result.kill_delays) == run.result.kill_vips[0]
        # the lease runs out after TTL (etcd checks expiry every 0.5 s), then a standby
        # takes over; generous for a loaded CI machine
        assert max(run.result.kill_delays) < 2 * TTL + 2.0, run.result.kill_delays

        run.leader_kill()
        assert run.result.leader["moves"] == 0, run.result.leader
        assert run.result.leader["no_owner_s"] == 0.0, run.result.leader
    finally:
        run.close()
