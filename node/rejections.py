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

from chain.errors import Reason

log = logging.getLogger("pouw.node.mining")

ACCEPTED = "accepted"
STALE = "stale"
REJECTED = "rejected"
_KNOWN_REASONS = frozenset(reason.value for reason in Reason) | {"stale", "unknown-template"}


class SubmissionCounter:
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

    def metric_lines(self) -> list[str]:
        """Prometheus text-format lines (HELP, TYPE and one sample per seen outcome and reason)."""
        lines = [
            "# HELP pouw_mining_submissions_total Mined work submitted to this node, by outcome and reason.",
            "# TYPE pouw_mining_submissions_total counter",
        ]
        counts = self.counts()
        if (ACCEPTED, "") not in counts:
            counts[(ACCEPTED, "")] = 0
        for (outcome, reason), n in sorted(counts.items()):
            lines.append(f'pouw_mining_submissions_total{{outcome="{outcome}",reason="{reason}"}} {n}')
        return lines
