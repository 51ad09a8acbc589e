"""Counters to per-interval deltas and rates, safe across engine restarts.

For each counter series (same source and labels) seen in two consecutive scrapes:

- the value grew and ``*_created`` did not change → the delta is the growth;
- the value fell, or ``*_created`` changed → the engine restarted: the delta is the
  value counted since the restart (what Prometheus' ``rate()`` does), never negative;
- a series seen for the first time counts only if it was created during the
  interval (a new engine process); otherwise it has no baseline and is skipped,
  so a newly watched engine never shows up as a spike.

A kind with no series in both scrapes has no delta (``None``, not 0). Rates use
the real time between the two scrapes.
"""

from __future__ import annotations

from dataclasses import dataclass

from spendstream.gpu_exporter.readings import CounterValue, Reading, SeriesKey


@dataclass(frozen=True, slots=True)
class Deltas:
    interval_s: float
    counts: dict[str, float | None]

    def rate(self, kind: str) -> float | None:
        count = self.counts.get(kind)
        return count / self.interval_s if count is not None else None


class CounterTracker:
    def __init__(self) -> None:
        self._previous: dict[str, dict[SeriesKey, CounterValue]] | None = None
        self._previous_at: float | None = None

    def update(self, reading: Reading, at: float) -> Deltas | None:
        """Deltas since the previous scrape (None on the first one); ``at`` is a wall-clock time in seconds."""
        previous, previous_at = self._previous, self._previous_at
        self._previous, self._previous_at = {k: dict(v) for k, v in reading.counters.items()}, at
        if previous is None or previous_at is None or at <= previous_at:
            return None
        counts = {kind: self._delta(previous.get(kind, {}), series, previous_at)
                  for kind, series in reading.counters.items()}
        return Deltas(at - previous_at, counts)

    def _delta(self, before: dict[SeriesKey, CounterValue], now: dict[SeriesKey, CounterValue],
               previous_at: float) -> float | None:
        total, seen = 0.0, False
        for key, current in now.items():
            old = before.get(key)
            if old is None:
                if current.created is not None and current.created >= previous_at:
                    total, seen = total + current.value, True  # a process born during the interval
                continue
            seen = True
            restarted = current.value < old.value or (
                current.created is not None and old.created is not None and current.created != old.created)
            if restarted:  # the counter began again from 0: all of its value is new
                total += current.value
            else:
                total += current.value - old.value
        return total if seen else None
