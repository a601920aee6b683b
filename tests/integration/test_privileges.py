"""Least privilege with real processes: who holds the etcd password, who may connect to a
root worker's bus endpoint, which worker accounts are refused at start, and the run dir's
stale entries."""

import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import uuid
from typing import Dict, Iterator, Optional

import pytest

from networkd import rundir
from networkd.bus.publisher import endpoint_path
from tests.integration.netns_fixtures import netns_with_eth0
from tests.lab.netns import del_netns
from tests.support.daemon import NETWORKD, Daemon

CONNECT = """
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
try:
    s.connect(sys.argv[1])
    print("connected")
except PermissionError:
    print("denied")
"""


@pytest.fixture
def netns() -> Iterator[str]:
    """A namespace with an eth0, so the root applier touches nothing of the host."""
    name = netns_with_eth0("nwp", "10.77.6.1/24")
    try:
        yield name
    finally:
        del_netns(name)


def memory_holds(pid: int, needle: bytes) -> bool:
    """Whether ``needle`` is anywhere in the readable memory of process ``pid``."""
    with open(f"/proc/{pid}/maps") as maps, open(f"/proc/{pid}/mem", "rb", 0) as mem:
        for line in maps:
            span, perms = line.split()[:2]
            if not perms.startswith("r"):
                continue
            start, end = (int(x, 16) for x in span.split("-"))
            try:
                mem.seek(start)
                data = mem.read(end - start)
            except (OSError, ValueError, OverflowError):
                continue
            if data and needle in data:
                return True
    return False


def connect_as(user: str, path: str) -> str:
    account = pwd.getpwnam(user)
    result = subprocess.run(
        ["setpriv", f"--reuid={account.pw_uid}", f"--regid={account.pw_gid}", "--clear-groups"]
        + [sys.executable, "-c", CONNECT, path],
        capture_output=True,
        text=True,
        timeout=20,
    )
    return result.stdout.strip() or result.stderr


@pytest.mark.parametrize("given", ["command line", "config file"])
def test_dns_replica_holds_no_etcd_password_and_root_endpoints_admit_only_subscribers(
    tmp_path: str, netns: str, given: str
) -> None:
    secret = f"pw-{uuid.uuid4().hex}"
    flag_file = os.path.join(str(tmp_path), "flags")
    with open(flag_file, "w") as f:
        f.write("-etcd.user networkd\n")
        if given == "config file":
            f.write(f"-etcd.password {secret}\n")
    os.chmod(flag_file, 0o600)
    daemon = Daemon(
        str(tmp_path),
        workers=("applier", "resolvconf", "dns", "api"),
        netns=netns,
        config=flag_file,
        extra_args=["-etcd.password", secret] if given == "command line" else [],
        flags={"dns.replicas": 1},
    ).start()
    try:
        workers = daemon.wait_running(["applier", "resolvconf", "dns.0", "api"], timeout=20)
        assert daemon.proc is not None
        supervisor = daemon.proc.pid
        # The scan finds what is there: the supervisor holds the password in force.
        assert memory_holds(supervisor, secret.encode())
        for name in ("dns.0", "api", "resolvconf", "applier"):
            assert not memory_holds(workers[name]["pid"], secret.encode()), f"{name} holds it"
        # Nor can a DNS replica (any local user) read it from the supervisor's command line.
        with open(f"/proc/{supervisor}/cmdline", "rb") as f:
            cmdline = f.read()
        assert secret.encode() not in cmdline and b"networkd: supervisor" in cmdline

        # Root endpoints: only the groups that subscribe may connect (connect = write).
        applier = endpoint_path(daemon.run_dir, "applier")
        resolv = endpoint_path(daemon.run_dir, "resolvconf")
        assert connect_as("networkd-dns", applier) == "denied", "a DNS replica cannot flood it"
        assert connect_as("nobody", applier) == "denied"
        assert connect_as("networkd", applier) == "connected"  # the elector, the api
        assert connect_as("networkd-dns", resolv) == "connected"  # upstreams, hosts
        assert connect_as("networkd", resolv) == "connected"  # the api
        assert connect_as("nobody", resolv) == "denied"
        assert daemon.stop() == 0
    finally:
        daemon.close()


def start_failure(
    tmp_path: str, *args: str, env: Optional[Dict[str, str]] = None
) -> "subprocess.CompletedProcess[str]":
    lock = os.path.join(str(tmp_path), "lock.pid")
    run_dir = tempfile.mkdtemp(prefix="networkd-run-")
    try:
        return subprocess.run(
            [NETWORKD, "-workers=api,dns", f"-lock.filename={lock}", f"-run.dir={run_dir}", *args],
            capture_output=True,
            text=True,
            timeout=30,
            env=dict(os.environ, **(env or {})),
        )
    finally:
        assert not os.path.exists(lock), "refused before taking the lock"
        shutil.rmtree(run_dir, ignore_errors=True)


