"""The watcher's etcd reader tells a slow etcd from a stuck connection
(networkd.etcd.probe_pace): answers that all come later than the old 1 s probe deadline
but keep coming keep the watch; silence cancels it, and the reader watches again once
etcd answers."""

import queue
import time
from typing import Any, List

from networkd.config import Config
from networkd.etcd.client import EtcdConnector
from networkd.etcd.reader import EtcdReader, Events, Health
from tests.support.etcd import EtcdServer, TcpProxy


def drain(out: queue.Queue) -> List[Any]:
    items = []
    while True:
        try:
            items.append(out.get_nowait())
        except queue.Empty:
            return items


def wait_item(out: queue.Queue, kind: type, timeout: float) -> List[Any]:
    """Everything read up to and including the first ``kind`` (raises when none came)."""
    seen: List[Any] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            item = out.get(timeout=0.1)
        except queue.Empty:
            continue
        seen.append(item)
        if isinstance(item, kind):
            return seen
    raise AssertionError(f"no {kind.__name__} within {timeout}s: {seen}")


def test_late_answers_keep_the_watch_silence_replaces_it(etcd: EtcdServer) -> None:
    proxy = TcpProxy(("127.0.0.1", int(etcd.endpoint.rsplit(":", 1)[1])))
    config = Config(etcd_endpoints=(proxy.endpoint,), hostname="n1")
    out: queue.Queue = queue.Queue()
    reader = EtcdReader(EtcdConnector(config, connect_timeout=1.0), out)
    reader.start()
    client = etcd.client()
    try:
        assert wait_item(out, Health, 10.0)[-1].connected
        drain(out)

        # every answer 1.2 s late (past the 1 s a probe used to get), for 5 s: probes go
        # out every 0.5 s, so one answers every 0.5 s. The watch stays, and delivers.
        proxy.delay = 1.2
        time.sleep(5.0)
        client.put("/lain/config/vips/10.9.0.1", '{"app": "a", "proc": "worker"}')
        seen = wait_item(out, Events, 5.0)
        proxy.delay = 0.0
        assert not [m for m in seen + drain(out) if isinstance(m, Health)]

        # silence (etcd stopped): the watch is cancelled and made anew once etcd answers
        etcd.pause()
        try:
            lost = wait_item(out, Health, 5.0)[-1]
        finally:
            etcd.resume()
        assert not lost.connected and "no probe answered" in lost.error
        assert wait_item(out, Health, 10.0)[-1].connected
        client.put("/lain/config/vips/10.9.0.2", '{"app": "b", "proc": "worker"}')
        assert wait_item(out, Events, 5.0)
    finally:
        etcd.resume()
        reader.stop()
        client.close()
        proxy.close()
