"""The supervisor with real processes, real signals and real sockets."""

import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from typing import Iterator, List

import pytest

from tests.support.daemon import NETWORKD, Daemon, networkd_pids, wait_for


@pytest.fixture
def daemon(tmp_path: str) -> Iterator[Daemon]:
    d = Daemon(str(tmp_path), workers=("api",)).start()
    try:
        yield d
    finally:
        d.close()


def test_version_needs_no_root_etcd_or_network(tmp_path: str) -> None:
    run_dir = os.path.join(str(tmp_path), "run")
    # No network (a fresh namespace), not root (nobody), an unreachable etcd.
    result = subprocess.run(
        [
            "unshare",
            "--net",
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            NETWORKD,
            "-version",
            f"-run.dir={run_dir}",
            "-etcd.endpoint=http://192.0.2.1:1",
        ],
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().startswith("networkd Version: ")
    assert not os.path.exists(run_dir), "-version must touch nothing"


def test_bad_flag_value_is_named(tmp_path: str) -> None:
    result = subprocess.run(
        [NETWORKD, "-vip.fencing=maybe"], capture_output=True, text=True, timeout=20
    )
    assert result.returncode == 2
    assert "-vip.fencing" in result.stderr


def test_second_instance_exits_naming_the_holder(daemon: Daemon, tmp_path: str) -> None:
    daemon.wait_running(["api"])
    other = Daemon(
        os.path.join(str(tmp_path), "other"),
        workers=("api",),
        flags={"lock.filename": daemon.lock_file},
    )
    other.start()
    assert other.proc is not None
    code = other.proc.wait(20)
    assert code != 0
    assert daemon.proc is not None
    assert f"pid {daemon.proc.pid}" in other.log()
    assert daemon.proc.poll() is None, "the first daemon keeps running"


def test_sigkill_of_a_worker_restarts_it_alone(daemon: Daemon) -> None:
    tap = daemon.tap(["worker."])
    try:
        before = daemon.wait_running(["api"])
        old_pid = before["api"]["pid"]
        os.kill(old_pid, signal.SIGKILL)
        after = daemon.wait_restarted("api", old_pid)
        assert after["api"]["restarts"] == before["api"]["restarts"] + 1
        assert after["api"]["last_exit"] == "signal SIGKILL"
        exit_env = tap.wait_topic("worker.api.exit")
        assert exit_env.body.pid == old_pid and exit_env.body.signal == "SIGKILL"
        starts = [e for e in tap.envelopes if e.topic == "worker.api.start"]
        assert any(e.body.pid == after["api"]["pid"] for e in starts)
    finally:
        tap.close()


def test_term_to_a_worker_and_ctl_restart_restart_it_alone(daemon: Daemon) -> None:
    first = daemon.wait_running(["api"])["api"]["pid"]
    os.kill(first, signal.SIGTERM)
    second = wait_for(lambda: (lambda p: p if p not in (0, first) else None)(daemon.pid("api")), 15)
    daemon.wait_running(["api"])
    result = daemon.ctl("restart", "api")
    assert result.returncode == 0, result.stderr
    third = wait_for(lambda: (lambda p: p if p not in (0, second) else None)(daemon.pid("api")), 15)
    workers = daemon.wait_running(["api"])
    assert workers["api"]["restarts"] == 2
    assert third != first
    bad = daemon.ctl("restart", "nonesuch")
    assert bad.returncode == 1 and "nonesuch" in bad.stderr


def test_worker_failing_at_start_goes_backoff_then_fatal(tmp_path: str) -> None:
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", 0))
    blocker.listen(1)
    port = blocker.getsockname()[1]
    daemon = Daemon(
        str(tmp_path), workers=("api",), flags={"api.addr": f"127.0.0.1:{port}"}
    ).start()
    tap = daemon.tap(["worker.api.state"])
    try:
        wait_for(
            lambda: daemon.workers().get("api", {}).get("state") == "FATAL", 20, what="api FATAL"
        )
        # the tap's thread may still be receiving the last transitions
        wait_for(
            lambda: [e.body.new for e in tap.envelopes][-1:] == ["FATAL"], 5, what="tap saw FATAL"
        )
        states = [e.body.new for e in tap.envelopes]
        assert "BACKOFF" in states and states.count("FATAL") == 1
        assert daemon.proc is not None and daemon.proc.poll() is None, "the daemon stays up"
        assert daemon.ctl_status()["workers"][0]["state"] == "FATAL"
        # The operator fixes the cause and restarts it by name.
        blocker.close()
        assert daemon.ctl("restart", "api").returncode == 0
        daemon.wait_running(["api"])
    finally:
        tap.close()
        blocker.close()
        daemon.close()


def test_term_to_supervisor_stops_everything(daemon: Daemon) -> None:
    daemon.wait_running(["api"])
    assert daemon.proc is not None
    pids = networkd_pids(daemon.run_dir)
    assert len(pids) >= 3  # supervisor, fork server, api
    start = time.monotonic()
    daemon.proc.send_signal(signal.SIGTERM)
    assert daemon.proc.wait(15) == 0
    assert time.monotonic() - start < 5
    wait_for(
        lambda: not any(os.path.exists(f"/proc/{p}") and not _zombie(p) for p in pids),
        5,
        what="all gone",
    )
    assert not os.path.exists(daemon.lock_file)


def test_sigkill_of_supervisor_takes_workers_down(daemon: Daemon) -> None:
    daemon.wait_running(["api"])
    assert daemon.proc is not None
    workers = [w["pid"] for w in daemon.workers().values()]
    daemon.proc.kill()
    daemon.proc.wait(5)
    start = time.monotonic()
    wait_for(
        lambda: not any(os.path.exists(f"/proc/{p}") and not _zombie(p) for p in workers),
        2.5,
        what="workers gone",
    )
    assert time.monotonic() - start <= 2.0


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def test_api_status_matches_ctl_and_rejects_other_paths(daemon: Daemon) -> None:
    daemon.wait_running(["api"])
    import json

    def fetch() -> dict:
        with urllib.request.urlopen(daemon.api_url + "/v1/status", timeout=5) as resp:
            assert resp.headers["Content-Type"] == "application/json"
            return json.loads(resp.read())

    doc = wait_for(
        lambda: (lambda d: d if d["workers"] and d["workers"][0]["state"] == "RUNNING" else None)(
            fetch()
        ),
        10,
    )
    ctl = daemon.ctl_status()
    assert set(doc) == set(ctl)
    assert [(w["name"], w["pid"], w["state"]) for w in doc["workers"]] == [
        (w["name"], w["pid"], w["state"]) for w in ctl["workers"]
    ]
    for key in ("name", "pid", "state", "restarts", "uptime_s", "last_exit"):
        assert key in doc["workers"][0]
    with pytest.raises(urllib.error.HTTPError) as not_found:
        urllib.request.urlopen(daemon.api_url + "/nope", timeout=5)
    assert not_found.value.code == 404
    request = urllib.request.Request(daemon.api_url + "/v1/status", method="POST", data=b"{}")
    with pytest.raises(urllib.error.HTTPError) as not_allowed:
        urllib.request.urlopen(request, timeout=5)
    assert not_allowed.value.code == 405


def test_ctl_status_text_and_tap_json(daemon: Daemon) -> None:
    daemon.wait_running(["api"])
    text = daemon.ctl("status")
    assert text.returncode == 0
    assert "api" in text.stdout and "RUNNING" in text.stdout
    tap = subprocess.Popen(
        [
            NETWORKD + "ctl",
            "-run.dir",
            daemon.run_dir,
            "tap",
            "worker.",
            "--json",
            "--count",
            "2",
            "--timeout",
            "15",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    time.sleep(0.7)
    daemon.ctl("restart", "api")
    out, _ = tap.communicate(timeout=20)
    import json

    lines: List[dict] = [json.loads(line) for line in out.splitlines()]
    assert len(lines) == 2
    for line in lines:
        assert {"topic", "sender", "seq", "ts", "body"} <= set(line)
        assert line["sender"] == "supervisor" and line["topic"].startswith("worker.api.")


def test_hup_reloads_the_flag_file_and_restarts_only_affected_workers(tmp_path: str) -> None:
    ports = [socket.socket() for _ in range(2)]
    for p in ports:
        p.bind(("127.0.0.1", 0))
    first_port, second_port = (p.getsockname()[1] for p in ports)
    for p in ports:
        p.close()
    flag_file = os.path.join(str(tmp_path), "flags")
    with open(flag_file, "w") as f:
        f.write(f"# networkd flags\n-api.addr=127.0.0.1:{first_port}\n-dns.ttl=600\n")
    daemon = Daemon(
        str(tmp_path), workers=("api",), config=flag_file, flags={"api.addr": None}
    ).start()
    try:
        pid = daemon.wait_running(["api"])["api"]["pid"]
        with open(flag_file, "w") as f:
            f.write(f"-api.addr=127.0.0.1:{first_port}\n-dns.ttl=30\n")
        daemon.signal(signal.SIGHUP)
        time.sleep(1.0)
        assert daemon.pid("api") == pid, "the api does not use -dns.ttl: not restarted"
        with open(flag_file, "w") as f:
            f.write(f"-api.addr=127.0.0.1:{second_port}\n-dns.ttl=30\n")
        daemon.signal(signal.SIGHUP)
        wait_for(lambda: daemon.pid("api") not in (0, pid), 10, what="api restarted")
        daemon.wait_running(["api"])

        def answers() -> bool:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{second_port}/v1/status", timeout=2):
                    return True
            except OSError:
                return False

        wait_for(answers, 10, what="api on the new address")
    finally:
        daemon.close()


def test_usr1_reopens_the_log_file(tmp_path: str) -> None:
    log_file = os.path.join(str(tmp_path), "daemon.log")
    daemon = Daemon(str(tmp_path), workers=("api",), flags={"log.file": log_file}).start()
    try:
        pid = daemon.wait_running(["api"])["api"]["pid"]
        os.rename(log_file, log_file + ".1")
        daemon.signal(signal.SIGUSR1)
        wait_for(lambda: os.path.exists(log_file), 5, what="log reopened")
        time.sleep(0.5)
        assert daemon.pid("api") == pid, "an unprivileged worker survives a reopen it may not do"
        daemon.ctl("restart", "api")
        wait_for(
            lambda: "worker started name=api" in open(log_file).read(),
            10,
            what="new lines in new file",
        )
    finally:
        daemon.close()


def test_sd_notify_ready_and_stopping(tmp_path: str) -> None:
    path = os.path.join(str(tmp_path), "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(15)
    env_backup = os.environ.get("NOTIFY_SOCKET")
    os.environ["NOTIFY_SOCKET"] = path
    try:
        daemon = Daemon(str(tmp_path), workers=("api",)).start()
    finally:
        if env_backup is None:
            del os.environ["NOTIFY_SOCKET"]
        else:
            os.environ["NOTIFY_SOCKET"] = env_backup
    try:
        ready = sock.recv(4096).decode()
        assert "READY=1" in ready
        assert daemon.proc is not None
        assert f"MAINPID={daemon.proc.pid}" in ready
        daemon.signal(signal.SIGTERM)
        assert "STOPPING=1" in sock.recv(4096).decode()
    finally:
        daemon.close()
        sock.close()


def test_metrics_endpoint_serves_prometheus_text(daemon: Daemon) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    daemon.wait_running(["api"])
    os.kill(daemon.pid("api"), signal.SIGTERM)
    daemon.wait_running(["api"])

    def restarts() -> float:
        try:
            with urllib.request.urlopen(daemon.api_url + "/metrics", timeout=5) as resp:
                assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
                text = resp.read().decode()
        except OSError:  # the api is between its old and new process
            return -1.0
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == "networkd_worker_restarts_total" and sample.labels == {
                    "worker": "api"
                }:
                    return float(sample.value)
        return -1.0

    assert wait_for(lambda: restarts() == 1.0, 10, what="restart counted in /metrics")


def test_dns_port_in_use_is_a_clear_start_up_error(tmp_path: str) -> None:
    blocker = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    blocker.bind(("127.0.0.1", 0))  # no SO_REUSEPORT: the daemon cannot share it
    port = blocker.getsockname()[1]
    daemon = Daemon(
        str(tmp_path), workers=("dns",), flags={"godns.addr": f"127.0.0.1:{port}"}
    ).start()
    try:
        assert daemon.proc is not None
        assert daemon.proc.wait(20) == 1
        assert f"-godns.addr: cannot listen on 127.0.0.1:{port}" in daemon.log()
        assert "Traceback" not in daemon.log()
        assert not os.path.exists(daemon.lock_file)
    finally:
        blocker.close()
        daemon.close()
