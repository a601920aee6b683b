"""Request channels between the container-network workers: real unix sockets, real peer
credentials (SO_PEERCRED), a peer of another user refused."""

import os
import pwd
import shutil
import socket
import tempfile
import threading
import time
from typing import Any, Iterator, List, Optional

import pytest

from networkd.netdriver import messages as m
from networkd.netdriver.channel import ChannelClient, ChannelError, ChannelServer, Peer


class Served:
    def __init__(self, path: str, allowed_uid: int) -> None:
        self.peers: List[Peer] = []
        self.allowed_uid = allowed_uid
        self.server = ChannelServer(path, self.allow, self.handle)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def allow(self, peer: Peer) -> Optional[str]:
        return None if peer.uid == self.allowed_uid else f"uid {peer.uid} refused"

    def handle(self, request: Any, peer: Peer) -> m.Reply:
        self.peers.append(peer)
        if isinstance(request, m.Join):
            return m.Reply(ifname="nc" + request.endpoint_id[:12])
        return m.Reply(error="unexpected")

    def run(self) -> None:
        while not self.stop.is_set():
            self.server.serve(set(self.server.fds()))
            time.sleep(0.002)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(2)
        self.server.close()


@pytest.fixture
def path() -> Iterator[str]:
    # Reachable by another user (pytest's tmp_path is not): the refusal must come from
    # the peer check, not from the file system.
    directory = tempfile.mkdtemp(prefix="networkd-channel-")
    os.chmod(directory, 0o755)
    try:
        yield os.path.join(directory, "requests.sock")
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def test_a_request_is_answered_and_the_peer_is_known(path: str) -> None:
    served = Served(path, os.geteuid())
    try:
        client = ChannelClient(path, timeout=5)
        reply = client.call(m.Join("a" * 64, "b" * 64))
        assert reply.ifname == "nc" + "b" * 12
        assert served.peers[-1].pid == os.getpid() and served.peers[-1].uid == os.geteuid()
        client.close()
    finally:
        served.close()


def test_a_peer_of_another_user_is_refused(path: str) -> None:
    served = Served(path, os.geteuid())
    try:
        other = pwd.getpwnam("networkd-dns")
        child = os.fork()
        if child == 0:  # the child becomes another user and tries the channel
            code = 1
            try:
                os.setgid(other.pw_gid)
                os.setuid(other.pw_uid)
                ChannelClient(path, timeout=1).call(m.Join("a" * 64, "b" * 64))
            except ChannelError:
                code = 0
            finally:
                os._exit(code)
        _, status = os.waitpid(child, 0)
        assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0  # the call failed
        assert served.server.refused >= 1 and not served.peers
    finally:
        served.close()


def test_garbage_is_dropped_and_a_restarted_server_is_found_again(path: str) -> None:
    served = Served(path, os.geteuid())
    client = ChannelClient(path, timeout=5)
    try:
        raw = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        raw.connect(path)
        raw.send(b"\xc1\x00 not msgpack")
        raw.settimeout(2)
        assert raw.recv(100) == b""  # the server hung up on it, and lives on
        raw.close()
        assert client.call(m.Join("a" * 64, "c" * 64)).ifname == "nc" + "c" * 12
        served.close()
        served = Served(path, os.geteuid())  # a restarted worker: a new socket file
        assert client.call(m.Join("a" * 64, "d" * 64)).ifname == "nc" + "d" * 12
    finally:
        client.close()
        served.close()
    with pytest.raises(ChannelError, match="no answer"):
        ChannelClient(path, timeout=0.3).call(m.Join("a" * 64, "b" * 64))
