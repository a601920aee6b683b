"""Stand-ins for other workers on a daemon's bus: publish their state, watch the answers.

A test that drives one worker alone (``-workers applier``) publishes what the elector and
watcher would (``standin.state("elector", "state.desired").replace(...)``) and reads the
worker's own state and events. One thread owns the ZeroMQ sockets; calls are serialized.
"""

import threading
import time
from typing import Any, Callable, Dict, List, Optional, Sequence

import zmq

from networkd.bus.codec import Envelope
from networkd.bus.publisher import Publisher
from networkd.bus.subscriber import Subscriber


class BusStandIn:
    def __init__(self, run_dir: str, senders: Sequence[str], listen: Dict[str, List[str]]) -> None:
        self.run_dir = run_dir
        self._lock = threading.RLock()
        self._context = zmq.Context()
        self.publishers: Dict[str, Publisher] = {
            name: Publisher(self._context, run_dir, name, snapshot_interval=2.0) for name in senders
        }
        self.subscriber = Subscriber(self._context, run_dir, listen)
        self.envelopes: List[Envelope] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                for pub in self.publishers.values():
                    pub.poll()
                envs = self.subscriber.poll(0)
            self.envelopes.extend(envs)
            time.sleep(0.01)

    def replace(self, sender: str, topic: str, items: Dict[str, Any]) -> None:
        """Publish ``items`` as the whole state of ``topic`` (creates the topic on first use)."""
        with self._lock:
            pub = self.publishers[sender]
            fresh = topic not in pub._topics
            state = pub.state(topic)
            state.replace(items)
            if fresh:
                state.send_snapshot()  # subscribers that joined before the topic existed

    def restart(self, sender: str) -> None:
        """A new epoch for ``sender``: its topics are gone until replaced again."""
        with self._lock:
            self.publishers[sender].close()
            time.sleep(0.05)
            self.publishers[sender] = Publisher(
                self._context, self.run_dir, sender, snapshot_interval=2.0
            )

    def state(self, sender: str, topic: str) -> Optional[Dict[str, Any]]:
        with self._lock:
            items = self.subscriber.state(sender, topic)
            return None if items is None else dict(items)

    def events(self, topic: str) -> List[Any]:
        return [env.body for env in list(self.envelopes) if env.topic == topic]

    def wait(self, predicate: Callable[[], Any], timeout: float = 10.0, what: str = "") -> Any:
        from tests.support.daemon import wait_for

        return wait_for(predicate, timeout, interval=0.02, what=what)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        with self._lock:
            for pub in self.publishers.values():
                pub.close()
            self.subscriber.close()
        self._context.destroy(0)

    def __enter__(self) -> "BusStandIn":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
