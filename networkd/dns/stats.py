"""Counters of a replica and of the forwarder, read by their workers' bus threads.

Plain ints updated by one thread and read by another: each update is atomic under the
GIL, and a reader seeing a counter one query late is harmless.
"""

from typing import Dict, List

from networkd.dns import wire

# Upper bounds (seconds) of the latency histograms, Prometheus style.
LATENCY_BOUNDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class Latency:
    """A histogram of seconds with the LATENCY_BOUNDS buckets (the last is +Inf)."""

    def __init__(self) -> None:
        self.counts: List[int] = [0] * (len(LATENCY_BOUNDS) + 1)
        self.sum = 0.0

    def observe(self, seconds: float) -> None:
        self.sum += seconds
        for index, bound in enumerate(LATENCY_BOUNDS):
            if seconds <= bound:
                self.counts[index] += 1
                return
        self.counts[-1] += 1

    @property
    def count(self) -> int:
        return sum(self.counts)

    def cumulative(self) -> Dict[str, int]:
        """Cumulative counts keyed by upper bound ("0.001" ... "+Inf"), as Prometheus wants."""
        out: Dict[str, int] = {}
        total = 0
        for bound, count in zip([*map(repr, LATENCY_BOUNDS), "+Inf"], self.counts):
            total += count
            out[bound] = total
        return out


class ReplicaStats:
    """One replica: what it answered, from where, and how long the forwarder took."""

    def __init__(self) -> None:
        self.queries = 0
        self.rcodes = [0] * 16
        self.cache_hits = 0
        self.forwarded = 0  # handed to the forwarder
        self.forwarder_failures = 0  # answered SERVFAIL here: no forwarder answered in time
        self.latency = Latency()  # handed -> answered by the forwarder

    def rcode_counts(self) -> Dict[str, int]:
        out = {}
        for code, count in enumerate(self.rcodes):
            if count:
                out[wire.RCODE_NAMES.get(code, str(code))] = count
        return out


class ForwarderStats:
    """The forwarder: questions from replicas, upstream traffic, replies refused."""

    def __init__(self) -> None:
        self.requests = 0  # queries the replicas handed over
        self.cache_hits = 0  # answered from the forwarder's cache (a replica lacked it)
        self.merged = 0  # joined a query already in flight
        self.upstream_queries = 0  # sent upstream (UDP and TCP)
        self.upstream_tcp = 0
        self.upstream_failures = 0  # timeouts, SERVFAIL, unusable answers
        self.rejected_replies = 0  # wrong ID, question or source: ignored (spoofing)
        self.servfails = 0  # every upstream failed
        self.latency = Latency()  # first upstream query -> answer
