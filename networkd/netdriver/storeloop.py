"""The netstore worker's loop: etcd mirror, request channel, lease, reconciliation, bus.

One thread does the work: it answers the plugin's requests (``service``), rebuilds the
cluster view when the etcd mirror changes (a watch, never a poll), keeps this host's
lease-bound route keys, applies reconciliation plans and publishes the state topics.
Helper threads only wait: the mirror's watch, the lease keeper, and the Docker query of
the reconciliation (Docker may be slow, or waiting on this very plugin).
"""

import logging
import os
import pwd
import queue
import threading
import time
from dataclasses import replace
from typing import Any, Dict, Optional, Tuple

import zmq

from networkd import keys
from networkd.bus.messages import (
    ConfigError,
    NetAddress,
    NetBlock,
    NetHost,
    NetNetwork,
)
from networkd.election.etcdconn import connect
from networkd.election.lease import LeaseKeeper
from networkd.election.mirror import KeyMirror
from networkd.etcd.channel import ClientHolder
from networkd.etcd.client import describe_error
from networkd.netdriver import docker_api
from networkd.netdriver import messages as m
from networkd.netdriver.channel import ChannelClient, ChannelError, ChannelServer, Peer
from networkd.netdriver.cluster import ClusterView
from networkd.netdriver.reconcile import DockerNetwork, plan_reclaim
from networkd.netdriver.service import NetService
from networkd.workers.base import STOP_EVENT, WorkerContext

log = logging.getLogger("networkd.netstore")

REQUESTS_SOCKET = "requests.sock"
LINKS_SOCKET = ("bus", "netlinks", "links.sock")
LINKS_TIMEOUT = 10.0
POLL_MS = 100


def reconcile_interval(grace: float) -> float:
    return max(1.0, min(30.0, grace / 2.0))


class DockerQuery(threading.Thread):
    """Asks Docker's API for its networks every ``interval`` seconds; results on a queue.

    ``soon()`` asks for a query a second from now: a network Docker just created gets its
    name in the view without waiting a whole interval."""

    SOON_S = 1.0

    def __init__(self, endpoint: str, interval: float, out: "queue.Queue[Any]") -> None:
        super().__init__(name="docker-query", daemon=True)
        self.path = docker_api.socket_path(endpoint)
        self.interval = interval
        self.out = out
        self.stop = threading.Event()
        self._next = time.monotonic() + interval

    def soon(self) -> None:
        self._next = min(self._next, time.monotonic() + self.SOON_S)

    def run(self) -> None:
        while not self.stop.wait(0.1):
            if time.monotonic() < self._next:
                continue
            self._next = time.monotonic() + self.interval
            started = time.time()
            try:
                result: Any = docker_api.networks(self.path)
            except docker_api.DockerUnavailable as exc:
                result = exc
            self.out.put((started, result))


