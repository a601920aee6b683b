"""A real dockerd inside a lab node, and a busybox image made by ``docker import``.

dockerd runs in the node's network namespace (entered with nsenter, so the cgroup mounts
stay visible) with its own data root, exec root, pid file and API socket under the lab
directory. With ``plugins_dir`` it also gets its own mount namespace in which that
directory is mounted over ``/run/docker/plugins``: Docker looks for network plugins only
there, and two lab nodes on one machine must each find their own networkd's socket.

The image comes from the busybox-static binary (no registry): ``/bin/busybox`` plus
links for the applets the tests use.
"""

import json
import os
import shutil
import signal
import subprocess
import tarfile
import time
from typing import Any, Dict, List, Optional, Sequence

from tests.support.daemon import wait_for

BUSYBOX = "/bin/busybox"
PLUGINS_DIR = "/run/docker/plugins"
APPLETS = ("sh", "sleep", "ping", "ip", "nc", "cat", "echo", "httpd", "true", "wget")


class Dockerd:
    """A private dockerd in a lab node's network namespace."""

    def __init__(
        self,
        node: Any,
        name: str = "docker",
        plugins_dir: str = "",
        extra_args: Sequence[str] = (),
        groups: Sequence[str] = (),
    ) -> None:
        if shutil.which("dockerd") is None or not os.path.exists(BUSYBOX):
            raise RuntimeError("dockerd or busybox-static missing: run scripts/setup.sh")
        self.node = node
        self.dir = os.path.join(node.lab.dir, f"{name}-{node.name}")
        os.makedirs(self.dir, exist_ok=True)
        self.socket = os.path.join(self.dir, "docker.sock")
        self.plugins_dir = plugins_dir
        self.extra_args = list(extra_args)
        self.groups = list(groups)
        self.log_path = os.path.join(self.dir, "dockerd.log")
        self.proc: Optional[subprocess.Popen[bytes]] = None
        self.start()

    def command(self) -> List[str]:
        dockerd = [
            "dockerd",
            "--data-root", os.path.join(self.dir, "data"),
            "--exec-root", os.path.join(self.dir, "exec"),
            "--pidfile", os.path.join(self.dir, "docker.pid"),
            "-H", f"unix://{self.socket}",
            "--storage-driver", "vfs",
            "--userland-proxy=false",
            *[f"--group={g}" for g in self.groups],
            *self.extra_args,
        ]  # fmt: skip
        cmd = ["nsenter", f"--net=/run/netns/{self.node.ns}"]
        if not self.plugins_dir:
            return cmd + dockerd
        os.makedirs(PLUGINS_DIR, exist_ok=True)
        os.makedirs(self.plugins_dir, exist_ok=True)
        script = 'mount --bind "$1" "$2" && shift 2 && exec "$@"'
        return cmd + [
            "unshare", "--mount", "--propagation", "private",
            "sh", "-c", script, "sh", self.plugins_dir, PLUGINS_DIR, *dockerd,
        ]  # fmt: skip

    def start(self, timeout: float = 60.0) -> None:
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.command(), stdout=log, stderr=log, start_new_session=True)
        log.close()
        wait_for(
            lambda: self.docker("info", check=False).returncode == 0, timeout, what="dockerd up"
        )

    def docker(
        self, *args: str, check: bool = True, stdin: bytes = b"", timeout: float = 60.0
    ) -> "subprocess.CompletedProcess[bytes]":
        result = subprocess.run(
            ["docker", "-H", f"unix://{self.socket}", *args],
            input=stdin,
            capture_output=True,
            timeout=timeout,
        )
        if check and result.returncode != 0:
            raise RuntimeError(
                f"docker {' '.join(args)} failed ({result.returncode}): "
                f"{result.stderr.decode(errors='replace').strip()}"
            )
        return result

    def out(self, *args: str, check: bool = True) -> str:
        return self.docker(*args, check=check).stdout.decode().strip()

    def import_busybox(self, tag: str, files: Optional[Dict[str, str]] = None) -> None:
        """``docker import`` a busybox image; ``files`` maps image paths to their text."""
        rootfs = os.path.join(self.dir, "rootfs.tar")
        with tarfile.open(rootfs, "w") as tar:
            tar.add(BUSYBOX, arcname="bin/busybox")
            for applet in APPLETS:
                link = tarfile.TarInfo(f"bin/{applet}")
                link.type = tarfile.SYMTYPE
                link.linkname = "busybox"
                tar.addfile(link)
            for path, text in (files or {}).items():
                local = os.path.join(self.dir, os.path.basename(path))
                with open(local, "w") as f:
                    f.write(text)
                os.chmod(local, 0o755 if text.startswith("#!") else 0o644)
                tar.add(local, arcname=path.lstrip("/"))
        with open(rootfs, "rb") as f:
            self.docker("import", "-", tag, stdin=f.read())

    def inspect(self, name: str) -> Dict[str, Any]:
        data = json.loads(self.out("inspect", name))
        return data[0]  # type: ignore[no-any-return]

    def kill(self) -> None:
        """SIGKILL dockerd and its containerd (the containers keep running until dockerd
        starts again and cleans them up)."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        # dockerd trusts containerd's pid file; on a busy machine the dead containerd's pid
        # may already belong to another process, and dockerd would wait on it forever.
        for pidfile in ("exec/containerd/containerd.pid", "docker.pid"):
            try:
                os.unlink(os.path.join(self.dir, pidfile))
            except FileNotFoundError:
                pass

    def leftover_pids(self) -> List[int]:
        try:
            ids = os.listdir(os.path.join(self.dir, "data", "containers"))
        except OSError:
            return []
        marks = [f"/docker/{cid}" for cid in ids] + [f"-id {cid}" for cid in ids]
        pids = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/cgroup") as f:
                    cgroup = f.read()
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    cmdline = f.read().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if any(m in cgroup or m in cmdline for m in marks):
                pids.append(int(entry))
        return pids

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            ids = self.out("ps", "-aq", check=False).split()
            if ids:
                self.docker("rm", "-f", *ids, check=False, timeout=120)
        self.stop()
        # After a failure, containers (and their shims) may outlive dockerd: end the
        # processes of this daemon's containers, found by their cgroups.
        for pid in self.leftover_pids():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.2)
        for sub in ("exec", "data"):
            subprocess.run(
                ["umount", "-R", os.path.join(self.dir, sub)], capture_output=True, check=False
            )