@pytest.mark.parametrize(
    "args,message",
    [
        (["-user=networkd", "-dns.user=networkd"], "same uid"),
        (["-user=networkd-missing"], "-user: no account named 'networkd-missing'"),
        (["-dns.user=root"], "-dns.user: 'root' is root"),
    ],
)
def test_unusable_worker_accounts_are_refused_with_exit_78(
    tmp_path: str, args: list, message: str
) -> None:
    result = start_failure(tmp_path, *args)
    assert result.returncode == 78, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_a_missing_user_runs_as_the_fallback_when_allowed(tmp_path: str) -> None:
    daemon = Daemon(
        str(tmp_path),
        workers=("api",),
        flags={"user": "networkd-missing", "user.fallback": "nobody"},
    ).start()
    try:
        api = daemon.wait_running(["api"])["api"]["pid"]
        with open(f"/proc/{api}/status") as f:
            uid_line = next(line for line in f if line.startswith("Uid:"))
        assert uid_line.split()[1:] == [str(pwd.getpwnam("nobody").pw_uid)] * 4
        assert "user missing name=networkd-missing fallback=nobody" in daemon.log()
    finally:
        daemon.close()


def test_an_installation_the_workers_cannot_read_is_named_at_start(tmp_path: str) -> None:
    # networkd reached through a directory only root may enter, as a Python under /root is.
    private = tempfile.mkdtemp(prefix="networkd-private-")  # mode 0700, root's
    try:
        import networkd

        os.symlink(os.path.dirname(networkd.__file__), os.path.join(private, "networkd"))
        result = start_failure(tmp_path, env={"PYTHONPATH": private})
        assert result.returncode == 78, result.stderr
        assert f"cannot read {private} (needed to import networkd)" in result.stderr
        assert "-user: user 'networkd'" in result.stderr
    finally:
        shutil.rmtree(private)


def test_stale_entries_in_worker_directories_are_unlinked_not_chowned(tmp_path: str) -> None:
    dns = pwd.getpwnam("networkd-dns")
    run_dir = tempfile.mkdtemp(prefix="networkd-run-")
    secret = os.path.join(str(tmp_path), "secret")  # a root file a worker wants to own
    try:
        with open(secret, "w") as f:
            f.write("root only\n")
        os.chmod(secret, 0o600)
        mine = os.path.join(run_dir, "bus", "dns.0")
        os.makedirs(mine)
        os.chown(mine, dns.pw_uid, dns.pw_gid)
        os.link(secret, os.path.join(mine, "planted"))  # as if the worker had linked it
        os.symlink("/etc/passwd", os.path.join(mine, "link"))
        os.mkdir(os.path.join(mine, "olddir"))
        kept = os.path.join(mine, "pub.sock")
        open(kept, "w").close()
        os.chown(kept, dns.pw_uid, dns.pw_gid)

        rundir.prepare(run_dir, {"dns.0": (dns.pw_uid, dns.pw_gid)})

        assert sorted(os.listdir(mine)) == ["pub.sock"]
        assert os.stat(secret).st_uid == 0 and os.stat(secret).st_nlink == 1
        assert os.stat("/etc/passwd").st_uid == 0
        assert os.stat(mine).st_uid == dns.pw_uid
        state = os.stat(os.path.join(run_dir, "state", "dns"))
        assert state.st_uid == dns.pw_uid and state.st_mode & 0o777 == 0o700
    finally:
        shutil.rmtree(run_dir)


def test_a_root_endpoint_without_acl_support_opens_to_all() -> None:
    """A run dir without POSIX ACLs (ramfs here; a tmpfs built without them): the
    resolv.conf keeper must stay reachable by the DNS replicas and the api."""
    mount = tempfile.mkdtemp(prefix="networkd-noacl-")
    subprocess.run(["mount", "-t", "ramfs", "-o", "mode=0755", "ramfs", mount], check=True)
    try:
        from networkd.bus import endpoint_access

        path = os.path.join(mount, "pub.sock")
        sock = socket.socket(socket.AF_UNIX)
        sock.bind(path)
        groups = [pwd.getpwnam(u).pw_gid for u in ("networkd", "networkd-dns")]
        endpoint_access.restrict(path, groups)
        assert os.stat(path).st_mode & 0o777 == 0o666
        endpoint_access.restrict(path, groups[:1])  # one group needs no ACL
        assert os.stat(path).st_mode & 0o777 == 0o660 and os.stat(path).st_gid == groups[0]
        sock.close()
        os.unlink(path)
    finally:
        subprocess.run(["umount", mount], check=False)
        os.rmdir(mount)
