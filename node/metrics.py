"""Every metric the node exposes on ``GET /metrics``, through ``prometheus_client``.

Two kinds live here:

* **Events**, counted where they happen by the functions below (module-level, one node per
  process): :func:`block_outcome` (blocks accepted/rejected by reason and by source, and how long
  their validation took), :func:`tx_submitted`, :func:`work_submitted` and
  :func:`observe_verification` (a validation stage's seconds). Other parts of the node call these;
  nothing else touches the counters.
* **State**, read at scrape time by :class:`ChainCollector` from a :class:`ChainSnapshot` that the
  API builds on the chain's thread: height, tip age, peers, sync progress, mempool, the useful
  steps and MACs trained so far (and their rate between scrapes), the network's MAC rate.

:func:`render` returns the exposition bytes and ``CONTENT_TYPE_LATEST``
(Prometheus text format, ``text/plain; version=...``). Metric names are listed in docs/operations.md.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    Info,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

PREFIX = "pouw"
VERIFY_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
RATE_WINDOW_S = 300.0
"""Useful steps and MACs per second are averaged over scrapes at most this far apart."""

REGISTRY = CollectorRegistry(auto_describe=True)
ProcessCollector(registry=REGISTRY)
PlatformCollector(registry=REGISTRY)

BUILD_INFO = Info(f"{PREFIX}_build", "The node's version and build.", registry=REGISTRY)
BLOCKS_ACCEPTED = Counter(f"{PREFIX}_blocks_accepted", "Blocks that passed validation and were stored.",
                          ["source"], registry=REGISTRY)
BLOCKS_REJECTED = Counter(f"{PREFIX}_blocks_rejected", "Blocks refused, by rejection reason.",
                          ["reason", "source"], registry=REGISTRY)
BLOCKS_OTHER = Counter(f"{PREFIX}_blocks_other", "Blocks neither accepted nor rejected (known, orphan, held, stale).",
                       ["status", "source"], registry=REGISTRY)
TX_SUBMISSIONS = Counter(f"{PREFIX}_tx_submissions", "Transactions handed to the node's API, by result.",
                         ["result"], registry=REGISTRY)
WORK_SUBMISSIONS = Counter(f"{PREFIX}_work_submissions", "Mining results submitted by miners, by status.",
                           ["status"], registry=REGISTRY)
BLOCK_VALIDATION_SECONDS = Histogram(
    f"{PREFIX}_block_validation_seconds", "Wall time to validate and import one block, by source.",
    ["source"], buckets=VERIFY_BUCKETS, registry=REGISTRY)
VERIFICATION_SECONDS = Histogram(
    f"{PREFIX}_verification_seconds", "Wall time of one verification stage (tile, replay, signatures, ...).",
    ["stage"], buckets=VERIFY_BUCKETS, registry=REGISTRY)


def set_build_info(version: str, preset: str, chain_id: int) -> None:
    BUILD_INFO.info({"version": version, "preset": preset, "chain_id": str(chain_id)})


# --- event counters: what other modules call -------------------------------------------------------


def block_outcome(status: str, reason: str | None, source: str, seconds: float | None = None) -> None:
    """Count one block submission. ``status``: ``accepted``, ``invalid`` (counted as rejected by
    ``reason``), or anything else (``known``, ``orphan``, ``held``, ``stale``). ``source``: ``p2p``,
    ``api`` or ``miner``. ``seconds``: how long validation took, when it ran."""
    if status == "accepted":
        BLOCKS_ACCEPTED.labels(source).inc()
    elif status in ("invalid", "rejected"):
        BLOCKS_REJECTED.labels(reason or "unknown", source).inc()
    else:
        BLOCKS_OTHER.labels(status, source).inc()
    if seconds is not None:
        BLOCK_VALIDATION_SECONDS.labels(source).observe(seconds)


def tx_submitted(result: str) -> None:
    """Count one transaction submission: ``accepted`` or the rejection reason."""
    TX_SUBMISSIONS.labels(result).inc()


def work_submitted(status: str) -> None:
    """Count one miner submission (``POST /api/mining/submit``): accepted, stale, invalid, ..."""
    WORK_SUBMISSIONS.labels(status).inc()


def observe_verification(stage: str, seconds: float) -> None:
    """Record how long one verification stage took (e.g. ``tile``, ``replay``, ``signatures``)."""
    VERIFICATION_SECONDS.labels(stage).observe(seconds)


# --- state read at scrape time ---------------------------------------------------------------------


@dataclass(frozen=True)
class ChainSnapshot:
    """What the node's chain looks like now (built on the chain's thread by the API)."""

    height: int
    tip_timestamp: int
    now: float
    target_bits: int
    mempool_txs: int
    mempool_bytes: int
    peers: int
    best_peer_height: int
    useful_steps: int
    useful_macs: int
    jobs_active: int
    network_mac_rate: int | None
    blocks_imported: int = 0
    blocks_rejected: int = 0
    job_accuracy: dict[str, float] = field(default_factory=dict)


class ChainCollector(Collector):
    """Gauges (and on-chain totals) from the latest :class:`ChainSnapshot`."""

    def __init__(self) -> None:
        self.snapshot: ChainSnapshot | None = None
        self._samples: collections.deque[tuple[float, int, int]] = collections.deque()

    def update(self, snapshot: ChainSnapshot) -> None:
        self.snapshot = snapshot
        now = time.monotonic()
        self._samples.append((now, snapshot.useful_steps, snapshot.useful_macs))
        while len(self._samples) > 2 and now - self._samples[1][0] > RATE_WINDOW_S:
            self._samples.popleft()

    def rates(self) -> tuple[float, float]:
        """Useful steps and MACs per second between the oldest kept scrape and the latest."""
        if len(self._samples) < 2:
            return 0.0, 0.0
        (t0, s0, m0), (t1, s1, m1) = self._samples[0], self._samples[-1]
        elapsed = t1 - t0
        if elapsed <= 0 or s1 < s0:  # a reorg can lower the totals
            return 0.0, 0.0
        return (s1 - s0) / elapsed, (m1 - m0) / elapsed

    def collect(self) -> Iterator[Metric]:
        s = self.snapshot
        if s is None:
            return

        def gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
            return GaugeMetricFamily(f"{PREFIX}_{name}", doc, value=value)

        yield gauge("height", "Height of the best chain.", s.height)
        yield gauge("tip_timestamp_seconds", "Timestamp of the tip block (Unix seconds).", s.tip_timestamp)
        yield gauge("tip_age_seconds", "Seconds since the tip block's timestamp, by the node's clock.",
                    max(0.0, s.now - s.tip_timestamp))
        yield gauge("target_log2", "log2 of the current target (bits).", s.target_bits)
        yield gauge("mempool_txs", "Transactions in the mempool.", s.mempool_txs)
        yield gauge("mempool_bytes", "Bytes in the mempool.", s.mempool_bytes)
        yield gauge("peers", "Connected peers.", s.peers)
        yield gauge("best_peer_height", "Highest best-chain height a peer announced.", s.best_peer_height)
        best = max(s.height, s.best_peer_height)
        yield gauge("sync_progress_ratio", "Own height over the best height known (1 when synced).",
                    s.height / best if best else 1.0)
        yield gauge("jobs_active", "Training jobs still active.", s.jobs_active)
        yield CounterMetricFamily(f"{PREFIX}_useful_steps", "Training steps done on chain, over all jobs.",
                                  value=s.useful_steps)
        yield CounterMetricFamily(f"{PREFIX}_useful_macs", "Multiply-accumulates of those steps.",
                                  value=s.useful_macs)
        steps_rate, macs_rate = self.rates()
        yield gauge("useful_steps_per_second", "Useful training steps per second between recent scrapes.", steps_rate)
        yield gauge("useful_macs_per_second", "Useful MACs per second between recent scrapes.", macs_rate)
        if s.network_mac_rate is not None:
            yield gauge("network_mac_rate", "Expected lottery MACs per second over the last blocks.",
                        s.network_mac_rate)
        if s.job_accuracy:
            accuracy = GaugeMetricFamily(f"{PREFIX}_job_accuracy_ratio", "Latest held-out accuracy of a job.",
                                         labels=["job"])
            for job, value in sorted(s.job_accuracy.items()):
                accuracy.add_metric([job], value)
            yield accuracy


def render(collectors: Iterable[Collector] = ()) -> tuple[bytes, str]:
    """The exposition text of the process-wide metrics and ``collectors``, and its content type."""
    local = CollectorRegistry(auto_describe=False)
    for collector in collectors:
        local.register(collector)
    return generate_latest(REGISTRY) + generate_latest(local), CONTENT_TYPE_LATEST


def package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("pouw-chain")
    except PackageNotFoundError:
        return "unknown"
