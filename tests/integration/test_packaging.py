"""The RPM: built once per session with packaging/rpm/build.sh, then taken apart.

The package is installed with ``rpm -i --root`` into a temporary directory (no
scriptlets, a private rpm database) and its virtualenv is run from /opt/networkd inside a
private mount namespace, where that directory is bind-mounted over /opt: the host's
/opt and rpm database are never touched. Scriptlets run with stand-ins for useradd,
systemctl and friends that record their calls.
"""

import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Set, Tuple

import pytest

from networkd import __version__
from networkd.config import FLAGS, parse_args
from tests.support.daemon import wait_for
from tests.support.ports import free_ports

REPO = Path(__file__).resolve().parents[2]
PACKAGING = REPO / "packaging" / "rpm"
VENV = "/opt/networkd"
UNIT_PATH = "/usr/lib/systemd/system/networkd.service"

# rpmlib features that el7's rpm 4.11 knows; the package may need no other.
EL7_RPMLIB = {
    "BuiltinLuaScripts",
    "CompressedFileNames",
    "ConcurrentAccess",
    "ExplicitPackageProvide",
    "FileCaps",
    "FileDigests",
    "HeaderLoadSortsTags",
    "PartialHardlinkSets",
    "PayloadFilesHavePrefix",
    "PayloadIsBzip2",
    "PayloadIsLzma",
    "PayloadIsXz",
    "ScriptletExpansion",
    "ScriptletInterpreterArgs",
    "TildeInVersions",
    "VersionedDependencies",
}

# Directives systemd 219 (CentOS 7) knows, per section: systemd.unit(5), systemd.service(5),
# systemd.exec(5), systemd.kill(5), systemd.resource-control(5) of release 219. Newer ones
# such as AmbientCapabilities, TasksMax, StartLimitIntervalSec, StateDirectory,
# RuntimeDirectoryPreserve, ProtectKernelTunables are deliberately absent.
SYSTEMD_219: Dict[str, Set[str]] = {
    "Unit": {
        "Description", "Documentation", "Requires", "Requisite", "Wants", "BindsTo",
        "PartOf", "Conflicts", "Before", "After", "OnFailure", "PropagatesReloadTo",
        "ReloadPropagatedFrom", "JoinsNamespaceOf", "RequiresMountsFor", "OnFailureJobMode",
        "IgnoreOnIsolate", "IgnoreOnSnapshot", "StopWhenUnneeded", "RefuseManualStart",
        "RefuseManualStop", "AllowIsolate", "DefaultDependencies", "JobTimeoutSec",
        "JobTimeoutAction", "JobTimeoutRebootArgument", "ConditionPathExists",
        "ConditionPathIsDirectory", "ConditionFileNotEmpty", "ConditionFileIsExecutable",
        "ConditionKernelCommandLine", "ConditionVirtualization", "ConditionHost",
        "ConditionSecurity", "ConditionCapability", "ConditionACPower", "ConditionNeedsUpdate",
        "ConditionFirstBoot", "AssertPathExists", "AssertFileIsExecutable", "SourcePath",
    },
    "Service": {
        "Type", "RemainAfterExit", "GuessMainPID", "PIDFile", "BusName", "BusPolicy",
        "ExecStart", "ExecStartPre", "ExecStartPost", "ExecReload", "ExecStop",
        "ExecStopPost", "RestartSec", "TimeoutStartSec", "TimeoutStopSec", "TimeoutSec",
        "WatchdogSec", "Restart", "SuccessExitStatus", "RestartPreventExitStatus",
        "RestartForceExitStatus", "PermissionsStartOnly", "RootDirectoryStartOnly",
        "NonBlocking", "NotifyAccess", "Sockets", "StartLimitInterval", "StartLimitBurst",
        "StartLimitAction", "FailureAction", "RebootArgument", "FileDescriptorStoreMax",
        # systemd.kill(5)
        "KillMode", "KillSignal", "SendSIGKILL", "SendSIGHUP",
        # systemd.exec(5)
        "WorkingDirectory", "RootDirectory", "User", "Group", "SupplementaryGroups", "Nice",
        "OOMScoreAdjust", "IOSchedulingClass", "IOSchedulingPriority", "CPUSchedulingPolicy",
        "CPUSchedulingPriority", "CPUSchedulingResetOnFork", "CPUAffinity", "UMask",
        "Environment", "EnvironmentFile", "StandardInput", "StandardOutput",
        "StandardError", "TTYPath", "TTYReset", "TTYVHangup", "TTYVTDisallocate",
        "SyslogIdentifier", "SyslogFacility", "SyslogLevel", "SyslogLevelPrefix",
        "TimerSlackNSec", "LimitCPU", "LimitFSIZE", "LimitDATA", "LimitSTACK", "LimitCORE",
        "LimitRSS", "LimitNOFILE", "LimitAS", "LimitNPROC", "LimitMEMLOCK", "LimitLOCKS",
        "LimitSIGPENDING", "LimitMSGQUEUE", "LimitNICE", "LimitRTPRIO", "LimitRTTIME",
        "ReadWriteDirectories", "ReadOnlyDirectories", "InaccessibleDirectories",
        "PrivateTmp", "PrivateNetwork", "PrivateDevices", "ProtectSystem", "ProtectHome",
        "MountFlags", "CapabilityBoundingSet", "Capabilities", "SecureBits",
        "NoNewPrivileges", "SystemCallFilter", "SystemCallErrorNumber",
        "SystemCallArchitectures", "RestrictAddressFamilies", "Personality",
        "RuntimeDirectory", "RuntimeDirectoryMode", "SELinuxContext", "AppArmorProfile",
        "SmackProcessLabel", "IgnoreSIGPIPE", "UtmpIdentifier", "PAMName",
        # systemd.resource-control(5)
        "CPUAccounting", "CPUShares", "StartupCPUShares", "CPUQuota", "MemoryAccounting",
        "MemoryLimit", "BlockIOAccounting", "BlockIOWeight", "StartupBlockIOWeight",
        "BlockIODeviceWeight", "BlockIOReadBandwidth", "BlockIOWriteBandwidth",
        "DeviceAllow", "DevicePolicy", "Delegate", "Slice",
    },
    "Install": {"Alias", "WantedBy", "RequiredBy", "Also", "DefaultInstance"},
}  # fmt: skip


