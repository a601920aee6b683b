"""The supervisor under faults, with real signals: signals nobody uses, a worker that says
"do not restart me" while RUNNING, and an exception in the supervisor's own main loop.

The last two need test hooks (``networkd/testhooks.py``, ``NETWORKD_TEST_HOOKS=1``): no
outside action makes a real worker exit 78 or the main loop raise.
"""

import os
import signal
from typing import Iterator

import pytest

from networkd import control
from networkd.signals import realtime_signals
from tests.integration.elector_cluster import Cluster
from tests.support.daemon import Daemon, networkd_pids, wait_for
from tests.support.etcd import EtcdServer

HOOKS = {"NETWORKD_TEST_HOOKS": "1"}
# Every signal whose default would end the process and that the Go daemon ignored.
IGNORED = [
    signal.SIGUSR2,
    signal.SIGPIPE,
    signal.SIGALRM,
    signal.SIGVTALRM,
    signal.SIGPROF,
    signal.SIGIO,
    signal.SIGPWR,
    signal.SIGXCPU,
    signal.SIGXFSZ,
    realtime_signals()[0],
    realtime_signals()[-1],
]


@pytest.fixture
def hooked(tmp_path: str) -> Iterator[Daemon]:
    d = Daemon(str(tmp_path), workers=("api",), env=HOOKS).start()
    try:
        yield d
    finally:
        d.close()


def test_ignored_signals_to_the_supervisor_and_every_process_change_nothing(tmp_path: str) -> None:
    daemon = Daemon(str(tmp_path), workers=("api",)).start()
    try:
        api = daemon.wait_running(["api"])["api"]["pid"]
        assert daemon.proc is not None
        for sig in IGNORED:
            daemon.signal(sig)
        # As `systemctl kill -s USR2 networkd` does: every process of the unit.
        for pid in networkd_pids(daemon.run_dir):
            os.kill(pid, signal.SIGUSR2)
        wait_for(lambda: "signal ignored name=SIGRTMAX" in daemon.log(), 5, what="all handled")
        assert daemon.proc.poll() is None, daemon.log()[-2000:]
        assert daemon.workers()["api"]["pid"] == api and daemon.pid("api") == api
        log = daemon.log()
        for name in ("SIGUSR2", "SIGALRM", "SIGPWR", "SIGRTMIN"):
            assert f"signal ignored name={name}" in log
        assert "name=SIGPIPE" not in log, "PIPE is ignored silently: logging could loop"
        # Still a daemon that stops gracefully.
        assert daemon.stop() == 0
        assert not os.path.exists(daemon.lock_file)
    finally:
        daemon.close()


def test_worker_exiting_78_while_running_is_fatal_and_the_daemon_stays_up(hooked: Daemon) -> None:
    tap = hooked.tap(["worker.api."])
    try:
        api = hooked.wait_running(["api"])["api"]["pid"]
        os.kill(api, signal.SIGUSR2)  # the hook: exit 78 now
        wait_for(lambda: hooked.workers()["api"]["state"] == "FATAL", 10, what="api FATAL")
        states = [
            (e.body.old, e.body.new) for e in list(tap.envelopes) if e.topic.endswith("state")
        ]
        assert ("RUNNING", "FATAL") in states
        assert hooked.proc is not None and hooked.proc.poll() is None, "the daemon stays up"
        status = hooked.ctl_status()["workers"][0]
        assert status["state"] == "FATAL" and status["last_exit"] == "exit 78"
        assert "worker fatal name=api" in hooked.log()
        assert hooked.ctl("restart", "api").returncode == 0  # the operator fixed the cause
        hooked.wait_running(["api"])
        assert hooked.stop() == 0
    finally:
        tap.close()


def test_exception_in_the_main_loop_stops_gracefully_releasing_vips(
    etcd: EtcdServer, tmp_path: str
) -> None:
    cluster = Cluster(etcd, str(tmp_path))
    vip = "10.5.9.1"
    cluster.place("web", "worker", ["n1"])
    cluster.put_vip(vip)
    # -vip.ttl 10: a lock gone within a few seconds was released, not expired.
    node = Daemon(
        os.path.join(str(tmp_path), "n1"),
        etcd.endpoint,
        workers=("watcher", "elector", "resolvconf"),
        hostname="n1",
        env=HOOKS,
        flags={"docker.endpoint": "", "net.address": "10.77.0.1", "vip.ttl": 10},
    )
    with open(node.resolv_conf, "w") as f:
        f.write("nameserver 10.9.9.9\n")
    node.start()
    try:
        node.wait_running(["watcher", "elector", "resolvconf"], timeout=20)
        cluster.wait(lambda: cluster.holder(vip) == "n1", 10, "n1 owns the VIP")
        wait_for(lambda: open(node.resolv_conf).read().startswith("nameserver 127.0.0.1"), 5)
        with pytest.raises((ValueError, OSError)):  # the loop raised: no answer
            control.request(node.run_dir, {"cmd": "test-raise"})
        assert node.proc is not None
        assert node.proc.wait(15) == 70
        log = node.log()
        assert "supervisor loop failed action=graceful stop" in log
        assert "InjectedFault" in log
        assert "elector final stop: releasing VIPs" in log
        assert cluster.holder(vip) is None, "the VIP was released, not left to expire"
        assert not os.path.exists(node.lock_file)
        assert open(node.resolv_conf).read() == "nameserver 10.9.9.9\n", "resolv.conf restored"
        assert "SIGKILL" not in log, "every worker stopped by itself"
    finally:
        node.close()
        cluster.close()
