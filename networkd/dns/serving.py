"""The DNS workers' main loop (a replica, the forwarder): bus mirrors in, stats out, the
server's epoll loop in a thread.

The main thread mirrors the topics the worker names and calls ``apply`` with the mirrors
whenever one of them changed; it starts ``server.serve_forever`` in a thread once the
mirrors of the running publishers are synced (or after START_WAIT seconds, so a missing
worker cannot keep DNS down: meanwhile the other replicas answer, and a restarted one
never answers from half data); it publishes ``stats()`` every STATS_SECONDS.
"""

import threading
import time
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from networkd.wakeup import sleep_ms
from networkd.workers.base import EXIT_ERROR, EXIT_OK, WorkerContext

START_WAIT = 3.0
STATS_SECONDS = 1.0
MIRROR_TOPICS: Dict[str, Tuple[str, str]] = {
    "domains": ("watcher", "state.domains"),
    "vips": ("watcher", "state.vips"),
    "domain_servers": ("watcher", "state.domain_servers"),
    "hosts": ("resolvconf", "state.hosts"),
    "upstreams": ("resolvconf", "state.upstreams"),
}
Mirrors = Dict[str, Optional[Mapping[str, Any]]]


def awaited_mirrors(names: Sequence[str], workers: Sequence[str]) -> List[str]:
    """The mirrors to wait for before serving: those whose publisher runs (-workers)."""
    return [n for n in names if not workers or MIRROR_TOPICS[n][0] in workers]


def snapshot(mirrors: Mirrors) -> Any:
    """A copy of the mirrors to compare with later (mirrors are mutated in place)."""
    return {name: None if m is None else dict(m) for name, m in mirrors.items()}


def poll_ms(thread: Optional[threading.Thread], next_stats: float) -> int:
    """Brisk until the server thread runs; then asleep until the stats are due."""
    if thread is None:
        return 50
    return sleep_ms(time.monotonic(), [next_stats], 1, 1000)


def run(
    ctx: WorkerContext,
    server: Any,
    names: Sequence[str],
    apply: Callable[[Mirrors], None],
    stats_topic: str,
    stats: Callable[[], Any],
    on_start: Callable[[], None],
) -> int:
    sources: Dict[str, List[str]] = {}
    for name in names:
        sender, mirrored = MIRROR_TOPICS[name]
        sources.setdefault(sender, []).append(mirrored)
    pub = ctx.publisher()
    published = pub.state(stats_topic)
    sub = ctx.subscriber(sources)
    awaited = awaited_mirrors(names, ctx.config.workers)
    thread: Optional[threading.Thread] = None
    started = time.monotonic()
    next_stats = 0.0
    seen: Any = None
    wake = [pub.socket, ctx.stop_wakeup.rfd]  # new subscribers, a stop
    try:
        while not ctx.stopping:
            envelopes = sub.poll(timeout_ms=poll_ms(thread, next_stats), extra=wake)
            mirrors: Mirrors = {n: sub.state(*MIRROR_TOPICS[n]) for n in names}
            if (envelopes or seen is None) and seen != mirrors:
                seen = snapshot(mirrors)
                apply(mirrors)
            synced = all(mirrors[n] is not None for n in awaited)
            if thread is None and (synced or time.monotonic() - started > START_WAIT):
                on_start()
                thread = threading.Thread(target=server.serve_forever, name="dns", daemon=True)
                thread.start()
            now = time.monotonic()
            if now >= next_stats:
                next_stats = now + STATS_SECONDS
                published.set("stats", stats())
            pub.poll()
            if thread is not None and not thread.is_alive():
                ctx.log.error("dns server thread ended name=%s", ctx.name)
                return EXIT_ERROR
    finally:
        server.stop()
        if thread is not None:
            thread.join(2)
        sub.close()
        pub.close()
    return EXIT_OK