class Package:
    """The built RPM and its installed tree."""

    def __init__(self, rpm_path: str, root: str, topdir: str) -> None:
        self.rpm = rpm_path
        self.root = root
        self.topdir = topdir

    def query(self, *args: str) -> str:
        result = subprocess.run(
            ["rpm", "-qp", "--nosignature", *args, self.rpm],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        return result.stdout

    def path(self, installed: str) -> Path:
        return Path(self.root) / installed.lstrip("/")

    def in_namespace(self, command: str) -> List[str]:
        """argv running ``command`` (sh) where /opt is the package's /opt (private mounts)."""
        script = f"mount --bind {shlex.quote(str(self.path('/opt')))} /opt && {command}"
        return ["unshare", "--mount", "--propagation", "private", "sh", "-c", script]


@pytest.fixture(scope="module")
def package() -> Iterator[Package]:
    result = subprocess.run(
        ["bash", str(PACKAGING / "build.sh")],
        cwd=str(REPO),
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, f"build.sh failed:\n{result.stdout}\n{result.stderr}"
    rpm_path = result.stdout.strip().splitlines()[-1]
    assert rpm_path.endswith(".rpm") and os.path.isfile(rpm_path), result.stdout
    root = tempfile.mkdtemp(prefix="networkd-rpmroot-")
    try:
        os.chmod(root, 0o755)
        install = subprocess.run(
            ["rpm", "-i", "--root", root, "--nodeps", "--noscripts", "--notriggers"]
            + ["--nosignature", rpm_path],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert install.returncode == 0, install.stderr
        yield Package(rpm_path, root, str(REPO / "rpmbuild"))
    finally:
        shutil.rmtree(root, ignore_errors=True)


# ---------------------------------------------------------------- metadata


def test_name_version_and_payload(package: Package) -> None:
    fields = package.query("--qf", "%{NAME} %{VERSION} %{ARCH} %{PAYLOADCOMPRESSOR}").split()
    assert fields[:2] == ["networkd", __version__]
    assert fields[2] != "noarch", "the virtualenv holds compiled extensions"
    assert fields[3] in ("xz", "gzip"), "el7's rpm cannot read zstd payloads"
    changelog = package.query("--changelog")
    assert f"- {__version__}-" in changelog.splitlines()[0]
    spec_version = re.search(r"^Version:\s*(\S+)", (PACKAGING / "networkd.spec").read_text(), re.M)
    assert spec_version and spec_version.group(1) == __version__


def test_file_list(package: Package) -> None:
    files = set(package.query("-l").split())
    for expected in (
        f"{VENV}/bin/networkd",
        f"{VENV}/bin/networkdctl",
        f"{VENV}/bin/python",
        f"{VENV}/pyvenv.cfg",
        "/usr/bin/networkd",
        "/usr/bin/networkdctl",
        UNIT_PATH,
        "/etc/sysconfig/networkd",
        "/etc/networkd/networkd.conf",
        "/etc/logrotate.d/networkd",
        "/usr/lib/tmpfiles.d/networkd.conf",
        "/usr/share/man/man8/networkd.8.gz",
        "/usr/share/man/man8/networkdctl.8.gz",
    ):
        assert expected in files, expected
    site = [f for f in files if re.search(r"/site-packages/(etcd3|grpc|zmq|iptc|pyroute2)/", f)]
    assert {m.group(1) for f in site if (m := re.search(r"site-packages/(\w+)/", f))} >= {
        "etcd3",
        "grpc",
        "zmq",
        "iptc",
        "pyroute2",
    }
    assert any(f.endswith(".pyc") and "/site-packages/networkd/" in f for f in files)
    configs = set(package.query("-c").split())
    assert configs == {
        "/etc/sysconfig/networkd",
        "/etc/networkd/networkd.conf",
        "/etc/logrotate.d/networkd",
    }
    # %config(noreplace): an operator's edits survive upgrades (flag "n" in FILEFLAGS).
    flags = package.query("--qf", "[%{FILEFLAGS:fflags} %{FILENAMES}\n]")
    for line in flags.splitlines():
        fflags, name = line.split(" ", 1)
        if name in configs:
            assert "c" in fflags and "n" in fflags, line
    modes: Dict[str, str] = {}
    for line in package.query("--qf", "[%{FILEMODES:perms} %{FILENAMES}\n]").splitlines():
        perms, name = line.split(" ", 1)
        modes[name] = perms
    assert modes["/etc/networkd/networkd.conf"] == "-rw-r-----", "it may hold the etcd password"
    assert modes["/usr/bin/networkd"] == "-rwxr-xr-x"


def test_requires(package: Package) -> None:
    requires = package.query("--requires").splitlines()
    names = {line.split()[0] for line in requires}
    assert {"iptables", "iproute", "systemd", "shadow-utils"} <= names
    python = [r for r in requires if r.startswith(("python(abi)", "rh-python38-python"))]
    assert python, requires
    assert not any(r.startswith(("python3dist(", "libc.so", "libzmq")) for r in requires), (
        "AutoReqProv must be off for the bundled virtualenv"
    )
    rpmlib = {m.group(1) for r in requires if (m := re.match(r"rpmlib\((\w+)\)", r))}
    assert rpmlib <= EL7_RPMLIB, f"not readable by el7's rpm: {rpmlib - EL7_RPMLIB}"
    provides = {line.split()[0] for line in package.query("--provides").splitlines()}
    assert provides <= {"networkd", "networkd(x86-64)", "config(networkd)"}, provides


# ---------------------------------------------------------------- scriptlets


def scriptlet(package: Package, tag: str) -> str:
    text = package.query("--qf", f"%{{{tag}}}")
    assert text and text != "(none)", tag
    return text


def run_scriptlet(
    body: str, arg: int, tmp_path: Path, known_users: bool = False
) -> List[Tuple[str, ...]]:
    """Run a scriptlet as rpm would ($1 = arg) with recording stand-ins on the PATH."""
    stubs = tmp_path / "stubs"
    stubs.mkdir(exist_ok=True)
    log = tmp_path / "calls.log"
    log.write_text("")
    getent_rc = 0 if known_users else 2
    for tool in ("getent", "groupadd", "useradd", "systemctl", "systemd-tmpfiles"):
        rc = getent_rc if tool == "getent" else 0
        stub = stubs / tool
        stub.write_text(f'#!/bin/sh\necho "{tool} $*" >> {shlex.quote(str(log))}\nexit {rc}\n')
        stub.chmod(0o755)
    script = tmp_path / "scriptlet.sh"
    script.write_text(body)
    env = {"PATH": f"{stubs}:/usr/bin:/bin", "LC_ALL": "C"}
    result = subprocess.run(
        ["/bin/sh", "-e", str(script), str(arg)],
        env=env,
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert result.returncode == 0, result.stderr
    return [tuple(line.split()) for line in log.read_text().splitlines()]


def test_scriptlets_are_valid_shell(package: Package) -> None:
    for tag in ("PREIN", "POSTIN", "PREUN", "POSTUN"):
        body = scriptlet(package, tag)
        check = subprocess.run(["sh", "-n"], input=body, capture_output=True, text=True)
        assert check.returncode == 0, f"{tag}: {check.stderr}"


def test_pre_creates_the_system_users_once(package: Package, tmp_path: Path) -> None:
    body = scriptlet(package, "PREIN")
    calls = run_scriptlet(body, 1, tmp_path)
    useradds = {c[-1]: c for c in calls if c[0] == "useradd"}
    assert set(useradds) == {"networkd", "networkd-dns", "networkd-plugin"}
    for call in useradds.values():
        assert "-r" in call
        assert call[call.index("-s") + 1] == "/sbin/nologin"
        assert call[call.index("-g") + 1] == call[-1], "each user has its own group"
    assert {c[-1] for c in calls if c[0] == "groupadd"} == {
        "networkd",
        "networkd-dns",
        "networkd-plugin",
    }
    # An upgrade on a node where the users exist creates nothing.
    again = run_scriptlet(body, 2, tmp_path, known_users=True)
    assert not [c for c in again if c[0] in ("useradd", "groupadd")]


def test_systemd_scriptlets(package: Package, tmp_path: Path) -> None:
    unit = "networkd.service"
    post = scriptlet(package, "POSTIN")
    install = [c for c in run_scriptlet(post, 1, tmp_path) if c[0] == "systemctl"]
    assert ("systemctl", "preset", unit) in install
    upgrade = [c for c in run_scriptlet(post, 2, tmp_path) if c[0] == "systemctl"]
    assert not any("preset" in c or "enable" in c for c in upgrade), (
        "upgrades keep the admin's choice"
    )

    preun = scriptlet(package, "PREUN")
    erase = run_scriptlet(preun, 0, tmp_path)
    assert ("systemctl", "--no-reload", "disable", unit) in erase
    assert ("systemctl", "stop", unit) in erase
    assert run_scriptlet(preun, 1, tmp_path) == [], "an upgrade does not stop the service in %preun"

    postun = scriptlet(package, "POSTUN")
    upgraded = run_scriptlet(postun, 1, tmp_path)
    assert ("systemctl", "daemon-reload") in upgraded
    assert ("systemctl", "try-restart", unit) in upgraded
    erased = run_scriptlet(postun, 0, tmp_path)
    assert ("systemctl", "daemon-reload") in erased
    assert not any("try-restart" in c for c in erased)


# ---------------------------------------------------------------- installed tree


def test_no_file_names_the_buildroot(package: Package) -> None:
    needles = [b"/BUILDROOT/", package.topdir.encode()]
    offenders = []
    for dirpath, _dirs, names in os.walk(package.root):
        for name in names:
            path = os.path.join(dirpath, name)
            if os.path.islink(path):
                target = os.readlink(path)
                if any(n.decode() in target for n in needles):
                    offenders.append(f"{path} -> {target}")
                continue
            with open(path, "rb") as f:
                data = f.read()
            if any(n in data for n in needles):
                offenders.append(path)
    assert not offenders, offenders[:10]


def test_virtualenv_points_at_opt(package: Package) -> None:
    cfg = package.path(f"{VENV}/pyvenv.cfg").read_text()
    assert "BUILDROOT" not in cfg
    home = re.search(r"^home\s*=\s*(.+)$", cfg, re.M)
    assert home and os.path.isabs(home.group(1).strip())
    for script in ("networkd", "networkdctl"):
        first = package.path(f"{VENV}/bin/{script}").read_text().splitlines()[0]
        assert first == f"#!{VENV}/bin/python", first
        wrapper = package.path(f"/usr/bin/{script}").read_text()
        assert f'exec {VENV}/bin/{script} "$@"' in wrapper, wrapper
    for f in package.path(VENV).rglob("*"):
        if f.is_symlink():
            target = os.readlink(str(f))
            assert not target.startswith(package.root), f"{f} -> {target}"


def test_packaged_version_runs(package: Package) -> None:
    result = subprocess.run(
        package.in_namespace(
            f"exec {shlex.quote(str(package.path('/usr/bin/networkd')))} -version"
        ),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"networkd Version: {__version__}"
    # Straight from the virtualenv too, and every dependency imports there.
    imports = (
        "import etcd3, grpc, zmq, msgpack, pyroute2, iptc, setproctitle, google.protobuf, dnslib"
    )
    result = subprocess.run(
        package.in_namespace(f"{VENV}/bin/networkd -version && {VENV}/bin/python -c '{imports}'"),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"networkd Version: {__version__}"


def recv_notify(sock: socket.socket, want: str, timeout: float = 20.0) -> Dict[str, str]:
    """Read sd_notify datagrams until one carries ``want`` (e.g. READY=1)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sock.settimeout(max(0.05, deadline - time.monotonic()))
        try:
            data = sock.recv(4096).decode()
        except socket.timeout:
            break
        fields = dict(line.split("=", 1) for line in data.splitlines() if "=" in line)
        key, value = want.split("=", 1)
        if fields.get(key) == value:
            return fields
    raise AssertionError(f"no {want} from the daemon within {timeout}s")


def http_get(url: str) -> Optional[bytes]:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            body: bytes = response.read()
            return body
    except OSError:
        return None


def test_packaged_daemon_under_notify_reload_and_stop(package: Package, tmp_path: Path) -> None:
    """What systemd does with the unit, done by hand: Type=notify, ExecReload, SIGTERM."""
    run_dir = tempfile.mkdtemp(prefix="networkd-rpmrun-")
    os.chmod(run_dir, 0o755)
    api_port, api_port2, dns_port = free_ports(3)
    conf = tmp_path / "networkd.conf"

    def write_conf(port: int) -> None:
        conf.write_text(
            f"-run.dir {run_dir}\n-lock.filename {tmp_path}/networkd.pid\n"
            f"-api.addr 127.0.0.1:{port}\n-godns.addr 127.0.0.1:{dns_port}\n"
            "-workers api\n-etcd.endpoint http://127.0.0.1:9\n-stop.timeout 5\n"
        )

    write_conf(api_port)
    opt_before = tree_files(package.path("/opt"))
    notify_path = str(tmp_path / "notify.sock")
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(notify_path)
    wrapper = shlex.quote(str(package.path("/usr/bin/networkd")))
    env = dict(os.environ, NOTIFY_SOCKET=notify_path)
    proc = subprocess.Popen(
        package.in_namespace(f"exec {wrapper} -config {shlex.quote(str(conf))}"),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        ready = recv_notify(notify, "READY=1")
        # The wrapper execs: the pid systemd started is the supervisor (NotifyAccess=main).
        assert int(ready["MAINPID"]) == proc.pid
        # The api worker runs as user networkd from the packaged tree.
        wait_for(
            lambda: b'"api"' in (http_get(f"http://127.0.0.1:{api_port}/v1/status") or b""),
            20,
            what="the api worker's /v1/status",
        )
        ctl = subprocess.run(
            package.in_namespace(
                f"{shlex.quote(str(package.path('/usr/bin/networkdctl')))} -run.dir {run_dir} status --json"
            ),
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert ctl.returncode == 0, ctl.stderr
        assert '"api"' in ctl.stdout
        # ExecReload: HUP re-reads the -config file; the api moves to its new address.
        write_conf(api_port2)
        os.kill(proc.pid, signal.SIGHUP)
        wait_for(lambda: http_get(f"http://127.0.0.1:{api_port2}/v1/status"), 20, what="reload")
        # KillMode=mixed: SIGTERM to the main pid alone; it stops its workers and exits 0.
        os.kill(proc.pid, signal.SIGTERM)
        recv_notify(notify, "STOPPING=1")
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        output = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
        if proc.stdout:
            proc.stdout.close()
        notify.close()
        shutil.rmtree(run_dir, ignore_errors=True)
    assert "Traceback" not in output, output
    # Bytecode came compiled: running the daemon (root and unprivileged) wrote nothing there.
    assert tree_files(package.path("/opt")) == opt_before


def tree_files(top: Path) -> Set[str]:
    return {os.path.join(d, n) for d, _dirs, names in os.walk(str(top)) for n in names}


# ---------------------------------------------------------------- configuration files


def sysconfig_opts(path: Path) -> List[str]:
    """NETWORKD_OPTS as systemd's EnvironmentFile + unbraced $NETWORKD_OPTS yield it."""
    out = subprocess.run(
        ["bash", "-c", 'set -a; . "$1"; printf %s "$NETWORKD_OPTS"', "sh", str(path)],
        capture_output=True,
        text=True,
        check=True,
        env={"PATH": "/usr/bin:/bin"},
    ).stdout
    return out.split()


def test_sysconfig_and_flag_file_parse(package: Package) -> None:
    sysconfig = package.path("/etc/sysconfig/networkd")
    conf = package.path("/etc/networkd/networkd.conf")
    opts = sysconfig_opts(sysconfig)
    assert opts == ["-config", "/etc/networkd/networkd.conf"]
    # The shipped files as installed: every flag commented out, so the defaults.
    config, want_version = parse_args(["-config", str(conf)])
    assert config is not None and not want_version
    assert config.run_dir == "/run/networkd"
    assert config.lock_filename == "/var/run/lain-networkd.pid"
    # Every example line, uncommented, is a valid setting of a real flag.
    text = conf.read_text()
    examples = re.findall(r"^#(-[a-z][\w.-]*(?:[ =].*)?)$", text, re.M)
    names = {e.split()[0].split("=")[0][1:] for e in examples}
    assert names == set(FLAGS) - {"config"}, set(FLAGS) ^ names
    uncommented = tmp_file(text.replace("\n#-", "\n-"))
    try:
        config, _ = parse_args(["-config", uncommented])
    finally:
        os.unlink(uncommented)
    assert config is not None and config.acl and config.tinydns and config.verbose


def tmp_file(text: str) -> str:
    fd, path = tempfile.mkstemp(prefix="networkd-conf-")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    return path


# ---------------------------------------------------------------- the unit


def read_unit(path: Path) -> Dict[str, Dict[str, List[str]]]:
    sections: Dict[str, Dict[str, List[str]]] = {}
    current: Optional[Dict[str, List[str]]] = None
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
            continue
        assert current is not None, f"directive outside a section: {line}"
        key, _, value = line.partition("=")
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def test_unit_directives_exist_in_systemd_219(package: Package) -> None:
    unit = read_unit(package.path(UNIT_PATH))
    assert set(unit) == {"Unit", "Service", "Install"}
    for section, keys in unit.items():
        unknown = set(keys) - SYSTEMD_219[section]
        assert not unknown, f"[{section}] not in systemd 219: {unknown}"
    service = {k: v[-1] for k, v in unit["Service"].items()}
    assert service["Type"] == "notify"
    assert service["NotifyAccess"] == "main"
    assert service["ExecStart"] == "/usr/bin/networkd $NETWORKD_OPTS"
    assert service["EnvironmentFile"] == "-/etc/sysconfig/networkd"
    assert service["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert service["Restart"] == "always"
    assert float(service["RestartSec"]) <= 2
    assert service["KillMode"] == "mixed"
    assert int(service["TimeoutStopSec"]) >= 10
    assert int(service["LimitNOFILE"]) >= 65536
    assert "2" in service["RestartPreventExitStatus"].split()
    assert unit["Install"]["WantedBy"] == ["multi-user.target"]
    # The packaged unit is the one in the repository.
    assert package.path(UNIT_PATH).read_text() == (PACKAGING / "networkd.service").read_text()


def test_unit_passes_systemd_analyze_verify(package: Package, tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    # The allow-list test above covers the directives anyway; this host must verify too.
    assert analyze is not None, "systemd-analyze is missing (apt-get install systemd)"
    # verify checks that ExecStart exists: point it at the installed tree's wrapper.
    text = package.path(UNIT_PATH).read_text()
    text = text.replace(
        "ExecStart=/usr/bin/networkd", f"ExecStart={package.path('/usr/bin/networkd')}"
    )
    unit = tmp_path / "networkd.service"
    unit.write_text(text)
    result = subprocess.run(
        [analyze, "verify", "--man=no", str(unit)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    lines = [
        line
        for line in (result.stdout + result.stderr).splitlines()
        if line.strip() and "networkd" in line
    ]
    assert not lines, lines


# ---------------------------------------------------------------- the man page


def man_page_options(text: str) -> Set[str]:
    """Flags with an entry (a .TP paragraph whose tag names the flag)."""
    found = set()
    lines = text.splitlines()
    for i, line in enumerate(lines[:-1]):
        if line.startswith(".TP"):
            m = re.match(r"^\.BI? \\-([a-z](?:[\w.]|\\-)*)", lines[i + 1])
            if m:
                found.add(m.group(1).replace("\\-", "-"))
    return found


def test_man_page_documents_every_flag(package: Package) -> None:
    text = (REPO / "docs" / "networkd.8").read_text()
    documented = man_page_options(text)
    assert documented == set(FLAGS) | {"version"}, set(FLAGS) ^ (documented - {"version"})
    for section in ("SYNOPSIS", "OPTIONS", "SIGNALS", "FILES", "EXIT STATUS", "NETWORKDCTL"):
        assert f".SH {section}" in text, section
    for fact in (
        "/etc/sysconfig/networkd",
        "/run/networkd",
        "/var/run/lain\\-networkd.pid",
        "/etc/resolv.conf",
        "SIGHUP",
        "SIGUSR1",
        "SIGTERM",
        ".B 78",
        f"networkd {__version__}",
    ):
        assert fact in text, fact
    # It renders without warnings, and the package carries this very page.
    groff = shutil.which("groff")
    if groff:
        check = subprocess.run(
            [groff, "-man", "-ww", "-z", str(REPO / "docs" / "networkd.8")],
            capture_output=True,
            text=True,
        )
        assert check.returncode == 0 and not check.stderr.strip(), check.stderr
    packaged = subprocess.run(
        ["gzip", "-dc", str(package.path("/usr/share/man/man8/networkd.8.gz"))],
        capture_output=True,
        check=True,
    ).stdout.decode()
    assert packaged == text
