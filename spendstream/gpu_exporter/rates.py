"""Counters to per-interval deltas and rates, safe across engine restarts.

For each counter series (same source and labels) seen in two consecutive scrapes:

- the value grew and ``*_created`` did not change → the delta is the growth;
- the value fell, or ``*_created`` changed → the engine restarted: the delta is the
  value counted since the restart (what Prometheus' ``rate()`` does), never negative;
- a series seen for the first time on a target (scrape URL) that was already
  scraped counts from 0: engines create labelled series lazily (a new data-parallel
  rank, a first request of a kind), and most publish no ``*_created`` to say so.
  Only a ``*_created`` from before the previous scrape says the series is old, and
  then it has no baseline and is skipped;
- on a target scraped for the first time nothing counts but series created during
  the interval (a new engine process), so a newly watched engine never shows up
  as a spike.

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
        self._known_sources: frozenset[str] = frozenset()

    def update(self, reading: Reading, at: float) -> Deltas | None:
        """Deltas since the previous scrape (None on the first one); ``at`` is a wall-clock time in seconds."""
        previous, previous_at, known = self._previous, self._previous_at, self._known_sources
        self._previous, self._previous_at = {k: dict(v) for k, v in reading.counters.items()}, at
        self._known_sources = known | set(reading.sources)
        if previous is None or previous_at is None or at <= previous_at:
            return None
        counts = {kind: self._delta(previous.get(kind, {}), series, previous_at, known)
                  for kind, series in reading.counters.items()}
        return Deltas(at - previous_at, counts)

    @staticmethod
    def _delta(before: dict[SeriesKey, CounterValue], now: dict[SeriesKey, CounterValue],
               previous_at: float, known: frozenset[str]) -> float | None:
        total, seen = 0.0, False
        for key, current in now.items():
            old = before.get(key)
            if old is None:
                born_since = current.created is not None and current.created >= previous_at
                born_unknown = current.created is None and key[0] in known
                if born_since or born_unknown:  # a new series counts from 0
                    total, seen = total + current.value, True
                continue
            seen = True
            restarted = current.value < old.value or (
                current.created is not None and old.created is not None and current.created != old.created)
            if restarted:  # the counter began again from 0: all of its value is new
                total += current.value
            else:
                total += current.value - old.value
        return total if seen else None
