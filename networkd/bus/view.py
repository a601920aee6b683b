"""A subscriber to every publisher in a run dir, discovering new ones as they appear.

Used by the api worker, ``networkdctl status`` and ``networkdctl tap``.

The mirrors change under ``poll()``; another thread must not read them (a dict changing
size while a renderer iterates it raises, or renders half of one update). ``frozen()``
hands such a thread a read-only copy instead.
"""

import os
import time
from types import MappingProxyType
from typing import Any, Dict, List, Mapping, Optional, Tuple

from networkd.bus.codec import Envelope
from networkd.bus.publisher import endpoint_path
from networkd.bus.subscriber import Subscriber
from networkd.status import publisher_names
from networkd.wakeup import sleep_ms

RESCAN_INTERVAL = 1.0


class FrozenView:
    """A read-only copy of a view's mirrors, with the same ``mirror``/``sources`` interface.

    Items are replaced whole by the subscriber, never changed in place, so copying each
    mirror's dict (not the items) is enough."""

    def __init__(
        self, mirrors: Mapping[Tuple[str, str], Mapping[str, Any]], sources: List[str]
    ) -> None:
        self._mirrors = {key: MappingProxyType(dict(items)) for key, items in mirrors.items()}
        self.sources = tuple(sources)

    def mirror(self, sender: str, topic: str) -> Optional[Mapping[str, Any]]:
        return self._mirrors.get((sender, topic))


class BusView:
    def __init__(self, context: Any, run_dir: str, prefixes: List[str], exclude: str = "") -> None:
        self.run_dir = run_dir
        self.prefixes = prefixes
        self.exclude = exclude
        self.subscriber = Subscriber(context, run_dir, {})
        self._next_scan = 0.0
        self.rescan()

    def rescan(self) -> None:
        for name in publisher_names(self.run_dir):
            if name != self.exclude and name not in self.subscriber.sources:
                self.subscriber.add_source(name, self.prefixes)
        self._next_scan = time.monotonic() + RESCAN_INTERVAL

    def poll(self, timeout_ms: int = 100, extra: Optional[List[Any]] = None) -> List[Envelope]:
        """Messages of up to ``timeout_ms`` (shorter when a rescan is due; ``extra`` fds
        wake it too)."""
        if time.monotonic() >= self._next_scan:
            self.rescan()
        due = sleep_ms(time.monotonic(), [self._next_scan], 1, timeout_ms)
        return self.subscriber.poll(min(timeout_ms, due), extra)  # 0 stays 0: no wait

    def mirror(self, sender: str, topic: str) -> Optional[Dict[str, Any]]:
        return self.subscriber.state(sender, topic)

    @property
    def sources(self) -> List[str]:
        return self.subscriber.sources

    def frozen(self) -> FrozenView:
        """A read-only copy of the mirrors as they are now, for other threads."""
        return FrozenView(self.subscriber.synced_mirrors(), self.subscriber.sources)

    def live_sources(self) -> List[str]:
        return [n for n in self.sources if os.path.exists(endpoint_path(self.run_dir, n))]

    def close(self) -> None:
        self.subscriber.close()
