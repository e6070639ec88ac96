"""Counts of what became of mined work submitted to this node, by outcome and rejection reason.

Every answer of ``POST /api/mining/submit`` (``ChainService.submit_work``) and ``POST /api/blocks``
(``submit_raw_block``) is counted here once: ``accepted``, ``stale`` (the tip moved on before the
work arrived: not the miner's fault) or ``rejected`` with the typed reason (``bad-job-progress``,
``bad-seal``, ...). A rejection is also logged as one line naming its reason, so a miner that keeps
producing invalid blocks shows up in the log, in ``/metrics``
(``pouw_mining_submissions_total{outcome=...,reason=...}``) and in the miner's own status line,
which reads the same counts from the answers it gets.

The counts are process-wide and bounded: reasons come from :class:`chain.errors.Reason` (plus
``stale``), never from the request.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Iterator

from prometheus_client.metrics_core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from chain.errors import Reason

log = logging.getLogger("pouw.node.mining")

ACCEPTED = "accepted"
STALE = "stale"
REJECTED = "rejected"
_KNOWN_REASONS = frozenset(reason.value for reason in Reason) | {"stale", "unknown-template"}


class SubmissionCounter(Collector):
    """Thread-safe counts of submissions by (outcome, reason); reason is ``""`` for accepted ones."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[tuple[str, str]] = Counter()

    def accepted(self) -> None:
        with self._lock:
            self._counts[(ACCEPTED, "")] += 1

    def stale(self) -> None:
        with self._lock:
            self._counts[(STALE, "stale")] += 1

    def rejected(self, reason: str | None, detail: str = "", height: int = -1) -> None:
        label = reason if reason in _KNOWN_REASONS else "other"
        with self._lock:
            self._counts[(REJECTED, label)] += 1
        log.warning("rejected mined block at height %d: %s: %s", height, label, detail)

    def counts(self) -> dict[tuple[str, str], int]:
        with self._lock:
            return dict(self._counts)

    def total(self, outcome: str) -> int:
        return sum(n for (kind, _), n in self.counts().items() if kind == outcome)

    def collect(self) -> Iterator[Metric]:
        """``pouw_mining_submissions_total{outcome,reason}`` for ``prometheus_client`` (the node's
        ``/metrics`` renders it with the other families); accepted is always present, from 0."""
        family = CounterMetricFamily("pouw_mining_submissions",
                                     "Mined work submitted to this node, by outcome and reason.",
                                     labels=["outcome", "reason"])
        counts = self.counts()
        counts.setdefault((ACCEPTED, ""), 0)
        for (outcome, reason), n in sorted(counts.items()):
            family.add_metric([outcome, reason], n)
        yield family