class StoreLoop:
    def __init__(self, ctx: WorkerContext) -> None:
        self.ctx = ctx
        config = ctx.config
        self.hostname = ctx.hostname
        self.grace = config.netplugin_grace
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        # Separate channels for the watch and the transactions, each replaced on its own
        # when its connection stops answering (networkd.etcd.channel).
        self.txn_channel = ClientHolder(lambda: connect(config, 5.0), "netstore")
        self.watch_channel = ClientHolder(lambda: connect(config, 0.4), "netstore-mirror")
        self.mirror = KeyMirror(self.watch_channel, keys.NETWORKS_PREFIX, on_change=self.wake)
        self.keeper = LeaseKeeper(
            lambda: connect(config, max(0.2, min(1.0, config.netplugin_ttl / 5.0))),
            config.netplugin_ttl,
            os.path.join(ctx.state_dir, "lease"),
            hostname=self.hostname,
            on_change=self.wake,
        )
        from networkd.netdriver.store import NetStore

        self.view = ClusterView()
        self.store = NetStore(self.txn_channel, self.mirror)
        self.links = ChannelClient(os.path.join(ctx.run_dir, *LINKS_SOCKET), LINKS_TIMEOUT)
        self.service = NetService(
            self.store, self.view, self.hostname, ctx.node_address, self.call_links
        )
        self.plugin_uid = _uid(config.netplugin_user)
        self.server_path = os.path.join(ctx.run_dir, "bus", ctx.name, REQUESTS_SOCKET)
        self.server: Optional[ChannelServer] = None
        self.pub = ctx.publisher()
        self.counters_topic = self.pub.state("state.netstore")
        self.topics: Dict[str, Any] = {}
        self.docker_results: queue.Queue[Tuple[float, Any]] = queue.Queue()
        self.docker = DockerQuery(
            config.docker_endpoint, reconcile_interval(self.grace), self.docker_results
        )
        self.docker_error = ""
        self.lease_seen: Tuple[int, int] = (0, 0)
        self.errors_seen: Dict[str, str] = {}
        self.next_counters = 0.0
        self.routes_version = -1
        self.published_version = -1

    # -- wiring ----------------------------------------------------------------------------

    def wake(self) -> None:
        try:
            os.write(self._wake_w, b"x")
        except BlockingIOError:
            pass

    def allow(self, peer: Peer) -> Optional[str]:
        """Only the plugin worker's own user (or root) may send requests."""
        if peer.uid in (0, self.plugin_uid) or (os.geteuid() != 0 and peer.uid == os.geteuid()):
            return None
        return f"uid {peer.uid} is not the plugin worker's user"

    def call_links(self, request: Any) -> m.Reply:
        try:
            return self.links.call(request)
        except ChannelError as exc:
            return m.Reply(error=f"networkd netlinks unavailable: {exc}")

    def listen(self) -> ChannelServer:
        """Requests are taken only once the networks were read from etcd: until then the
        plugin's requests wait (its client retries the connection), none is refused."""
        if self.server is None:
            self.server = ChannelServer(self.server_path, self.allow, self.handle)
            log.info("netstore serving requests path=%s", self.server_path)
        return self.server

    def handle(self, request: Any, peer: Peer) -> m.Reply:
        if isinstance(request, m.CreateNetwork):
            self.docker.soon()
        started = time.perf_counter()
        try:
            reply = self.service.handle(request)
        except Exception as exc:
            if isinstance(exc, (KeyError, AttributeError, TypeError, AssertionError)):
                raise
            log.warning(
                "request failed request=%s reason=%s", type(request).__name__, describe_error(exc)
            )
            return m.Reply(error=f"etcd: {describe_error(exc)}")
        log.debug("request done request=%s ms=%.1f", type(request).__name__,
                  (time.perf_counter() - started) * 1000)  # fmt: skip
        return reply

    # -- the loop --------------------------------------------------------------------------

    def run(self) -> int:
        self.mirror.start()
        self.keeper.start()
        self.docker.start()
        log.info("netstore started host=%s address=%s grace_s=%.0f", self.hostname,
                 self.ctx.node_address or "-", self.grace)  # fmt: skip
        poller_key: Optional[Tuple[int, ...]] = None
        poller = zmq.Poller()
        try:
            while not self.ctx.stopping:
                server = self.listen() if self.mirror.synced else None
                fds = tuple(server.fds()) if server is not None else ()
                if fds != poller_key:
                    poller_key = fds
                    poller = zmq.Poller()
                    poller.register(self.pub.socket, zmq.POLLIN)
                    poller.register(self._wake_r, zmq.POLLIN)
                    for fd in fds:
                        poller.register(fd, zmq.POLLIN)
                ready = dict(poller.poll(POLL_MS))
                dirty = self._wake_r in ready
                if dirty:
                    self._drain_wake()
                if server is not None:
                    dirty = server.serve(ready) > 0 or dirty or self.published_version < 0
                    dirty = self.reconcile() or dirty
                    if dirty:
                        self.after_change()
                    elif time.monotonic() >= self.next_counters:
                        self.publish_counters()
                self.pub.poll()
        finally:
            self.close()
        return 0

    def _drain_wake(self) -> None:
        try:
            while os.read(self._wake_r, 4096):
                pass
        except BlockingIOError:
            pass

    def after_change(self) -> None:
        """Rebuild the view if the mirror moved; keep route keys; publish."""
        self.view.update(self.mirror.snapshot())
        lease = (self.keeper.lease_id, self.keeper.generation)
        if self.keeper.alive() and (
            self.view.version != self.routes_version or lease != self.lease_seen
        ):
            try:
                self.service.sync_routes(self.keeper.lease_id)
                self.lease_seen = lease
                self.view.update(self.mirror.snapshot())
                self.routes_version = self.view.version
            except Exception as exc:
                log.warning("route keys not written reason=%s", describe_error(exc))
        if self.view.version != self.published_version:
            self.publish()
            self.published_version = self.view.version
        self.publish_counters()

    def reconcile(self) -> bool:
        """Apply the newest Docker view, if one arrived; True when one did."""
        try:
            started, result = self.docker_results.get_nowait()
        except queue.Empty:
            return False
        if isinstance(result, Exception):
            if str(result) != self.docker_error:
                self.docker_error = str(result)
                log.warning("reconcile skipped reason=%s", result)
            return True
        if self.docker_error:
            log.info("reconcile resumed: docker answers again")
        self.docker_error = ""
        docker: Dict[str, DockerNetwork] = result
        self.service.refresh()
        try:
            for net, state in list(self.view.networks.items()):
                if state.record is None:
                    continue
                plan = plan_reclaim(
                    net, state.record.subnet, state, self.hostname, docker, started, self.grace
                )
                if not plan.empty:
                    self.service.apply_reclaim(plan)
            self.service.release_empty_blocks()
        except Exception as exc:
            log.warning("reconcile failed reason=%s", describe_error(exc))
        return True

    # -- publishing -----------------------------------------------------------------------

    def topic(self, name: str) -> Any:
        if name not in self.topics:
            self.topics[name] = self.pub.state(name)
        return self.topics[name]

    def publish(self) -> None:
        networks: Dict[str, NetNetwork] = {}
        blocks: Dict[str, NetBlock] = {}
        addresses: Dict[str, NetAddress] = {}
        for net, state in self.view.networks.items():
            record = state.record
            if record is not None:
                networks[net] = NetNetwork(
                    net=net,
                    subnet=record.subnet,
                    mode=record.mode,
                    ipvlan_mode=record.ipvlan_mode,
                    gateway=record.gateway,
                    block=record.block,
                    hosts={
                        host: NetHost(
                            refs=h.refs,
                            docker={k: v.name for k, v in h.docker.items()},
                            parents={k: v.parent for k, v in h.docker.items() if v.parent},
                        )
                        for host, h in state.hosts.items()
                    },
                )
            for block in state.blocks.values():
                route = state.routes.get(block.host)
                blocks[f"{net}/{block.block}"] = NetBlock(
                    net, block.block, block.host, route.address if route else ""
                )
            for a in state.addresses.values():
                addresses[f"{net}/{a.ip}"] = NetAddress(net, a.ip, a.host, a.kind, a.endpoint)
        self.topic("state.net_networks").replace(networks)
        self.topic("state.net_blocks").replace(blocks)
        self.topic("state.net_addresses").replace(addresses)
        errors = dict(self.view.errors)
        for key, reason in errors.items():
            if self.errors_seen.get(key) != reason:
                log.warning("network key rejected key=%s reason=%s", key, reason)
                self.pub.event("config.error", ConfigError(key, reason))
        self.errors_seen = errors
        self.topic("state.config_errors").replace({k: ConfigError(k, v) for k, v in errors.items()})

    def publish_counters(self) -> None:
        self.next_counters = time.monotonic() + 1.0
        c = self.service.counters
        self.counters_topic.set(
            "counters",
            replace(c, lease_alive=self.keeper.alive(), docker_error=self.docker_error),
        )

    def close(self) -> None:
        STOP_EVENT.set()
        self.docker.stop.set()
        if self.server is not None:
            self.server.close()
        self.links.close()
        self.keeper.stop()  # the lease stays: a quick restart resumes it, no route moves
        self.mirror.stop()
        self.txn_channel.close()
        self.watch_channel.close()
        os.close(self._wake_r)
        os.close(self._wake_w)


def _uid(user: str) -> int:
    try:
        return pwd.getpwnam(user).pw_uid
    except KeyError:
        return -1
